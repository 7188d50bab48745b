"""Planning: compute every selected target's inputs and key, and decide what to do.

A plan is data: for each target its key, inputs manifest and an action (images:
``build``, ``cached``, ``retag``, ``remote``; charts: ``package``, ``cached``) with the
reasons why.
"""

from __future__ import annotations

import os
import platform as _platform
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from olly import baselock, buildkit, keys, reach, scrub, walkhelper, walkmemo, watchsync
from olly.cache import Cache
from olly.config import ChartTarget, ImageTarget, Registry, Workspace, config_error, dep_arg_name
from olly.context import Context, context_dockerfile, scan, scan_inputs
from olly.engine import KEY_LABEL, Engine, oci_platform
from olly.engines import engine_for
from olly.engine import has_tag as engine_has_tag
from olly.errors import OllyError
from olly.graph import Graph
from olly.hashing import FileHasher, hash_bytes
from olly.imageview import EngineImages, ImageViews
from olly.lazy import lazy
from olly.manifest import diff_chart_manifests, diff_manifests, summarize
from olly.later import Later, settled

if TYPE_CHECKING:
    from olly import signing
    from olly.charts import ChartSource
    from olly.registry import RegistryClient

charts: Any = lazy("olly.charts")  # and its YAML library: only for a workspace with charts
# Only a plan against a registry talks to one (or checks signatures, or builds an index).
registry_api: Any = lazy("olly.registry")
signing_api: Any = lazy("olly.signing")
index: Any = lazy("olly.index")


def native_platform() -> str:
    """This machine's platform: the default when no engine is consulted (why, inputs)."""
    return oci_platform("linux", _platform.machine())


@dataclass
class TargetPlan:
    label: str
    kind: str
    action: str  # build | cached | retag | remote | package
    reasons: list[str] = field(default_factory=list)
    key: str = ""
    repository: str = ""
    tag: str = ""
    image_id: str | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    context: Context | None = None
    args: dict[str, str] = field(default_factory=dict)
    target: ImageTarget | ChartTarget | None = None
    changes: list[str] = field(default_factory=list)
    remote_digest: str | None = None  # manifest digest of the content tag in the chosen registry
    adopted: bool = False  # found in the engine with this key but not in the cache: record it
    chart: ChartSource | None = None
    platform: str = ""  # images: the platform this plan builds ("" for a multi-platform parent)
    variants: list[TargetPlan] = field(default_factory=list)  # a multi-platform image: one per platform
    history: str = ""  # where its last input manifest is kept: the label, or label@platform for a variant
    notes: list[str] = field(default_factory=list)  # warnings added to the reasons, e.g. an unlocked base image
    # The manifest's ``files`` when read, if not yet in it (a recalled context: compute_inputs).
    files_later: Callable[[], list[list[Any]]] | None = field(default=None, repr=False, compare=False)

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"

    @property
    def platforms(self) -> list[str]:
        return [v.platform for v in self.variants] if self.variants else [self.platform]

    def recorded(self, name: str, default: Any = None) -> Any:
        """A manifest field other than ``files``, read without decoding a recalled context's rows."""
        return self._manifest.get(name, default)

    def for_platform(self, platform: str) -> TargetPlan:
        """The plan that builds ``platform``: a variant, or this single-platform plan itself
        (a dependency built for one platform serves every platform of its dependents)."""
        if not self.variants:
            return self
        for v in self.variants:
            if v.platform == platform:
                return v
        raise KeyError(platform)


def _manifest(tp: TargetPlan) -> dict[str, Any]:
    later = tp.files_later
    if later is not None:
        tp.files_later = None
        tp._manifest["files"] = later()
    return tp._manifest


def _set_manifest(tp: TargetPlan, value: dict[str, Any]) -> None:
    tp._manifest = value


# The dataclass's __init__ assigns ``manifest`` through this property: its ``files`` come late.
TargetPlan.manifest = property(_manifest, _set_manifest)  # type: ignore[assignment]


@dataclass
class Plan:
    targets: list[TargetPlan]
    engine_checked: bool
    files_read: int = 0
    registry: Registry | None = None
    shards: dict[str, Any] | None = None  # `olly plan --shards N`: the split, see olly/shard.py describe

    def by_label(self) -> dict[str, TargetPlan]:
        return {t.label: t for t in self.targets}


