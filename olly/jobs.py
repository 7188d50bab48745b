"""What runs on a worker thread for one target: build, push (charts: olly.chartjobs).

Jobs never touch the cache: they return an Outcome whose fields tell the
scheduler's main thread what to record (build result, registry digest, artifact).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from olly import failpoints, progress
from olly.buildkit import BUILDKIT, CLASSIC
from olly.config import ImageTarget, Registry
from olly.tarstream import TarStream, links_the_layer_cache_misreads
from olly.engine import KEY_LABEL, BuildFailed, BuildRequest, Engine, oci_platform
from olly.engines import engine_for
from olly.errors import OllyError
from olly.lazy import lazy
from olly.plan import TargetPlan
from olly.versions import image_tag, is_release

if TYPE_CHECKING:
    from olly import chartproof, signing
    from olly.registry import RegistryClient

# A run without a registry never talks to one: neither is loaded then.
registry_api: Any = lazy("olly.registry")
signing_api: Any = lazy("olly.signing")


@dataclass
class Outcome:
    label: str
    status: str  # built | cached | failed | skipped
    reason: str = ""
    duration_s: float = 0.0
    started: float = 0.0
    finished: float = 0.0
    key: str = ""
    ref: str = ""
    image_id: str = ""
    digest: str = ""  # registry manifest digest (images and charts), when known
    pushed: bool = False  # True when this run (re)pushed to the registry: record the digest
    artifact: str = ""  # packaged chart path, workspace-relative
    version: str = ""
    notes: list[str] = field(default_factory=list)
    log: str = ""
    tail: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # files that differed from the plan (stat rows to drop)
    platform: str = ""  # images: the platform built
    variants: list[Outcome] = field(default_factory=list)  # a multi-platform image: one per platform
    proof: dict[str, Any] | None = None  # charts: what was verified this run (olly.chartproof)
    proof_files: dict[str, list[int]] | None = None  # charts: the signatures that proof rests on


class InputChanged(BuildFailed):
    """Bytes sent differed from the bytes planned: the result must not be recorded."""

    def __init__(self, paths: list[str]) -> None:
        super().__init__(f"input changed during the build ({', '.join(paths[:3])}); result discarded, run again", [])
        self.paths = paths


@dataclass
class RunContext:
    root: Path
    engine: Engine
    registry: Registry | None
    push: bool
    version: str | None
    network: str | None  # the workspace's default
    log_dir: Path
    out_dir: Path  # dist/: user-facing outputs
    store_dir: Path  # .cache/charts/: packages by key
    signer: signing.Signer | None = None  # signs pushed content tags (signed remote cache)
    network_override: str | None = None  # --network: beats every image's own setting
    emit: progress.Emit = progress.ignore  # progress events (thread-safe: the scheduler queues them)
    pull: bool = False  # --pull: the engine refreshes base images
    wait_s: float = 0.0  # --shard: how long to wait for another shard's image in the registry
    owners: dict[str, str] = field(default_factory=dict)  # --shard: label -> "shard 2/3"
    builder: str | None = None  # --builder (already in each plan's key and manifest, which decide)
    proofs: chartproof.Proofs | None = None  # charts' verified outputs (set by the scheduler)


LOGS_KEPT = 10  # earlier logs kept per target (and platform), oldest dropped first


def keep_old_log(log: Path) -> None:
    """Move the previous log of a target to ``.cache/logs/old/<name>.<n>.log`` (1 = newest)
    instead of overwriting it, keeping at most LOGS_KEPT."""
    if not log.is_file():
        return
    old = log.parent / "old"
    try:
        old.mkdir(exist_ok=True)
        stem = log.name[: -len(".log")]
        for n in range(LOGS_KEPT, 0, -1):
            src = old / f"{stem}.{n}.log"
            if src.exists():
                if n == LOGS_KEPT:
                    src.unlink()
                else:
                    src.rename(old / f"{stem}.{n + 1}.log")
        log.rename(old / f"{stem}.1.log")
    except OSError:
        pass  # history is a convenience: never fail a build over it


def log_name(label: str, platform: str = "") -> str:
    """``apps_demo.log``; one log per platform for a multi-platform image (``apps_demo@linux_arm64.log``)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", label)
    return name + (f"@{re.sub(r'[^A-Za-z0-9._-]', '_', platform)}" if platform else "") + ".log"


def client_for(registry: Registry) -> RegistryClient:
    return registry_api.RegistryClient(registry_api.Endpoint(registry.name, registry.host, registry.insecure))


def finish(o: Outcome) -> Outcome:
    o.finished = time.time()
    o.duration_s = o.finished - o.started
    return o


# -- images -------------------------------------------------------------------------


