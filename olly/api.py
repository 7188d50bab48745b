"""The core functions behind each CLI command. No click, no printing: callers
pass callbacks for progress and get data back."""

from __future__ import annotations

import contextlib
import os
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from olly import baselock, buildkit, walkhelper, watchsync
from olly.cache import Cache, export_cache, import_cache, workspace_lock, writable_dir
from olly.config import BUILD_FILE, ChartTarget, ImageTarget, Target, Workspace, find_workspace, load_workspace, resolve_engines
from olly.engine import Engine
from olly.engines import Engines
from olly.errors import OllyError
from olly.graph import Graph
from olly.lazy import lazy
from olly.manifest import diff_chart_manifests, diff_manifests
from olly.plan import Plan, TargetPlan, make_plan, native_platform
from olly import history
from olly.progress import Emit, ignore
from olly.later import Later, settled
from olly.versions import git_version, resolve_version

charts: Any = lazy("olly.charts")  # only `olly why` of a chart uses it here
signing: Any = lazy("olly.signing")  # only with a registry
locking: Any = lazy("olly.locking")  # `olly lock`: with the registry client it resolves through

if TYPE_CHECKING:
    from olly.jobs import Outcome
    from olly import doctor as checkup
    from olly import gc as gc_mod
    from olly import scaffold

Say = Callable[[str], None]


def __getattr__(name: str) -> Any:
    """``api.Outcome``, imported on first use (the build machinery is not loaded for a plan)."""
    if name == "Outcome":
        from olly.jobs import Outcome

        return Outcome
    raise AttributeError(f"module 'olly.api' has no attribute {name!r}")


def _quiet(_: str) -> None:
    pass


@contextlib.contextmanager
def _reader(ws: Workspace) -> Iterator[Cache]:
    """The cache opened for a reader (plan, why, inputs, log, stats, graph): read-only when
    it cannot be written, closed afterwards."""
    cache = Cache(ws.cache_dir, reader=True)
    try:
        yield cache
    finally:
        cache.close()


def load(root: Path) -> tuple[Workspace, Graph]:
    ws = load_workspace(root)
    graph = Graph.of(ws)
    graph.cwd = _cwd_in(ws.root)
    return ws, graph


def _cwd_in(root: Path) -> str:
    """The current directory relative to the workspace root ("" when outside it): target
    patterns typed inside apps/web are read relative to it."""
    try:
        rel = Path(os.getcwd()).resolve().relative_to(root)
    except (ValueError, OSError):
        return ""
    return rel.as_posix()


def _optional_engine() -> Engine | None:
    try:
        return Engine()
    except OllyError:
        return None


def _version(ws: Workspace, labels: list[str], version: str | None, registry: Any) -> str | Later | None:
    """``--version``, else `git describe` (outside git there is none: charts keep Chart.yaml's).
    Only asked where a version is used: charts, and the version tags a registry gets."""
    if version is not None:
        return resolve_version(ws.root, version)
    if registry is None and not any(isinstance(ws.targets[label], ChartTarget) for label in labels):
        return None  # images alone, no registry: no version anywhere (and no `git` process)
    if registry is not None:
        return git_version(ws.root)  # now: a git error comes before any registry traffic
    return Later(git_version, ws.root)  # git runs while olly plans the images; charts wait for it


def plan(root: Path, patterns: list[str], *, check_engine: bool = True, registry: str | None = None,
         version: str | None = None, shards: int | None = None) -> Plan:
    """What ``make`` would do, without building. Works without an engine. With ``shards``,
    also how ``make --shard I/N`` would split the images and which shards have work."""
    ws, graph = load(root)
    labels = graph.select(patterns)
    reg = ws.registry(registry) if registry else None
    the_version = _version(ws, labels, version, reg)
    with _reader(ws) as cache:
        probe = _optional_engine() if check_engine else None
        routed = _routed(ws, probe, None) if probe else None
        the_plan = make_plan(ws, graph, labels, cache, routed, reg, the_version, signing.signer_from_env() if reg else None)
        settled(the_version)  # a `git describe` error fails the plan, charts or not
        if routed is not None:
            buildkit.remember(ws.cache_dir, routed)  # what it can build with: for plans without an engine
        if shards:
            from olly import shard as sharding

            the_plan.shards = sharding.describe(the_plan, _assignment(the_plan, cache, shards), shards)
        return the_plan


@dataclass
class MakeResult:
    plan: Plan
    outcomes: list[Outcome]
    elapsed_s: float


