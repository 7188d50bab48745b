"""What runs on a worker thread for one chart: package (or prove the stored package still
stands, olly.chartproof), write dist/, push. Like olly.jobs, it never touches the cache: the
Outcome tells the scheduler's main thread what to record."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from olly import chartproof
from olly.config import UNPUBLISHED_DIR
from olly.errors import OllyError
from olly.jobs import (Outcome, RunContext, client_for, confirm_tag, finish, refuse_release_overwrite, write_atomic,
                       write_if_changed)
from olly.lazy import lazy
from olly.plan import TargetPlan
from olly.versions import oci_tag

if TYPE_CHECKING:
    from olly.charts import Pin

charts: Any = lazy("olly.charts")  # YAML and packaging: only for a chart that needs packaging


@dataclass
class ChartWork:
    """Prepared by the main thread: the chart's pins, key, version and any cached package."""

    pins: dict[str, Pin]
    key: str
    version: str
    app_version: str
    store: Path  # the package of this key in the cache: written once, replaced only if it does not match the key
    path: Path  # the user-facing copy, dist/charts/<registry or _unpublished>/<name>-<version>.tgz
    cached_digest: str | None  # sha256 of the recorded, intact package at ``store``
    # The registry's values overlay, merged into the values file next to the package only: it
    # is not in the key (the package and its version do not depend on it); the values file is
    # rewritten whenever it differs, cached package or not.
    overlay: Any = None
    manifest: dict[str, Any] = field(default_factory=dict)  # for `olly why`, recorded with the package
    recorded: dict[str, str] | None = None  # the cache's artifact row for this key, if any
    claim: dict[str, Any] = field(default_factory=dict)  # what a proof of these outputs says (olly.chartproof)
    proven: bool = False  # a proof holds: the stored package, dist/ copy and values file are as verified


def chart_pins(ctx: RunContext, tp: TargetPlan, images: dict[str, Outcome], repos: dict[str, str]) -> dict[str, Pin]:
    refs = {label: (repos[label], o.ref.rsplit(":", 1)[1], o.digest or None) for label, o in images.items()}
    return charts.make_pins(tp.target.images, refs, ctx.registry)  # type: ignore[union-attr]


def prepare_chart(ctx: RunContext, tp: TargetPlan, pins: dict[str, Pin],
                  recorded_for: Callable[[str], dict[str, str] | None]) -> ChartWork:
    """Key, version and output path of a chart; reuse the recorded package if still intact."""
    assert tp.chart is not None
    version, app_version = charts.stamp(tp.chart, pins, ctx.version)
    key = charts.chart_key(tp.chart, pins, version, app_version)
    recorded = recorded_for(key)
    # Registry names start with a letter or digit (olly.config): no registry can share this.
    where = ctx.registry.name if ctx.registry else UNPUBLISHED_DIR
    path = ctx.out_dir / "charts" / where / f"{tp.chart.name}-{version}.tgz"
    store = ctx.store_dir / f"{key}.tgz"
    overlay = charts.load_overlay(ctx.root, ctx.registry)
    manifest = charts.chart_manifest(tp.chart, pins, version, app_version, ctx.registry)
    work = ChartWork(pins, key, version, app_version, store, path, None, overlay, manifest, recorded)
    if not (recorded and ctx.root / recorded["path"] == store):
        return work
    work.claim = _claim(ctx, work, recorded["digest"])
    if ctx.proofs is not None and ctx.proofs.holds(tp.label, work.claim):
        work.cached_digest, work.proven = recorded["digest"], True  # as verified, by stat signature
        return work
    try:
        if store.is_file() and charts.sha256(store.read_bytes()) == recorded["digest"]:
            work.cached_digest = recorded["digest"]
    except OSError:
        pass  # an unreadable stored package is simply packaged again
    return work


def _claim(ctx: RunContext, work: ChartWork, digest: str) -> dict[str, Any]:
    """What a proof of this chart's outputs asserts: which package (key, digest, packager) sits
    at which paths, and which inputs the values file was made from."""
    values = work.path.with_suffix(".values.yaml")
    return {"key": work.key, "digest": digest, "packager": chartproof.packager(),
            "values": chartproof.values_inputs(work.pins, ctx.registry, ctx.root, _values_display(ctx)),
            "paths": [str(work.store), str(work.path), str(values)]}


def _values_display(ctx: RunContext) -> str:
    return f"registry {ctx.registry.name!r} values" if ctx.registry else "values"