def build_image(ctx: RunContext, tp: TargetPlan, notes: list[str], log: Path) -> str:
    """Stream the planned context, build, verify the bytes and the platform, tag. Returns the image id."""
    assert tp.context is not None
    if _builder(ctx, tp) == BUILDKIT:
        # BuildKit keys its cache by symlink targets and platform: the classic builder's
        # workarounds below (no layer cache; a second, uncached build) are not needed.
        image_id = _build_once(ctx, tp, log, no_cache=False)
        ctx.engine.tag(image_id, tp.repository, tp.tag)
        return image_id
    misread = links_the_layer_cache_misreads(tp.context)
    if misread:  # a cached layer could hold an old link target under this new key
        notes.append(f"layer cache not used: symlink {misread[0]}{' and others' if len(misread) > 1 else ''} "
                     "dangles or leaves the context")
    try:
        image_id = _build_once(ctx, tp, log, no_cache=bool(misread))
        wrong = _platform_mismatch(ctx.engine, image_id, tp.platform)
    except BuildFailed as exc:
        if misread or "does not match the specified platform" not in exc.message:
            raise
        wrong = "another platform's"
    if wrong:
        # The classic builder's layer cache ignores the platform for steps with no parent image
        # (right after FROM scratch): another platform's layer can be reused. Build afresh.
        notes.append(f"layer cache not used: it held {wrong} layers for this {tp.platform} build")
        image_id = _build_once(ctx, tp, log, no_cache=True)
        still = _platform_mismatch(ctx.engine, image_id, tp.platform)
        if still:
            raise BuildFailed(f"the engine built a {still} image for {tp.platform}", [])
    ctx.engine.tag(image_id, tp.repository, tp.tag)
    return image_id


def _builder(ctx: RunContext, tp: TargetPlan) -> str:
    """The builder the plan keyed (older manifests, without one: --builder, else classic)."""
    return str(tp.manifest.get("builder") or ctx.builder or CLASSIC)


def _build_once(ctx: RunContext, tp: TargetPlan, log: Path, no_cache: bool) -> str:
    assert tp.context is not None and isinstance(tp.target, ImageTarget)
    t = tp.target
    stream = TarStream(ctx.root, tp.context)
    req = BuildRequest(
        context=iter(stream), dockerfile_name=tp.context.dockerfile_name, dockerfile=tp.context.dockerfile,
        # Always explicit: the key says which platform, the engine must build exactly that.
        dockerfile_display=t.dockerfile, args=platform_args(tp.context.dockerfile, tp.platform) | tp.args,
        target=t.target, platform=tp.manifest["platform"],
        network=ctx.network_override or t.network or ctx.network, labels={**tp.manifest["labels"], KEY_LABEL: tp.key},
        log_path=log, no_cache=no_cache, pull=ctx.pull, builder=_builder(ctx, tp),
        dropped=tuple(e.path for e in tp.context.extras),
        on_line=progress.line_emitter(ctx.emit, tp.label, tp.platform if tp.history != tp.label else ""),
    )
    keep_old_log(log)
    image_id = ctx.engine.build(req)
    failpoints.hit("built")
    if stream.changed:
        ctx.engine.discard(image_id)  # built from bytes nobody planned: keep no trace of it
        ws_paths = [p if tp.context.dir == "." else f"{tp.context.dir}/{p}" for p in stream.changed]
        raise InputChanged(ws_paths)
    return image_id


def _platform_mismatch(engine: Engine, image_id: str, platform: str) -> str:
    """The platform the engine says ``image_id`` is for, if it is not ``platform`` ("" if it is)."""
    image = engine.inspect(image_id) or {}
    if not image.get("Architecture"):
        return ""  # the engine does not say: nothing to compare
    built = oci_platform(str(image.get("Os", "")), str(image["Architecture"]))
    return "" if built == "/".join(platform.split("/")[:2]) else built


def platform_args(dockerfile: bytes, platform: str) -> dict[str, str]:
    """BuildKit's automatic platform args (TARGETARCH, ...) for the classic builder, which has
    none: one Dockerfile then serves every platform (``COPY bin-${TARGETARCH} ...``). Only the
    ones the Dockerfile names are sent (the engine warns about unused args); the platform they
    derive from is in the key already."""
    os_name, arch, *rest = platform.split("/") + [""]
    values = {"TARGETPLATFORM": platform, "TARGETOS": os_name, "TARGETARCH": arch, "TARGETVARIANT": rest[0]}
    return {name: value for name, value in values.items() if name.encode() in dockerfile}