def make(root: Path, patterns: list[str], *, jobs: int | None = None, keep_going: bool = False,
         network: str | None = None, registry: str | None = None, push: bool = False,
         version: str | None = None, out_dir: Path | None = None, say: Say = _quiet,
         on_outcome: Callable[[Outcome], None] = lambda o: None, engine: Engine | None = None,
         on_event: Emit = ignore, force: list[str] | None = None, pull: bool = False,
         command: str = "olly make", shard: str | None = None, shard_plan: Path | None = None,
         wait_s: float = 1800.0, engines: dict[str, str] | None = None, builder: str | None = None) -> MakeResult:
    """Build the selected targets (and their dependencies) whose inputs changed; with
    ``registry``, use it as a remote cache and pin charts to it; with ``push``, publish."""
    from olly.jobs import RunContext, remove_stale_temp  # the build machinery: not for plan, why, inputs
    from olly.report import exit_code
    from olly.scheduler import RunOptions, Scheduler

    started = time.time()
    ws, graph = load(root)
    ws.builder_override = buildkit.check_name(builder, "--builder") if builder else None  # keyed: set before planning
    labels = graph.select(patterns)
    if push and not registry:
        raise OllyError("usage", "--push needs --registry NAME (one of the registries in BUILD.toml)")
    if shard and not (registry and push):
        raise OllyError("usage", "--shard needs --registry NAME --push: the registry is how shards share images")
    sharding: Any = _shard_module() if shard else None
    the_shard = sharding.parse_shard(shard) if shard else None
    reg = ws.registry(registry) if registry else None
    the_version = _version(ws, labels, version, reg)
    engine = _routed(ws, engine or Engine(), engines)  # fails fast, before any work, if no engine answers
    with workspace_lock(ws.cache_dir, say):
        # What a build decides must be seen under the lock (after any wait for another olly):
        # a walk the helper began before now does not count.
        walkhelper.fresh_from_now(ws.root)
        watchsync.forget(ws.root)  # the plan syncs with the watcher now (then its helper answers restart)
        # Before any build: a build that cannot write its log would fail half-way, as a bug.
        writable_dir(ws.cache_dir / "logs")
        cache = Cache(ws.cache_dir)
        try:
            signer = signing.signer_from_env() if reg else None
            the_plan = make_plan(ws, graph, labels, cache, engine, reg, the_version, signer)
            buildkit.remember(ws.cache_dir, engine)  # so olly why/inputs choose the builder as this run did
            # --network beats an image's own `network`, which beats the workspace's.
            the_version = settled(the_version)  # a `git describe` error is reported here at the latest
            ctx = RunContext(root=ws.root, engine=engine, registry=reg, push=push, version=the_version,
                             network=ws.network, network_override=network or None, log_dir=ws.cache_dir / "logs",
                             out_dir=out_dir or ws.root / "dist", store_dir=ws.cache_dir / "charts", signer=signer,
                             builder=ws.builder_override)
            remove_stale_temp(ctx.out_dir / "charts", ctx.store_dir)
            opts = RunOptions(jobs=jobs or default_jobs(), keep_going=keep_going)
            _force(the_plan, graph.select(force) if force else [])
            if the_shard is not None and reg is not None:
                assignment = sharding.load_assignment(shard_plan) if shard_plan else _assignment(the_plan, cache, the_shard.count)
                sharding.apply(the_plan, assignment, the_shard, reg.name)
                ctx.wait_s, ctx.owners = wait_s, {label: f"shard {n}/{the_shard.count}" for label, n in assignment.items()}
            ctx.pull = pull
            outcomes = Scheduler(the_plan, ctx, cache, opts, on_outcome, on_event).run()
            history.record_run(cache, the_plan, outcomes, started, command, exit_code(outcomes))
        finally:
            cache.close()
    return MakeResult(the_plan, outcomes, time.time() - started)


def _assignment(the_plan: Plan, cache: Cache, count: int) -> dict[str, int]:
    """Which shard builds each image: chains together, balanced by recorded build durations."""
    images = {tp.label: list(tp.target.depends_on) for tp in the_plan.targets
              if tp.kind == "image" and tp.target is not None}
    sharding = _shard_module()
    return sharding.assign(images, count, sharding.weights_from(cache.build_durations(list(images))))


def _shard_module() -> Any:
    from olly import shard  # only for --shard / --shards: a plain run never loads it

    return shard


def default_jobs() -> int:
    """Builds mostly wait (on the engine, the network, a RUN step's sleep or download), not on
    olly: measured on 2 cores, six images that wait 2 s and write 20 MB each took 9.0 s at
    -j 2, 6.7 s at -j 4 and 6.5 s at -j 8. Twice the CPU count, at least 4."""
    return max(4, 2 * (os.cpu_count() or 1))


