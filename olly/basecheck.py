"""ONBUILD triggers of base images, as the local engine holds them (for ``olly.reach``).

An image whose base carries ONBUILD triggers runs them right after ``FROM``: a trigger like
``COPY . /app`` reads the context although no line of the Dockerfile does. Only the image's
config says so (``Config.OnBuild``), and olly reads it from the engine when the engine holds
the image: by its ``olly.lock`` digest when locked (what the build uses), else by reference.
The same engine answers ``plan``, ``make``, ``why`` and ``inputs``, so they key alike; an
image it does not hold yet cannot be checked (``None``).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

from olly.reach import Probe


def _local_inspect(ref: str) -> dict | None:
    """The local engine's ``inspect`` of ``ref`` (None: no engine, or it does not hold it).
    The same engine for ``plan``, ``make``, ``why`` and ``inputs``, so they key alike."""
    where = os.environ.get("DOCKER_HOST", "")
    if where not in _ENGINES:
        from olly.engine import Engine
        from olly.errors import OllyError

        try:
            _ENGINES[where] = Engine()
        except OllyError:
            _ENGINES[where] = None
    engine = _ENGINES[where]
    if engine is None:
        return None
    try:
        return engine.inspect(ref)
    except Exception:  # an engine that fails now cannot prove anything: unchecked
        return None


_ENGINES: dict[str, Any] = {}  # DOCKER_HOST -> the engine there (None: none answers), asked once
inspect_base: Callable[[str], "dict | None"] = _local_inspect  # tests replace it


def probe_for(pins: Mapping[str, str], engine: Any = None) -> Probe:
    """ONBUILD triggers of a base as ``engine`` (else the local engine) holds it: by its
    olly.lock digest when pinned (what the build uses), else by its reference."""

    def probe(ref: str) -> list[str] | None:
        wanted = f"{ref}@{pins[ref]}" if ref in pins else ref
        try:
            image = engine.inspect(wanted) if engine is not None else inspect_base(wanted)
        except Exception:  # an engine that fails now cannot prove anything: unchecked
            image = None
        if not isinstance(image, dict):
            return None
        return list((image.get("Config") or {}).get("OnBuild") or [])

    return probe
