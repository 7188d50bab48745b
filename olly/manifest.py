"""Input manifests: what went into a key, and how two of them differ (``olly why``)."""

from __future__ import annotations

from typing import Any


def _files(manifest: dict[str, Any]) -> dict[str, tuple[str, bool, str]]:
    return {row[0]: (row[1], bool(row[2]), row[3]) for row in manifest.get("files", [])}


def diff_manifests(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable changes from ``old`` to ``new``, one per line, stable order.

    Lines start with ``+`` (added), ``-`` (removed) or ``~`` (modified).
    """
    changes: list[str] = []
    if old.get("schema") != new.get("schema"):
        changes.append(f"~ key schema {old.get('schema')} -> {new.get('schema')}")
    a, b = _files(old), _files(new)
    kinds = {"f": "file", "d": "dir", "l": "link"}
    for path in sorted(a.keys() | b.keys()):
        if path not in a:
            changes.append(f"+ {kinds.get(b[path][0], 'file')} {path}")
        elif path not in b:
            changes.append(f"- {kinds.get(a[path][0], 'file')} {path}")
        elif a[path] != b[path]:
            changes.append(f"~ file {path} ({_file_change(a[path], b[path])})")
    if old.get("dockerfile") != new.get("dockerfile"):
        changes.append("~ Dockerfile content")
    if old.get("dockerignore") != new.get("dockerignore"):
        changes.append("~ .dockerignore content")
    changes += _dict_changes("arg", old.get("args", {}), new.get("args", {}))
    changes += _dict_changes("label", old.get("labels", {}), new.get("labels", {}))
    changes += _dict_changes("base", old.get("bases", {}), new.get("bases", {}))  # olly.lock digests
    # Names only (older manifests held a dict keyed by name: iterating it gives the names).
    changes += _dict_changes("secret", dict.fromkeys(old.get("secrets", [])), dict.fromkeys(new.get("secrets", [])), values=False)
    for field in ("target", "platform"):
        if old.get(field) != new.get(field):
            changes.append(f"~ {field} {old.get(field)!r} -> {new.get(field)!r}")
    changes += _dict_changes("input", dict(map(tuple, old.get("inputs", []))), dict(map(tuple, new.get("inputs", []))), values=False)
    changes += _dict_changes("dependency", old.get("deps", {}), new.get("deps", {}), values=False, what="key")
    return changes


def _file_change(a: tuple[str, bool, str], b: tuple[str, bool, str]) -> str:
    parts = []
    if a[0] != b[0]:
        parts.append(f"type {a[0]} -> {b[0]}")
    if a[1] != b[1]:
        parts.append("now executable" if b[1] else "no longer executable")
    if a[2] != b[2] and a[0] == b[0]:
        parts.append("link target" if b[0] == "l" else "content")
    return ", ".join(parts) or "metadata"


def _dict_changes(kind: str, a: dict[str, Any], b: dict[str, Any], *, values: bool = True, what: str = "content") -> list[str]:
    out = []
    for name in sorted(a.keys() | b.keys()):
        if name not in a:
            out.append(f"+ {kind} {name}" + (f"={b[name]!r}" if values else ""))
        elif name not in b:
            out.append(f"- {kind} {name}")
        elif a[name] != b[name]:
            out.append(f"~ {kind} {name}" + (f": {a[name]!r} -> {b[name]!r}" if values else f" ({what} changed)"))
    return out


def summarize(changes: list[str]) -> str:
    """One short phrase for the plan line, e.g. ``2 files modified, arg VERSION changed``."""
    counts = {"+": 0, "-": 0, "~": 0}
    other: list[str] = []
    for line in changes:
        sign, rest = line[0], line[2:]
        if rest.startswith(("file ", "dir ", "link ")):
            counts[sign] += 1
        else:
            name = rest.split(" (")[0].split(":")[0].split("=")[0]
            other.append(name + {"~": " changed", "+": " added", "-": " removed"}[sign])
    parts = [f"{n} file{'s' if n != 1 else ''} {word}" for sign, word in (("~", "modified"), ("+", "added"), ("-", "removed"))
             if (n := counts[sign])]
    return ", ".join(parts + other)
