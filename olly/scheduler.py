"""Runs a plan: jobs in parallel in dependency order, outcomes recorded as data.

Jobs (olly.jobs) run on worker threads; only this module's main loop touches the
cache, and only with verified results: a build whose streamed bytes matched the
plan, a digest the registry reported, a package written completely.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from olly.cache import Cache
from olly.chartproof import Proofs
from olly.config import ChartTarget
from olly.errors import OllyError
from olly.chartjobs import ChartWork, chart_pins, prepare_chart, run_chart
from olly.jobs import DepImage, Outcome, RunContext, run_image
from olly.plan import Plan, TargetPlan
from olly.progress import Emit, Event, EventQueue, ignore

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

__all__ = ["Outcome", "Scheduler"]


@dataclass
class RunOptions:
    jobs: int
    keep_going: bool


def _outcome_for(o: Outcome, platform: str) -> Outcome:
    """The outcome of one platform of a (possibly multi-platform) image."""
    return next((v for v in o.variants if v.platform == platform), o)


class _Pool:
    """A thread pool made at the first job: a run with nothing to build (the no-op) starts no
    thread and never loads concurrent.futures (~4 ms with the logging it imports)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None

    def submit(self, fn: Callable[..., Outcome], *args: Any) -> Future[Outcome]:
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=self.workers)
        return self._pool.submit(fn, *args)

    def wait(self, running: dict[Future[Outcome], Any], timeout: float) -> tuple[set[Future[Outcome]], Any]:
        from concurrent.futures import FIRST_COMPLETED, wait

        return wait(running, timeout=timeout, return_when=FIRST_COMPLETED)

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)


