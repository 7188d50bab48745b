"""Build contexts: the exact file set Docker sees (olly.tarstream sends it).

``scan`` computes what reaches ``COPY`` after ``.dockerignore`` (via
``olly.dockerignore``) plus what the daemon needs but removes (an excluded
Dockerfile or .dockerignore, a Dockerfile from outside the context), mirroring the
Docker CLI. Given the Dockerfile's sources (``olly.reach``), it keeps only the entries
they reach (``olly.selection``) and their parent directories: those are keyed and sent,
nothing else is read. A context recalled from a remembered walk (olly.walkmemo) makes its
entries only when something sends it (``Context.lazy``).
"""

from __future__ import annotations

import bisect
import operator
import os
import posixpath
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple

import xxhash

from olly import inputs, keys, walkmemo
from olly.config import ImageTarget, in_own_dir
from olly.dockerignore import DockerIgnore
from olly.errors import OllyError
from olly.hashing import FileHasher, hash_bytes
from olly.reach import Reach, Source, clean
from olly.selection import Node, Tree, Unreadable, select

IGNORE_FILE = ".dockerignore"


class Entry(NamedTuple):
    """One tar entry. ``digest`` is the content hash (files) or link target (symlinks).
    A named tuple, not a frozen dataclass: a context has ~10^5 of them, made 3x faster."""

    path: str
    type: str  # "f" file, "d" directory, "l" symlink
    executable: bool = False
    size: int = 0
    digest: str = ""
    data: bytes | None = None  # content held in memory (Dockerfile, .dockerignore)
    keyed: bool = True  # False: sent, but no COPY of the target reaches it (not hashed, not verified)

    def row(self) -> list[Any]:
        return [self.path, self.type, self.executable, self.digest]


@dataclass
class Recall:
    """A context recalled (olly.walkmemo) and not yet made into Entry objects: its walked rows,
    and the in-memory entries inserted among them (``at``: their places in ``entries``,
    ascending). ``rows``/``ends``: the key's encoding of the walked rows, until the key is made."""

    walk: walkmemo.Recalled
    at: list[int]
    inserted: list[Entry]
    rows: bytes | None


@dataclass
class Context:
    dir: str  # workspace-relative context directory
    extras: list[Entry] = field(default_factory=list)  # sent, then removed by the daemon
    dockerfile_name: str = "Dockerfile"  # the Dockerfile's name inside the tar
    dockerfile: bytes = b""
    dockerignore: bytes | None = None  # the context's .dockerignore as read, None if absent
    carried: list[Entry] = field(default_factory=list)  # sent, not keyed: nothing the target copies
    via: dict[str, list[int]] | None = None  # keyed entry -> the Dockerfile lines reaching it; None: whole context
    reach: Reach | None = None  # what the Dockerfile reaches (None: not analysed)
    # A walked context remembered by this plan: its entries as walked, their rows as the key
    # encodes them, and where the in-memory entries were inserted among them in ``entries``.
    recalled: tuple[list[Entry], bytes, Any, list[int]] | None = None
    # A recalled one: ``entries`` are made from it only when asked for (a plan that builds
    # nothing sends nothing, so it needs only the rows).
    lazy: Recall | None = None
    _entries: list[Entry] = field(default_factory=list)

    @property
    def entries(self) -> list[Entry]:
        """What COPY sees, sorted by path."""
        if self.lazy is not None:
            self._made()
        return self._entries

    @entries.setter
    def entries(self, value: list[Entry]) -> None:
        self.lazy, self._entries = None, value

    def _made(self) -> None:
        lazy, self.lazy = self.lazy, None
        assert lazy is not None
        walked = [Entry(p, t, x, size, d) for (p, t, x, d), size in zip(_files(self.dir, lazy), lazy.walk.sizes)]
        self._entries = _spliced(walked, lazy.at, lazy.inserted)
        if lazy.rows is not None:
            self.recalled = (walked, lazy.rows, lazy.walk.ends, lazy.at)

    def file_rows(self) -> list[list[Any]]:
        """``[e.row() for e in self.entries]`` (the manifest's ``files``), without making the
        entries of a recalled context."""
        lazy = self.lazy
        if lazy is None:
            return [e.row() for e in self._entries]
        return _spliced(_files(self.dir, lazy), lazy.at, [e.row() for e in lazy.inserted])

    def keyed(self) -> None:
        """The key is made: a recalled context's encoded rows are not kept for the whole plan."""
        self.recalled = None
        if self.lazy is not None:
            self.lazy.rows = None

    def files_encoding(self) -> bytes | None:
        """``keys.encode([e.row() for e in self.entries])``, from a recalled walk's remembered
        rows (only the in-memory entries encoded afresh); None without one, or if the entries
        are not exactly those recalled plus the inserted ones (then the key encodes them all)."""
        lazy = self.lazy
        if lazy is not None:
            if lazy.rows is None:
                return None
            return _splice_rows(lazy.rows, lazy.walk.ends, lazy.at, lazy.inserted, len(lazy.walk) + len(lazy.at))
        if self.recalled is None:
            return None
        walked, rows, ends, inserted = self.recalled
        entries = self._entries
        if len(entries) != len(walked) + len(inserted):
            return None
        prev = w = 0
        for pos in [*inserted, len(entries)]:
            n = pos - prev
            if n and not all(map(operator.is_, entries[prev:pos], walked[w:w + n])):
                return None
            w, prev = w + n, pos + 1
        return _splice_rows(rows, ends, inserted, [entries[pos] for pos in inserted], len(entries))

    def holding(self, path: str) -> list[Entry]:
        """The list of entries that holds ``path`` if any does (for replacing it in place),
        without making a recalled context's entries when ``path`` is one of its inserted ones."""
        if self.lazy is not None and not self.lazy.walk.find(path)[1]:
            return self.lazy.inserted
        return self.entries


