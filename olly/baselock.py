"""Locked base images: ``olly.lock`` pins every external ``FROM`` image to a registry digest.

A tag (``python:3.14-slim``) moves upstream while nothing in the workspace changes, so a key
that covers only the FROM text cannot see a new base. ``olly lock`` resolves each external
base once, through the registry API, and records its digest in ``olly.lock`` (TOML, sorted,
commented, meant to be reviewed in a diff). Builds then send the Dockerfile with those FROM
references pinned (``FROM python:3.14-slim@sha256:…``; only the reference text changes) and
the digests enter the key (``bases``), so updating the lock rebuilds exactly the images on
that base, and nothing else ever does.

What counts as an external base: a FROM image after substituting the global ARGs (BUILD.toml
``args`` over the ARG defaults), except ``scratch``, earlier stage names, images naming a
dependency's or a secret's build arg, anything still holding ``$``, and references already
pinned by digest (those are keyed by their text and need no entry).

This module is the reading side, loaded by every plan: the file's format, and pinning a
Dockerfile to it. Resolving bases and writing the file (`olly lock`) is ``olly.locking``.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from olly import dockerfile
from olly.config import ImageTarget, Workspace, dep_arg_name, locate_line
from olly.context import Context, send_dockerfile
from olly.errors import OllyError

LOCK_FILE = "olly.lock"
LOCK_VERSION = 1
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_PLATFORM = re.compile(r"^[a-z0-9]+/[a-z0-9_]+(?:/[a-z0-9]+)?$")
_HOST = re.compile(r"^(?:(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
                   r"|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?$")
_PATH = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DOCKER_HUB = "docker.io"


class Reference(NamedTuple):  # not a frozen dataclass: ~0.5 ms less at every start
    """An image reference split as the registry API needs it."""

    text: str  # as written, e.g. "python:3.14-slim"
    host: str  # "docker.io" for Docker Hub
    repository: str  # e.g. "library/python"
    tag: str  # "latest" when none is written
    digest: str | None


def parse_reference(text: str) -> Reference | None:
    """Docker's reading of an image reference, or None if the engine would refuse it. The
    registry host is the first path component if it holds ``.`` or ``:`` or is ``localhost``;
    otherwise Docker Hub, where one-component names live under ``library/``."""
    name, _, digest = text.partition("@")
    slash, colon = name.rfind("/"), name.rfind(":")
    tag = name[colon + 1:] if colon > slash else ""
    name = name[:colon] if colon > slash else name
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        host, path = first, rest
    else:
        host, path = _DOCKER_HUB, name
    if host in ("index.docker.io", "registry-1.docker.io"):
        host = _DOCKER_HUB
    if host == _DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if not _HOST.match(host) or not _PATH.match(path) or (colon > slash and not _TAG.match(tag)):
        return None
    if "@" in text and not _DIGEST.match(digest):
        return None
    return Reference(text, host, path, tag or "latest", digest or None)


# -- the lock file ------------------------------------------------------------------


@dataclass(frozen=True)
class Locked:
    reference: str
    digest: str  # what builds use
    kind: str  # "index" or "manifest"
    platforms: dict[str, str] = field(default_factory=dict)  # index only: platform -> manifest digest
    line: int = 0  # its table's line in olly.lock (0 = not read from the file)


def read_lock(root: Path) -> dict[str, Locked] | None:
    """The entries of ``olly.lock``, or None without one."""
    try:
        with open(os.path.join(root, LOCK_FILE), "rb") as f:  # read for every target a plan pins
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OllyError("unreadable-file", f"{LOCK_FILE}: cannot read: {exc.strerror}") from None
    # Read for every target a plan pins: parse each distinct content once (by its bytes, so an
    # edit between two reads is seen). Locked entries are frozen; the dict is the caller's.
    if _last_parsed[0] != data:
        _last_parsed[:] = [data, parse_lock(data)]
    return dict(_last_parsed[1])


_last_parsed: list = [None, {}]  # [bytes, entries] of the last olly.lock parsed


def parse_lock(data: bytes) -> dict[str, Locked]:
    try:
        text = data.decode("utf-8")
        doc = tomllib.loads(text)
    except UnicodeDecodeError:
        raise _invalid(None, "not UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"at line (\d+)", str(exc))
        raise _invalid(int(found.group(1)) if found else None, str(exc).split(" (at line")[0]) from None
    here = lambda *path: locate_line(text, path)  # noqa: E731
    unknown = sorted(set(doc) - {"version", "base"})
    if unknown:
        raise _invalid(here(unknown[0]), f"unknown key {unknown[0]!r} (expected version and [base.\"<image>\"] tables)")
    if doc.get("version") != LOCK_VERSION:
        raise _invalid(here("version"), f"version must be {LOCK_VERSION} (this olly reads version {LOCK_VERSION})")
    bases = doc.get("base", {})
    if not isinstance(bases, dict):
        raise _invalid(here("base"), "base must be a table of [base.\"<image>\"] tables")
    return {ref: _entry(ref, value, text) for ref, value in bases.items()}


def _entry(ref: str, value: Any, text: str) -> Locked:
    here = lambda *path: locate_line(text, ("base", ref, *path))  # noqa: E731
    parsed = parse_reference(ref)
    if parsed is None or parsed.digest:
        raise _invalid(here(), f"{ref!r} is not an image reference by tag")
    if not isinstance(value, dict) or set(value) - {"digest", "kind", "platforms"}:
        raise _invalid(here(), f"base {ref!r}: expected only digest, kind and platforms")
    digest, kind, platforms = value.get("digest"), value.get("kind"), value.get("platforms", {})
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise _invalid(here("digest"), f"base {ref!r}: digest must be sha256:<64 hex digits>")
    if kind not in ("index", "manifest"):
        raise _invalid(here("kind"), f"base {ref!r}: kind must be \"index\" or \"manifest\"")
    if not isinstance(platforms, dict) or (platforms and kind != "index") or not all(
            _PLATFORM.match(p) and isinstance(d, str) and _DIGEST.match(d) for p, d in platforms.items()):
        raise _invalid(here("platforms"), f"base {ref!r}: platforms must map os/arch[/variant] to sha256 digests "
                       "(image indexes only)")
    return Locked(ref, digest, kind, dict(platforms), here() or 0)


def _invalid(line: int | None, message: str) -> OllyError:
    return OllyError("lock-invalid", f"{message} (fix it, or delete it and run olly lock)",
                     location=f"{LOCK_FILE}:{line}" if line else LOCK_FILE)


# -- which bases the workspace uses -------------------------------------------------


def target_bases(t: ImageTarget, df: dockerfile.Dockerfile) -> list[dockerfile.ImageRef]:
    """External FROM images of ``t``'s Dockerfile not already pinned by digest."""
    blocked = {dep_arg_name(d) for d in t.depends_on} | set(t.secrets)  # olly's own, or values it never keys
    return [r for r in dockerfile.external_images(df, t.args, blocked) if "@" not in r.reference]