class Scheduler:
    def __init__(self, plan: Plan, ctx: RunContext, cache: Cache, opts: RunOptions,
                 on_outcome: Callable[[Outcome], None] = lambda o: None, on_event: Emit = ignore) -> None:
        self.plan, self.ctx, self.cache, self.opts = plan, ctx, cache, opts
        self.on_outcome = on_outcome
        self.on_event = on_event
        self.events = EventQueue(on_event)
        ctx.emit = self._emit  # build threads report steps and log lines through the queue
        self.by_label = plan.by_label()
        self.outcomes: dict[str, Outcome] = {}
        self.stopped_by: str | None = None
        if any(isinstance(tp.target, ChartTarget) for tp in plan.targets):
            ctx.proofs = Proofs(ctx.store_dir)  # what earlier runs verified of the charts' outputs

    def run(self) -> list[Outcome]:
        pending = list(self.plan.targets)
        self.on_event(Event("planned", text="\n".join(tp.label for tp in pending)))  # e.g. to align columns
        running: dict[Future[Outcome], tuple[TargetPlan, ChartWork | None]] = {}
        pool = _Pool(max(1, self.opts.jobs))
        abandon = True
        try:
            while pending or running:
                before = len(pending)
                pending = self._start_ready(pending, running, pool)
                if not running:
                    if pending and len(pending) == before:
                        raise RuntimeError(f"scheduler made no progress on {[t.label for t in pending]}")
                    continue
                # A timeout, so the main thread regularly runs Python code: a Ctrl-C that the
                # OS delivered to a worker thread is then handled here promptly.
                done, _ = pool.wait(running, timeout=0.2)
                self.events.drain()
                self.on_event(Event("tick"))  # lets a renderer redraw and pace heartbeats
                for fut in done:
                    tp, work = running.pop(fut)
                    self._finish(tp, work, fut.result())
            abandon = False
        except Exception:
            abandon = False  # e.g. the cache became unwritable: let running builds end before the lock goes
            raise
        finally:
            # Ctrl-C abandons running builds (the process exits); anything else waits for them.
            pool.shutdown(wait=not abandon, cancel_futures=True)
            if self.ctx.proofs is not None:
                self.ctx.proofs.save()  # only proofs of finished, verified charts are in it
        return [self.outcomes[t.label] for t in self.plan.targets]

    def _start_ready(self, pending: list[TargetPlan], running: dict, pool: _Pool) -> list[TargetPlan]:
        still: list[TargetPlan] = []
        for tp in pending:
            deps = tp.target.depends_on if tp.target else []
            if tp.action == "elsewhere":  # --shard: another runner's (or the final job's) work
                self._set(Outcome(tp.label, "skipped", "; ".join(tp.reasons), key=tp.key))
                continue
            blocked = [d for d in deps if d in self.outcomes and self.outcomes[d].status in ("failed", "skipped")]
            if blocked:
                self._set(Outcome(tp.label, "skipped", f"dependency {blocked[0]} did not build", key=tp.key))
            elif self.stopped_by and not self.opts.keep_going:
                self._set(Outcome(tp.label, "skipped", f"stopped after {self.stopped_by} failed (use --keep-going)", key=tp.key))
            elif any(d not in self.outcomes for d in deps):
                still.append(tp)
            elif len(running) >= self.opts.jobs and (isinstance(tp.target, ChartTarget) or self._needs_worker(tp)):
                still.append(tp)  # no free slot: submitting now would queue it past a failure
            elif isinstance(tp.target, ChartTarget):
                try:
                    work = self._prepare_chart(tp)
                except OllyError as exc:
                    self._finish(tp, None, Outcome(tp.label, "failed", exc.message))
                    continue
                except Exception as exc:  # a bug fails this chart, not the whole run
                    self._finish(tp, None, Outcome(tp.label, "failed", f"internal error: {type(exc).__name__}: {exc}"))
                    continue
                if work.proven and not self.ctx.push:  # nothing to package, write or send: no thread
                    self._finish(tp, work, run_chart(self.ctx, tp, work))
                    continue
                self.on_event(Event("started", tp.label))
                running[pool.submit(run_chart, self.ctx, tp, work)] = (tp, work)
            elif self._needs_worker(tp):
                self.on_event(Event("started", tp.label))
                if tp.action == "wait":
                    owner = self.ctx.owners.get(tp.label, "another shard")
                    from olly.shard import wait_for  # --shard only

                    running[pool.submit(wait_for, self.ctx, tp, owner, self.ctx.wait_s)] = (tp, None)
                else:
                    running[pool.submit(run_image, self.ctx, tp, self._deps_for(tp))] = (tp, None)
            else:
                self._finish(tp, None, run_image(self.ctx, tp, {}))  # cached: nothing slow to do
        return still

    def _emit(self, event: Event) -> None:
        self.events.put(event)

    def _needs_worker(self, tp: TargetPlan) -> bool:
        return tp.action in ("build", "wait") or (self.ctx.push and self.ctx.registry is not None)

    def _deps_for(self, tp: TargetPlan) -> dict[str, list[DepImage]]:
        """Per platform, what the build of ``tp`` stands on: each dependency's key and the image
        verified for it this run, or its registry digest if it was a remote-cache hit (pulled
        before building). The arm64 build stands on the arm64 build of its dependency."""
        out: dict[str, list[DepImage]] = {}
        for platform in tp.platforms:
            out[platform] = []
            for label in (tp.target.depends_on if tp.target else []):
                dp = self.by_label[label].for_platform(platform)
                o = _outcome_for(self.outcomes[label], dp.platform)
                remote = ""
                if dp.action in ("remote", "wait") and self.ctx.registry is not None:  # in the registry, not here
                    remote = f"{self.ctx.registry.push_ref(dp.repository)}@{dp.remote_digest or o.digest}"
                out[platform].append(DepImage(label, dp.ref, dp.key, o.image_id, remote))
        return out

    def _prepare_chart(self, tp: TargetPlan) -> ChartWork:
        images = {label: self.outcomes[label] for label in tp.target.depends_on}  # type: ignore[union-attr]
        repos = {label: self.by_label[label].repository for label in images}
        pins = chart_pins(self.ctx, tp, images, repos)
        where = self.ctx.registry.push if self.ctx.registry else ""
        return prepare_chart(self.ctx, tp, pins, lambda key: self.cache.artifact(tp.label, key, where))

    def _finish(self, tp: TargetPlan, work: ChartWork | None, o: Outcome) -> None:
        registry = self.ctx.registry.push if self.ctx.registry else ""
        for vp, vo in zip(tp.variants, o.variants):  # each platform that finished, even if another failed
            self._record_image(vp, vo, registry)
        if not tp.variants:
            self._record_image(tp, o, "")
        if work is not None:
            self._record_chart(tp, work, o, registry)
        if o.status != "failed" and o.digest and self.ctx.registry is not None:
            self.cache.record_push(tp.label, o.key, registry, o.ref, o.digest)  # a multi-platform image: its index
        if o.changed:  # whatever the stat cache (or a remembered walk) said of these files is not to be trusted
            self.cache.save_stats([], o.changed)
            self.cache.forget_walks(o.changed)
        if o.status == "failed" and self.stopped_by is None:
            self.stopped_by = tp.label
        self._set(o)

    def _record_chart(self, tp: TargetPlan, work: ChartWork, o: Outcome, registry: str) -> None:
        """A verified package (and its proof, olly.chartproof): recorded unless the cache holds
        exactly this already (a no-op run then writes nothing)."""
        if self.ctx.proofs is not None and not (work.proven and o.status != "failed"):  # a proof used stays
            self.ctx.proofs.record(tp.label, o.proof if o.status != "failed" else None, o.proof_files)
        if o.status == "failed":
            return
        rel = work.store.relative_to(self.ctx.root).as_posix() if work.store.is_relative_to(self.ctx.root) else str(work.store)
        row = {"path": rel, "digest": o.image_id, "version": work.version}
        if work.recorded == row and self.cache.manifest(tp.label) == json.loads(json.dumps(work.manifest, sort_keys=True)):
            return
        self.cache.record_artifact(tp.label, work.key, registry, rel, o.image_id, work.version, work.manifest)

    def _record_image(self, tp: TargetPlan, o: Outcome, registry: str) -> None:
        """A verified build (or an image adopted from the engine) and, with ``registry`` (given
        for a platform of a multi-platform image), that platform's own registry digest."""
        if tp.kind != "image":
            return
        if o.status == "built" or (o.status == "cached" and tp.adopted):
            self.cache.record_build(tp.label, tp.key, o.image_id, tp.tag, o.duration_s if o.status == "built" else 0.0,
                                    tp.manifest, history=tp.history or tp.label)
        if registry and o.status != "failed" and o.digest:  # only given for a platform of a multi-platform image
            self.cache.record_push(tp.label, tp.key, registry, o.ref, o.digest)

    def _set(self, outcome: Outcome) -> None:
        self.events.drain()  # a target's last steps come before its result
        self.outcomes[outcome.label] = outcome
        self.on_outcome(outcome)
        self.on_event(Event("finished", outcome.label, outcome=outcome))