def _files(ctx_dir: str, lazy: Recall) -> list[list[Any]]:
    """The recalled walk's rows, decoded now; its key was made from their encoding, so rows
    that do not decode are a damaged cache, not a miss."""
    try:
        return lazy.walk.files
    except (ValueError, EOFError, TypeError):
        raise OllyError("cache-corrupt", f"the remembered walk of context {ctx_dir} is unreadable; "
                        "delete .cache/olly.db to start afresh") from None


def _spliced(walked: list[Any], at: list[int], inserted: list[Any]) -> list[Any]:
    """``walked`` with ``inserted[k]`` placed at ``at[k]`` (ascending places in the result)."""
    out: list[Any] = []
    w = 0
    for k, pos in enumerate(at):
        out += walked[w:pos - k]
        out.append(inserted[k])
        w = pos - k
    out += walked[w:]
    return out


def _splice_rows(rows: bytes, ends: Any, at: list[int], inserted: list[Entry], total: int) -> bytes:
    """The key's encoding of ``total`` rows: the walked ones from their remembered encoding
    (``rows``, split at ``ends``), ``inserted`` encoded afresh at their places ``at``."""
    parts, w, prev = [], 0, 0
    for k, pos in enumerate([*at, total]):
        n = pos - prev
        if n:
            parts.append(rows[ends[w - 1] if w else 0:ends[w + n - 1]])
            w += n
        if pos < total:
            parts.append(keys.encode_rows([inserted[k].row()])[0])
        prev = pos + 1
    return keys.list_encoding(total, b"".join(parts))


Analyzer = Callable[[bytes], Reach]  # the Dockerfile's bytes -> its sources (olly.reach.analyze)


