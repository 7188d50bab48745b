"""`olly gc`: remove the build results nothing references any more.

Kept, always: every target's current key (as `olly plan` computes it now), the last N
builds of each target (per platform), everything a kept chart package pins, and, in a
registry, every version tag, every digest a chart there pins, every platform manifest a
kept index lists and the signature of every kept digest. Everything else of olly's own
goes: ``<repository>:olly-<hash>`` tags in the engine (only of this workspace's
repositories, only on images carrying ``dev.olly.key``; the engine then drops images no
tag or child holds), stored packages in ``.cache/charts/``, ``.cache/logs/old/``, the
db rows of what went, and with a registry its unreferenced content tags (DELETE by
digest, which also drops every tag naming that digest: so a digest is deleted only if
no kept tag names it).

Recency is build time: the engine's results (``built_at``) or the image's ``Created``;
in a registry, the image config's ``created``. Everything is decided before anything is
removed, under the workspace lock, so a dry run lists exactly what a real run removes.
"""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from olly.cache import Cache
from olly.config import ImageTarget, Registry, Workspace
from olly.engine import KEY_LABEL, Engine, canonical_ref, familiar_ref, oci_platform
from olly.errors import OllyError
from olly.graph import Graph
from olly.gc_registry import Item, RegistryGc, package_refs
from olly.plan import make_plan

CONTENT_TAG = re.compile(r"^olly-[0-9a-f]{20}$")
DEFAULT_KEEP = 3


@dataclass
class Report:
    dry_run: bool
    keep: int
    items: list[Item] = field(default_factory=list)
    kept: dict[str, int] = field(default_factory=dict)  # per kind: how many stayed
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(i.status.startswith("failed") for i in self.items)


@dataclass
class Current:
    """What the workspace references now: content tags and chart package keys."""

    tags: set[str] = field(default_factory=set)
    chart_keys: set[str] = field(default_factory=set)
    chart_names: set[str] = field(default_factory=set)


def current(ws: Workspace, graph: Graph, cache: Cache, engine: Engine, registry: Registry | None,
            version: str | None) -> Current:
    """Every target's key now, locally and (with ``registry``) as built for that registry:
    a registry's ``platforms`` give other keys than the engine's own platform."""
    out = Current()
    labels = graph.select([])
    try:
        plans = [make_plan(ws, graph, labels, cache, engine, None, version)]
        if registry is not None:
            plans.append(make_plan(ws, graph, labels, cache, None, registry, version))
    except OllyError as exc:
        raise OllyError(exc.reason, f"gc cannot tell the current keys, so it removes nothing: {exc.message}",
                        location=exc.location) from None
    for the_plan in plans:
        for tp in the_plan.targets:
            out.tags.update(v.tag for v in [tp, *tp.variants] if v.tag)
            if tp.kind == "chart" and tp.chart is not None:
                out.chart_names.add(tp.chart.name)
                if tp.key:
                    out.chart_keys.add(tp.key)
    return out


# -- chart packages ------------------------------------------------------------------


@dataclass
class Packages:
    kept: dict[Path, bytes]  # kept stored packages and their bytes (their pins stay too)
    gone: list[Path]  # stored packages that go


def plan_packages(ws: Workspace, cache: Cache, now: Current, keep: int) -> Packages:
    """Per chart target, the stored packages of its current key and of its last ``keep``
    packagings (by file time); a file no kept row names (an orphan) goes."""
    store = ws.cache_dir / "charts"
    rows = cache.db.execute("SELECT target, key, path FROM artifacts").fetchall()
    by_target: dict[str, list[tuple[float, Path, str]]] = {}
    for target, key, rel in rows:
        path = ws.root / rel
        if path.parent == store and path.is_file():
            by_target.setdefault(target, []).append((path.stat().st_mtime, path, key))
    kept: set[Path] = set()
    for entries in by_target.values():
        newest = sorted({(t, p) for t, p, _ in entries}, reverse=True)[:keep]
        kept.update(p for _, p in newest)
        kept.update(p for _, p, k in entries if k in now.chart_keys)
    files = sorted(store.glob("*.tgz")) if store.is_dir() else []
    return Packages({p: p.read_bytes() for p in files if p in kept}, [p for p in files if p not in kept])


def pinned_by(packages: dict[Path, bytes], notes: list[str]) -> tuple[set[str], set[str]]:
    """(content tags, digests) the kept packages' files name."""
    tags: set[str] = set()
    digests: set[str] = set()
    for path, data in packages.items():
        try:
            t, d = package_refs(data)
        except (tarfile.TarError, OSError, EOFError) as exc:
            notes.append(f"{path.name}: unreadable package ({exc}); what it pins may be removed")
            continue
        tags |= t
        digests |= d
    return tags, digests


