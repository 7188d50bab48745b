"""Sending a planned context: the tar stream olly builds from, and what the classic
builder's layer cache would misread in it.

``TarStream`` sends exactly the planned entries (olly.context.scan) with normalised headers
and re-hashes every keyed file as it streams, so a file edited after planning is detected
instead of being built under the planned key.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any, Iterator

import xxhash

from olly import failpoints
from olly.context import Context, Entry
from olly.hashing import CHUNK
from olly.lazy import lazy

tarfile: Any = lazy("tarfile")  # only a build streams a context: a plan does not load it

# Fixed mtime of every tar entry (2000-01-01T00:00:00Z): keeps images reproducible
# and stays after 1980, which zip-based tools (wheels, jars) inside RUN steps need.
TAR_MTIME = 946684800


def links_the_layer_cache_misreads(ctx: Context) -> list[str]:
    """Symlinks whose retargeting the classic builder's layer cache does not see.

    The classic builder hashes a ``COPY``'d symlink through what it resolves to inside the
    context; a link that dangles in the context as sent, leaves it, or resolves to anything
    but a regular file (checked: dangling and outside links are hashed by path alone) can be
    retargeted without invalidating the cached layer, so the image keeps the old link. Only
    a relative link to a regular file of the planned context is known to be hashed right.
    """
    by_path = {e.path: e for e in ctx.entries}
    bad = []
    for entry in ctx.entries:
        if entry.type != "l":
            continue
        target = entry.digest
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(entry.path), target))
        hit = by_path.get(resolved)
        if target.startswith("/") or resolved == ".." or resolved.startswith("../") or hit is None or hit.type != "f":
            bad.append(entry.path)
    return bad


class TarStream:
    """Streams a planned context as a tar, verifying every file against its plan.

    Iterate it to get the bytes; afterwards ``changed`` lists files whose bytes
    differed from the planned hash (the build must then not be recorded).
    """

    def __init__(self, root: Path, ctx: Context) -> None:
        self.base = root / ctx.dir
        self.ctx = ctx
        self.changed: list[str] = []

    def __iter__(self) -> Iterator[bytes]:
        sent = sorted([*self.ctx.entries, *self.ctx.carried], key=lambda e: e.path)
        for entry in [*sent, *self.ctx.extras]:
            yield from self._emit(entry)
            failpoints.hit("stream")
        yield b"\0" * (2 * tarfile.BLOCKSIZE)

    def _emit(self, entry: Entry) -> Iterator[bytes]:
        info = tarfile.TarInfo(entry.path)
        info.mtime, info.uid, info.gid, info.uname, info.gname = TAR_MTIME, 0, 0, "", ""
        if entry.type == "d":
            info.type, info.mode = tarfile.DIRTYPE, 0o755
        elif entry.type == "l":
            info.type, info.mode, info.linkname = tarfile.SYMTYPE, 0o777, entry.digest
        else:
            info.type, info.mode, info.size = tarfile.REGTYPE, 0o755 if entry.executable else 0o644, entry.size
        yield info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
        if entry.type != "f":
            return
        if entry.data is not None:
            yield entry.data
        else:
            yield from self._file_bytes(entry)
        pad = -entry.size % tarfile.BLOCKSIZE
        if pad:
            yield b"\0" * pad

    def _file_bytes(self, entry: Entry) -> Iterator[bytes]:
        """Exactly ``entry.size`` bytes of the file, hashed on the way."""
        h = xxhash.xxh3_128()
        left = entry.size
        try:
            with open(self.base / entry.path, "rb") as f:
                while left > 0:
                    chunk = f.read(min(CHUNK, left))
                    if not chunk:
                        break
                    h.update(chunk)
                    left -= len(chunk)
                    yield chunk
                grew = bool(f.read(1))
        except OSError:
            grew = True  # vanished or unreadable since planning: treat as changed
        if left > 0:
            yield b"\0" * left  # keep the tar well-formed; the build is discarded anyway
        if entry.keyed and (grew or left > 0 or h.hexdigest() != entry.digest):
            self.changed.append(entry.path)  # an unkeyed file cannot change the image: no check