def scan(root: Path, target: ImageTarget, hasher: FileHasher, analyzer: Analyzer | None = None) -> Context:
    """The planned context of ``target``: every keyed entry hashed, nothing sent yet. With an
    ``analyzer``, only what the Dockerfile's sources reach (unless it names a reason not to)."""
    ctx_dir = target.context
    base = root / ctx_dir
    ignore_path = base / IGNORE_FILE
    ignore_display = posixpath.join(ctx_dir, IGNORE_FILE) if ctx_dir != "." else IGNORE_FILE
    ignore_bytes, ignore_link = _special(base, IGNORE_FILE, ignore_display)
    ignore = DockerIgnore.parse(
        (ignore_bytes or b"").decode("utf-8", "surrogateescape"), source=ignore_display
    )
    df_rel = _inside(target.dockerfile, ctx_dir)
    df_link = None
    if df_rel is None:
        dockerfile = _read(root / target.dockerfile, target.dockerfile)
    else:
        df_bytes, df_link = _special(base, df_rel, target.dockerfile)
        dockerfile = df_bytes if df_bytes is not None else _read(root / target.dockerfile, target.dockerfile)
    specials = {IGNORE_FILE} if ignore_bytes is not None else set()
    if df_rel is not None:
        specials.add(df_rel)
    ctx = Context(dir=ctx_dir, dockerfile=dockerfile, dockerignore=ignore_bytes)
    visible: dict[str, Entry] = {}  # the specials COPY sees, and the parents an excluded Dockerfile leaves
    if df_rel is None:
        if ignore_link is not None:
            raise OllyError("unsupported", f"{ignore_display} is a symlink and {target.dockerfile} is outside the context: "
                            "the Docker CLI cannot combine the two either; make one of them a regular file")
        _add_outside_dockerfile(ctx, visible, ignore, ignore_bytes, _is_exec(ignore_path))
    else:
        ctx.dockerfile_name = df_rel
        _add_memory_entry(ctx, visible, ignore, df_rel, dockerfile, _is_exec(base / df_rel), df_link)
        if ignore_bytes is not None:
            _add_memory_entry(ctx, visible, ignore, IGNORE_FILE, ignore_bytes, _is_exec(ignore_path), ignore_link)
    shown = "" if ctx_dir == "." else ctx_dir + "/"
    ctx.reach = analyzer(dockerfile) if analyzer is not None else None
    if ctx.reach is not None and ctx.reach.whole is None:
        if any(getattr(p, "error", "") for p in ignore.patterns):
            ctx.reach.whole = f"{ignore_display} holds a pattern that does not compile"
        else:
            try:
                sent = specials | ({IGNORE_FILE} if df_rel is None else set())  # the CLI writes one
                if not ctx.reach.everything:  # else (`COPY . .`) the plain walk below lists it all, faster
                    tree = _tree(root, ctx.dir, ignore, shown, sent, visible)
                    return _scan_selected(root, ctx, tree, hasher, visible)
            except Unreadable as exc:
                ctx.reach.whole = str(exc)
    walked, recalled = _walk_context(root, ctx_dir, ignore, shown, specials, hasher, ignore_bytes, df_rel)
    if walked is None:  # recalled: no Entry objects unless the context is sent
        assert recalled is not None
        at, extra = _places(recalled.find, visible)
        ctx.lazy = Recall(recalled, at, extra, recalled.rows)
        return ctx
    ctx.entries, inserted = _merge(visible, walked)
    if recalled is not None:
        ctx.recalled = (walked, recalled.rows, recalled.ends, inserted)
    return ctx


def _places(find: Callable[[str], tuple[int, bool]], visible: dict[str, Entry]) -> tuple[list[int], list[Entry]]:
    """Where the in-memory entries go among walked ones (``find``: where a path is or would go
    among them, and whether it is there), in path order, and them: each where no walked entry
    has its path. The places are in the merged list (ascending: each lands after the ones before)."""
    at, extra = [], []
    for path in sorted(visible):
        i, there = find(path)
        if not there:
            at.append(i + len(at))
            extra.append(visible[path])
    return at, extra


def _merge(visible: dict[str, Entry], walked: list[Entry]) -> tuple[list[Entry], list[int]]:
    """The walked entries (sorted by path) with the in-memory ones added (``_places``: a few
    insertions, not a sort of ~10^5 paths), and where they went."""
    paths = [e.path for e in walked]

    def find(path: str) -> tuple[int, bool]:
        i = bisect.bisect_left(paths, path)
        return i, i < len(paths) and paths[i] == path

    at, extra = _places(find, visible)
    return _spliced(walked, at, extra), at


