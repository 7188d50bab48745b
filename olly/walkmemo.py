"""Remembered context walks: an unchanged build context costs a stat walk, not a re-keying.

A context's entries (what COPY sees: path, type, executable bit, size, content digest) are a
function of its entries' names and contents. Planning stats every entry anyway; a
*fingerprint* hashes those stat signatures (path, mode, size, mtime, ctime, inode) together
with everything else that shapes the walk (the .dockerignore bytes, which files are sent from
memory instead, the context directory). The entries computed under a fingerprint are stored
(cache table ``walks``) only if every entry but the directories was older than the walk's start
minus RACY_NS: the rule that lets the stat cache trust a file's hash by its signature
(olly.hashing), applied to the whole context at once. A later walk with the same fingerprint
finds, entry by entry, the same names and signatures, so the stored entries are what hashing
would give, under exactly the stat cache's trust. Anything else (a new name, a touched file,
another .dockerignore) is a miss: the context is hashed as before, file by file.

The walk itself is system calls and a Python loop: a helper process (olly.walkhelper)
fingerprints remembered contexts on a second core while the plan works; the plan takes a
helper's fingerprint only for the very walk it would make itself.
"""

from __future__ import annotations

import bisect
import marshal
import os
from array import array
import stat
import struct
import time
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import xxhash

from olly import keys
from olly.dockerignore import DockerIgnore
from olly.hashing import RACY_NS  # the stat cache's rule, applied to whole contexts

SCHEMA = 7  # of the fingerprint and the stored entries: a change makes every memo a miss
OWN_DIRS = (".cache/", "dist/")  # as olly.config.in_own_dir, for a context at the workspace root
MARK = f"{SCHEMA}.{keys.KEY_SCHEMA}"  # a mark names the format its walk was remembered in
FLUSH_BYTES = 4 << 20  # remembered walks held before they are written: memory stays flat
_SIG = struct.Struct("<IQqqQQ")  # mode, size, mtime_ns, ctime_ns, inode, device

Item = tuple[str, os.stat_result]


def walk(root: Path, ctx_dir: str, ignore: DockerIgnore, shown: str) -> list[Item]:
    """Every entry COPY can see (what ``DockerIgnore.walk`` yields), minus olly's own
    ``.cache/`` and ``dist/`` in a context at the workspace root: never inputs."""
    items = list(ignore.walk(root / ctx_dir, shown=shown))
    if ctx_dir == ".":
        items = [(rel, st) for rel, st in items if not (rel + "/").startswith(OWN_DIRS)]
    return items


def fingerprint(ctx_dir: str, ignore_bytes: bytes | None, specials: Iterable[str], items: list[Item],
                started_ns: int) -> tuple[str, bool]:
    """The walk's fingerprint, and whether it may be remembered: False if an entry other than a
    directory changed less than RACY_NS before ``started_ns`` (the walk's start)."""
    h = xxhash.xxh3_128()
    # KEY_SCHEMA too: remembered rows are spliced into keys, so another key format is a miss.
    head = [f"{SCHEMA}.{keys.KEY_SCHEMA}", ctx_dir, "\0".join(sorted(specials)), "-" if ignore_bytes is None else ""]
    for part in ("\0".join(head).encode("utf-8", "surrogateescape"), ignore_bytes or b""):
        h.update(len(part).to_bytes(8, "little") + part)  # framed: no part can pose as the next
    settled = _signatures(h, items, started_ns)
    return h.hexdigest(), settled


def _signatures(h: Any, items: Iterable[Item], started_ns: int) -> bool:
    """Hash each item's name and stat signature into ``h``; whether all of them (but
    directories) were older than ``started_ns`` - RACY_NS."""
    pack, isdir, line = _SIG.pack, stat.S_ISDIR, started_ns - RACY_NS
    settled = True
    for rel, st in items:
        h.update(rel.encode("utf-8", "surrogateescape") + b"\0")  # a name holds no NUL
        h.update(pack(st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev))
        if settled and (st.st_mtime_ns >= line or st.st_ctime_ns >= line) and not isdir(st.st_mode):
            settled = False
    return settled


# -- remembered `inputs` globs: the same, for the files an image's `inputs` match --------