# -- what a build sends -------------------------------------------------------------


class Pinned(NamedTuple):  # not a frozen dataclass: ~0.5 ms less at every start
    dockerfile: bytes  # what the engine receives
    bases: dict[str, str]  # reference as resolved -> locked digest: part of the key
    unlocked: list[str]  # external bases without an entry: built by tag, keyed by their text

    @property
    def notes(self) -> list[str]:
        return [f"base {ref} not locked (run olly lock)" for ref in self.unlocked]


def pin(t: ImageTarget, data: bytes, lock: dict[str, Locked] | None) -> Pinned:
    """``data`` with each locked FROM reference replaced by ``<reference>@<digest>``."""
    try:
        df = dockerfile.parse(data)
    except dockerfile.DockerfileError:
        return Pinned(data, {}, [])  # sent as is: the engine reports what is wrong with it
    refs, lock = target_bases(t, df), lock or {}
    edits, bases = [], {}
    for ref in refs:
        entry = lock.get(ref.reference)
        if entry is not None:
            start = ref.stage.image_start
            edits.append((ref.stage.instruction, start, start + len(ref.stage.image), f"{ref.reference}@{entry.digest}"))
            bases[ref.reference] = entry.digest
    unlocked = sorted({r.reference for r in refs} - set(bases))
    return Pinned(dockerfile.rewrite(df, edits) if edits else data, bases, unlocked)


def pin_context(ws: Workspace, t: ImageTarget, ctx: Context, lock: dict[str, Locked] | None = None) -> Pinned:
    """Pin ``ctx``'s Dockerfile to ``lock`` (default: olly.lock, read now) and send the pinned bytes."""
    pinned = pin(t, ctx.dockerfile, read_lock(ws.root) if lock is None else lock)
    if pinned.bases:
        send_dockerfile(ctx, pinned.dockerfile)
    return pinned
