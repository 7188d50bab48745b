"""Turns plans and outcomes into human lines, JSON documents and an exit code."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from olly import buildkit
from olly.errors import EXIT_OK, EXIT_TARGET_FAILED
from olly.plan import Plan, TargetPlan

if TYPE_CHECKING:
    from olly.jobs import Outcome  # `olly plan` prints plans only: it never loads the build machinery

_WIDTH = 7


def plan_line(tp: TargetPlan, width: int = 0) -> str:
    """``action  label  ref  (reasons)``; ``width`` aligns the label column."""
    tag = f"  {tp.ref}" if tp.kind == "image" else ""
    return f"{tp.action:<{_WIDTH}} {tp.label:<{width}}{tag}  ({'; '.join(tp.reasons)})"


def plan_lines(plan: Plan) -> list[str]:
    width = max((len(tp.label) for tp in plan.targets), default=0)
    lines = [plan_line(tp, width) for tp in plan.targets]
    n = sum(tp.action in ("build", "package") for tp in plan.targets)
    # Without an engine, auto keys with what the last run saw of it; never seen: BuildKit, said here.
    assumed = any(buildkit.ASSUMED in v.recorded("builder_reason", "") for tp in plan.targets
                  for v in tp.variants or [tp])
    lines.append(f"{n} of {len(plan.targets)} target(s) would build" + ("" if plan.engine_checked else (
        " (engine not reachable: images not verified" + ("; keys assume it builds with BuildKit)" if assumed else ")"))))
    return lines


def plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "engine_checked": plan.engine_checked,
        **({"shards": plan.shards} if plan.shards is not None else {}),
        "targets": [
            {"label": tp.label, "kind": tp.kind, "action": tp.action, "reasons": tp.reasons, "key": tp.key or None,
             "ref": tp.ref if tp.kind == "image" else None, "changes": tp.changes, "depends_on": _deps(tp),
             "registry_digest": tp.remote_digest, "platforms": _platforms(tp)}
            for tp in plan.targets
        ],
    }


def _platforms(tp: TargetPlan) -> list[dict[str, Any]] | None:
    """Images: per platform, what would happen (one entry for a single-platform image)."""
    if tp.kind != "image":
        return None
    return [{"platform": v.platform, "action": v.action, "reasons": v.reasons, "key": v.key, "ref": v.ref,
             "registry_digest": v.remote_digest, "builder": v.recorded("builder"),
             "builder_reason": v.recorded("builder_reason")} for v in (tp.variants or [tp])]


def _deps(tp: TargetPlan) -> list[str]:
    return list(tp.target.depends_on) if tp.target else []


def outcome_line(o: Outcome, width: int = 0) -> str:
    """``status  label  ref  duration  (reason; notes)``; ``width`` aligns the label column."""
    took = f"  {o.duration_s:.1f}s" if o.status in ("built", "failed") else ""
    ref = f"  {o.ref}" if o.ref and o.status != "failed" else ""
    why = "; ".join([o.reason, *o.notes] if o.reason else o.notes)
    label = f"{o.label:<{width}}" if ref or took or why else o.label
    return f"{o.status:<{_WIDTH}} {label}{ref}{took}" + (f"  ({why})" if why else "")


def failure_details(o: Outcome) -> list[str]:
    lines = [f"--- {o.label}: last lines of the build log ({o.log})"]
    lines += [f"    {line}" for line in o.tail[-10:]]
    return lines


def counts(outcomes: list[Outcome]) -> dict[str, int]:
    out = {"built": 0, "cached": 0, "failed": 0, "skipped": 0}
    for o in outcomes:
        out[o.status] += 1
    return out


def summary_line(outcomes: list[Outcome], elapsed: float) -> str:
    c = counts(outcomes)
    if c["built"] == 0 and c["failed"] == 0:
        return f"nothing to build: {c['cached']} up to date" + (f", {c['skipped']} skipped" if c["skipped"] else "") + f" ({elapsed:.1f}s)"
    return f"{c['built']} built, {c['cached']} cached, {c['failed']} failed, {c['skipped']} skipped in {elapsed:.1f}s"


def exit_code(outcomes: list[Outcome]) -> int:
    return EXIT_TARGET_FAILED if any(o.status == "failed" for o in outcomes) else EXIT_OK


def outcomes_json(outcomes: list[Outcome], elapsed: float) -> dict[str, Any]:
    return {
        "outcomes": [
            {"label": o.label, "status": o.status, "reason": o.reason, "duration_s": round(o.duration_s, 3),
             "key": o.key or None, "ref": o.ref or None, "image_id": o.image_id or None,
             "digest": o.digest or None, "pushed": o.pushed, "artifact": o.artifact or None,
             "version": o.version or None, "notes": o.notes, "log": o.log or None, "log_tail": o.tail,
             "platforms": [{"platform": v.platform, "status": v.status, "reason": v.reason, "key": v.key, "ref": v.ref,
                            "image_id": v.image_id or None, "digest": v.digest or None} for v in o.variants] or None}
            for o in outcomes
        ],
        "summary": counts(outcomes) | {"elapsed_s": round(elapsed, 3)},
        "exit_code": exit_code(outcomes),
    }