def inputs_key(patterns: list[str]) -> str:
    """A memo per list of patterns (two images with the same `inputs` share it)."""
    return xxhash.xxh3_128_hexdigest("\0".join(["inputs", *patterns]).encode("utf-8", "surrogateescape"))


def inputs_fingerprint(patterns: list[str], matched: list[Item], started_ns: int) -> tuple[str, bool]:
    """The fingerprint of what `inputs` matched (``matched``: every path, sorted, with its stat,
    links followed: what is hashed), and whether it may be remembered (as ``fingerprint``)."""
    h = xxhash.xxh3_128()
    head = "\0".join([f"inputs.{SCHEMA}.{keys.KEY_SCHEMA}", *patterns]).encode("utf-8", "surrogateescape")
    h.update(len(head).to_bytes(8, "little") + head)
    settled = _signatures(h, matched, started_ns)
    return h.hexdigest(), settled


class Recalled:
    """A remembered walk: its entries (olly.context.Entry, sorted by path) as their key rows
    (``files``: [path, type, executable, digest], what a plan's manifest lists, decoded only
    when asked for) and sizes, so that a plan makes Entry objects only if it sends the context;
    the same rows as the key encodes them (olly.keys.encode_rows: concatenated, and where each
    ends), so the next key of the context splices them instead of encoding them again, and
    finds a path among them (``find``) without decoding the rest; and its files' stat
    signatures, marshalled (``signatures``: read only after a miss)."""

    __slots__ = ("_files", "_blob", "sizes", "rows", "ends", "sigs", "linked")

    def __init__(self, files: list[list[Any]] | None, sizes: array, rows: bytes, ends: array, sigs: bytes = b"",
                 blob: bytes = b"", linked: bool = False) -> None:
        self._files, self._blob = files, blob
        self.sizes, self.rows, self.ends, self.sigs = sizes, rows, ends, sigs
        # A file of the walk had another name (a hard link): written through a name outside the
        # context, no watcher sees the change, so the watcher cannot vouch for this walk.
        self.linked = linked

    @property
    def files(self) -> list[list[Any]]:
        if self._files is None:
            files = marshal.loads(self._blob)
            if not isinstance(files, list) or len(files) != len(self.ends) \
                    or (files and not (isinstance(files[0], list) and len(files[0]) == 4)):
                raise ValueError("not a remembered walk")
            self._files, self._blob = files, b""
        return self._files

    def __len__(self) -> int:
        return len(self.ends)

    def path(self, i: int) -> str:
        """The path of entry ``i``, read from its encoded row."""
        return keys.row_head(self.rows, self.ends[i - 1] if i else 0)

    def find(self, path: str) -> tuple[int, bool]:
        """Where ``path`` is or would go among the entries, and whether it is there."""
        i = bisect.bisect_left(range(len(self.ends)), path, key=self.path)
        return i, i < len(self.ends) and self.path(i) == path


def pack(entries: list[Any], items: Iterable[Item] = ()) -> tuple[bytes, Recalled]:
    """Walked entries (``data`` None and ``keyed``: as a walk makes them), their key rows and
    the stat signatures of the files among them (from the walk's ``items``), as stored
    (marshal is the fastest to load; the rows for a manifest in a blob of their own, loaded
    only if asked for), and as recalled: the plan's key splices the rows it just encoded."""
    files = [e.row() for e in entries]
    rows, ends = keys.encode_rows(files)
    packed, sizes = array("Q", ends), array("Q", [e.size for e in entries])
    st = dict(items)
    sigs = marshal.dumps([(s.st_mtime_ns, s.st_ino, s.st_ctime_ns, s.st_mode) if e.type == "f" and (s := st.get(e.path))
                          else None for e in entries])
    linked = any(s.st_nlink > 1 and stat.S_ISREG(s.st_mode) for s in st.values())
    return (marshal.dumps((marshal.dumps(files), sizes.tobytes(), rows, packed.tobytes(), sigs, linked)),
            Recalled(files, sizes, rows, packed, sigs, linked=linked))


