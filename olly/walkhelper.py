"""The second core for a plan's walks: a helper process fingerprinting remembered contexts.

Walking a context is system calls and a Python loop (about 0.3 s for 100,000 entries on one
core here), so a plan of remembered contexts (olly.walkmemo) has a helper walk some of them:

- **Started early.** ``olly plan`` and ``olly make`` start it as soon as they know the workspace,
  before olly's modules load, when the cache database is big enough to hold walks worth it
  (``MIN_DB_BYTES``). It is plain ``python -I -S``: nothing shared with olly's process, no fork.
- **From the other end.** It reads the remembered contexts from the cache (table ``walk_memo``,
  in the order the last plan took them) and fingerprints them from the last to the first, while
  the plan takes them from the first: the two meet in the middle.
- **Never waited for.** The plan takes a helper's answer only if it is already there, and only
  for the very walk it would make itself (same ``.dockerignore`` bytes, same in-memory files);
  otherwise it walks that context itself and tells the helper to skip it. A helper that is slow,
  fails or answers nonsense costs the plan nothing but its own walks.
- **Never stale.** Each answer says when its walk began; ``olly plan`` takes none that began
  before the command did, ``olly make`` none that began before it held the workspace lock (after
  any wait for another olly: an edit made meanwhile is walked by the plan itself). A helper
  serves one command: the CLI stops any helper no plan claimed when the command ends.

- **First walks too.** A context with no remembered walk (every context of a first plan, with
  no cache yet) is walked *and hashed* by the helper, from BUILD.toml's images read as a hint
  (``_hinted``: no validation; a wrong guess only walks something no plan asks for). Its answer
  carries the walk as ``walkmemo.pack`` stores it (entries, key rows, the files' signatures),
  computed by olly's own code (``olly.context.hashed_entries``); the plan recalls it as it would
  a remembered walk, and only when the walk was settled (no racy file).

Answers are marshalled ``(key, began, fingerprint, .dockerignore bytes, in-memory files, first)``
tuples, each after its 8-byte length, ``first`` None or where a first walk's result lies in a
file the plan made for it (unlinked: nothing is left behind); big results never sit in the pipe,
so the helper never waits for the plan to read. The plan writes the keys to skip, one per line.
"""

from __future__ import annotations

import marshal
import os
import select
import sys
import time
from pathlib import Path
from typing import IO, Any

MIN_DB_BYTES = 1 << 20  # below this, the remembered walks are too small for a process to pay
BUILD_FILE = "BUILD.toml"  # as olly.config: a different answer here only forgoes the helper
Answer = tuple[str, bytes | None, tuple[str, ...]]
FirstWalk = tuple[bytes, int]  # the walk as olly.walkmemo.pack stores it, and how many files were read

_RUNNING: dict[str, Helper] = {}


def start(directory: str | None = None, watched: bool = False) -> None:
    """Start the helper for the workspace around ``directory`` (default: the current one) if
    its cache may hold walks worth it: not if a watcher answered (``watched``: the plan takes
    the walks it vouches for, and walks the few others itself). For the CLI: nothing here
    may fail a command."""
    try:
        root = find_root(directory)
        if root is None:
            return
        stop(root)  # one left by an earlier command in this process: never reused
        try:
            worth = not watched and os.stat(root / ".cache" / "olly.db").st_size >= MIN_DB_BYTES
        except FileNotFoundError:
            worth = True  # no cache yet: a first plan, every context walked and hashed
        if worth:
            _RUNNING[str(root)] = Helper(root)
    except (OSError, ValueError):
        pass


def find_root(directory: str | None = None) -> Path | None:
    """The workspace around ``directory`` (default: the current one), as olly.config finds it
    (also for olly.watchsync: both run before olly's modules load)."""
    here = Path(directory or os.getcwd()).resolve()
    return next((d for d in (here, *here.parents) if (d / BUILD_FILE).is_file()), None)


def claim(root: Path) -> Helper | None:
    """The helper started for ``root`` (the plan takes it over), or None."""
    return _RUNNING.pop(str(root.resolve()), None)


def fresh_from_now(root: Path) -> None:
    """Answers for ``root`` must come from walks begun from now on (``olly make`` holds the
    workspace lock now, perhaps after waiting for it: files may have changed meanwhile)."""
    helper = _RUNNING.get(str(root.resolve()))
    if helper is not None:
        helper.since_ns = time.monotonic_ns()


def stop(root: Path | None = None) -> None:
    """Stop the helper of ``root`` (default: every one) that no plan claimed."""
    for key in [str(root.resolve())] if root is not None else list(_RUNNING):
        helper = _RUNNING.pop(key, None)
        if helper is not None:
            helper.close()