def run_chart(ctx: RunContext, tp: TargetPlan, work: ChartWork) -> Outcome:
    assert tp.chart is not None
    o = Outcome(tp.label, "cached", "up to date", started=time.time(), key=work.key, version=work.version,
                artifact=str(work.path), ref=f"{tp.chart.name}:{work.version}")
    unpinned = sorted(p for p, pin in work.pins.items() if not pin.pinned)
    try:
        if work.proven:
            tgz = _proven_chart(ctx, tp, work, o)
        else:
            tgz = _package_chart(ctx, tp, work, o)
        if unpinned:
            o.notes.append("not digest-pinned: " + ", ".join(unpinned) + (" (no registry)" if ctx.registry is None else " (not in the registry: use --push)"))
        if ctx.push and ctx.registry is not None:
            o.digest, o.pushed = push_chart(ctx, tp, tgz if tgz is not None else work.store.read_bytes())
            where = f"oci://{ctx.registry.push}/{ctx.registry.charts}/{tp.chart.name}:{oci_tag(work.version)}"
            o.notes.append(f"pushed {where}" if o.pushed else f"already in {ctx.registry.name} as {where}")
    except OllyError as exc:
        o.status, o.reason, o.proof = "failed", exc.message, None
    except Exception as exc:  # a bug must fail this target, not abandon the others mid-build
        o.status, o.reason, o.proof = "failed", f"internal error: {type(exc).__name__}: {exc}", None
    return finish(o)


def _proven_chart(ctx: RunContext, tp: TargetPlan, work: ChartWork, o: Outcome) -> bytes | None:
    """A chart whose outputs a proof vouches for (olly.chartproof): nothing to package or
    write. The stored package's bytes are read only if a registry needs them."""
    o.image_id = work.cached_digest or ""
    if ctx.registry is None:
        return None
    tgz = work.store.read_bytes()
    charts.check_endpoints(tgz, ctx.registry, tp.chart.dir)  # type: ignore[union-attr]
    return tgz


def _package_chart(ctx: RunContext, tp: TargetPlan, work: ChartWork, o: Outcome) -> bytes:
    """Package the chart and write what differs; with every output verified and settled,
    leave a proof of them (``o.proof``) for the next run."""
    assert tp.chart is not None
    started = time.time_ns()
    values = work.path.with_suffix(".values.yaml")
    outputs = [work.store, work.path, values]
    before = [chartproof.settled(p, started) for p in outputs]
    # Package: it is byte-reproducible, so it verifies a stored package against its key. A
    # restored CI cache can carry a replaced .tgz together with a db row matching it; the row
    # alone proves nothing, and we never ship unverified bytes.
    tgz, _ = charts.package(tp.chart, work.pins, work.version, work.app_version)
    if ctx.registry is not None:
        charts.check_endpoints(tgz, ctx.registry, tp.chart.dir)
    if work.cached_digest is None:
        write_atomic(work.store, tgz)
        o.status, o.reason = "built", "packaged"
    elif _read_or_none(work.store) != tgz:
        write_atomic(work.store, tgz)
        o.status, o.reason = "built", "stored package did not match its key: repackaged"
    write_if_changed(work.path, tgz)
    if write_if_changed(values, charts.values_document(work.pins, work.overlay, _values_display(ctx))) and o.status == "cached":
        o.notes.append(f"wrote {values.name}: it was missing or differed (e.g. the registry's values changed)")
    o.image_id = charts.sha256(tgz)  # the package's own digest, recorded with the artifact
    after = [chartproof.signature(p) for p in outputs]
    if all(before) and before == after and work.claim.get("digest") == o.image_id:
        # Read and found equal (none written now), untouched meanwhile, older than the racy window.
        o.proof, o.proof_files = work.claim, {str(p): sig for p, sig in zip(outputs, after) if sig}
    return tgz


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def push_chart(ctx: RunContext, tp: TargetPlan, tgz: bytes) -> tuple[str, bool]:
    """Push as ``helm push`` does; skip when the registry already has this exact manifest."""
    registry = ctx.registry
    assert registry is not None and tp.chart is not None
    meta = charts.read_chart_meta(tgz, tp.chart.name)
    config, manifest = charts.oci_artifact(tgz, meta)
    name = registry.push_repository(f"{registry.charts}/{tp.chart.name}")
    tag = oci_tag(str(meta["version"]))
    client = client_for(registry)
    digest = charts.sha256(manifest)
    current = client.manifest_digest(name, tag)
    if current == digest:
        return digest, False
    refuse_release_overwrite(registry, f"{name}:{tag}", current, str(meta["version"]))
    client.push_blob(name, config)
    client.push_blob(name, tgz)
    # Look again right before the PUT: uploads take time, and another run may have
    # published this version meanwhile (a release must not be overwritten).
    current = client.manifest_digest(name, tag)
    if current == digest:
        return digest, False
    refuse_release_overwrite(registry, f"{name}:{tag}", current, str(meta["version"]))
    client.push_manifest(name, tag, manifest, charts.MANIFEST_MEDIA_TYPE)
    confirm_tag(client, name, tag, digest, ctx.version or str(meta["version"]))
    return digest, True