def _routed(ws: Workspace, default: Any, flags: dict[str, str] | None) -> Any:
    """The default engine, or it plus per-platform engines ([engines] in BUILD.toml, then
    --engine PLATFORM=URL on top)."""
    routes = ws.engines | resolve_engines(flags or {}, lambda p, m: OllyError("usage", f"--engine {p}: {m}"))
    return Engines(default, routes) if routes else default


def _force(the_plan: Plan, labels: list[str]) -> None:
    """--force: build these images even though their key is known (a RUN step that fetches
    something unpinned olly cannot see); the new image is recorded under the same key."""
    for tp in the_plan.targets:
        if tp.label in labels and tp.kind == "image":
            for v in [tp, *tp.variants]:
                if v.action != "build":
                    v.action, v.reasons = "build", ["forced (--force)"]


def runs(root: Path, limit: int) -> list[history.Run]:
    """The most recent `olly make` runs of this workspace, newest first."""
    ws = load_workspace(root)
    with _reader(ws) as cache:
        return history.recent_runs(cache, limit)


def stats(root: Path, last: int) -> dict[str, Any]:
    """Per target over the last ``last`` runs: how often it was built or a cache hit, and its
    slowest and mean build times (slowest first)."""
    ws = load_workspace(root)
    with _reader(ws) as cache:
        return history.stats(cache, last)


def _one_target(ws: Workspace, graph: Graph, label: str, *, charts: bool = True) -> tuple[Target, list[str]]:
    """The one target ``label`` names and the labels to plan for it; ``charts=False`` refuses a chart."""
    matched = graph.match(label)
    if len(matched) != 1:
        raise OllyError("usage", f"{label!r} names {len(matched)} targets; give exactly one")
    (one,) = matched
    target = ws.targets[one]
    if not charts and not isinstance(target, ImageTarget):
        raise OllyError("usage", f"{one} is a chart; give an image target")
    return target, graph.order(graph.closure({one}))


def inputs(root: Path, label: str, version: str | None = None) -> TargetPlan:
    """Every input of one target, as hashed into its key (for a chart: its files and images)."""
    ws, graph = load(root)
    target, labels = _one_target(ws, graph, label, charts=True)
    the_version = resolve_version(ws.root, version) if version is not None else git_version(ws.root)
    with _reader(ws) as cache:
        the_plan = make_plan(ws, graph, labels, cache, None, version=the_version)
    return the_plan.by_label()[target.label]


def why(root: Path, label: str) -> dict[str, Any]:
    """What changed in one target's inputs since its last recorded build (a multi-platform
    image: per platform, each change prefixed with its platform)."""
    ws, graph = load(root)
    target, labels = _one_target(ws, graph, label, charts=True)
    if isinstance(target, ChartTarget):
        return _why_chart(ws, graph, target, labels)
    with _reader(ws) as cache:
        current = make_plan(ws, graph, labels, cache, None).by_label()[target.label]
        parts = [(v, cache.manifest(v.history or v.label), cache.result(v.label, v.key) is not None)
                 for v in (current.variants or [current])]
    first = (current.variants or [current])[0].manifest
    info: dict[str, Any] = {"label": target.label, "key": current.key,
                            "built_before": all(prev is not None for _, prev, _ in parts),
                            "current_key_built": all(built for _, _, built in parts), "previous_key": None,
                            "changes": [], "builder": first.get("builder"),
                            "builder_reason": first.get("builder_reason"),
                            "notes": sorted({n for v, _, _ in parts for n in v.notes if n.startswith("builder ")})}
    for v, previous, built_now in parts:
        if previous is not None and not built_now:
            prefix = f"{v.platform}: " if current.variants else ""
            info["previous_key"] = previous.get("key") if not current.variants else None
            info["changes"] += [prefix + change for change in diff_manifests(previous, v.manifest)]
    return info


def _why_chart(ws: Workspace, graph: Graph, target: ChartTarget, labels: list[str]) -> dict[str, Any]:
    """What changed in a chart's files, pins and version since its last package. Planned as
    ``make`` would for the registry that package was made for (asking it for the images'
    digests, as ``olly plan --registry`` does), with the version ``make`` would stamp."""
    with _reader(ws) as cache:
        previous = cache.manifest(target.label)
        previous = previous if previous is not None and previous.get("kind") == "chart" else None
        reg = ws.registries.get((previous or {}).get("registry") or "")  # None if no longer declared
        version = git_version(ws.root)
        plans = make_plan(ws, graph, labels, cache, None, reg, version).by_label()
        chart = plans[target.label].chart
        assert chart is not None
        refs = {label: (plans[label].repository, plans[label].tag, plans[label].remote_digest)
                for label in target.depends_on}
        pins = charts.make_pins(target.images, refs, reg)
        current = charts.chart_manifest(chart, pins, *charts.stamp(chart, pins, version), reg)
        built = cache.artifact(target.label, current["key"], reg.push if reg else "") is not None
    return {"label": target.label, "key": current["key"], "built_before": previous is not None,
            "current_key_built": built, "previous_key": previous.get("key") if previous else None,
            "changes": diff_chart_manifests(previous, current) if previous is not None and not built else []}