def signatures(recalled: Recalled, prefix: str) -> dict[str, tuple[Any, ...]]:
    """The remembered files as stat-cache rows (olly.hashing.FileHasher.known: workspace path ->
    size, mtime_ns, inode, ctime_ns, mode, hash): what a re-walk after a miss need not read
    again. A remembered walk is stored under the stat cache's own rule (every file older than
    the walk's start minus RACY_NS), so its signatures are as good as the stat cache's rows;
    the stat cache keeps no rows of its own for these files."""
    try:
        sigs, files = marshal.loads(recalled.sigs), recalled.files
    except (ValueError, EOFError, TypeError):
        return {}
    if not isinstance(sigs, list) or len(sigs) != len(recalled):
        return {}
    return {prefix + row[0]: (size, sig[0], sig[1], sig[2], sig[3], row[3])
            for row, size, sig in zip(files, recalled.sizes, sigs) if isinstance(sig, tuple) and len(sig) == 4}


def stored_signatures(ctx_dir: str, blob: bytes | None) -> dict[str, tuple[Any, ...]]:
    """The ``signatures`` of a stored walk of ``ctx_dir``; {} if there is none or it is unreadable."""
    recalled = _unpacked(blob)
    return {} if recalled is None else signatures(recalled, "" if ctx_dir == "." else ctx_dir + "/")


def stat_rows(ctx_dir: str, blob: bytes) -> list[tuple[Any, ...]]:
    """A stored walk's ``signatures`` as stat-cache rows (path first), [] if it is unreadable."""
    return [(path, *row) for path, row in stored_signatures(ctx_dir, blob).items()]


def _unpacked(blob: bytes | None) -> Recalled | None:
    """``unpack``, None for no blob or an unreadable one (a miss: the next save replaces it)."""
    try:
        return None if blob is None else unpack(blob)
    except (ValueError, EOFError, TypeError):
        return None


def unpack(blob: bytes) -> Recalled:
    """What ``pack`` stored; ValueError for anything else (e.g. written by another olly: a miss).
    The manifest's rows are checked when first decoded (``Recalled.files``)."""
    stored = marshal.loads(blob)
    if not (isinstance(stored, tuple) and len(stored) == 6 and all(isinstance(part, bytes) for part in stored[:5])
            and isinstance(stored[5], bool)):
        raise ValueError("not a remembered walk")
    files, raw_sizes, rows, raw_ends, sigs, linked = stored
    ends, sizes = array("Q"), array("Q")
    ends.frombytes(raw_ends)
    sizes.frombytes(raw_sizes)
    if len(sizes) != len(ends) or (ends and ends[-1] != len(rows)):
        raise ValueError("not a remembered walk")
    return Recalled(None, sizes, rows, ends, sigs, files, linked)


def _unpack_inputs(blob: bytes) -> tuple[list[list[Any]], bytes]:
    """What ``Memo.remember_inputs`` stored; ValueError for anything else."""
    stored = marshal.loads(blob)
    if not (isinstance(stored, tuple) and len(stored) == 2 and isinstance(stored[0], list)
            and isinstance(stored[1], bytes)):
        raise ValueError("not remembered inputs")
    return stored[0], stored[1]