def _walk_context(root: Path, ctx_dir: str, ignore: DockerIgnore, shown: str, specials: set[str],
                  hasher: FileHasher, ignore_bytes: bytes | None = None,
                  df_rel: str | None = None) -> tuple[list[Entry] | None, walkmemo.Recalled | None]:
    """Every entry COPY sees (the specials aside), files hashed: the hot loop of a plan. With
    the plan's walk memo (olly.walkmemo), an unchanged context is recalled instead (None, and
    the recalled walk)."""
    memo = hasher.walks
    if memo is None:
        return hashed_entries(root, ctx_dir, ignore.walk(root / ctx_dir, shown=shown), specials, hasher), None
    recalled = memo.unchanged(root, ctx_dir, df_rel)  # the watcher saw nothing change in it
    if recalled is not None:
        return None, recalled
    started = time.time_ns()
    items = None
    fp = memo.prefetched(ctx_dir, df_rel, ignore_bytes, specials)  # the helper walked it
    if fp is None:
        items = walkmemo.walk(root, ctx_dir, ignore, shown)
        fp, settled = walkmemo.fingerprint(ctx_dir, ignore_bytes, specials, items, started)
    recalled = memo.recall(ctx_dir, df_rel, fp, hasher)
    if recalled is not None:
        return None, recalled  # stored sorted by path
    if items is None:  # the helper's fingerprint missed: walk here, to hash and remember
        started = time.time_ns()
        items = walkmemo.walk(root, ctx_dir, ignore, shown)
        fp, settled = walkmemo.fingerprint(ctx_dir, ignore_bytes, specials, items, started)
    # What did not change since the walk stored before is not read again: its files' stat
    # signatures are kept with it (the stat cache holds no rows for a remembered context).
    hasher.previous = memo.previous(ctx_dir, df_rel)
    try:
        entries = hashed_entries(root, ctx_dir, items, specials, hasher)
    finally:
        hasher.previous = None
    rows = memo.remember(ctx_dir, df_rel, fp, entries, items) if settled else None
    if rows is not None:  # remembered with their signatures: no stat rows of their own
        hasher.held(ctx_dir, entries)
    return entries, rows


def hashed_entries(root: Path, ctx_dir: str, items: Iterable[tuple[str, os.stat_result]], specials: set[str],
                   hasher: FileHasher) -> list[Entry]:
    """The entries of walked ``items`` (the specials aside), files hashed, sorted by path; also
    what the walk helper (olly.walkhelper) computes for a plan's first walks."""
    entries = _hash_walk(root, ctx_dir, items, specials, hasher)
    return [entries[p] for p in sorted(entries)]


def _hash_walk(root: Path, ctx_dir: str, items: Iterable[tuple[str, os.stat_result]], specials: set[str],
               hasher: FileHasher) -> dict[str, Entry]:
    """The entries of walked ``items``, files hashed (from the stat cache where it can)."""
    entries: dict[str, Entry] = {}
    # olly's own .cache/ and dist/ (at the workspace root) are never inputs, even in a
    # context that contains them: they change during every run.
    skip_own = ctx_dir == "."
    prefix = "" if skip_own else ctx_dir + "/"
    hasher.preload(ctx_dir)
    digest, is_reg = hasher.hash, stat.S_ISREG
    hasher.walking = True  # its files' rows may be held by a remembered walk (FileHasher.held)
    try:
        for rel, st in items:
            if rel in specials or (skip_own and in_own_dir(rel)):
                continue  # specials are added from the bytes read above
            mode = st.st_mode
            if is_reg(mode):  # inlined _entry: most entries are regular files
                entries[rel] = Entry(rel, "f", bool(mode & 0o111), st.st_size, digest(prefix + rel, st))
            else:
                entries[rel] = _entry(root, ctx_dir, rel, st, hasher)
    finally:
        hasher.walking = False
    return entries


def _tree(root: Path, ctx_dir: str, ignore: DockerIgnore, shown: str, specials: set[str],
          visible: dict[str, Entry]) -> Tree:
    """The context as COPY sees it, the Dockerfile and .dockerignore from the bytes read."""
    nodes: dict[str, Node | None] = {rel: None for rel in specials}
    ghosts = {rel for rel, e in visible.items() if e.type == "d"}
    for rel, e in visible.items():
        if rel not in ghosts:
            nodes[rel] = Node(e.type, link=e.digest if e.type == "l" else "", special=True)
    return Tree(root / ctx_dir, ignore, shown=shown, skip_own=ctx_dir == ".", specials=nodes, ghosts=ghosts)


