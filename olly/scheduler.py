"""Runs a plan: builds in parallel in dependency order, records outcomes as data.

Builds run on worker threads; only this module's main loop touches the cache, and
only after a build is verified (the streamed bytes equal the planned ones).
"""

from __future__ import annotations

import re
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from olly.cache import Cache
from olly.context import TarStream
from olly.errors import OllyError
from olly.engine import KEY_LABEL, BuildFailed, BuildRequest, Engine
from olly.plan import Plan, TargetPlan


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
    log: str = ""
    tail: list[str] = field(default_factory=list)


@dataclass
class RunOptions:
    jobs: int
    keep_going: bool
    network: str | None
    log_dir: Path


def log_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", label) + ".log"


class Scheduler:
    def __init__(self, root: Path, plan: Plan, engine: Engine, cache: Cache, opts: RunOptions,
                 on_outcome: Callable[[Outcome], None] = lambda o: None) -> None:
        self.root, self.plan, self.engine, self.cache, self.opts = root, plan, engine, cache, opts
        self.on_outcome = on_outcome
        self.outcomes: dict[str, Outcome] = {}
        self.stopped_by: str | None = None

    def run(self) -> list[Outcome]:
        pending = list(self.plan.targets)
        running: dict[Future[Outcome], TargetPlan] = {}
        with ThreadPoolExecutor(max_workers=max(1, self.opts.jobs)) as pool:
            try:
                while pending or running:
                    pending = self._start_ready(pending, running, pool)
                    if not running:
                        continue
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in done:
                        self._finish(running.pop(fut), fut.result())
            except BaseException:
                for fut in running:
                    fut.cancel()
                raise
        return [self.outcomes[t.label] for t in self.plan.targets]

    def _start_ready(self, pending: list[TargetPlan], running: dict[Future[Outcome], TargetPlan], pool: ThreadPoolExecutor) -> list[TargetPlan]:
        still: list[TargetPlan] = []
        for tp in pending:
            deps = tp.target.depends_on if tp.target else []
            blocked = [d for d in deps if d in self.outcomes and self.outcomes[d].status in ("failed", "skipped")]
            if blocked:
                self._set(Outcome(tp.label, "skipped", f"dependency {blocked[0]} did not build", key=tp.key))
            elif self.stopped_by and not self.opts.keep_going:
                self._set(Outcome(tp.label, "skipped", f"stopped after {self.stopped_by} failed (use --keep-going)", key=tp.key))
            elif any(d not in self.outcomes for d in deps):
                still.append(tp)
            elif tp.action == "build":
                running[pool.submit(self._build, tp)] = tp
            else:
                self._set(self._settle(tp))
        return still

    def _settle(self, tp: TargetPlan) -> Outcome:
        """Targets that need no build: cached, retagged, or not buildable yet."""
        if tp.action == "unsupported":
            return Outcome(tp.label, "skipped", "; ".join(tp.reasons))
        if tp.action == "retag":
            self.engine.tag(tp.image_id or "", tp.repository, tp.tag)
            return Outcome(tp.label, "cached", "retagged existing image", key=tp.key, ref=tp.ref, image_id=tp.image_id or "")
        if tp.action == "cached" and tp.reasons == ["found in engine with this key"]:
            self.cache.record_build(tp.label, tp.key, tp.image_id or "", tp.tag, 0.0, tp.manifest)
        return Outcome(tp.label, "cached", "; ".join(tp.reasons), key=tp.key, ref=tp.ref, image_id=tp.image_id or "")

    def _build(self, tp: TargetPlan) -> Outcome:
        """Runs on a worker thread: stream, build, verify, tag. Never touches the cache."""
        assert tp.context is not None and tp.target is not None
        started = time.time()
        log_path = self.opts.log_dir / log_name(tp.label)
        stream = TarStream(self.root, tp.context)
        req = BuildRequest(
            context=iter(stream), dockerfile_name=tp.context.dockerfile_name, dockerfile=tp.context.dockerfile,
            dockerfile_display=tp.target.dockerfile, args=tp.args, target=tp.target.target,  # type: ignore[union-attr]
            platform=tp.target.platform, network=tp.target.network or self.opts.network,  # type: ignore[union-attr]
            labels={**tp.manifest["labels"], KEY_LABEL: tp.key}, log_path=log_path,
        )
        base = Outcome(tp.label, "failed", key=tp.key, ref=tp.ref, started=started, log=str(log_path))
        try:
            image_id = self.engine.build(req)
        except BuildFailed as exc:
            base.reason, base.tail = exc.message, exc.tail
            return self._timed(base)
        if stream.changed:
            base.reason = f"input changed during the build ({', '.join(stream.changed[:3])}); result discarded, run again"
            return self._timed(base)
        try:
            self.engine.tag(image_id, tp.repository, tp.tag)
        except OllyError as exc:
            base.reason = exc.message
            return self._timed(base)
        base.status, base.image_id, base.reason = "built", image_id, "; ".join(tp.reasons)
        return self._timed(base)

    @staticmethod
    def _timed(o: Outcome) -> Outcome:
        o.finished = time.time()
        o.duration_s = o.finished - o.started
        return o

    def _finish(self, tp: TargetPlan, outcome: Outcome) -> None:
        if outcome.status == "built":
            self.cache.record_build(tp.label, tp.key, outcome.image_id, tp.tag, outcome.duration_s, tp.manifest)
        elif outcome.status == "failed" and self.stopped_by is None:
            self.stopped_by = tp.label
        self._set(outcome)

    def _set(self, outcome: Outcome) -> None:
        self.outcomes[outcome.label] = outcome
        self.on_outcome(outcome)