def compute_inputs(ws: Workspace, t: ImageTarget, hasher: FileHasher, dep_plans: dict[str, TargetPlan],
                   platform: str, engine: Engine | None = None) -> TargetPlan:
    """Hash a target's inputs into its key record, manifest and content tag. ``engine`` (the one
    building this platform; None: not consulted) decides the default builder, which is keyed."""
    dep_variants = {d: _dep_for(ws, t, dep_plans[d], platform) for d in t.depends_on}
    # Only what the Dockerfile can copy is keyed and sent (olly.reach; whole context if unsure).
    lock = baselock.read_lock(ws.root) or {}  # once: the reader and the pinned Dockerfile see one olly.lock
    analyzer = reach.analyzer(target=t.target, args=t.args, secrets=set(t.secrets), platform=platform,
                              pins={r: e.digest for r, e in lock.items()},
                              deps={dep_arg_name(d): (dp.ref, d, dp.context.dockerfile if dp.context else b"")
                                    for d, dp in dep_variants.items()}, engine=engine)
    ctx = scan(ws.root, t, hasher, analyzer)
    read = ctx.dockerfile  # keyed as read; the digests olly.lock pins its FROM lines to are `bases`
    pinned = baselock.pin_context(ws, t, ctx, lock)  # the engine gets (and COPY may see) the pinned text
    inputs, inputs_encoded = scan_inputs(ws.root, t.inputs, hasher, t.label)
    deps = {d: dp.key for d, dp in dep_variants.items()}
    plat = platform
    # A recalled context's rows are decoded into the manifest only if it is read (a plan of
    # unchanged targets never reads them); the key splices their encoding (ctx.files_encoding).
    later = ctx.file_rows if ctx.lazy is not None and ctx.via is None else None
    files = [] if later is not None else ctx.file_rows()
    labels = image_labels(ws, t)
    secret_values = _secret_values(ws, t)
    secrets = sorted(secret_values)  # names only: a secret's value is never keyed or stored
    # Auto: BuildKit where the engine has it, classic for a context holding files only the classic
    # daemon drops (ctx.extras); without an engine, what the last run saw of it (olly.buildkit).
    choice = buildkit.choose_for(ws, t, engine, platform, ctx.extras)
    builder = choice.builder
    record = keys.image_record(
        files=files, dockerfile=read, dockerignore=ctx.dockerignore, args=t.args, target=t.target,
        platform=plat, inputs=inputs, deps=deps, labels=labels, secrets=secrets, bases=pinned.bases,
        builder=builder,
    )
    # Fields whose encoding is at hand: an unchanged context's rows, as remembered, and the
    # `inputs` rows when remembered or just encoded to be (olly.walkmemo).
    encoded = {name: value for name, value in (("files", ctx.files_encoding()), ("inputs", inputs_encoded))
               if value is not None}
    if later is not None and "files" not in encoded:
        raise AssertionError("a recalled context without its rows' encoding")  # the key would miss its files
    key = keys.compute_key(record, encoded or None)
    ctx.keyed()  # its rows served this key: not kept for the whole plan
    manifest = {
        "schema": keys.KEY_SCHEMA, "key": key, "files": files, "dockerfile": hash_bytes(read),
        "dockerignore": None if ctx.dockerignore is None else hash_bytes(ctx.dockerignore),
        "args": dict(t.args), "target": t.target or "", "platform": plat, "inputs": inputs, "deps": deps,
        "labels": labels, "secrets": secrets, "bases": pinned.bases, "builder": builder,
        "builder_reason": choice.reason,  # not keyed: why this builder (olly plan --json, olly why)
        **reach.manifest_fields(ctx.reach, ctx.via, files, t.dockerfile),  # not keyed: which line reaches what
    }
    # What the engine gets: the user's args, the secrets, each dependency's local image reference.
    args = dict(t.args) | secret_values | {dep_arg_name(d): dp.ref for d, dp in dep_variants.items()}
    return TargetPlan(
        label=t.label, kind="image", action="build", key=key, repository=t.repository,
        tag=keys.content_tag(key), manifest=manifest, context=ctx, args=args, target=t, platform=plat,
        notes=pinned.notes + ([choice.note] if choice.note else []), files_later=later,
    )


