"""File content hashing with a stat cache.

A file is re-read only when its stat signature (size, mtime, inode, ctime, mode)
differs from the cached one. Git's "racily clean" problem is guarded: a hash is
cached only if the file's mtime/ctime are safely older than the moment hashing
started, so a same-size rewrite within the same timestamp tick is always seen.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import xxhash

from olly import failpoints
from olly.errors import OllyError

# Timestamps newer than (hash start - RACY_NS) are not trusted: covers filesystems
# with coarse (up to 2 s) timestamp granularity.
RACY_NS = 2_000_000_000
CHUNK = 1 << 20
SMALL = 1 << 16  # below the allocator's mmap threshold (128 KiB)


def hash_bytes(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def _signature(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, st.st_mode)


class FileHasher:
    """Hashes workspace files, reusing cached hashes whose stat signature matches.

    ``known`` maps a workspace-relative path to ``(size, mtime_ns, ino, ctime_ns, mode,
    hash)``: a dict, or the cache's lazy view (olly.cache.StatView), which loads the rows of
    a directory when :meth:`preload` names it and keeps memory to what is being planned."""

    def __init__(self, root: Path, known: Any) -> None:
        self.root = root
        self._base = os.path.join(os.fspath(root), "")  # str joins: no pathlib per file
        self.known = known
        self.updates: dict[str, tuple[Any, ...]] = {}  # path -> (path, size, mtime_ns, ino, ctime_ns, mode, hash)
        self.forget: list[str] = []
        # After a remembered walk missed: its files' rows (olly.walkmemo.signatures), newer than
        # any the stat cache may still hold for them.
        self.previous: dict[str, tuple[Any, ...]] | None = None
        # Rows of remembered contexts are not saved (``held``) unless something else in this
        # plan hashes the same files (an `inputs` glob, a scan by reach, a chart): it needs them.
        self.walking = False  # set while a context walk hashes: its files may be held
        self.claimed: set[str] = set()  # files hashed for something else
        self.held_rows: dict[str, tuple[Any, ...]] = {}
        self.files_read = 0
        self.walks: Any = None  # a plan's olly.walkmemo.Memo: whole context walks recalled, not re-keyed

    def preload(self, prefix: str) -> None:
        """Planning is about to look at ``prefix`` (a directory, "" = all): a lazy view loads it."""
        load = getattr(self.known, "preload", None)
        if load is not None:
            load(prefix)

    def hash(self, rel: str, st: os.stat_result) -> str:
        """Content hash of workspace-relative file ``rel`` whose lstat is ``st``."""
        restored = None
        if not self.walking:
            self.claimed.add(rel)
            if self.held_rows and rel in self.held_rows:
                self.updates[rel] = restored = self.held_rows.pop(rel)
        if self.previous:  # after a miss, the stored walk's row: it may match where a stat row does not
            prev = self.previous.get(rel)
            if prev is not None and _signature(st) == prev[:5]:
                return str(prev[5])
        cached = restored[1:] if restored is not None else self.known.get(rel)  # a lazy view may have let it go
        if (cached is not None and cached[1] == st.st_mtime_ns and cached[3] == st.st_ctime_ns
                and cached[0] == st.st_size and cached[2] == st.st_ino and cached[4] == st.st_mode):
            return str(cached[5])
        started = time.time_ns()
        digest = hash_file(self._base + rel, rel, st.st_size)
        self.files_read += 1
        failpoints.hit("hash")
        if max(st.st_mtime_ns, st.st_ctime_ns) < started - RACY_NS:
            row = (*_signature(st), digest)
            self.updates[rel] = (rel, *row)  # a stat-cache row: olly.cache.save_stats
            self.known[rel] = row
        elif cached is not None:
            self.forget.append(rel)
            self.known.pop(rel, None)
        return digest

    def held(self, ctx_dir: str, entries: list[Any]) -> None:
        """``entries`` (olly.context.Entry) of ``ctx_dir`` were remembered with their files'
        signatures (olly.walkmemo): their stat rows need not be saved as well, unless something
        else hashed them (``claimed``); one hashing them later takes its row back (``hash``)."""
        prefix, pop, claimed = "" if ctx_dir == "." else ctx_dir + "/", self.updates.pop, self.claimed
        for e in entries:
            if e.type == "f" and (path := prefix + e.path) not in claimed:
                row = pop(path, None)
                if row is not None:
                    self.held_rows[path] = row


def hash_file(path: str | Path, display: str, size: int = -1) -> str:
    """xxh3-128 of a file's content, read to EOF. ``size``: what the caller's lstat says, so the
    first read asks for just that (+1): ``os.read(fd, n)`` allocates n bytes before reading, and
    a 1 MB buffer per call costs an mmap, page faults and a munmap — as much as the rest of
    hashing a small file. os.open/os.read: builtin open() builds a buffered file object per
    call, three times the cost for the small files a context is made of."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            data = os.read(fd, size + 1 if 0 <= size < CHUNK else CHUNK)
            more = os.read(fd, SMALL) if data else b""  # a short read is not EOF: an empty one is
            if not more:
                return xxhash.xxh3_128_hexdigest(data)
            h = xxhash.xxh3_128(data)
            h.update(more)
            while data := os.read(fd, CHUNK):
                h.update(data)
            return h.hexdigest()
        finally:
            os.close(fd)
    except PermissionError:
        raise OllyError("unreadable-file", f"{display}: permission denied (fix its permissions, or exclude it from the build)")
    except OSError as exc:
        raise OllyError("unreadable-file", f"{display}: cannot read: {exc.strerror}")
