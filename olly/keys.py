"""Target keys: the one small, pure place where a key is computed.

A key is xxh3-128 over a canonical, length-prefixed encoding of an explicit record
(a dict that always carries ``schema``). Nothing here touches the filesystem, the
clock, the locale or the engine, so the same record gives the same key everywhere.
The encoding is specified in docs/keys.md; golden tests pin its output.
"""

from __future__ import annotations

import struct
from typing import Any

import xxhash

# Bump when the meaning of a record changes: every key changes with it, on purpose.
KEY_SCHEMA = 5  # 5: `builder` (buildkit | classic); 4: `files` holds only what the Dockerfile can copy (olly.reach)

# Content tags use this many hex digits of the key (80 bits).
TAG_HEX = 20


_U64 = struct.Struct(">Q").pack
_I64 = struct.Struct(">q").pack
_SMALL = [_U64(n) for n in range(4096)]  # lengths and counts: most are small


def _u64(n: int) -> bytes:
    return _SMALL[n] if n < 4096 else _U64(n)


def encode(value: Any) -> bytes:
    """Canonical encoding: a type tag, then a length or count, then the payload.

    Lengths make the encoding unambiguous without separators that could occur in
    the data; dict keys are sorted so insertion order never matters.
    """
    out = bytearray()
    _encode_into(value, out)
    return bytes(out)


def _encode_into(value: Any, out: bytearray) -> None:
    # Exact-type checks first: a record holds ~10^5 strings and rows, and this is its hot
    # loop. Subclasses (a str subclass, an IntEnum) fall through to the isinstance chain.
    kind = type(value)
    if kind is str:
        data = value.encode("utf-8", "surrogateescape")  # keeps non-UTF-8 file names exact
        out += b"S"
        out += _u64(len(data))
        out += data
    elif kind is list or kind is tuple:
        out += b"L"
        out += _u64(len(value))
        for item in value:
            if type(item) is list:
                _encode_row(item, out)
            else:
                _encode_into(item, out)
    elif kind is dict:
        _encode_dict(value, out)
    else:
        _encode_other(value, out)


def _encode_dict(value: dict[Any, Any], out: bytearray, encoded: dict[str, bytes] | None = None) -> None:
    out += b"D"
    out += _u64(len(value))
    for key in sorted(value):
        if not isinstance(key, str):
            raise TypeError(f"record keys must be str, got {key!r}")
        _encode_into(key, out)
        if encoded is not None and key in encoded:
            out += encoded[key]  # the caller's encoding of this very value (see compute_key)
        else:
            _encode_into(value[key], out)


def encode_rows(rows: list[list[Any]]) -> tuple[bytes, list[int]]:
    """The rows' encodings as items of a list (what ``encode`` writes for each row of
    ``files``), concatenated, and where each ends: a remembered context's rows
    (olly.walkmemo) are spliced into the next key of that context instead of encoded again."""
    out, ends = bytearray(), []
    for row in rows:
        _encode_row(row, out)
        ends.append(len(out))
    return bytes(out), ends


def row_head(rows: bytes, start: int) -> str:
    """The first item of the row ``encode_rows`` wrote at ``start`` of ``rows``, a string (a
    ``files`` row's path): "L", its count, "S", the string's length, its bytes."""
    end = start + 18 + int.from_bytes(rows[start + 10:start + 18], "big")
    return rows[start + 18:end].decode("utf-8", "surrogateescape")


def list_encoding(count: int, items: bytes) -> bytes:
    """The encoding of a list of ``count`` items whose encodings are ``items``, concatenated."""
    return b"L" + _u64(count) + items


def _encode_row(row: list[Any], out: bytearray) -> None:
    """A list inside a list (a ``files`` row): its strings and booleans inline, no call each."""
    out += b"L"
    out += _u64(len(row))
    for item in row:
        if type(item) is str:
            data = item.encode("utf-8", "surrogateescape")
            out += b"S"
            out += _u64(len(data))
            out += data
        elif item is True:
            out += b"T"
        elif item is False:
            out += b"F"
        else:
            _encode_into(item, out)


