"""`olly gc --registry R`: the registry half of olly/gc.py.

A registry deletes manifests by digest (OCI distribution ``DELETE /v2/<name>/manifests/
<digest>``), and with a manifest go all its tags. So gc works on digests: a digest goes
only if a content tag (``olly-<hash>``) or a signature (``sha256-<hex>.olly``) is all
that names it, and none of these protect it:

- a version tag (any tag that is neither of the two kinds above) names it;
- a chart in the registry pins it (read from the charts' own packages there: the pins
  are the ``sha256:`` digests and ``olly-`` tags in their files), or a kept local package;
- its content tag is current, or among the last N builds of its repository and platform
  (newest by the image config's ``created``), or named by a kept chart;
- a protected index lists it (the platform manifests of a kept multi-platform image);
- it is the signature of a protected digest.

If any chart's pins cannot be read, nothing is deleted from that registry: a digest it
pins might go.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from olly import charts
from olly.cache import Cache
from olly.config import ImageTarget, Registry, Workspace
from olly.errors import OllyError
from olly.registry import OCI_INDEX, DOCKER_MANIFEST_LIST, Endpoint, RegistryClient

_TAG_REF = re.compile(r"(?<![0-9a-z])olly-[0-9a-f]{20}(?![0-9a-f])")
_DIGEST_REF = re.compile(r"sha256:[0-9a-f]{64}")
_CONTENT = re.compile(r"^olly-[0-9a-f]{20}$")
_SIGNATURE = re.compile(r"^sha256-([0-9a-f]{64})\.olly$")
_INDEXES = (OCI_INDEX, DOCKER_MANIFEST_LIST)


def package_refs(tgz: bytes) -> tuple[set[str], set[str]]:
    """(``olly-`` content tags, ``sha256:`` digests) named anywhere in a chart package's files."""
    text = "\n".join(data.decode("utf-8", "replace") for data in charts.read_members(tgz).values())
    return set(_TAG_REF.findall(text)), set(_DIGEST_REF.findall(text))


@dataclass
class Item:
    """One thing gc removes (or, dry, would remove)."""

    kind: str  # engine-tag | registry-manifest | chart-package | log | db-rows
    name: str
    size: int  # bytes freed, as far as known (0: the bytes stay, e.g. another tag holds the image)
    status: str = "would remove"  # removed | would remove | kept: <why> | failed: <why>
    detail: str = ""


@dataclass
class Manifest:
    digest: str
    doc: dict[str, Any]
    tags: list[str] = field(default_factory=list)
    group: str = ""  # "index" or the image's platform: last-N counts per repository and group
    created: float = 0.0

    @property
    def is_index(self) -> bool:
        return self.doc.get("mediaType") in _INDEXES or "manifests" in self.doc

    @property
    def blobs(self) -> dict[str, int]:
        """Config and layer blobs: digest -> size."""
        parts = [self.doc.get("config") or {}, *(self.doc.get("layers") or [])]
        return {str(p["digest"]): int(p.get("size") or 0) for p in parts if isinstance(p, dict) and p.get("digest")}


@dataclass
class Going:
    name: str  # repository path in the registry
    manifest: Manifest
    status: str = "would remove"
    size: int = 0  # bytes of its blobs that no kept manifest shares