def _dep_for(ws: Workspace, t: ImageTarget, dep: TargetPlan, platform: str) -> TargetPlan:
    """The arm64 build of an image stands on the arm64 build of its dependency."""
    try:
        return dep.for_platform(platform)
    except KeyError:
        raise config_error(ws, ("images", t.label, "depends_on"), f"builds {platform} but its dependency "
                           f"{dep.label} is built for {', '.join(dep.platforms)} only", "platform-mismatch") from None


def target_platforms(t: ImageTarget, registry: Registry | None, native: str) -> tuple[str, ...]:
    """What an image is built for: its own ``platform(s)``, else the registry's ``platforms``
    (production pushes), else the engine's own platform (local development)."""
    return t.platforms or (registry.platforms if registry is not None else ()) or (native,)


def _secret_values(ws: Workspace, t: ImageTarget) -> dict[str, str]:
    values = {}
    for name in t.secrets:
        value = os.environ.get(name)
        if value is None:
            raise config_error(ws, ("images", t.label, "secrets"), f"{name} is not set in the environment", "secret-missing")
        values[name] = value
    scrub.register(*values.values())  # from now on no output of this process shows them
    return values


def image_labels(ws: Workspace, t: ImageTarget) -> dict[str, str]:
    """OCI labels that do not vary per commit (so a cached image stays valid)."""
    labels = {"org.opencontainers.image.title": t.repository}
    if ws.source:
        labels["org.opencontainers.image.source"] = ws.source
    return labels


def make_plan(ws: Workspace, graph: Graph, labels: list[str], cache: Cache, engine: Engine | None,
              registry: Registry | None = None, version: str | Later | None = None,
              signer: signing.Signer | None = None) -> Plan:
    """Plan ``labels`` (already in dependency order). ``engine`` None = do not consult it;
    ``registry`` = also ask that registry which content tags it already holds."""
    hasher = FileHasher(ws.root, cache.stat_view())
    contexts = [(t.context, context_dockerfile(t)) for t in (ws.targets[label] for label in labels)
                if isinstance(t, ImageTarget)]
    hasher.walks = memo = walkmemo.Memo(cache, contexts)
    plans: dict[str, TargetPlan] = {}
    client = registry_api.RegistryClient(registry_api.Endpoint(registry.name, registry.host, registry.insecure)) if registry else None
    images = [label for label in labels if isinstance(ws.targets[label], ImageTarget)]
    views = ImageViews(len(images))  # inspects, or one listing
    _prefetch(views.of(engine), cache, images)
    # A single-platform image is decided after the next image's inputs are computed: its engine
    # inspect, sent as soon as its key is known, has been answered by then. Nothing computed in
    # between reads a decision (a dependent needs only its dependencies' keys); charts and
    # multi-platform images wait for every decision before theirs.
    pending: list[tuple[TargetPlan, EngineImages | None]] = []

    def decide(tp: TargetPlan, view: EngineImages | None) -> None:
        _decide_local(tp, cache, view)
        if client is not None and registry is not None:
            _decide_remote(tp, client, registry, signer)
        tp.reasons += tp.notes  # kept whatever was decided: e.g. "base python:3.14-slim not locked"

    def decide_pending() -> None:
        for tp, view in pending:
            decide(tp, view)
        pending.clear()

    # What the workspace's watcher saw change (olly.watchsync), synced before any walk; one
    # synced only now comes after the walk helper started: the helper's walks before it are not taken.
    memo.sync = watchsync.take(ws.root)
    if memo.sync is not None and memo.sync.late:
        walkhelper.fresh_from_now(ws.root)
    try:
        memo.helper = walkhelper.claim(ws.root)  # started by the CLI, if the cache holds walks worth it
        for label in labels:
            t = ws.targets[label]
            if isinstance(t, ChartTarget):
                decide_pending()
                tp = TargetPlan(label, "chart", "package", [], target=t, chart=charts.load_chart(ws.root, t, hasher))
                version = settled(version)  # `git describe`, started before planning (olly.api)
                _decide_chart(ws, tp, plans, cache, registry, version)
                plans[label] = tp
                continue
            platforms = target_platforms(t, registry, engine.platform if engine else native_platform())
            if len(platforms) == 1:
                tp = compute_inputs(ws, t, hasher, plans, platforms[0], engine_for(engine, platforms[0]))
                tp.history = label
                view = views.of(engine_for(engine, platforms[0]))  # the engine that builds this platform
                _ask_early(tp, cache, view)
                decide_pending()
                pending.append((tp, view))
                plans[label] = tp
                continue
            decide_pending()
            variants = []
            for platform in platforms:
                tp = compute_inputs(ws, t, hasher, plans, platform, engine_for(engine, platform))
                tp.history = f"{label}@{platform}"
                decide(tp, views.of(engine_for(engine, platform)))
                variants.append(tp)
            tp = multi_platform_plan(t, variants)
            if client is not None and registry is not None:
                index.decide_index(tp, client, registry)
            plans[label] = tp
        decide_pending()
    finally:
        views.close()  # prefetched inspects nobody asked for
        memo.close()  # the walk helper, if any
    _check_chart_names(plans)
    cache.save_stats(list(hasher.updates.values()), hasher.forget)
    memo.save()
    if set(labels) == set(ws.targets):  # every target planned: the memos of removed ones can go
        images = [t for t in ws.targets.values() if isinstance(t, ImageTarget)]
        cache.prune_memos({walkmemo.key_of(*c) for c in contexts},
                          {walkmemo.inputs_key(list(t.inputs)) for t in images if t.inputs})
    return Plan([plans[label] for label in labels], engine_checked=engine is not None,
                files_read=hasher.files_read, registry=registry)


