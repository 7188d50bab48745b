"""Which builder builds an image: BuildKit through the engine's own API, or the classic builder.

``choose``: BuildKit where the engine supports it (dockerd, API >= 1.39: ``/build`` with
``version=2``), classic where it does not or where BuildKit would copy files the classic daemon
drops; decided at plan time because the builder is part of the key. ``remember``: what the last
run saw of each engine, so plans made without one (``olly why``/``inputs``, offline ``olly
plan``) key as a build would. The BuildKit build itself is olly.buildkitbuild.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple

from olly.errors import OllyError

BUILDKIT, CLASSIC, AUTO = "buildkit", "classic", "auto"
BUILDERS = (BUILDKIT, CLASSIC)
CHOICES = (AUTO, BUILDKIT, CLASSIC)  # what BUILD.toml, --builder and $OLLY_BUILDER may say
ENV = "OLLY_BUILDER"  # lowest-precedence choice: below BUILD.toml, above the default (auto)
MIN_API = (1, 39)  # dockerd's /build takes version=2 from API 1.39 (Docker 18.09)
ASSUMED = "BuildKit assumed: no engine consulted and none remembered"
MEMORY = "engines.json"  # in the cache directory: per engine endpoint, whether it builds with BuildKit

# -- choosing the builder -------------------------------------------------------------


def supports(engine: Any) -> bool:
    """Can ``engine`` build with BuildKit through /build?version=2? Docker from API 1.39. Podman's
    compatible API takes ``version=2`` but ignores it (checked with Podman 4.3: buildah builds,
    the response is classic ``stream`` lines, no ``moby.buildkit.trace``): not BuildKit. An engine
    that says nothing about itself (a test double) is assumed to."""
    from olly.engine import DOCKER

    if engine is None:
        return True
    override = getattr(engine, "supports_buildkit", None)
    if isinstance(override, bool):
        return override
    if getattr(engine, "kind", DOCKER) != DOCKER:
        return False
    version = getattr(engine, "version", None)
    if not isinstance(version, str):
        return True
    try:
        return tuple(int(p) for p in version.split(".")[:2]) >= MIN_API
    except ValueError:
        return False


def check_name(value: str, where: str) -> str:
    if value not in CHOICES:
        raise OllyError("config-invalid", f"{where}: unknown builder {value!r} (expected \"auto\", \"buildkit\" or \"classic\")")
    return value


class Choice(NamedTuple):  # not a frozen dataclass: ~0.5 ms less at every start
    """The builder of one image for one platform (keyed), and why: ``reason`` is one phrase for
    ``olly plan --json``/``why``/``inputs`` (what chose it: ``--builder``, ``BUILD.toml …``,
    ``$OLLY_BUILDER``, or ``auto: <what decided>``); ``note`` is set when the plan should say it
    in the image's reasons: auto fell back to classic because of the context."""

    builder: str
    reason: str
    note: str = ""


def choose(image_builder: str | None, workspace_builder: str | None, override: str | None, engine: Any,
           extras: list[Any] = (), label: str = "", *, known: bool | None = None) -> Choice:  # type: ignore[assignment]
    """The builder of one image: ``--builder``, else the image's ``builder``, else ``[workspace]
    builder``, else ``$OLLY_BUILDER``, else auto (any of them may say "auto" too).

    Auto: BuildKit where the engine supports it, classic otherwise; and classic for an image whose
    context has ``extras`` (files the classic daemon drops before COPY, which BuildKit would copy).
    ``engine`` None means none was consulted (olly why/inputs, an offline plan): ``known`` is what
    the last run remembered of the engine (``remembered``); None: BuildKit is assumed, and the
    reason says so (``ASSUMED``; ``olly plan`` says it in its summary line).

    Asking for BuildKit explicitly on an engine without it, or for an image with ``extras``, is an
    error rather than a silent switch: the builder is in the key."""
    env = os.environ.get(ENV) or None
    sources = ((override, "--builder"), (image_builder, f"BUILD.toml [images.\"{label}\"] builder"),
               (workspace_builder, "BUILD.toml [workspace] builder"),
               (check_name(env, f"${ENV}") if env else None, f"${ENV}"))
    chosen, source = next(((value, where) for value, where in sources if value), (AUTO, ""))
    if chosen == CLASSIC:
        return Choice(CLASSIC, source)
    if chosen == BUILDKIT:
        if engine is not None and not supports(engine):
            kind = getattr(engine, "kind", "engine")
            raise OllyError("builder-unsupported", f"builder \"buildkit\" was asked for ({source}), but the {kind} "
                            f"engine at {getattr(engine, 'endpoint', '?')} cannot build with BuildKit through its API "
                            "(needs Docker API >= 1.39): use builder = \"auto\" or \"classic\"")
        check_context(BUILDKIT, list(extras), label)
        return Choice(BUILDKIT, source)
    # auto
    auto = f"auto ({source})" if source else "auto"
    if engine is not None:
        able = supports(engine)
        what = ("the engine builds with BuildKit" if able else
                f"the {getattr(engine, 'kind', 'engine')} engine cannot build with BuildKit through its API")
    elif known is not None:
        able = known
        what = ("the engine built with BuildKit" if able else "the engine could not build with BuildKit") + \
            " at the last run (remembered; no engine consulted)"
    else:
        able = True
        what = ASSUMED
    if not able:
        return Choice(CLASSIC, f"{auto}: {what}")
    if extras:
        names = ", ".join(sorted(e.path for e in extras)[:3])
        why = (f"BuildKit would copy {names} into the image (the classic daemon drops "
               f"{'it' if len(extras) == 1 else 'them'} before COPY)")
        return Choice(CLASSIC, f"{auto}: {why}", note=f"builder classic: {why}")
    return Choice(BUILDKIT, f"{auto}: {what}")


