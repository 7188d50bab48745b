"""The stat cache as a FileHasher reads it during a plan: one directory at a time."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from olly.cache import Cache


# A cache database up to this size has its whole stat table loaded at once (bounded by the
# file): below it, one query per build context costs more than it saves (5,000 small images).
WHOLE_BYTES = 4 << 20


class StatView:
    """The stat cache as FileHasher reads it: ``path -> (size, mtime_ns, ino, ctime_ns, mode,
    hash)``, loaded one directory at a time.

    :meth:`preload` loads the rows below a directory (a build context) and drops the ones
    loaded before, so memory follows the context being planned, not the workspace; a path
    outside the loaded directory is looked up on its own. A row that is missing or stale
    only costs a re-read of the file (FileHasher compares every signature), never a wrong
    hash."""

    def __init__(self, cache: Cache) -> None:
        self._cache = cache
        self._under: str | None = None  # what loaded paths start with: "dir/", "" = everything; None = nothing
        self._rows: dict[str, tuple[Any, ...]] = {}
        self._own: dict[str, tuple[Any, ...] | None] = {}  # single lookups, and rows set outside the loaded directory
        self._small: bool | None = None  # whether the whole stat table is loaded at once

    def preload(self, prefix: str) -> None:
        prefix = prefix.strip("/") if prefix not in ("", ".") else ""
        if self._covers(prefix + "/"):
            return
        if self._under is None and self._small is None:
            self._small = self._cache._db_bytes() <= WHOLE_BYTES
        if self._small:
            prefix = ""  # a small stat cache: one query for all, not one per context (5,000 images)
        self._under, self._rows = None, {}  # the previous directory's rows go first
        self._rows = self._cache._stat_rows(prefix)
        self._under = prefix + "/" if prefix else ""

    def _covers(self, path: str) -> bool:
        under = self._under
        return under is not None and path.startswith(under)

    def get(self, path: str) -> tuple[Any, ...] | None:
        row = self._rows.get(path)
        if row is not None or self._covers(path):
            return row
        if path not in self._own:
            self._own[path] = self._cache._stat_row(path)
        return self._own[path]

    def __setitem__(self, path: str, row: tuple[Any, ...]) -> None:
        (self._rows if self._covers(path) else self._own)[path] = row

    def pop(self, path: str, default: Any = None) -> Any:
        if self._covers(path):
            return self._rows.pop(path, default)
        self._own[path] = None  # looked up already: it is gone
        return default