def push_image(ctx: RunContext, tp: TargetPlan, image_id: str, notes: list[str],
               tag_version: bool = True) -> tuple[str, bool]:
    """Make the registry hold the content tag (and the version tag). Returns (digest, pushed now).

    A content tag already in the registry is a hint: for an image held locally it counts only
    if the registry serves that very image (its config digest is the local image id)."""
    registry = ctx.registry
    assert registry is not None
    client = client_for(registry)
    name = registry.push_repository(tp.repository)
    found = client.manifest_config_digest(name, tp.tag)  # re-verified now: a deleted tag is pushed again
    if found is not None and image_id and found[1] != image_id:
        notes.append(f"WARNING: registry {registry.name!r} served other content under {tp.tag} (image "
                     f"{found[1][7:19]}, not the local {image_id[7:19]}): pushed the local image over it")
        found = None
    pushed = found is None
    if found is None:
        digest = _push_local(ctx, tp, image_id, client, name)
    else:
        digest = found[0]
    if ctx.signer is not None and (pushed or signing_api.verify(client, ctx.signer, name, tp.key, digest) is not None):
        signing_api.sign(client, ctx.signer, name, tp.key, digest)
    if tag_version:
        tag_release(ctx, client, name, digest)
    return digest, pushed


def tag_release(ctx: RunContext, client: RegistryClient, name: str, digest: str) -> None:
    """Point the version tag (if any) at ``digest``: a registry-side re-tag, no upload."""
    if not ctx.version or ctx.registry is None:
        return
    vtag = image_tag(ctx.version)
    current = client.manifest_digest(name, vtag)
    if current != digest:
        refuse_release_overwrite(ctx.registry, f"{name}:{vtag}", current, ctx.version)
        body, media_type, _ = client.get_manifest(name, digest)
        client.push_manifest(name, vtag, body, media_type)  # a tag costs no build and no upload
        confirm_tag(client, name, vtag, digest, ctx.version)


def _push_local(ctx: RunContext, tp: TargetPlan, image_id: str, client: RegistryClient, name: str) -> str:
    """Push the local image under the content tag; return the digest the registry now serves
    for it, checked to be that image (the engine's word alone is not proof)."""
    assert ctx.registry is not None
    remote_repo = ctx.registry.push_ref(tp.repository)
    ctx.engine.tag(image_id, remote_repo, tp.tag)  # the engine pushes tags, not image ids
    try:
        ctx.engine.push(remote_repo, tp.tag, ctx.registry.name)
    finally:
        ctx.engine.untag(f"{remote_repo}:{tp.tag}")  # keep the engine's image list tidy
    failpoints.hit("pushed")
    found = client.manifest_config_digest(name, tp.tag)
    if found is None or found[1] != image_id:
        raise OllyError("push-failed", f"after pushing {remote_repo}:{tp.tag}, registry {ctx.registry.name!r} "
                        f"does not serve that image ({'tag missing' if found is None else 'image ' + found[1][7:19]})")
    return found[0]


def confirm_tag(client: RegistryClient, name: str, tag: str, digest: str, version: str) -> None:
    """After PUTting a version tag, read it back (GET and hash): two runs publishing one
    version at once both get a 201, and the later PUT wins. The run whose digest lost
    fails instead of recording (and pinning charts to) what the tag no longer names."""
    now = client.manifest_digest(name, tag)
    if now != digest:
        held = f"now {now[:19]}…" if now else "now missing"
        raise OllyError("published-concurrently", f"{version} was published concurrently by another run: "
                        f"{name}:{tag} is {held}, this run pushed {digest[:19]}…; nothing recorded, "
                        "publish again once the other run is done")


def refuse_release_overwrite(registry: Registry, ref: str, current: str | None, version: str) -> None:
    """A release version names one artifact forever; dev versions may be re-pointed."""
    if current is not None and is_release(version):
        raise OllyError("release-exists", f"registry {registry.name!r} already has {ref} with other content "
                        f"({current[:19]}…); a released version is never overwritten: publish a new version")


class DepImage(NamedTuple):  # not a frozen dataclass: ~0.5 ms less at every start
    """A dependency a build stands on: ``FROM ${DEP}`` resolves ``local`` in the engine."""

    label: str
    local: str  # repository:olly-<hash>, what the build arg names
    key: str
    image_id: str  # the image built or verified for ``key`` this run ("" for a remote hit)
    remote: str  # registry ref by digest, for a remote-cache hit ("" otherwise)


def run_image(ctx: RunContext, tp: TargetPlan, deps: dict[str, list[DepImage]]) -> Outcome:
    """The whole job of an image target. ``deps``: per platform, the images its build stands
    on, checked (and pulled if they were remote-cache hits) right before the build."""
    if tp.variants:
        from olly.multiplatform import run_variants  # one module owns multi-platform images

        return run_variants(ctx, tp, deps)
    return run_platform(ctx, tp, deps.get(tp.platform, []))