class Helper:
    """The plan's handle on a running helper."""

    def __init__(self, root: Path) -> None:
        import subprocess  # only a plan with a helper loads it

        self._answers: dict[str, Answer] = {}
        self._firsts: dict[str, tuple[int, int]] = {}  # key -> where its first walk lies in self._file
        self._buffer = b""
        self._proc: Any = None
        self._file = _scratch_file()
        # Answers from walks begun earlier are not taken. The monotonic clock (system-wide,
        # so the helper's readings compare) cannot step back as the wall clock can.
        self.since_ns = time.monotonic_ns()
        # Crash tests arm failpoints in olly's own process: a helper hitting one is not that crash.
        env = {k: v for k, v in os.environ.items() if k != "OLLY_FAILPOINT"}
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", HELPER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, close_fds=True, bufsize=0, env=env,
                pass_fds=() if self._file is None else (self._file,))
            path = [str(Path(__file__).resolve().parent.parent), *(p for p in sys.path if p)]  # olly, xxhash
            job = marshal.dumps({"path": path, "root": os.fspath(root), "file": self._file})
            self._proc.stdin.write(len(job).to_bytes(8, "little") + job)
            # From now on the plan never blocks on the helper: a skip that does not fit in the
            # pipe (the helper is busy with one long walk) is dropped; skips only save work.
            os.set_blocking(self._proc.stdin.fileno(), False)
        except (OSError, ValueError):
            self.close()

    def answer(self, key: str) -> Answer | None:
        """The helper's answer for memo key ``key`` if it has arrived (never waits)."""
        self._drain()
        return self._answers.pop(key, None)

    def first_walk(self, key: str) -> FirstWalk | None:
        """The helper's first walk of ``key``, when its answer (just taken) carried one."""
        where = self._firsts.pop(key, None)
        if where is None or self._file is None:
            return None
        try:
            data = os.pread(self._file, where[1], where[0])
            blob, files_read = marshal.loads(data)
            if not (isinstance(blob, bytes) and isinstance(files_read, int)):
                raise ValueError("not a first walk")
        except (OSError, ValueError, EOFError, TypeError):
            return None  # the plan walks it itself
        return blob, files_read

    def skip(self, key: str) -> None:
        """The plan walks ``key`` itself: the helper need not. Never waits (see __init__): a
        line cut short by a full pipe only makes the helper walk one context for nothing."""
        try:
            if self._proc is not None:
                os.write(self._proc.stdin.fileno(), b"\n" + key.encode() + b"\n")
        except BlockingIOError:
            pass
        except OSError:  # it has ended: nothing to tell
            self._end()

    def _drain(self) -> None:
        fd = self._proc.stdout.fileno() if self._proc is not None else None
        while fd is not None and select.select([fd], [], [], 0)[0]:
            data = os.read(fd, 1 << 16)
            if not data:
                self._end()  # done (or dead): what it answered stays usable
                break
            self._buffer += data
        while len(self._buffer) >= 8:
            size = int.from_bytes(self._buffer[:8], "little")
            if len(self._buffer) < 8 + size:
                break
            raw, self._buffer = self._buffer[8:8 + size], self._buffer[8 + size:]
            try:
                key, began, fp, ignore, specials, first = marshal.loads(raw)
                if not (isinstance(fp, str) and (ignore is None or isinstance(ignore, bytes))
                        and isinstance(specials, tuple) and isinstance(began, int)
                        and (first is None or (isinstance(first, tuple) and len(first) == 2))):
                    raise ValueError("not an answer")
                if began >= self.since_ns:  # an older walk may have missed an edit: not taken
                    self._answers[str(key)] = (fp, ignore, specials)
                    if first is not None:
                        self._firsts[str(key)] = (int(first[0]), int(first[1]))
            except (ValueError, EOFError, TypeError):
                self._end()  # nonsense: the plan walks everything else itself
                return

    def close(self) -> None:
        """Stop the helper and drop what it found (the plan is done with it)."""
        self._end()
        if self._file is not None:
            os.close(self._file)
            self._file = None

    def _end(self) -> None:
        """Stop the process; the first walks it has announced stay readable until ``close``."""
        proc, self._proc = self._proc, None
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
            proc.kill()
            proc.wait()


# What the helper runs: read its job (length, then marshal), put olly on its path, serve.
HELPER = """
import marshal, os, sys
def read(n):
    out = b""
    while len(out) < n:
        data = os.read(0, n - len(out))
        if not data:
            raise SystemExit(0)
        out += data
    return out
job = marshal.loads(read(int.from_bytes(read(8), "little")))
sys.path[:0] = job["path"]
from olly.walkhelper import serve
serve(job, sys.stdout.buffer)
"""


