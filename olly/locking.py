"""``olly lock``: resolve every external base image through its registry and write ``olly.lock``.

The reading side (the lock file's format, pinning a Dockerfile to it for a build) is
``olly.baselock``, which every plan loads; this module is loaded only by ``olly lock`` and
``olly doctor``, with the registry client it needs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from olly import dockerfile
from olly.baselock import (_DIGEST, _PLATFORM, LOCK_FILE, LOCK_VERSION, Locked, Reference, parse_reference,
                           read_lock, target_bases)
from olly.config import ImageTarget, Workspace
from olly.errors import OllyError
from olly.registry import DOCKER_MANIFEST_LIST, OCI_INDEX, Endpoint, RegistryClient

_LOOPBACK = {"127.0.0.1", "localhost", "[::1]"}

HEADER = """\
# olly.lock: the base images of this workspace's Dockerfiles, pinned by digest.
# Written by `olly lock`; review changes to it like code.
#
# Each external FROM image (after ARG substitution) is resolved once through its registry.
# Builds send the Dockerfile with that reference pinned (FROM python:3.14-slim becomes
# FROM python:3.14-slim@sha256:...), and the digest is part of the key of every image built
# on it: a tag that moves upstream rebuilds nothing until this file changes.
#
#   olly lock                       add bases new in a Dockerfile, drop unused ones
#   olly lock --update              re-resolve every base (or name some: --update python:3.14-slim)
#   olly lock --check               for CI: fail if a Dockerfile uses a base missing here
#
# digest: what builds use. For an image index (kind = "index") that is the index; platforms
# lists the manifest digest of each platform the workspace builds, for review.
"""


def render_lock(entries: dict[str, Locked], uses: dict[str, list[Use]]) -> str:
    """The file's text: sorted, one table per base, each named with the lines that use it."""
    out = [HEADER, f"version = {LOCK_VERSION}"]
    for ref in sorted(entries):
        entry = entries[ref]
        out.append("")
        out += [f"# {_printable(w)}" for w in sorted({u.where for u in uses.get(ref, [])})]
        out.append(f'[base."{ref}"]')  # references are validated: nothing in them needs escaping
        out.append(f'kind = "{entry.kind}"')
        out.append(f'digest = "{entry.digest}"')
        out += [f'platforms."{p}" = "{d}"' for p, d in sorted(entry.platforms.items())]
    return "\n".join(out) + "\n"


def _printable(text: str) -> str:
    """A path in a comment stays one line whatever its name holds."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def write_lock(root: Path, text: str) -> bool:
    """Replace olly.lock atomically (readers see the old or the new file); False if unchanged."""
    path = root / LOCK_FILE
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    tmp = root / f".{LOCK_FILE}.{os.getpid()}.tmp"
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OllyError("io-error", f"cannot write {LOCK_FILE}: {exc.strerror}") from None
    return True


# -- which bases the workspace uses -------------------------------------------------


@dataclass(frozen=True)
class Use:
    dockerfile: str  # workspace-relative
    line: int
    label: str
    platforms: tuple[str, ...]  # what the base must serve there

    @property
    def where(self) -> str:
        return f"{self.dockerfile}:{self.line}"


def collect_uses(ws: Workspace, native: str) -> dict[str, list[Use]]:
    """Every external base of every image target, with where it is used and for which platforms."""
    uses: dict[str, list[Use]] = {}
    for t in ws.targets.values():
        if not isinstance(t, ImageTarget):
            continue
        try:
            refs = target_bases(t, dockerfile.parse((ws.root / t.dockerfile).read_bytes()))
        except OSError as exc:
            raise OllyError("unreadable-file", f"{t.dockerfile}: cannot read: {exc.strerror}") from None
        except dockerfile.DockerfileError as exc:
            raise OllyError("dockerfile-invalid", exc.message, location=f"{t.dockerfile}:{exc.line}") from None
        for ref in refs:
            uses.setdefault(ref.reference, []).append(
                Use(t.dockerfile, ref.line, t.label, _platforms(ws, t, ref, native)))
    return uses


def _platforms(ws: Workspace, t: ImageTarget, ref: dockerfile.ImageRef, native: str) -> tuple[str, ...]:
    """A FROM's own --platform wins; $BUILDPLATFORM is where the engine runs; otherwise
    every platform the target is built for: its own, else each registry's and the native one."""
    flag = ref.stage.platform or ""
    if "BUILDPLATFORM" in flag:
        return (native,)
    if ref.platform and _PLATFORM.match(ref.platform):
        return (ref.platform,)
    if t.platforms:
        return tuple(t.platforms)
    return tuple(sorted({native, *(p for r in ws.registries.values() for p in r.platforms)}))


# -- olly lock ----------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    action: str  # added | updated | unchanged | kept | removed
    reference: str
    old: str | None
    new: str | None


def lock(ws: Workspace, native: str, *, update: bool = False, images: Iterable[str] = ()) -> list[Change]:
    """Make olly.lock hold exactly the bases in use: new ones resolved, unused ones dropped,
    the others kept, or re-resolved with ``update`` (all, or just ``images``)."""
    uses = collect_uses(ws, native)
    current = read_lock(ws.root) or {}
    wanted = set(images)
    if wanted - set(uses):
        known = ", ".join(sorted(uses)) or "none"
        raise OllyError("usage", f"{', '.join(sorted(wanted - set(uses)))}: not a base image of any Dockerfile "
                        f"(bases: {known})")
    refresh = wanted or (set(uses) if update else set())
    resolver = Resolver()
    entries, changes = {}, []
    for ref in sorted(uses):
        old = current.get(ref)
        needed = sorted({p for u in uses[ref] for p in u.platforms})
        if old is None or ref in refresh:
            entries[ref] = resolver.resolve(ref, needed, uses[ref][0].where)
            action = "added" if old is None else "updated" if entries[ref].digest != old.digest else "unchanged"
        else:
            entries[ref], action = resolver.complete(old, needed, uses[ref][0].where), "kept"
        changes.append(Change(action, ref, old.digest if old else None, entries[ref].digest))
    changes += [Change("removed", ref, current[ref].digest, None) for ref in sorted(set(current) - set(uses))]
    write_lock(ws.root, render_lock(entries, uses))
    return changes


