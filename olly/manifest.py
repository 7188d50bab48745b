"""Input manifests: what went into a key, and how two of them differ (``olly why``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
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
    was, now = _via(old), _via(new)  # which Dockerfile line copies each path
    for path in sorted(a.keys() | b.keys()):
        if path not in a:
            changes.append(f"+ {kinds.get(b[path][0], 'file')} {path}" + _detail("", now.get(path)))
        elif path not in b:
            changes.append(f"- {kinds.get(a[path][0], 'file')} {path}" + _detail("", was.get(path)))
        elif a[path] != b[path]:
            changes.append(f"~ file {path}" + _detail(_file_change(a[path], b[path]), now.get(path)))
    changes += _selection_change(old.get("reach"), new.get("reach"))
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
    if old.get("builder") and old.get("builder") != new.get("builder"):  # keyed from schema 5
        changes.append(f"~ builder {old.get('builder')!r} -> {new.get('builder')!r}")
    changes += _dict_changes("input", dict(map(tuple, old.get("inputs", []))), dict(map(tuple, new.get("inputs", []))), values=False)
    changes += _dict_changes("dependency", old.get("deps", {}), new.get("deps", {}), values=False, what="key")
    return changes


def _via(manifest: dict[str, Any]) -> dict[str, str]:
    """Path -> ``<dockerfile>:<line>`` of the COPY/ADD/RUN reaching it (``via`` runs parallel
    to ``files``; parent directories and manifests before key schema 4 have none)."""
    info, via = manifest.get("reach") or {}, manifest.get("via") or []
    out = {}
    for row, lines in zip(manifest.get("files", []), via):
        if [n for n in lines if n]:
            out[row[0]] = f"{info.get('dockerfile', 'Dockerfile')}:{','.join(str(n) for n in lines if n)}"
    return out


def _detail(change: str, where: str | None) -> str:
    """`` (content; via Dockerfile:5)``: what changed, and the line that makes it matter."""
    parts = [p for p in (change, f"via {where}" if where else "") if p]
    return f" ({'; '.join(parts)})" if parts else ""


def _selection_change(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    """Whether the key now covers the whole context or only what the Dockerfile copies."""
    if not old or not new or old.get("whole") == new.get("whole"):
        return []
    now = f"whole context ({new['whole']})" if new.get("whole") else "only what the Dockerfile copies"
    return [f"~ context selection: {now}"]


def _file_change(a: tuple[str, bool, str], b: tuple[str, bool, str]) -> str:
    parts = []
    if a[0] != b[0]:
        parts.append(f"type {a[0]} -> {b[0]}")
    if a[1] != b[1]:
        parts.append("now executable" if b[1] else "no longer executable")
    if a[2] != b[2] and a[0] == b[0]:
        parts.append("link target" if b[0] == "l" else "content")
    return ", ".join(parts) or "metadata"


def _each_change(a: dict[str, Any], b: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(sign, name)`` for each name added (+), removed (-) or changed (~) from ``a`` to ``b``, sorted."""
    for name in sorted(a.keys() | b.keys()):
        if name not in a:
            yield "+", name
        elif name not in b:
            yield "-", name
        elif a[name] != b[name]:
            yield "~", name


def _dict_changes(kind: str, a: dict[str, Any], b: dict[str, Any], *, values: bool = True, what: str = "content") -> list[str]:
    out = []
    for sign, name in _each_change(a, b):
        detail = ""
        if sign == "+" and values:
            detail = f"={b[name]!r}"
        elif sign == "~":
            detail = f": {a[name]!r} -> {b[name]!r}" if values else f" ({what} changed)"
        out.append(f"{sign} {kind} {name}{detail}")
    return out