# -- the engine ----------------------------------------------------------------------


@dataclass
class EngineTag:
    ref: str  # as the engine lists it
    group: str  # the target (or repository) whose builds it counts among
    tag: str
    image_id: str
    size: int
    created: float
    platform: str = ""


def engine_tags(ws: Workspace, engine: Engine) -> list[EngineTag]:
    """Content tags of this workspace's repositories on images carrying olly's key label:
    never any other tag, never an image olly did not build."""
    repos = {_name(canonical_ref(f"{t.repository}:x")): t.label for t in ws.targets.values()
             if isinstance(t, ImageTarget)}
    out = []
    for image in _list_images(engine):
        if KEY_LABEL not in (image.get("Labels") or {}):
            continue
        for ref in image.get("RepoTags") or []:
            name, _, tag = canonical_ref(str(ref)).rpartition(":")
            if name in repos and CONTENT_TAG.match(tag):
                out.append(EngineTag(str(ref), repos[name], tag, str(image["Id"]), int(image.get("Size") or 0),
                                     float(image.get("Created") or 0)))
    for et in out:
        info = engine.inspect(et.image_id) or {}
        et.platform = oci_platform(str(info.get("Os", "")), str(info.get("Architecture", "")))
    return out


def _name(ref: str) -> str:
    return ref.rpartition(":")[0]


def _list_images(engine: Engine) -> list[dict[str, Any]]:
    try:
        return list(engine.api.images(filters={"label": KEY_LABEL}))
    except Exception as exc:  # the SDK raises many types
        raise OllyError("engine-error", f"cannot list the engine's images: {exc}") from None


def plan_engine(found: list[EngineTag], keep_tags: set[str], built_at: dict[str, float], keep: int) -> list[EngineTag]:
    """The engine tags that go: not kept, and not among the last ``keep`` builds of their
    target and platform (newest by the recorded build time, else the image's)."""
    groups: dict[tuple[str, str], list[EngineTag]] = {}
    for et in found:
        groups.setdefault((et.group, et.platform), []).append(et)
    recent: set[str] = set()
    for tags in groups.values():
        tags.sort(key=lambda et: (built_at.get(et.tag, et.created), et.tag), reverse=True)
        recent.update(et.ref for et in tags[:keep])
    return [et for et in found if et.tag not in keep_tags and et.ref not in recent]


def untag(engine: Engine, ref: str) -> str:
    """Remove one tag; the engine also drops the image (and parents) once nothing holds it.
    Returns "" or why not: an image a container uses stays, tagged."""
    import docker.errors

    try:
        engine.api.remove_image(ref, force=False, noprune=False)
        return ""
    except docker.errors.APIError as exc:
        if exc.status_code == 404:
            return ""  # already gone
        if exc.status_code == 409:
            return "kept: in use by a container"
        return f"failed: {exc.explanation or exc}"
    except Exception as exc:
        return f"failed: {exc}"


def engine_items(engine: Engine, found: list[EngineTag], going: list[EngineTag]) -> list[Item]:
    leaving = {et.ref for et in going}
    own = _own_sizes(engine, leaving)
    items = []
    for et in going:
        others = [o for o in found if o.image_id == et.image_id and o.ref not in leaving]
        detail = f"image {et.image_id[7:19]}" + (", other tags keep it" if others else "")
        # Shown as Docker spells it; Podman lists docker.io/<repo>:<tag> (_remove maps it back).
        items.append(Item("engine-tag", familiar_ref(et.ref), 0 if others else own.get(et.image_id, et.size), detail=detail))
    return items


def _own_sizes(engine: Engine, leaving: set[str]) -> dict[str, int]:
    """Per image: its size less that of its nearest ancestor that stays (a base image, kept
    builds): the layers removing it can free. Images without a local parent chain (pulled)
    count whole."""
    try:
        images = {str(i["Id"]): i for i in engine.api.images(all=True)}
    except Exception:  # sizes are a courtesy: an engine that will not list them shows whole sizes
        return {}

    def stays(image: dict[str, Any]) -> bool:
        return any(t not in leaving and t != "<none>:<none>" for t in image.get("RepoTags") or [])

    out = {}
    for image_id, image in images.items():
        parent = str(image.get("ParentId") or "")
        while parent in images and not stays(images[parent]):
            parent = str(images[parent].get("ParentId") or "")
        base = int(images[parent].get("Size") or 0) if parent in images else 0
        out[image_id] = max(int(image.get("Size") or 0) - base, 0)
    return out