def _scan_selected(root: Path, ctx: Context, tree: Tree, hasher: FileHasher, visible: dict[str, Entry]) -> Context:
    """Key and send only what the Dockerfile's sources reach (and their parents); the
    Dockerfile and .dockerignore are sent whatever they reach (they are keyed as bytes)."""
    assert ctx.reach is not None
    # A symlinked Dockerfile or .dockerignore is sent as a link: the daemon reads what it
    # points to, so that is sent and keyed too (line 0: the build itself needs it).
    links = [Source(rel, False, 0) for rel, e in visible.items() if e.type == "l"]
    links += [Source(clean(posixpath.join(posixpath.dirname(e.path), e.digest)), False, 0)
              for e in ctx.extras if e.type == "l"]  # excluded, but the daemon still reads it first
    chosen = select(tree, [*ctx.reach.sources, *links])
    hasher.preload(ctx.dir)
    keyed: list[Entry] = []
    carried = [e for rel, e in visible.items() if e.type != "d" and rel not in chosen.nodes]
    for rel in sorted(chosen.nodes):
        node, is_keyed = chosen.nodes[rel], rel in chosen.lines
        if node.special:
            entry = visible[rel]
        elif node.kind == "d":
            entry = Entry(rel, "d")
        elif node.kind == "l":
            entry = Entry(rel, "l", digest=node.link)
        else:
            assert node.st is not None
            entry = _entry(root, ctx.dir, rel, node.st, hasher if is_keyed else None)
        (keyed if is_keyed else carried).append(entry)
    ctx.entries = keyed
    ctx.carried = sorted(carried, key=lambda e: e.path)
    ctx.via = {rel: sorted(lines) if len(lines) > 1 else list(lines) for rel, lines in chosen.lines.items()}
    return ctx


def context_dockerfile(target: ImageTarget) -> str | None:
    """The target's Dockerfile relative to its context, or None when it lies outside."""
    return _inside(target.dockerfile, target.context)


def _inside(path: str, ctx_dir: str) -> str | None:
    if ctx_dir == ".":
        return path
    return path[len(ctx_dir) + 1:] if path.startswith(ctx_dir + "/") else None


def _special(base: Path | str, rel: str, display: str) -> tuple[bytes | None, str | None]:
    """Content of the .dockerignore or an in-context Dockerfile, and its link target if it is
    a symlink: sent as a link, as the Docker CLI does, never as the content it points to.
    A symlink leaving the context is refused: its target is not the workspace's to read."""
    path = os.path.join(base, rel)  # no pathlib: once or twice per target of a plan
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        raise OllyError("unreadable-file", f"{display}: {exc.strerror}")
    if stat.S_ISLNK(st.st_mode):
        target, real, top = os.readlink(path), os.path.realpath(path), os.path.realpath(base)
        if os.path.commonpath([real, top]) != top:
            raise OllyError("unsafe-symlink", f"{display} is a symlink to {target!r}, outside the build context: olly will not read it")
        return (_read(path, display) if os.path.isfile(real) else None), target
    return (_read(path, display) if stat.S_ISREG(st.st_mode) else None), None


