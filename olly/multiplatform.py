"""The job of a multi-platform image: each platform's image, then the index that lists them.

Each platform is an ordinary single-platform build (its own key, content tag, log and
layer cache; foreign ``RUN`` steps run under qemu-user-static binfmt). With ``--push``
every platform image is pushed and verified first, then the OCI image index is made from
the registry's own manifests (olly/index.py) and pushed under the multi-platform content
tag; the version tag, if any, points at the index.
"""

from __future__ import annotations

import time

from olly import index
from olly.errors import OllyError
from olly.jobs import DepImage, Outcome, RunContext, client_for, finish, run_platform, tag_release
from olly.plan import TargetPlan


def run_variants(ctx: RunContext, tp: TargetPlan, deps: dict[str, list[DepImage]]) -> Outcome:
    o = Outcome(tp.label, "cached", "", started=time.time(), key=tp.key, ref=tp.ref, digest=tp.remote_digest or "")
    for v in tp.variants:
        vo = run_platform(ctx, v, deps.get(v.platform, []), variant=True)
        o.variants.append(vo)
        if vo.status == "failed":  # the other platforms would only make an index nobody may push
            o.status, o.reason, o.tail, o.log = "failed", f"{v.platform}: {vo.reason}", vo.tail, vo.log
            return finish(o)
    if any(vo.status == "built" for vo in o.variants):
        o.status = "built"
    o.reason = "; ".join(f"{vo.platform}: {_short(vo)}" for vo in o.variants)
    o.notes = [f"{vo.platform}: {note}" for vo in o.variants for note in vo.notes if not note.startswith(("pushed", "already"))]
    if ctx.push and ctx.registry is not None:
        try:
            _push_index(ctx, tp, o)
        except OllyError as exc:
            o.status, o.reason = "failed", exc.message
    return finish(o)


def _short(vo: Outcome) -> str:
    return vo.status if vo.status != "cached" or not vo.reason else f"cached, {vo.reason}"


def _push_index(ctx: RunContext, tp: TargetPlan, o: Outcome) -> None:
    assert ctx.registry is not None
    client = client_for(ctx.registry)
    name = ctx.registry.push_repository(tp.repository)
    o.digest, o.pushed = index.push_index(client, name, tp.tag, {vo.platform: vo.digest for vo in o.variants})
    tag_release(ctx, client, name, o.digest)
    where = f"{ctx.registry.push_ref(tp.repository)}:{tp.tag}"
    platforms = ", ".join(vo.platform for vo in o.variants)
    o.notes.append(f"pushed index {where} ({platforms})" if o.pushed
                   else f"index already in {ctx.registry.name} as {where} ({platforms})")