class Memo:
    """The plan's side: remembered walks read from the cache, new ones kept until the plan
    saves them (``Cache.save_walks``), and the walk helper's fingerprints (olly.walkhelper)."""

    def __init__(self, cache: Any, order: list[tuple[str, str | None]] | None = None) -> None:
        self.cache = cache
        # memo key -> (fingerprint, packed entries, context dir, Dockerfile in it, planning order)
        self.new: dict[str, tuple[str, bytes, str, str | None, int]] = {}
        self.order = {key_of(*c): n for n, c in enumerate(dict.fromkeys(order or []))}
        self.helper: Any = None  # an olly.walkhelper.Helper, if one runs for this plan
        self.new_inputs: dict[str, tuple[str, bytes]] = {}  # `inputs` memo key -> (fingerprint, stored rows)
        self.hits = 0
        self._pending = 0  # bytes in ``new``
        self._firsts: dict[str, tuple[str, bytes, int]] = {}  # the helper's first walks taken: fp, entries, files read
        self._missed: dict[str, bytes] = {}  # the stored walk of a context whose fingerprint missed
        # The watcher's answer (olly.watchsync.Sync, None: no watcher), the marks of the walks
        # remembered (read once), and the walks this plan verified: marked with its token.
        self.sync: Any = None
        self.vouched = 0
        self._marks: dict[str, tuple[str, str]] | None = None
        self._verified: dict[str, str] = {}

    def prefetched(self, ctx_dir: str, df_rel: str | None, ignore_bytes: bytes | None, specials: Iterable[str]) -> str | None:
        """The helper's fingerprint of this context, if it is there and is of the very walk the
        plan would make; else None, and the helper is told to skip it (the plan walks it)."""
        if self.helper is None:
            return None
        key = key_of(ctx_dir, df_rel)
        answer = self.helper.answer(key)
        if answer is None:
            self.helper.skip(key)
            return None
        if answer[1] != ignore_bytes or answer[2] != tuple(sorted(specials)):
            return None
        first = self.helper.first_walk(key)
        if first is not None:
            self._firsts[key] = (str(answer[0]), *first)
        return str(answer[0])

    def unchanged(self, root: Path, ctx_dir: str, df_rel: str | None) -> Recalled | None:
        """The remembered walk of a context the watcher vouches for, taken without walking it:
        the walk was verified by a plan that synced with this watcher (its mark), and nothing
        in the context or above it changed since. None: walk it (and fingerprint) as usual,
        also for a context reached through a symlink (the watcher records changes under the
        directories' own paths)."""
        if self.sync is None or os.path.realpath(root / ctx_dir) != os.path.normpath(os.path.join(self.sync.root, ctx_dir)):
            return None
        if self._marks is None:
            self._marks = self.cache.walk_marks()
        key = key_of(ctx_dir, df_rel)
        found = self._marks.get(key)
        if found is None:
            return None
        fp, mark = found
        version, _, token = mark.partition("/")
        if version != MARK or not self.sync.clean(ctx_dir, token):
            return None
        row = self.cache.walk(key)
        recalled = _unpacked(row[1]) if row is not None and row[0] == fp else None
        if recalled is None or recalled.linked:  # a file with another name: walked (and fingerprinted) as usual
            return None
        self.hits += 1
        self.vouched += 1
        self._verified[key] = fp
        if self.helper is not None:
            self.helper.skip(key)  # no use walking it
        return recalled

    def recall(self, ctx_dir: str, df_rel: str | None, fp: str, hasher: Any = None) -> Recalled | None:
        """The walk remembered under ``fp``, or the helper's first walk of it (kept to be saved,
        the files it read counted by ``hasher``, an olly.hashing.FileHasher); None: a miss."""
        key = key_of(ctx_dir, df_rel)
        kept = self.new.get(key)  # walked already in this plan (another platform, another target)
        recalled = _unpacked(kept[1]) if kept is not None and kept[0] == fp else None
        if recalled is not None:
            self._verified[key] = fp
            return recalled
        first = self._firsts.pop(key, None)
        if first is not None and first[0] == fp:
            recalled = _unpacked(first[1])
            if recalled is not None:
                self._keep(key, fp, first[1], ctx_dir, df_rel)
                if hasher is not None:
                    hasher.files_read += first[2]
                return recalled
        row = self.cache.walk(key)
        if row is not None and row[0] != fp:
            self._missed[key] = row[1]  # its signatures spare the re-walk what did not change
        recalled = self._recalled(row, fp, unpack)
        if recalled is not None:
            self._verified[key] = fp
        return recalled  # type: ignore[no-any-return]

    def previous(self, ctx_dir: str, df_rel: str | None) -> dict[str, tuple[Any, ...]]:
        """After a miss: the files of the walk stored before, as stat-cache rows (``signatures``)."""
        return stored_signatures(ctx_dir, self._missed.pop(key_of(ctx_dir, df_rel), None))

    def _recalled(self, row: tuple[str, bytes] | None, fp: str, decode: Any) -> Any:
        """``decode`` of a stored memo remembered under ``fp``, or None."""
        if row is None or row[0] != fp:
            return None
        try:
            recalled = decode(row[1])
        except (ValueError, EOFError, TypeError):
            return None  # unreadable: a miss, and the next save replaces it
        self.hits += 1
        return recalled

    def remember(self, ctx_dir: str, df_rel: str | None, fp: str, entries: list[Any],
                 items: Iterable[Item] = ()) -> Recalled | None:
        """Keep ``entries`` (and the signatures of their files, from the walk's ``items``) to be
        saved under ``fp``; their rows as the key encodes them (None for a cache that cannot be
        written: nothing is kept)."""
        if self.cache.read_only:
            return None
        blob, rows = pack(entries, items)
        self._keep(key_of(ctx_dir, df_rel), fp, blob, ctx_dir, df_rel)
        return rows

    def _keep(self, key: str, fp: str, blob: bytes, ctx_dir: str, df_rel: str | None) -> None:
        if self.cache.read_only:
            return
        self.new[key] = (fp, blob, ctx_dir, df_rel, self.order.get(key, len(self.order)))
        self._verified[key] = fp
        self._pending += len(blob)
        if self._pending > FLUSH_BYTES:  # saved as they come, not all held until the plan ends
            self.save()

    def save(self) -> None:
        """Save the walks remembered so far (the plan saves the rest when it ends)."""
        self.cache.save_walks(self.new)
        self.new, self._pending = {}, 0
        if self.sync is not None and self._verified:  # each walk verified after the sync: exact as of its token
            mark = f"{MARK}/{self.sync.token}"
            self.cache.save_walk_marks([(key, fp, mark) for key, fp in self._verified.items()])
        self._verified = {}
        if self.new_inputs:
            self.cache.save_inputs_memos(self.new_inputs)
            self.new_inputs = {}

    def recall_inputs(self, key: str, fp: str) -> tuple[list[list[Any]], bytes] | None:
        """The `inputs` rows remembered under ``fp`` and their encoding as the key writes the
        ``inputs`` field, or None."""
        return self._recalled(self.cache.inputs_memo(key), fp, _unpack_inputs)  # type: ignore[no-any-return]

    def remember_inputs(self, key: str, fp: str, rows: list[list[Any]], encoded: bytes) -> None:
        """Keep `inputs` rows (and their encoding) to be saved under ``fp``."""
        if not self.cache.read_only:
            self.new_inputs[key] = (fp, marshal.dumps((rows, encoded)))

    def close(self) -> None:
        if self.helper is not None:
            self.helper.close()
            self.helper = None


