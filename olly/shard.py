"""Splitting one run across N runners: which shard builds which image.

The assignment is a pure function of the plan (labels, dependencies) and optional
weights (expected build seconds per image), so every runner computes the same one from
the same inputs. Dependency chains are kept together (a component of the dependency graph
goes to one shard) unless a component is heavier than a fair share, in which case its
images are spread in dependency order. Balancing is greedy: heaviest first, onto the
least-loaded shard; ties broken by label and shard number.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from olly import signing
from olly.errors import OllyError
from olly.jobs import Outcome, RunContext, finish
from olly.progress import Event
from olly.registry import Endpoint, RegistryClient

if TYPE_CHECKING:
    from olly.plan import Plan, TargetPlan

_SHARD = re.compile(r"^(\d+)/(\d+)$")


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    match = _SHARD.match(text.strip())
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise OllyError("usage", f"--shard {text!r}: expected I/N with 1 <= I <= N, e.g. 2/3")
    return Shard(int(match.group(1)), int(match.group(2)))


def components(images: dict[str, list[str]]) -> list[list[str]]:
    """Weakly connected components of the image dependency graph, each sorted, in label order."""
    parent = {label: label for label in images}

    def root(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for label, deps in images.items():
        for dep in deps:
            if dep in parent:
                a, b = root(label), root(dep)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    groups: dict[str, list[str]] = {}
    for label in sorted(images):
        groups.setdefault(root(label), []).append(label)
    return [groups[k] for k in sorted(groups)]


def assign(images: dict[str, list[str]], count: int, weights: dict[str, float] | None = None) -> dict[str, int]:
    """``{label: shard index (1-based)}`` for the images (label -> dependency labels)."""
    weights = weights or {}
    weight = {label: max(1.0, float(weights.get(label, 1.0))) for label in images}
    fair = sum(weight.values()) / count if images else 0.0
    units: list[list[str]] = []
    for group in components(images):
        if sum(weight[g] for g in group) > fair * 1.25 and len(group) > 1:
            units += [[g] for g in group]  # too heavy for one runner: spread its images
        else:
            units.append(group)
    load = [0.0] * count
    out: dict[str, int] = {}
    for unit in sorted(units, key=lambda u: (-sum(weight[g] for g in u), u[0])):
        shard = min(range(count), key=lambda i: (load[i], i))
        load[shard] += sum(weight[g] for g in unit)
        for label in unit:
            out[label] = shard + 1
    return out


def describe(plan: Plan, assignment: dict[str, int], count: int) -> dict[str, object]:
    """The ``shards`` section of ``olly plan --shards N --json``: per shard its images, those
    it must build, and ``has_work`` (a workflow skips shards without work)."""
    shards = []
    for index in range(1, count + 1):
        images = sorted(label for label, n in assignment.items() if n == index)
        build = [tp.label for tp in plan.targets if tp.label in images and tp.action == "build"]
        shards.append({"index": index, "images": images, "build": build, "has_work": bool(build)})
    charts = [tp.label for tp in plan.targets if tp.kind == "chart"]
    return {"count": count, "list": shards, "with_work": [s["index"] for s in shards if s["has_work"]],
            "charts": charts}


def load_assignment(path: Path) -> dict[str, int]:
    """The assignment from ``olly plan --shards N --json`` output (its ``shards`` section),
    so every runner uses the plan job's assignment verbatim."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        out = {label: int(shard["index"]) for shard in data["shards"]["list"] for label in shard["images"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OllyError("usage", f"--shard-plan {path}: not the JSON of `olly plan --shards N --json` ({exc})")
    return out


# -- a shard's run ----------------------------------------------------------------------


def weights_from(durations: dict[str, float]) -> dict[str, float]:
    """Expected build seconds, rounded up, so small timing noise does not reshuffle shards."""
    return {label: float(int(seconds) + 1) for label, seconds in durations.items()}


def apply(plan: Plan, assignment: dict[str, int], shard: Shard, registry_name: str) -> None:
    """Turn the whole plan into shard ``shard``'s part of it: its own images as planned; an
    image another shard must build becomes ``wait`` (for it in the registry) when this shard's
    builds stand on it, else ``elsewhere``; charts are the final job's."""
    by_label = plan.by_label()
    mine = [tp for tp in plan.targets if tp.kind == "image" and assignment.get(tp.label) == shard.index]
    needed: set[str] = set()
    todo = [tp for tp in mine if tp.action == "build"]
    while todo:  # everything this shard's builds stand on, transitively
        tp = todo.pop()
        for dep in (tp.target.depends_on if tp.target else []):
            if dep not in needed:
                needed.add(dep)
                todo.append(by_label[dep])
    for tp in plan.targets:
        owner = assignment.get(tp.label)
        if tp.kind == "chart":
            tp.action, tp.reasons = "elsewhere", [f"charts are made by the final `olly make --registry {registry_name} --push`"]
        elif owner != shard.index and tp.action == "build":
            where = f"shard {owner}/{shard.count} builds it"
            tp.action, tp.reasons = ("wait", [f"{where}: waiting for it in registry {registry_name!r}"]) \
                if tp.label in needed else ("elsewhere", [where])


def wait_for(ctx: RunContext, tp: TargetPlan, owner: str, deadline_s: float) -> Outcome:
    """Wait (bounded) until another shard's image is in the registry, verified as any remote
    hit is (fetched manifest; signature with a signing key). Never build it here: two
    runners building one key is how one tag got two digests."""
    assert ctx.registry is not None
    o = Outcome(tp.label, "cached", "", started=time.time(), key=tp.key, ref=tp.ref)
    client = RegistryClient(Endpoint(ctx.registry.name, ctx.registry.host, ctx.registry.insecure))
    name = ctx.registry.push_repository(tp.repository)
    parts = tp.variants or [tp]
    found: dict[str, str] = {}
    ctx.emit(Event("step", tp.label, "", f"waiting for {owner} to push {tp.tag} to registry {ctx.registry.name!r}"))
    end = time.monotonic() + deadline_s
    try:
        while True:
            for part in parts:
                if part.platform not in found:
                    digest = _verified(client, ctx, name, part)
                    if digest:
                        found[part.platform] = digest
            if len(found) == len(parts) or time.monotonic() >= end:
                break
            time.sleep(min(POLL_S, max(0.0, end - time.monotonic())))
    except OllyError as exc:
        o.status, o.reason = "failed", exc.message
        return finish(o)
    if len(found) < len(parts):
        o.status = "failed"
        o.reason = (f"waited {deadline_s:g}s for {tp.label} ({owner}) in registry {ctx.registry.name!r}: not there; "
                    f"did {owner} fail? Not building it here")
        return finish(o)
    o.reason = f"pushed by {owner}"
    if tp.variants:
        o.variants = [Outcome(v.label, "cached", o.reason, key=v.key, ref=v.ref, digest=found[v.platform],
                              platform=v.platform) for v in tp.variants]
    else:
        o.digest = found[tp.platform]
    return finish(o)


POLL_S = 2.0


def _verified(client: RegistryClient, ctx: RunContext, name: str, tp: TargetPlan) -> str | None:
    found = client.manifest_config_digest(name, tp.tag)
    if found is None:
        return None
    if ctx.signer is not None and signing.verify(client, ctx.signer, name, tp.key, found[0]) is not None:
        return None  # not (yet) signed by a trusted run: keep waiting
    return found[0]