def summarize(changes: list[str], names: int = 3) -> str:
    """One short phrase for the plan line, naming up to ``names`` files per kind of change,
    e.g. ``1 file modified: main.py, arg VERSION changed``."""
    files: dict[str, list[str]] = {"~": [], "+": [], "-": []}
    other: list[str] = []
    for line in changes:
        sign, rest = line[0], line[2:]
        if rest.startswith(("file ", "dir ", "link ")):
            files[sign].append(rest.split(" ", 1)[1].split(" (")[0])
        else:
            name = rest.split(" (")[0].split(":")[0].split("=")[0]
            other.append(name + {"~": " changed", "+": " added", "-": " removed"}[sign])
    parts = []
    for sign, word in (("~", "modified"), ("+", "added"), ("-", "removed")):
        paths = files[sign]
        if paths:
            shown = ", ".join(paths[:names]) + (f" and {len(paths) - names} more" if len(paths) > names else "")
            parts.append(f"{len(paths)} file{'s' if len(paths) != 1 else ''} {word}: {shown}")
    return ", ".join(parts + other)


_OLD_NEW = re.compile(r"^(?:(?P<path>.*?):? )?(?P<old>\S.*?) -> (?P<new>.*)$")
_DETAIL = re.compile(r"^(?P<path>.*?) \((?P<detail>[^()]*)\)$")


def structured(line: str) -> dict[str, Any]:
    """A change line as data for ``--json``: ``{"change": added|removed|modified, "kind":
    file|dir|link|arg|…, "path", "old", "new", "detail", "text"}`` (absent parts are null)."""
    sign, _, rest = line.partition(" ")
    kind, _, tail = rest.partition(" ")
    out: dict[str, Any] = {"change": {"+": "added", "-": "removed"}.get(sign, "modified"), "kind": kind,
                           "path": tail or None, "old": None, "new": None, "detail": None, "text": line}
    if (m := _DETAIL.match(tail)) is not None:
        out["path"], out["detail"] = m["path"], m["detail"]
    elif (m := _OLD_NEW.match(tail)) is not None and " -> " in tail:
        out["path"], out["old"], out["new"] = m["path"] or None, m["old"], m["new"]
    elif "=" in tail and sign == "+":
        out["path"], _, out["new"] = tail.partition("=")
    return out


def diff_chart_manifests(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Changes between two chart manifests (olly.charts.chart_manifest): files, pinned image
    references and the stamped version, one per line as for images, e.g.
    ``~ file templates/x.yaml (content)``, ``~ pin web.image: repo:olly-1@sha256:a… -> …``,
    ``~ version: 0.1.0-x.1a2b3c4d -> 0.1.0-x.5e6f7a8b``."""
    changes: list[str] = []
    if old.get("schema") != new.get("schema"):
        changes.append(f"~ key schema {old.get('schema')} -> {new.get('schema')}")
    a, b = dict(map(tuple, old.get("files", []))), dict(map(tuple, new.get("files", [])))
    changes += [f"{sign} file {path}" + (" (content)" if sign == "~" else "") for sign, path in _each_change(a, b)]
    old_pins, new_pins = old.get("pins", {}), new.get("pins", {})
    for sign, path in _each_change(old_pins, new_pins):
        if sign == "~":
            changes.append(f"~ pin {path}: {_short_ref(old_pins[path], new_pins[path])}")
        else:
            changes.append(f"+ pin {path}={new_pins[path]}" if sign == "+" else f"- pin {path}")
    for field, name in (("version", "version"), ("app_version", "appVersion"), ("registry", "registry")):
        if old.get(field) != new.get(field):
            changes.append(f"~ {name}: {old.get(field) or '(none)'} -> {new.get(field) or '(none)'}")
    return changes


def _short_ref(old: str, new: str) -> str:
    """``old -> new``; only the tags when the repository is the same."""
    (old_repo, old_tag), (new_repo, new_tag) = _split_ref(old), _split_ref(new)
    return f"{old_tag} -> {new_tag}" if old_repo == new_repo else f"{old} -> {new}"


def _split_ref(ref: str) -> tuple[str, str]:
    """``host:5000/repo:olly-1@sha256:…`` -> (``host:5000/repo``, ``olly-1@sha256:…``)."""
    name, at, digest = ref.partition("@")
    repo, _, tag = name.rpartition(":")
    return (repo, tag + at + digest) if repo and "/" not in tag else (name, at + digest)