def key_of(ctx_dir: str, df_rel: str | None) -> str:
    """A memo per context and Dockerfile (two images sharing a context send different files),
    as ASCII whatever bytes the names hold."""
    return xxhash.xxh3_128_hexdigest(f"{ctx_dir}\0{df_rel or ''}".encode("utf-8", "surrogateescape"))


class Walked(NamedTuple):
    """A context walked as the plan walks it (olly.context.scan, for a plain .dockerignore)."""

    ignore: bytes | None  # the .dockerignore as read
    specials: tuple[str, ...]  # what is sent from memory instead: .dockerignore, the Dockerfile
    items: list[Item]
    fp: str
    settled: bool


def walk_context(root: Path, ctx_dir: str, df_rel: str | None) -> Walked | None:
    """Walk a context outside the plan (olly.walkhelper); None if its .dockerignore is not a
    regular file: the plan's own rules (symlinks, errors) decide those."""
    base = root / ctx_dir
    shown = "" if ctx_dir == "." else ctx_dir + "/"
    try:
        if not stat.S_ISREG(os.lstat(base / ".dockerignore").st_mode):
            return None  # a symlink, a FIFO (open would wait forever), ...: the plan's own rules
        with open(base / ".dockerignore", "rb") as f:
            ignore_bytes: bytes | None = f.read()
    except FileNotFoundError:
        ignore_bytes = None
    display = f"{shown}.dockerignore"
    ignore = DockerIgnore.parse((ignore_bytes or b"").decode("utf-8", "surrogateescape"), source=display)
    specials = tuple(sorted(({".dockerignore"} if ignore_bytes is not None else set()) | ({df_rel} if df_rel else set())))
    started = time.time_ns()
    items = walk(root, ctx_dir, ignore, shown)
    fp, settled = fingerprint(ctx_dir, ignore_bytes, specials, items, started)
    return Walked(ignore_bytes, specials, items, fp, settled)


def fingerprint_context(root: Path, ctx_dir: str, df_rel: str | None) -> tuple[str, bytes | None, tuple[str, ...]] | None:
    """What the walk helper (olly.walkhelper) answers for a context: its fingerprint, and the
    .dockerignore bytes and in-memory files it assumed; None if it leaves that to the plan."""
    walked = walk_context(root, ctx_dir, df_rel)
    return None if walked is None else (walked.fp, walked.ignore, walked.specials)