def run_platform(ctx: RunContext, tp: TargetPlan, deps: list[DepImage], variant: bool = False) -> Outcome:
    """Build (or reuse) and push one platform's image. A ``variant`` (one platform of a
    multi-platform image) has a log of its own, and its index, not it, gets the version tag."""
    log = ctx.log_dir / log_name(tp.label, tp.platform if variant else "")
    ctx = dataclasses.replace(ctx, engine=engine_for(ctx.engine, tp.platform))  # [engines]: this platform's
    o = Outcome(tp.label, "cached", "; ".join(tp.reasons), started=time.time(), key=tp.key, ref=tp.ref,
                image_id=tp.image_id or "", digest=tp.remote_digest or "", platform=tp.platform,
                log=str(log) if tp.action == "build" else "")
    try:
        if tp.action == "build":
            for dep in deps:
                _ensure_dep(ctx, dep)
            o.image_id, o.status = build_image(ctx, tp, o.notes, log), "built"
        elif tp.action == "retag":
            ctx.engine.tag(tp.image_id or "", tp.repository, tp.tag)
            o.reason = "retagged existing image"
        if ctx.push and ctx.registry is not None:
            o.digest, o.pushed = push_image(ctx, tp, o.image_id, o.notes, tag_version=not variant)
            where = f"{ctx.registry.push_ref(tp.repository)}:{tp.tag}"
            o.notes.append(f"pushed {where}" if o.pushed else f"already in {ctx.registry.name} as {where}")
    except InputChanged as exc:
        o.status, o.reason, o.changed = "failed", exc.message, exc.paths
    except BuildFailed as exc:
        o.status, o.reason, o.tail = "failed", exc.message, exc.tail
    except OllyError as exc:
        o.status, o.reason = "failed", exc.message
    except Exception as exc:  # a bug must fail this target, not abandon the others mid-build
        o.status, o.reason = "failed", f"internal error: {type(exc).__name__}: {exc}"
    return finish(o)


def _ensure_dep(ctx: RunContext, dep: DepImage) -> None:
    """Make ``dep.local`` name an image that carries ``dep.key``. A tag is only a hint: anyone
    can re-point it between plan and build, and a build FROM the wrong base would be recorded
    under the right key."""
    if _carries_key(ctx.engine.inspect(dep.local), dep.key):
        return
    repo, _, tag = dep.local.rpartition(":")
    if dep.image_id and _carries_key(ctx.engine.inspect(dep.image_id), dep.key):
        ctx.engine.tag(dep.image_id, repo, tag)  # the verified image, under its tag again
        return
    if not dep.remote:
        raise OllyError("dependency-mismatch", f"dependency {dep.label}: {dep.local} in the engine does not carry "
                        f"key {dep.key} and no verified image of that key is known; run olly make again")
    assert ctx.registry is not None
    image_id = ctx.engine.pull(dep.remote, ctx.registry.name)  # by digest: the bytes the plan verified
    if not _carries_key(ctx.engine.inspect(image_id), dep.key):
        raise OllyError("dependency-mismatch", f"dependency {dep.label}: {dep.remote} from registry "
                        f"{ctx.registry.name!r} does not carry key {dep.key}; not building on it")
    ctx.engine.tag(image_id, repo, tag)


def _carries_key(image: dict[str, object] | None, key: str) -> bool:
    labels = ((image or {}).get("Config") or {}).get("Labels") or {}  # type: ignore[union-attr]
    return isinstance(labels, dict) and labels.get(KEY_LABEL) == key


TMP_PREFIX = ".olly-tmp-"


def remove_stale_temp(*dirs: Path) -> None:
    """Temporary files a killed run left behind. Call with the workspace lock held: then
    no other olly is writing one."""
    for top in dirs:
        if top.is_dir():
            for tmp in top.rglob(TMP_PREFIX + "*"):
                tmp.unlink(missing_ok=True)


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write ``data`` unless ``path`` holds it already; True if it was written."""
    try:
        if path.is_file() and path.read_bytes() == data:
            return False
    except OSError:
        pass
    write_atomic(path, data)
    return True


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename: a crash never leaves a half-written package.

    The file gets mode 0666 less the umask (0644 usually), as any tool would give it:
    mkstemp's 0600 would leave dist/ unreadable to the web server or CI step publishing it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX)
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            failpoints.hit("write")
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise OllyError("io-error", f"cannot write {path}: {exc.strerror}")


def _read_umask() -> int:
    """The umask, by setting it and back: fine at import, before any worker thread exists."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK_AT_START = _read_umask()


def _umask() -> int:
    """The process umask now. os.umask cannot read it without changing it for every thread
    (a worker creating a file meanwhile would get the wrong mode), so Linux's
    /proc/self/status is read; elsewhere the umask olly started with."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _UMASK_AT_START