def builder_for(image_builder: str | None, workspace_builder: str | None, override: str | None,
                engine: Any) -> str:
    """The builder ``choose`` picks for an image whose context has nothing BuildKit would copy."""
    return choose(image_builder, workspace_builder, override, engine).builder


def check_context(builder: str, extras: list[Any], label: str) -> None:
    """BuildKit copies what olly uploads, ignoring .dockerignore: the files the classic daemon
    removes before COPY (``extras``: a generated ``.dockerfile.<hex>``, a self-excluding
    .dockerignore or Dockerfile) would land in the image without being keyed as files."""
    if builder == BUILDKIT and extras:
        names = ", ".join(sorted(e.path for e in extras)[:3])
        raise OllyError("builder-unsupported", f"{label}: builder \"buildkit\" would copy {names} into the image "
                        "(BuildKit does not drop them as the classic daemon does): move the Dockerfile into the "
                        "context and do not exclude it or .dockerignore, or use builder = \"auto\" or \"classic\"")


# -- what the last run saw of each engine (for plans without one) ------------------------


def _endpoints(engine: Any) -> dict[str, Any]:
    """Each engine a run talked to, by endpoint (an ``Engines``: the default and those connected)."""
    connected = getattr(engine, "_by_endpoint", None)
    if isinstance(connected, dict):
        return dict(connected)
    return {str(getattr(engine, "endpoint", "")): engine}


def remember(cache_dir: Path, engine: Any) -> None:
    """Note in the cache directory whether each engine of this run builds with BuildKit, so that
    ``olly why``, ``olly inputs`` and an offline ``olly plan`` key as a build on it would. Best
    effort; written only when it changes."""
    path = cache_dir / MEMORY
    try:
        old = _read_memory(path)
        new = dict(old)
        for endpoint, one in _endpoints(engine).items():
            if endpoint and getattr(one, "kind", None) is not None:  # a real engine, not a test double
                new[endpoint] = {"buildkit": supports(one), "kind": str(one.kind)}
        if new != old:
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{MEMORY}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(new, indent=1, sort_keys=True) + "\n", encoding="utf-8")
            os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache: offline plans assume BuildKit, and say so


def remembered(cache_dir: Path, endpoint: str) -> bool | None:
    """What ``remember`` noted for ``endpoint`` (None: never seen from this workspace)."""
    entry = _read_memory(cache_dir / MEMORY).get(endpoint)
    value = entry.get("buildkit") if isinstance(entry, dict) else None
    return value if isinstance(value, bool) else None


_READ: dict[Path, tuple[tuple[int, int, int], dict[str, Any]]] = {}  # path -> ((inode, mtime_ns, size), content)


def _read_memory(path: Path) -> dict[str, Any]:
    """The memory file (read once per version of it: a plan asks once per image and platform)."""
    try:
        st = path.stat()
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)  # replaced (os.replace) on every change
        if path in _READ and _READ[path][0] == stamp:
            return dict(_READ[path][1])
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    data = data if isinstance(data, dict) else {}
    _READ[path] = (stamp, data)
    return dict(data)


def choose_for(ws: Any, t: Any, engine: Any, platform: str, extras: list[Any]) -> Choice:
    """``choose`` for image ``t`` of workspace ``ws`` built for ``platform`` on ``engine`` (None:
    not consulted; then what the last run remembered of the engine that builds ``platform``)."""
    known = None
    if engine is None:
        from olly.engine import endpoint

        known = remembered(ws.cache_dir, (getattr(ws, "engines", None) or {}).get(platform) or endpoint())
    return choose(t.builder, ws.builder, ws.builder_override, engine, extras, t.label, known=known)