def serve(job: dict[str, Any], out: IO[bytes]) -> None:
    """In the helper: fingerprint the remembered contexts, last planned first, then walk and hash
    the ones BUILD.toml names that have no remembered walk (into ``job["file"]``), skipping those
    the plan walks itself; one answer each (none for a context it leaves to the plan)."""
    from olly.walkmemo import fingerprint_context, key_of

    root = Path(job["root"])
    rows, fresh = _remembered(root)
    todo = [(key, bytes(c).decode("utf-8", "surrogateescape"), None if d is None else bytes(d).decode("utf-8", "surrogateescape"), False)
            for key, c, d in rows]
    file = job.get("file")
    if isinstance(file, int) and fresh:
        todo += [(key_of(c, d), c, d, True) for c, d in reversed(_hinted(root))]
    skip: set[bytes] = set()
    pending, offset = b"", 0
    for key, ctx, df, first in todo:
        while select.select([0], [], [], 0)[0]:
            data = os.read(0, 1 << 16)
            if not data:
                return  # the plan is done
            *keys, pending = (pending + data).split(b"\n")
            skip.update(keys)
        if key.encode() in skip:
            continue
        began = time.monotonic_ns()
        try:
            answer, result = first_walk(root, ctx, df) if first else (fingerprint_context(root, ctx, df), None)
        except Exception:  # the plan walks it and reports what is wrong
            continue
        if answer is None:
            continue
        where = None
        if result is not None:
            data = marshal.dumps(result)
            _write_at(file, data, offset)
            where, offset = (offset, len(data)), offset + len(data)
        data = marshal.dumps((key, began, *answer, where))
        out.write(len(data).to_bytes(8, "little") + data)
        out.flush()


def _remembered(root: Path) -> tuple[list[tuple[Any, ...]], bool]:
    """The remembered contexts (last planned first), and whether the cache is fresh: no db, or
    one holding no walk and no stat row (a first plan, or a cache imported for CI). Only then
    are contexts walked first: later, a context without a remembered walk is mostly one the plan
    scans by what its Dockerfile reaches (never remembered), or one it is not asked to plan."""
    import sqlite3

    db = root / ".cache" / "olly.db"
    try:
        if not os.path.lexists(db):
            return [], True
        conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True, timeout=1)
        try:
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            rows = conn.execute("SELECT key, ctx_dir, df_rel FROM walk_memo ORDER BY seq DESC").fetchall() \
                if "walk_memo" in tables else []
            stats = "stat" in tables and conn.execute("SELECT 1 FROM stat LIMIT 1").fetchone() is not None
        finally:
            conn.close()
    except (sqlite3.Error, OSError, ValueError):
        return [], False  # unreadable here (a read-only cache, say): the plan does it all
    return rows, not rows and not stats


def first_walk(root: Path, ctx_dir: str, df_rel: str | None) -> tuple[Answer | None, FirstWalk | None]:
    """In the helper: the plan's own walk and hashing of a context (olly.context), its answer,
    and the walk as the plan would remember it (entries, key rows, the files' signatures);
    nothing for an unsettled walk (a file changed within RACY_NS: the plan walks it)."""
    from olly.context import hashed_entries
    from olly.hashing import FileHasher
    from olly.walkmemo import pack, walk_context

    walked = walk_context(root, ctx_dir, df_rel)
    if walked is None or not walked.settled:
        return None, None
    hasher = FileHasher(root, {})
    entries = hashed_entries(root, ctx_dir, walked.items, set(walked.specials), hasher)
    blob, _ = pack(entries, walked.items)
    return (walked.fp, walked.ignore, walked.specials), (blob, hasher.files_read)


def _hinted(root: Path) -> list[tuple[str, str | None]]:
    """The (context, Dockerfile in it) of each image BUILD.toml names, as olly.config resolves
    them for a valid file; a hint only: nothing is validated, a wrong one is never asked for."""
    import tomllib

    try:
        with open(root / BUILD_FILE, "rb") as f:
            images = tomllib.load(f).get("images")
        return _contexts(root, images)
    except (OSError, ValueError):  # unreadable, or a path realpath refuses (a NUL)
        return []


def _contexts(root: Path, images: Any) -> list[tuple[str, str | None]]:
    import posixpath

    from olly.walkmemo import OWN_DIRS

    out: dict[tuple[str, str | None], None] = {}
    real_root = os.path.realpath(root)
    for label, image in images.items() if isinstance(images, dict) else ():
        if isinstance(image, dict) and isinstance(ctx := image.get("context") or label, str) and ctx:
            ctx = posixpath.normpath(ctx)
            df = image.get("dockerfile") or posixpath.join(ctx, "Dockerfile")
            inside = os.path.commonpath([real_root, os.path.realpath(os.path.join(real_root, ctx))]) == real_root
            # What olly.config refuses is not walked: outside the workspace, or olly's own dirs.
            if isinstance(df, str) and df and inside and not (ctx + "/").startswith(("/", "../", *OWN_DIRS)):
                df = posixpath.normpath(df)
                out[(ctx, df if ctx == "." else df[len(ctx) + 1:] if df.startswith(ctx + "/") else None)] = None
    return list(out)


def _scratch_file() -> int | None:
    """An unlinked file for first walks (gone with its last descriptor, whatever happens), or
    None where the system has no O_TMPFILE: the helper then only fingerprints."""
    try:
        return os.open(os.environ.get("TMPDIR") or "/tmp", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except (AttributeError, OSError):
        return None


def _write_at(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
