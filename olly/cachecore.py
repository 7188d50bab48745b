"""What olly.cache and olly.memotables share: sqlite failures as one OllyError, and paths
as sqlite stores them (text when UTF-8, raw bytes otherwise)."""

from __future__ import annotations

import functools
import sqlite3
from typing import Any, Callable, TypeVar

from olly.errors import OllyError

F = TypeVar("F", bound=Callable[..., Any])


def guarded(method: F) -> F:
    """sqlite failures (disk full, I/O error, corruption found late) become one OllyError."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            text = str(exc)
            if "full" in text or "disk I/O" in text or isinstance(exc, sqlite3.OperationalError):
                raise OllyError("cache-write-failed", f"cache database {self.path}: {text}; nothing was recorded") from exc
            raise self._corrupt(exc) from exc

    return wrapper  # type: ignore[return-value]


def path_in(path: str) -> str | bytes:
    """A path for sqlite: text when it is valid UTF-8, else its raw bytes (a BLOB)."""
    if path.isascii():  # most paths; a flag of the string, no encoding
        return path
    try:
        return path.encode("utf-8").decode("utf-8")
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogateescape")


def path_out(value: str | bytes) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value
