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

The walk itself is system calls and a Python loop: one core manages ~300,000 entries a
second. A plan of several remembered contexts has a helper process (``Prefetch``, plain
``python -I -S``: nothing shared, no fork) fingerprint some of them while the plan works on
the others; the plan takes a helper's fingerprint only for the very walk it would have made.
"""

from __future__ import annotations

import marshal
import os
import stat
import struct
import sys
import time
from pathlib import Path
from typing import IO, Any, Iterable

import xxhash

from olly.dockerignore import DockerIgnore
from olly.errors import OllyError

SCHEMA = 2  # of the fingerprint and the stored entries: a change makes every memo a miss
RACY_NS = 2_000_000_000  # as olly.hashing (not imported: the helper process loads no more than it needs)
OWN_DIRS = (".cache/", "dist/")  # as olly.config.in_own_dir, for a context at the workspace root
_SIG = struct.Struct("<IQqqQ")  # mode, size, mtime_ns, ctime_ns, inode

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
    head = [str(SCHEMA), ctx_dir, "\0".join(sorted(specials)), "-" if ignore_bytes is None else ""]
    h.update("\0".join(head).encode("utf-8", "surrogateescape") + b"\0\0")
    h.update(ignore_bytes or b"")
    pack, isdir, line = _SIG.pack, stat.S_ISDIR, started_ns - RACY_NS
    settled = True
    for rel, st in items:
        h.update(rel.encode("utf-8", "surrogateescape") + b"\0")
        h.update(pack(st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
        if settled and (st.st_mtime_ns >= line or st.st_ctime_ns >= line) and not isdir(st.st_mode):
            settled = False
    return h.hexdigest(), settled


def pack_entries(entries: list[tuple[Any, ...]]) -> bytes:
    """Entries (olly.context.Entry tuples, ``data`` None: none is held in memory) as stored:
    marshal is the fastest to load."""
    return marshal.dumps([tuple(e) for e in entries])


def unpack_entries(blob: bytes) -> list[tuple[Any, ...]]:
    """Entry tuples (path, type, executable, size, digest, data, keyed), as stored."""
    rows = marshal.loads(blob)
    if not isinstance(rows, list) or (rows and not (isinstance(rows[0], tuple) and len(rows[0]) == 7)):
        raise ValueError("not a list of entries")  # e.g. written by another olly: a miss
    return rows


class Memo:
    """The plan's side: remembered walks read from the cache, new ones kept until the plan
    saves them (``Cache.save_walks``), and the helper's fingerprints (``prefetch``)."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache
        self.new: dict[str, tuple[str, bytes]] = {}  # memo key -> (fingerprint, packed entries)
        self.prefetch: Prefetch | None = None
        self.hits = 0

    def start(self, root: Path, contexts: list[tuple[str, str | None]]) -> None:
        """Have a helper fingerprint some of ``contexts`` ((directory, Dockerfile inside it or
        None), in planning order) that were remembered before, so the plan and the helper walk
        side by side. Nothing for fewer than two."""
        known = self.cache.walk_keys()
        remembered = [c for c in dict.fromkeys(contexts) if key_of(*c) in known]
        if len(remembered) < 2:
            return
        # The helper only walks; the plan also hashes, keys and asks the engine: the helper
        # takes two contexts of every three (measured best on 2 cores: 100k files, 200 contexts).
        jobs = [(ctx, df, "" if ctx == "." else ctx + "/") for i, (ctx, df) in enumerate(remembered) if i % 3]
        self.prefetch = Prefetch(root, jobs)

    def prefetched(self, ctx_dir: str, df_rel: str | None, ignore_bytes: bytes | None, specials: Iterable[str]) -> str | None:
        """The helper's fingerprint of this context, if it made the very walk the plan would."""
        if self.prefetch is None:
            return None
        answer = self.prefetch.take(ctx_dir, df_rel)
        if answer is None or answer[1] != ignore_bytes or answer[2] != tuple(sorted(specials)):
            return None
        return answer[0]

    def recall(self, ctx_dir: str, df_rel: str | None, fp: str) -> list[tuple[Any, ...]] | None:
        row = self.cache.walk(key_of(ctx_dir, df_rel))
        if row is None or row[0] != fp:
            return None
        try:
            entries = unpack_entries(row[1])
        except (ValueError, EOFError, TypeError):
            return None  # unreadable: a miss, and the next save replaces it
        self.hits += 1
        return entries

    def remember(self, ctx_dir: str, df_rel: str | None, fp: str, entries: list[tuple[Any, ...]]) -> None:
        self.new[key_of(ctx_dir, df_rel)] = (fp, pack_entries(entries))

    def close(self) -> None:
        if self.prefetch is not None:
            self.prefetch.close()
            self.prefetch = None