def cache_export(root: Path, dest: Path, say: Say = _quiet) -> dict[str, int]:
    """Snapshot this workspace's cache (results, manifests, pushes, packages) into ``dest``."""
    ws = load_workspace(root)
    with workspace_lock(ws.cache_dir, say):
        return export_cache(ws.cache_dir, dest)


def cache_import(root: Path, src: Path, say: Say = _quiet) -> dict[str, int]:
    """Merge a cache export (e.g. restored by CI) into this workspace's cache."""
    ws = load_workspace(root)
    with workspace_lock(ws.cache_dir, say):
        return import_cache(ws.cache_dir, src)


@dataclass
class LockResult:
    path: Path  # the workspace's olly.lock
    changes: list[locking.Change]  # what `olly lock` did, one per base (empty with check)
    problems: list[str]  # with check: what is missing or stale, one line each


def lock(root: Path, *, update: bool = False, check: bool = False, images: list[str] | tuple[str, ...] = (),
         say: Say = _quiet) -> LockResult:
    """Pin every external base image of the workspace in olly.lock (``update``: re-resolve all,
    or just ``images``); with ``check``, only report what is missing or stale, writing nothing."""
    ws = load_workspace(root)
    if check and (update or images):
        raise OllyError("usage", "--check only reports: it cannot be combined with --update or IMAGE arguments")
    if images and not update:
        raise OllyError("usage", "IMAGE arguments name the bases to re-resolve: use them with --update")
    engine = _optional_engine()  # builds without a platform setting are for the engine's own
    native = engine.platform if engine else native_platform()
    path = ws.root / baselock.LOCK_FILE
    if check:
        return LockResult(path, [], locking.check(ws, native))
    # Held from reading the lock to writing it: two `olly lock` runs do not lose each other's
    # entries, and an `olly make` plans with the old lock or the new one, never half of one.
    with workspace_lock(ws.cache_dir, say):
        return LockResult(path, locking.lock(ws, native, update=update, images=images), [])


def graph_text(root: Path, patterns: list[str], fmt: str) -> str:
    """The graph, with the targets that would build (planned without an engine) marked stale."""
    ws, graph = load(root)
    labels = graph.select(patterns)
    with _reader(ws) as cache:
        the_plan = make_plan(ws, graph, labels, cache, None, version=git_version(ws.root))
    stale = {tp.label for tp in the_plan.targets if tp.action in ("build", "package")}
    return graph.render(fmt, labels, stale)


def gc(root: Path, *, keep: int | None = None, registry: str | None = None, dry_run: bool = False,
       say: Say = _quiet) -> gc_mod.Report:
    """Remove what no current key, kept chart package or pushed version references, keeping
    the last ``keep`` builds per target; with ``registry``, its unreferenced content tags too."""
    ws, graph = load(root)
    reg = ws.registry(registry) if registry else None
    version = git_version(ws.root)
    engine = Engine()  # fails fast: the engine's tags are most of what gc looks at
    with workspace_lock(ws.cache_dir, say):
        cache = Cache(ws.cache_dir)
        try:
            from olly import gc as gc_mod

            return gc_mod.run(ws, graph, cache, engine, reg, gc_mod.DEFAULT_KEEP if keep is None else keep, dry_run, version)
        finally:
            cache.close()


def init(root: Path) -> scaffold.Scaffold:
    """Write a commented BUILD.toml for the Dockerfiles and charts under ``root`` (never over
    an existing one) and ignore olly's own directories in .gitignore."""
    from olly import scaffold  # PyYAML and the scaffolding rules: only for olly init

    return scaffold.write(root)


def doctor(start: Path) -> checkup.Checkup:
    """Check what a run needs (engine, registries, qemu, base-image lock, .cache, git)."""
    from olly import doctor as checkup

    return checkup.run(start)


def completion_words(start: Path) -> dict[str, list[str]]:
    """Image labels, chart labels and registry names of the workspace found from ``start``,
    for shell completion: read from BUILD.toml without validating it (a half-edited file
    still completes); empty lists when there is none."""
    words: dict[str, list[str]] = {"images": [], "charts": [], "registries": []}
    try:
        data = tomllib.loads((find_workspace(start) / BUILD_FILE).read_text(encoding="utf-8"))
    except (OllyError, OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return words
    for kind in words:
        table = data.get(kind)
        words[kind] = sorted(map(str, table)) if isinstance(table, dict) else []
    return words