# -- the whole run -------------------------------------------------------------------


def run(ws: Workspace, graph: Graph, cache: Cache, engine: Engine, registry: Registry | None, keep: int,
        dry_run: bool, version: str | None) -> Report:
    """Decide everything first, then (unless ``dry_run``) remove it."""
    if keep < 1:
        raise OllyError("usage", "--keep must be at least 1: the current build is always kept")
    report = Report(dry_run, keep)
    now = current(ws, graph, cache, engine, registry, version)
    packages = plan_packages(ws, cache, now, keep)
    tags, digests = pinned_by(packages.kept, report.notes)
    keep_tags = now.tags | tags
    reg: RegistryGc | None = None
    if registry is not None:
        reg = RegistryGc(ws, cache, registry, report.notes)
        reg.decide(keep_tags, digests, now.chart_names, keep)
        keep_tags |= reg.protected_tags  # a content tag whose digest a version or chart names
    found = engine_tags(ws, engine)
    going = plan_engine(found, keep_tags, _built_at(cache), keep)
    report.items += reg.items() if reg else []
    report.items += engine_items(engine, found, going)
    report.items += [Item("chart-package", p.relative_to(ws.root).as_posix(), p.stat().st_size) for p in packages.gone]
    report.items += _log_items(ws)
    report.kept = {"engine-tag": len(found) - len(going), "chart-package": len(packages.kept),
                   **({"registry-manifest": reg.kept_count} if reg else {})}
    if not dry_run:
        _remove(ws, cache, engine, reg, report, going)
    return report


def _built_at(cache: Cache) -> dict[str, float]:
    rows = cache.db.execute("SELECT tag, MAX(built_at) FROM results GROUP BY tag").fetchall()
    return {tag: float(when or 0) for tag, when in rows}


def _log_items(ws: Workspace) -> list[Item]:
    old = ws.cache_dir / "logs" / "old"
    files = sorted(p for p in old.iterdir() if p.is_file()) if old.is_dir() else []
    return [Item("log", p.relative_to(ws.root).as_posix(), p.stat().st_size) for p in files]


def _remove(ws: Workspace, cache: Cache, engine: Engine, reg: RegistryGc | None, report: Report,
            going: list[EngineTag]) -> None:
    """Registry first: if it fails half-way, the engine and cache still hold what it held."""
    deleted: set[str] = reg.delete() if reg else set()
    if reg is not None:  # the registry's items, with how their deletion went
        report.items = reg.items() + [i for i in report.items if i.kind != "registry-manifest"]
    by_ref = {familiar_ref(et.ref): et for et in going}
    for item in report.items:
        if item.kind == "engine-tag":
            item.status = untag(engine, by_ref[item.name].ref if item.name in by_ref else item.name) or "removed"
            if item.status != "removed":
                by_ref.pop(item.name, None)
        elif item.kind in ("chart-package", "log"):
            try:
                (ws.root / item.name).unlink(missing_ok=True)
                item.status = "removed"
            except OSError as exc:
                item.status = f"failed: {exc.strerror}"
    from olly.jobs import remove_stale_temp  # a killed run's temporary files; we hold the lock

    remove_stale_temp(ws.cache_dir / "charts")
    removed = {et.tag for et in by_ref.values()}
    rows = forget_rows(ws, cache, removed, reg.registry.push if reg else "", deleted)
    if rows:
        report.items.append(Item("db-rows", f"{rows} row(s) of removed results", 0, "removed"))


def forget_rows(ws: Workspace, cache: Cache, removed: set[str], registry: str, deleted: set[str]) -> int:
    """Drop the db rows of what gc removed: the build results of removed engine tags, the
    pushes of deleted digests, the packages whose file is gone. (A result whose image went
    some other way stays: planning checks the engine anyway, and with build engines per
    platform the image may live in another engine.)"""
    conn = cache.db.conn
    count = 0
    with cache.transaction():
        for tag in removed:
            count += conn.execute("DELETE FROM results WHERE tag = ?", (tag,)).rowcount
        for digest in deleted:
            count += conn.execute("DELETE FROM pushes WHERE registry = ? AND digest = ?", (registry, digest)).rowcount
        for target, key, reg, rel in conn.execute("SELECT target, key, registry, path FROM artifacts").fetchall():
            if not (ws.root / rel).is_file():
                conn.execute("DELETE FROM artifacts WHERE target = ? AND key = ? AND registry = ?", (target, key, reg))
                count += 1
    return count
