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


def hash_bytes(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def _signature(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, st.st_mode)


class FileHasher:
    """Hashes workspace files, reusing cached hashes whose stat signature matches."""

    def __init__(self, root: Path, known: dict[str, tuple[Any, ...]]) -> None:
        self.root = root
        self.known = known
        self.updates: dict[str, dict[str, Any]] = {}
        self.forget: list[str] = []
        self.files_read = 0

    def hash(self, rel: str, st: os.stat_result) -> str:
        """Content hash of workspace-relative file ``rel`` whose lstat is ``st``."""
        sig = _signature(st)
        cached = self.known.get(rel)
        if cached is not None and tuple(cached[:5]) == sig:
            return str(cached[5])
        started = time.time_ns()
        digest = hash_file(self.root / rel, rel)
        self.files_read += 1
        failpoints.hit("hash")
        newest = max(st.st_mtime_ns, st.st_ctime_ns)
        if newest < started - RACY_NS:
            row = dict(zip(("size", "mtime_ns", "ino", "ctime_ns", "mode"), sig), path=rel, hash=digest)
            self.updates[rel] = row
            self.known[rel] = (*sig, digest)
        elif cached is not None:
            self.forget.append(rel)
            self.known.pop(rel, None)
        return digest


def hash_file(path: Path, display: str) -> str:
    h = xxhash.xxh3_128()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
    except PermissionError:
        raise OllyError("unreadable-file", f"{display}: permission denied (fix its permissions, or exclude it from the build)")
    except OSError as exc:
        raise OllyError("unreadable-file", f"{display}: cannot read: {exc.strerror}")
    return h.hexdigest()