class RegistryGc:
    """Decide, then delete, one registry's unreferenced content of this workspace."""

    def __init__(self, ws: Workspace, cache: Cache, registry: Registry, notes: list[str]) -> None:
        self.ws, self.cache, self.registry, self.notes = ws, cache, registry, notes
        self.client = RegistryClient(Endpoint(registry.name, registry.host, registry.insecure))
        self.protected_tags: set[str] = set()
        self.kept_count = 0
        self.going: list[Going] = []
        self.unsafe = False

    # -- deciding ---------------------------------------------------------------------

    def decide(self, keep_tags: set[str], pinned: set[str], chart_names: set[str], keep: int) -> None:
        chart_tags, chart_digests = self._chart_pins(chart_names)
        keep_tags = keep_tags | chart_tags
        repos = {self.registry.push_repository(t.repository): self._scan(self.registry.push_repository(t.repository))
                 for t in self.ws.targets.values() if isinstance(t, ImageTarget)}
        protected = pinned | chart_digests
        for manifests in repos.values():
            protected |= _named(manifests, keep_tags, keep)
        protected |= {child for ms in repos.values() for m in ms.values() if m.digest in protected
                      for child in _children(m)}
        for name, manifests in repos.items():
            for m in manifests.values():
                self._judge(name, m, protected)
        self._sizes([m for ms in repos.values() for m in ms.values()])

    def _sizes(self, manifests: list[Manifest]) -> None:
        """What deleting frees: blobs no kept manifest uses, each counted once. (The registry
        frees them in its own garbage collection, not at DELETE time.)"""
        going = {g.manifest.digest for g in self.going}
        kept = {b for m in manifests if m.digest not in going for b in m.blobs}
        counted: set[str] = set()
        for g in self.going:
            own = {b: n for b, n in g.manifest.blobs.items() if b not in kept and b not in counted}
            g.size, counted = sum(own.values()), counted | set(own)

    def _judge(self, name: str, m: Manifest, protected: set[str]) -> None:
        if m.digest in protected or _signs_protected(m, protected):
            self.kept_count += 1
            self.protected_tags.update(t for t in m.tags if _CONTENT.match(t))
        elif self.unsafe:
            self.kept_count += 1
        else:
            self.going.append(Going(name, m))

    def _scan(self, name: str) -> dict[str, Manifest]:
        """Every tagged manifest of a repository, by digest, with its tags and recency."""
        out: dict[str, Manifest] = {}
        for tag in self.client.list_tags(name):
            body, _, digest = self.client.get_manifest(name, tag)
            if digest not in out:
                out[digest] = Manifest(digest, _json(body))
            out[digest].tags.append(tag)
        for m in out.values():
            if any(_CONTENT.match(t) for t in m.tags):
                m.group, m.created = self._recency(name, m)
        return out

    def _recency(self, name: str, m: Manifest) -> tuple[str, float]:
        """(group, build time) of a content-tagged manifest: an index counts as built when its
        newest platform was."""
        if not m.is_index:
            config = (m.doc.get("config") or {}).get("digest")
            data = self.client.get_blob(name, config) if isinstance(config, str) else None
            doc = _json(data or b"{}")
            platform = "/".join(str(doc[k]) for k in ("os", "architecture") if doc.get(k))
            return platform or "image", _time(doc.get("created"))
        times = []
        for child in _children(m):
            body, _, _ = self.client.get_manifest(name, child)
            times.append(self._recency(name, Manifest(child, _json(body)))[1])
        return "index", max(times, default=0.0)

    def _chart_pins(self, names: set[str]) -> tuple[set[str], set[str]]:
        """What the registry's charts pin: every version of every chart of the workspace (its
        current charts, and any chart this cache recorded pushing here)."""
        rows = self.cache.db.execute("SELECT ref FROM pushes WHERE registry = ?", [self.registry.push]).fetchall()
        names = names | {ref.rpartition(":")[0] for (ref,) in rows if not _CONTENT.match(ref.rpartition(":")[2])}
        local = _local_packages(self.ws)
        tags: set[str] = set()
        digests: set[str] = set()
        for chart in sorted(n for n in names if n):
            repo = self.registry.push_repository(f"{self.registry.charts}/{chart}")
            try:
                for tag in self.client.list_tags(repo):
                    t, d = self._pins_of(repo, tag, local)
                    tags, digests = tags | t, digests | d
            except (OllyError, tarfile.TarError, OSError, EOFError) as exc:
                self.unsafe = True
                text = exc.message if isinstance(exc, OllyError) else str(exc)
                self.notes.append(f"cannot read what chart {repo} pins ({text}): nothing is deleted from "
                                  f"registry {self.registry.name!r}")
        return tags, digests

    def _pins_of(self, repo: str, tag: str, local: dict[str, bytes]) -> tuple[set[str], set[str]]:
        body, _, digest = self.client.get_manifest(repo, tag)
        tags: set[str] = set()
        digests: set[str] = {digest}  # the chart's own manifest: a version, never deleted anyway
        for layer in _json(body).get("layers") or []:
            if not isinstance(layer, dict) or layer.get("mediaType") != charts.LAYER_MEDIA_TYPE:
                continue
            data = local.get(str(layer.get("digest"))) or self.client.get_blob(repo, str(layer.get("digest")))
            if data is None:
                raise OllyError("registry-error", f"{repo}:{tag} has no package blob {layer.get('digest')}")
            t, d = package_refs(data)
            tags, digests = tags | t, digests | d
        return tags, digests

    # -- results and deleting -----------------------------------------------------------

    def items(self) -> list[Item]:
        return [Item("registry-manifest", f"{self.registry.push}/{g.name}@{g.manifest.digest}",
                     g.size, g.status, ", ".join(sorted(g.manifest.tags)) + (" (index)" if g.manifest.is_index else ""))
                for g in self.going]

    def delete(self) -> set[str]:
        """Delete every going digest; a registry that refuses deletion (HTTP 405) is reported
        once and left as it is. Returns the digests deleted."""
        deleted: set[str] = set()
        for g in self.going:
            if g.status.startswith("kept"):
                continue
            try:
                self.client.delete_manifest(g.name, g.manifest.digest)
            except OllyError as exc:
                if "405" not in exc.message:
                    g.status = f"failed: {exc.message}"
                    continue
                self.notes.append(exc.message)
                for rest in self.going:
                    if rest.status == "would remove":
                        rest.status = "kept: the registry does not allow deletion"
                break
            g.status = "removed"
            deleted.add(g.manifest.digest)
        if deleted:
            self.notes.append(f"registry {self.registry.name!r} frees the space of deleted manifests in its own "
                              "garbage collection (distribution: `registry garbage-collect`)")
        return deleted