def key_of(ctx_dir: str, df_rel: str | None) -> str:
    """A memo per context and Dockerfile: two images sharing a context send different files."""
    return f"{ctx_dir}\0{df_rel or ''}"


# -- the helper process ---------------------------------------------------------------


class Prefetch:
    """Fingerprints some contexts in a helper process while the plan works on others.

    ``jobs``: (context directory, the Dockerfile's context-relative path or None, shown prefix).
    Answers come in job order; :meth:`take` reads up to the one asked for. A helper that fails
    or answers nonsense only costs the plan its own walk of those contexts."""

    def __init__(self, root: Path, jobs: list[tuple[str, str | None, str]]) -> None:
        self.root = root
        self._order = [(job[0], job[1]) for job in jobs]
        self._answers: dict[tuple[str, str | None], tuple[str, str, tuple[str, ...]] | None] = {}
        self._proc: Any = None  # the helper's subprocess.Popen
        import pickle
        import subprocess  # only a plan with a helper loads these

        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _HELPER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, close_fds=True)
            assert self._proc.stdin is not None
            path = [str(Path(__file__).resolve().parent.parent), *(p for p in sys.path if p)]  # olly, xxhash
            pickle.dump({"path": path, "root": os.fspath(root), "jobs": jobs}, self._proc.stdin)
            self._proc.stdin.close()
        except (OSError, ValueError, pickle.PickleError):
            self.close()

    def take(self, ctx_dir: str, df_rel: str | None) -> tuple[str, bytes | None, tuple[str, ...]] | None:
        """The helper's (fingerprint, .dockerignore bytes it read, specials) for this job, or None."""
        job = (ctx_dir, df_rel)
        while job not in self._answers and self._proc is not None and job in self._order:
            want = self._order.pop(0)
            self._answers[want] = self._read()
        answer = self._answers.pop(job, None)
        if answer is None:
            return None
        fp, ignore, specials = answer
        return fp, (None if ignore == "-" else bytes.fromhex(ignore)), tuple(specials)

    def _read(self) -> Any:
        import pickle

        try:
            assert self._proc is not None and self._proc.stdout is not None
            answer = pickle.load(self._proc.stdout)
            if isinstance(answer, tuple) and len(answer) == 3:
                return answer
        except Exception:  # the helper died or wrote garbage: the plan walks for itself
            pass
        self.close()
        return None

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
            proc.kill()
            proc.wait()


# What the helper runs: olly's own path, then answer each job in order.
_HELPER = ("import pickle, sys; job = pickle.load(sys.stdin.buffer); sys.path[:0] = job['path']; "
           "from olly.walkmemo import serve; serve(job, sys.stdout.buffer)")


def serve(job: dict[str, Any], out: IO[bytes]) -> None:
    """In the helper: fingerprint each job's context, write one answer per job (None: could not)."""
    import pickle

    root = Path(job["root"])
    for ctx_dir, df_rel, shown in job["jobs"]:
        try:
            answer: Any = _fingerprint_context(root, ctx_dir, df_rel, shown)
        except (OllyError, OSError, ValueError):
            answer = None  # the plan walks it and reports what is wrong
        pickle.dump(answer, out)
        out.flush()


def _fingerprint_context(root: Path, ctx_dir: str, df_rel: str | None, shown: str) -> tuple[str, str, tuple[str, ...]] | None:
    base = root / ctx_dir
    try:
        if stat.S_ISLNK(os.lstat(base / ".dockerignore").st_mode):
            return None  # the plan reads a symlinked .dockerignore only if it stays in the context
        with open(base / ".dockerignore", "rb") as f:
            ignore_bytes: bytes | None = f.read()
    except FileNotFoundError:
        ignore_bytes = None
    display = f"{shown}.dockerignore"
    ignore = DockerIgnore.parse((ignore_bytes or b"").decode("utf-8", "surrogateescape"), source=display)
    specials = tuple(sorted(({".dockerignore"} if ignore_bytes is not None else set()) | ({df_rel} if df_rel else set())))
    started = time.time_ns()
    fp, _ = fingerprint(ctx_dir, ignore_bytes, specials, walk(root, ctx_dir, ignore, shown), started)
    return fp, ("-" if ignore_bytes is None else ignore_bytes.hex()), specials