def _encode_other(value: Any, out: bytearray) -> None:
    if value is None:
        out += b"N"
    elif value is True:
        out += b"T"
    elif value is False:
        out += b"F"
    elif isinstance(value, int):
        out += b"I" + _I64(value)
    elif isinstance(value, str):
        data = value.encode("utf-8", "surrogateescape")
        out += b"S" + _u64(len(data)) + data
    elif isinstance(value, (bytes, bytearray)):
        out += b"B" + _u64(len(value)) + bytes(value)
    elif isinstance(value, (list, tuple)):
        out += b"L" + _u64(len(value))
        for item in value:
            _encode_into(item, out)
    elif isinstance(value, dict):
        _encode_dict(value, out)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} in a key record")


def compute_key(record: dict[str, Any], encoded: dict[str, bytes] | None = None) -> str:
    """The key of a record: 32 hex digits of xxh3-128 over its canonical encoding.
    ``encoded``: top-level fields whose encoding the caller already has, exactly what
    ``encode`` would write for them (a recalled context's ``files``); the key is the same."""
    if record.get("schema") != KEY_SCHEMA:
        raise ValueError(f"key record must carry schema={KEY_SCHEMA}")
    if not encoded:
        return xxhash.xxh3_128_hexdigest(encode(record))
    out = bytearray()
    _encode_dict(record, out, encoded)
    return xxhash.xxh3_128_hexdigest(bytes(out))


def content_tag(key: str) -> str:
    """The content-address tag of a key, e.g. ``olly-0123456789abcdef0123``."""
    return f"olly-{key[:TAG_HEX]}"


def image_record(
    *,
    files: list[list[Any]],
    dockerfile: bytes,
    dockerignore: bytes | None,
    args: dict[str, str],
    target: str | None,
    platform: str,
    inputs: list[list[Any]],
    deps: dict[str, str],
    labels: dict[str, str],
    secrets: list[str],
    bases: dict[str, str],
    builder: str,
) -> dict[str, Any]:
    """The explicit record of an image target (see docs/keys.md for each field).

    ``files`` rows are ``[path, type, executable, hash-or-link-target]`` sorted by
    path: the context entries the Dockerfile's sources reach and their parent directories
    (every entry when olly cannot prove less, see olly.reach); ``inputs`` rows are ``[path, hash]``; ``deps`` maps label -> key;
    ``args`` are the user's build args only (a dependency's arg is derived from its
    key, which ``deps`` already carries); ``labels`` are the OCI labels olly sets;
    ``secrets`` are the names of secret build args, never any function of their values
    (a token is a credential, not content: rotating it must not rebuild anything, and a
    stored digest of a weak value could be reversed by a dictionary);
    ``dockerignore`` is the .dockerignore as read (None if absent): always an input,
    because daemons older than 23.0 keep some self-excluding .dockerignore files;
    ``bases`` maps each external FROM reference (after ARG substitution) that olly.lock pins
    to its locked digest: ``dockerfile`` stays the bytes as read, so the digest is what
    moves when a base is updated (the engine receives the FROM line pinned to it);
    ``builder`` is ``"buildkit"`` or ``"classic"``: the two builders can make different images
    from the same inputs (cache mounts, platform args, symlink handling), so each has its own key.
    """
    return {
        "schema": KEY_SCHEMA,
        "kind": "image",
        "files": files,
        "dockerfile": dockerfile,
        "dockerignore": dockerignore,
        "args": dict(args),
        "target": target or "",
        "platform": platform,
        "inputs": inputs,
        "deps": dict(deps),
        "labels": dict(labels),
        "secrets": sorted(set(secrets)),
        "bases": dict(bases),
        "builder": builder,
    }