def _read(path: Path | str, display: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except PermissionError:
        raise OllyError("unreadable-file", f"{display}: permission denied")
    except OSError as exc:
        raise OllyError("unreadable-file", f"{display}: cannot read: {exc.strerror}")


def _is_exec(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & 0o111)
    except OSError:
        return False


def _entry(root: Path, ctx_dir: str, rel: str, st: os.stat_result, hasher: FileHasher | None) -> Entry:
    """A walked entry; a file is hashed unless ``hasher`` is None (sent, not keyed)."""
    ws_rel = rel if ctx_dir == "." else f"{ctx_dir}/{rel}"
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        return Entry(rel, "d")
    if stat.S_ISLNK(mode):
        return Entry(rel, "l", digest=os.readlink(root / ws_rel))
    if stat.S_ISREG(mode) and hasher is None:
        return Entry(rel, "f", bool(mode & 0o111), st.st_size, keyed=False)
    if stat.S_ISREG(mode):
        return Entry(rel, "f", bool(mode & 0o111), st.st_size, hasher.hash(ws_rel, st))
    kind = "fifo" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "device file"
    raise OllyError("special-file", f"{ws_rel}: {kind} in a build context cannot be sent; exclude it in .dockerignore")


def _add_memory_entry(ctx: Context, entries: dict[str, Entry], ignore: DockerIgnore, rel: str, data: bytes, exe: bool,
                      link: str | None = None) -> None:
    """Dockerfile / .dockerignore: always sent; they reach COPY unless the patterns exclude them."""
    entry = Entry(rel, "l", digest=link) if link is not None else Entry(rel, "f", exe, len(data), hash_bytes(data), data)
    if not ignore.excluded(rel):
        entries[rel] = entry
        return
    ctx.extras.append(entry)
    # The daemon creates the parents of an extracted file even though the CLI
    # never sent them, and they stay after it removes the file: COPY sees them.
    parent = posixpath.dirname(rel)
    while parent and parent not in entries:
        entries[parent] = Entry(parent, "d")
        parent = posixpath.dirname(parent)


def send_dockerfile(ctx: Context, data: bytes) -> None:
    """Send ``data`` instead of the Dockerfile as read (``olly.baselock`` pins its FROM lines).

    The engine reads it under the Dockerfile's name; where that entry also reaches COPY, the
    image holds these bytes and the entry's row hashes them, so the key covers what was sent.
    A symlinked Dockerfile is then sent as a regular file: the daemon would follow a link
    to the unpinned original."""
    ctx.dockerfile = data
    for entries in (ctx.holding(ctx.dockerfile_name), ctx.extras, ctx.carried):
        for n, e in enumerate(entries):
            if e.path == ctx.dockerfile_name:
                entries[n] = Entry(e.path, "f", e.type == "f" and e.executable, len(data), hash_bytes(data), data,
                                   e.keyed)


def _add_outside_dockerfile(ctx: Context, entries: dict[str, Entry], ignore: DockerIgnore, ignore_bytes: bytes | None,
                            ignore_exec: bool) -> None:
    """As the Docker CLI does: add the Dockerfile under a generated name and list that
    name in .dockerignore so the daemon removes it before COPY can see it."""
    name = ".dockerfile." + xxhash.xxh3_64_hexdigest(ctx.dockerfile)[:16]
    ctx.dockerfile_name = name
    ctx.extras.append(Entry(name, "f", False, len(ctx.dockerfile), hash_bytes(ctx.dockerfile), ctx.dockerfile))
    content = (ignore_bytes if ignore_bytes is not None else IGNORE_FILE.encode()) + b"\n" + name.encode() + b"\n"
    patched = DockerIgnore.parse(content.decode("utf-8", "surrogateescape"), source=IGNORE_FILE)
    # The CLI keeps the file's own tar header (its mode) and replaces only the content.
    entry = Entry(IGNORE_FILE, "f", ignore_bytes is not None and ignore_exec, len(content), hash_bytes(content), content)
    if ignore_bytes is not None and not patched.excluded(IGNORE_FILE):
        entries[IGNORE_FILE] = entry
    else:
        ctx.extras.append(entry)


def scan_inputs(root: Path, patterns: list[str], hasher: FileHasher, label: str) -> tuple[list[list[Any]], bytes | None]:
    """Extra input files (workspace-relative globs): rows ``[path, hash]`` sorted by path, and
    their encoding as the key writes them when it is at hand (remembered, or just computed to be
    remembered: olly.walkmemo), else None."""
    started = time.time_ns()  # before the stats: the racy rule of the stat cache
    expanded: list[tuple[str | None, list[inputs.Match]]] = []
    for pattern in patterns:
        try:
            expanded.append((inputs.walked_dir(pattern), inputs.expand(root, pattern)))
        except ValueError as exc:  # the files changed since BUILD.toml was checked
            raise OllyError("config-invalid", f'images."{label}".inputs: {exc}')
    memo = hasher.walks
    fp = None
    if memo is not None and patterns:
        # One pattern's matches come sorted (inputs.expand); several are merged.
        matched = expanded[0][1] if len(expanded) == 1 else sorted(
            {rel: st for _, matches in expanded for rel, st in matches}.items())
        key = walkmemo.inputs_key(patterns)
        fp, settled = walkmemo.inputs_fingerprint(patterns, matched, started)
        recalled = memo.recall_inputs(key, fp)
        if recalled is not None:
            return recalled
        fp = fp if settled else None
    found: dict[str, str] = {}
    for walked, matches in expanded:
        if walked is not None:
            hasher.preload(walked)
        digest = hasher.hash
        for rel, st in matches:
            found[rel] = digest(rel, st)
    rows = [[p, found[p]] for p in sorted(found)]
    if fp is None:
        return rows, None
    encoded = keys.encode(rows)
    memo.remember_inputs(key, fp, rows, encoded)
    return rows, encoded