def _ask_early(tp: TargetPlan, cache: Cache, view: EngineImages | None) -> None:
    """Send the inspect ``_decide_local`` will make for ``tp``: of the image recorded for its
    key, else of its content tag."""
    if view is None or view.listing:
        return
    result = cache.result(tp.label, tp.key)
    if result is not None:
        view.prefetch([result["image_id"]])
    else:
        view.prefetch_tag(tp.ref)


def _prefetch(view: EngineImages | None, cache: Cache, images: list[str]) -> None:
    """Send the inspects a plan will most likely make (the images last built for these labels)
    before computing any key: the engine answers meanwhile."""
    if view is not None and images and not view.listing:
        view.prefetch(cache.last_image_ids(images))


def multi_platform_plan(t: ImageTarget, variants: list[TargetPlan]) -> TargetPlan:
    """One image built for several platforms: its key covers every platform's key, its
    content tag names the OCI image index that lists them."""
    key = keys.compute_key({"schema": keys.KEY_SCHEMA, "kind": "index",
                            "platforms": {v.platform: v.key for v in variants}})
    actions = {v.action for v in variants}
    action = next((a for a in ("build", "retag", "cached", "remote") if a in actions), "build")
    if action == "cached" and "remote" in actions:
        action = "cached"
    reasons = [f"{v.platform}: {v.action} ({'; '.join(v.reasons)})" for v in variants]
    return TargetPlan(label=t.label, kind="image", action=action, reasons=reasons, key=key, repository=t.repository,
                      tag=keys.content_tag(key), target=t, variants=variants,
                      manifest={"schema": keys.KEY_SCHEMA, "key": key,
                                "platforms": {v.platform: v.key for v in variants}})


def _check_chart_names(plans: dict[str, TargetPlan]) -> None:
    """Two charts with one Chart.yaml name would overwrite each other's package and OCI tag."""
    seen: dict[str, str] = {}
    for tp in plans.values():
        if tp.chart is not None:
            if tp.chart.name in seen:
                raise OllyError("chart-invalid", f"charts {seen[tp.chart.name]} and {tp.label} are both named "
                                f"{tp.chart.name!r} in Chart.yaml: their packages and OCI tags would collide")
            seen[tp.chart.name] = tp.label