def _named(manifests: dict[str, Manifest], keep_tags: set[str], keep: int) -> set[str]:
    """Digests a repository's tags protect: version tags, kept content tags, the last
    ``keep`` builds per group."""
    out = {m.digest for m in manifests.values()
           if any(not _CONTENT.match(t) and not _SIGNATURE.match(t) for t in m.tags)
           or any(t in keep_tags for t in m.tags)}
    groups: dict[str, list[Manifest]] = {}
    for m in manifests.values():
        if m.group:
            groups.setdefault(m.group, []).append(m)
    for ms in groups.values():
        out |= {m.digest for m in sorted(ms, key=lambda m: (m.created, m.digest), reverse=True)[:keep]}
    return out


def _children(m: Manifest) -> list[str]:
    return [str(c["digest"]) for c in m.doc.get("manifests") or [] if isinstance(c, dict) and c.get("digest")]


def _signs_protected(m: Manifest, protected: set[str]) -> bool:
    subjects = {"sha256:" + s.group(1) for s in map(_SIGNATURE.match, m.tags) if s}
    return bool(subjects & protected)


def _local_packages(ws: Workspace) -> dict[str, bytes]:
    """Stored packages by their sha256: a chart's package blob need not be fetched again."""
    store = ws.cache_dir / "charts"
    out = {}
    for path in store.glob("*.tgz") if store.is_dir() else []:
        data = path.read_bytes()
        out["sha256:" + hashlib.sha256(data).hexdigest()] = data
    return out


def _json(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _time(text: Any) -> float:
    """Seconds since the epoch of an RFC 3339 time (nanoseconds cut to micro), 0 if none."""
    if not isinstance(text, str):
        return 0.0
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.strip()).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0
