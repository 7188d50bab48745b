"""A cache of BUILD.toml's schema validation, so a run whose BUILD.toml did not change never
imports pydantic (olly.configschema).

The entry is keyed by a hash (BLAKE2b) of exactly what decides the validation's result: the
BUILD.toml bytes, the schema's source (configschema.py) and the installed pydantic's version
file. Any change to one of them validates afresh, so the cache is exactly as strict as
validating every time. It caches only the schema step: everything olly.config checks
against the filesystem (paths, Dockerfiles, symlinks, globs) runs on every load.

The entry is a hint until checked: it is used only if its key matches and its payload hashes
to the checksum stored with it (a torn or hand-edited file is validated afresh). It is
written only into an existing ``.cache/`` (a plan never creates one just for this), via a
temporary file and a rename, and only for data that survives a JSON round trip unchanged.
"""

from __future__ import annotations

import json
import os
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import xxhash

FILE = "spec.json"
_SCHEMA_SOURCE = Path(__file__).with_name("configschema.py")


def _digest(*parts: bytes) -> str:
    h = xxhash.xxh3_128()  # an identity, not a secret: the hash olly keys with (no hashlib to load)
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))  # framed: no two part lists hash alike
        h.update(part)
    return h.hexdigest()


def _read(path: Path | str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _pydantic_version_file() -> bytes | None:
    """pydantic's ``version.py``, read without importing pydantic: an upgrade changes it."""
    try:
        spec = find_spec("pydantic")
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec else []
    return _read(os.path.join(locations[0], "version.py")) if locations else None


def key_for(build_file: bytes) -> str | None:
    """The cache key of validating ``build_file``; None when the schema's inputs cannot be
    read (e.g. an install without .py sources): then nothing is cached."""
    schema, pydantic = _read(_SCHEMA_SOURCE), _pydantic_version_file()
    if schema is None or pydantic is None:
        return None
    return _digest(build_file, schema, pydantic)


def lookup(cache_dir: Path, key: str | None) -> dict[str, Any] | None:
    """The validated spec stored for ``key``, if there is one and it checks out."""
    raw = _read(cache_dir / FILE) if key else None
    if raw is None:
        return None
    try:
        entry = json.loads(raw)
        payload = entry["spec"]
        ok = entry["key"] == key and entry["check"] == _digest(_canonical(payload))
    except (ValueError, KeyError, TypeError):
        return None
    return payload if ok and isinstance(payload, dict) else None


def store(cache_dir: Path, key: str | None, spec: dict[str, Any]) -> None:
    """Remember that ``key`` validated to ``spec``. Best effort: a failure only means the
    next run validates again."""
    if key is None or not cache_dir.is_dir():
        return
    try:
        text = _canonical(spec)
        if json.loads(text) != spec:  # e.g. a NaN in registry values (a datetime raises TypeError)
            return
    except (TypeError, ValueError):
        return
    entry = json.dumps({"key": key, "check": _digest(text), "spec": spec}).encode()
    import tempfile  # only when writing: a hit never pays for it

    try:
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".olly-tmp-spec-")
        with os.fdopen(fd, "wb") as f:
            f.write(entry)
        os.replace(tmp, cache_dir / FILE)
    except OSError:
        try:
            os.unlink(tmp)
        except (OSError, UnboundLocalError):
            pass


def _canonical(spec: Any) -> bytes:
    """The payload as stored: key order kept (it is the order of targets, and of errors)."""
    return json.dumps(spec).encode()
