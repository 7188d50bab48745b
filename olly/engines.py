"""Several engines, one per platform: like a multi-node buildx builder, each platform's
build runs on its own engine (a native arm64 machine over ssh://, a remote tcp:// engine),
the images meet in the registry and the index is assembled there.

``Engines`` stands in for the default ``Engine`` everywhere (same attributes) and adds
``for_platform``. Engines are connected on first use, so a plan that builds nothing for
arm64 never dials the arm64 machine.
"""

from __future__ import annotations

import threading
from typing import Any

from olly.engine import Engine


class Engines:
    def __init__(self, default: Engine, routes: dict[str, str]) -> None:
        self.default = default
        self.routes = dict(routes)  # platform -> endpoint
        self._by_endpoint: dict[str, Engine] = {default.endpoint: default}
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.default, name)  # inspect, tag, build, platform, ... of the default engine

    def for_platform(self, platform: str) -> Engine:
        url = self.routes.get(platform)
        if url is None:
            return self.default
        with self._lock:  # build threads of two platforms may ask at once
            if url not in self._by_endpoint:
                self._by_endpoint[url] = Engine(url)
            return self._by_endpoint[url]


def engine_for(engine: Any, platform: str) -> Any:
    """The engine that builds ``platform``: routed when ``engine`` is an ``Engines``."""
    return engine.for_platform(platform) if isinstance(engine, Engines) else engine