def _decide_chart(ws: Workspace, tp: TargetPlan, plans: dict[str, TargetPlan], cache: Cache,
                  registry: Registry | None, version: str | None) -> None:
    """A chart's key is known before the run only if none of its images will change."""
    assert isinstance(tp.target, ChartTarget) and tp.chart is not None
    # The registry's values overlay is refused now, not after the builds, if it is unreadable
    # or sets what olly pins.
    if registry is not None:
        charts.check_overlay(charts.load_overlay(ws.root, registry), list(tp.target.images), registry)
    images = {label: plans[label] for label in tp.target.depends_on}
    if any(p.action == "build" for p in images.values()):
        tp.reasons = ["an image it pins will be rebuilt"]
        return
    if registry is not None and any(not p.remote_digest for p in images.values()):
        tp.reasons = [f"an image it pins is not in registry {registry.name!r} yet"]
        return
    refs = {label: (p.repository, p.tag, p.remote_digest) for label, p in images.items()}
    pins = charts.make_pins(tp.target.images, refs, registry)
    chart_version, app_version = charts.stamp(tp.chart, pins, version)  # exactly as jobs.prepare_chart stamps
    tp.key = charts.chart_key(tp.chart, pins, chart_version, app_version)
    recorded = cache.artifact(tp.label, tp.key, registry.push if registry else "")
    if recorded and (ws.root / recorded["path"]).is_file():
        tp.action, tp.reasons = "cached", [f"packaged before as {tp.chart.name}-{chart_version}"]
        return
    tp.reasons = [f"no package of {tp.chart.name}-{chart_version} for these inputs"]
    previous = cache.manifest(tp.label)  # of its last package
    if previous is not None and previous.get("kind") == "chart":
        tp.changes = diff_chart_manifests(previous, charts.chart_manifest(tp.chart, pins, chart_version, app_version, registry))
        tp.reasons += [summarize(tp.changes)] if tp.changes else []


def _decide_remote(tp: TargetPlan, client: RegistryClient, registry: Registry, signer: signing.Signer | None) -> None:
    """What the registry holds under the content tag, trusted only once verified: the manifest
    is fetched and hashed; for an image held locally the registry must serve that very image;
    a remote-cache hit (nothing local) with a signing key must carry a valid signature."""
    name = registry.push_repository(tp.repository)
    found = client.manifest_config_digest(name, tp.tag)
    if found is None:
        tp.reasons.append(f"not in registry {registry.name!r}")
        return
    digest, config = found
    if tp.action != "build":
        if tp.image_id and config != tp.image_id:
            tp.reasons.append(f"registry {registry.name!r} serves other content under {tp.tag}: not pinned")
            return
        tp.remote_digest = digest
        return
    untrusted = signing_api.verify(client, signer, name, tp.key, digest) if signer is not None else None
    if untrusted is not None:
        tp.reasons.append(f"{untrusted} in registry {registry.name!r}: not trusted")
        return
    # Remote-cache hit: another machine built this key and pushed it.
    tp.remote_digest = digest
    tp.action, tp.reasons = "remote", [f"found in registry {registry.name!r}" + (", signed" if signer else "")]


def _key_label(image: dict[str, Any]) -> str | None:
    labels = (image.get("Config") or {}).get("Labels") or {}
    return labels.get(KEY_LABEL)


def _decide_local(tp: TargetPlan, cache: Cache, engine: EngineImages | None) -> None:
    result = cache.result(tp.label, tp.key)
    if result is not None:
        tp.image_id = result["image_id"]
        if engine is None:
            tp.action, tp.reasons = "cached", ["built before (engine not checked)"]
            return
        image = engine.image(result["image_id"])
        if image is None:
            tp.action, tp.reasons = "build", [f"image {result['image_id'][7:19]} was removed from the engine"]
            return
        if _key_label(image) != tp.key:  # e.g. an imported cache row: a hint, never trusted blindly
            tp.action, tp.reasons = "build", [f"image {result['image_id'][7:19]} does not carry this key"]
            return
        has_tag = engine_has_tag(image, tp.ref)  # Podman reports docker.io/repo:tag
        tp.action, tp.reasons = ("cached", ["up to date"]) if has_tag else ("retag", ["tag missing, image present"])
        return
    if engine is not None:
        found = engine.tagged(tp.ref)
        if found and _key_label(found) == tp.key:
            tp.image_id, tp.action, tp.reasons = found["Id"], "cached", ["found in engine with this key"]
            tp.adopted = True
            return
    previous = cache.manifest(tp.history or tp.label)
    if previous is None:
        tp.reasons = ["no previous build"]
        return
    tp.changes = diff_manifests(previous, tp.manifest)
    tp.reasons = [summarize(tp.changes)] if tp.changes else ["previous build not recorded for these inputs"]
