"""Remembered results of pure checks, so a plan does not redo what it proved before.

A fact is the result of a pure function of its inputs (e.g. "this values.yaml, with these
image paths, is a valid chart file": a function of the file's bytes, which the stat cache
already names by digest). It is stored under a key that hashes *everything* deciding the
result (the inputs' digests, the checking code's source, the parser's version), so a hit is
exactly as strict as checking again; a miss just checks. Only successes are stored: an
error is always produced afresh, with its full message.

One small JSON file per kind under ``.cache/`` (never created just for this: written only
into an existing ``.cache/``), at most :data:`MAX_FACTS` entries, written via a temporary
file and a rename; anything unreadable is ignored (then the check runs).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import xxhash

MAX_FACTS = 256  # per kind: enough for every chart of a big workspace, small to read


def key_of(*parts: bytes | str) -> str:
    """A framed hash of ``parts`` (no two part lists hash alike)."""
    h = xxhash.xxh3_128()
    for part in parts:
        data = part.encode("utf-8", "surrogateescape") if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


def source_of(path: str | Path) -> bytes:
    """A file's bytes for a key (a module's source); b"" if unreadable, which still keys."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def _file(cache_dir: Path, kind: str) -> Path:
    return cache_dir / f"facts-{kind}.json"


def _load(cache_dir: Path, kind: str) -> dict[str, Any]:
    try:
        with open(_file(cache_dir, kind), "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def lookup(cache_dir: Path, kind: str, key: str) -> Any:
    """The value remembered for ``key``, or None."""
    return _load(cache_dir, kind).get(key)


def remember(cache_dir: Path, kind: str, key: str, value: Any) -> None:
    """Store ``value`` (JSON) under ``key``. Best effort: a failure means checking again."""
    if value is None or not cache_dir.is_dir():
        return
    facts = _load(cache_dir, kind)
    facts.pop(key, None)
    facts[key] = value  # newest last: the oldest are dropped first
    while len(facts) > MAX_FACTS:
        facts.pop(next(iter(facts)))
    import tempfile  # only when writing

    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".olly-tmp-facts-{kind}-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(facts, f)
        os.replace(tmp, _file(cache_dir, kind))
    except OSError:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