def check(ws: Workspace, native: str) -> list[str]:
    """Problems that ``olly lock`` would fix, one line each (empty: the lock is complete)."""
    uses = collect_uses(ws, native)
    current = read_lock(ws.root) or {}
    problems = []
    for ref in sorted(uses):
        entry = current.get(ref)
        if entry is None:
            problems += [f"{where}: base {ref} is not locked in {LOCK_FILE} (run olly lock)"
                         for where in sorted({u.where for u in uses[ref]})]
        elif entry.kind == "index":
            for p in sorted({p for u in uses[ref] for p in u.platforms} - set(entry.platforms)):
                problems.append(f"{LOCK_FILE}:{entry.line}: base {ref} lists no {p} digest, which a build "
                                "uses (run olly lock)")
    for ref in sorted(set(current) - set(uses)):
        problems.append(f"{LOCK_FILE}:{current[ref].line}: base {ref} is locked but no Dockerfile uses it "
                        "(run olly lock)")
    return problems


class Resolver:
    """Tag -> digest through the registry API (one client per registry host)."""

    def __init__(self) -> None:
        self._clients: dict[str, RegistryClient] = {}

    def client(self, host: str) -> RegistryClient:
        if host not in self._clients:
            # Plain http only for the loopback registry, as the engine itself allows.
            bare = host[:host.index("]") + 1] if host.startswith("[") else host.rsplit(":", 1)[0]
            self._clients[host] = RegistryClient(Endpoint(host, host, bare in _LOOPBACK))
        return self._clients[host]

    def resolve(self, text: str, platforms: list[str], where: str) -> Locked:
        ref = parse_reference(text)
        if ref is None:
            raise OllyError("base-invalid", f"base image {text!r} is not a valid image reference", location=where)
        client = self.client(ref.host)
        digest = client.manifest_digest(ref.repository, ref.tag)  # fetched and hashed, never a HEAD's word
        if digest is None:
            raise OllyError("base-not-found", f"base image {text} not found: registry {ref.host} has no "
                            f"{ref.repository}:{ref.tag}", location=where)
        return self._entry(ref, digest, platforms, where)

    def complete(self, entry: Locked, platforms: list[str], where: str) -> Locked:
        """A kept index entry lists exactly the platforms built now; new ones are read from the
        index by its locked digest (the tag may have moved: the lock must not)."""
        if entry.kind != "index" or set(platforms) <= set(entry.platforms):
            return Locked(entry.reference, entry.digest, entry.kind,
                          {p: entry.platforms[p] for p in platforms if p in entry.platforms})
        ref = parse_reference(entry.reference)
        assert ref is not None  # validated when the lock was read
        return self._entry(ref, entry.digest, platforms, where)

    def _entry(self, ref: Reference, digest: str, platforms: list[str], where: str) -> Locked:
        body, media_type, _ = self.client(ref.host).get_manifest(ref.repository, digest)  # hashed to digest
        doc = json.loads(body)
        if (doc.get("mediaType") or media_type) not in (OCI_INDEX, DOCKER_MANIFEST_LIST) and "manifests" not in doc:
            return Locked(ref.text, digest, "manifest")
        found = {p: _platform_digest(doc, p) for p in platforms}
        missing = sorted(p for p, d in found.items() if d is None)
        if missing:
            offered = sorted({_platform_name(m.get("platform") or {}) for m in _manifests(doc)} - {""})
            raise OllyError("base-platform-missing", f"base image {ref.text} ({digest[:19]}…) has no "
                            f"{', '.join(missing)} image (it has: {', '.join(offered) or 'none'})", location=where)
        return Locked(ref.text, digest, "index", {p: d for p, d in found.items() if d})


def _manifests(doc: dict[str, Any]) -> list[dict[str, Any]]:
    items = doc.get("manifests")
    return [m for m in items if isinstance(m, dict)] if isinstance(items, list) else []


def _platform_name(p: dict[str, Any]) -> str:
    if not isinstance(p, dict) or not p.get("os") or not p.get("architecture"):
        return ""
    return "/".join(str(x) for x in (p["os"], p["architecture"], p.get("variant")) if x)


def _platform_digest(doc: dict[str, Any], platform: str) -> str | None:
    """The index's manifest for ``platform``; without a variant asked for, the plain (or
    arm64's default v8) one first, as the engine picks it. Attestations (unknown/unknown)
    never match."""
    os_name, arch, *variant = platform.split("/")
    best: tuple[int, str] | None = None
    for m in _manifests(doc):
        p = m.get("platform") or {}
        digest = m.get("digest")
        if not isinstance(p, dict) or p.get("os") != os_name or p.get("architecture") != arch:
            continue
        if not isinstance(digest, str) or not _DIGEST.match(digest):
            continue
        have = p.get("variant") or ""
        if variant and have != variant[0] and not (arch == "arm64" and {have, variant[0]} <= {"", "v8"}):
            continue
        rank = 0 if have in ("", "v8") else 1
        if best is None or rank < best[0]:
            best = (rank, digest)
    return best[1] if best else None
