"""A module imported on first use, for the modules a no-op run must not pay for (charts and
its YAML library in an image-only workspace, scaffolding, sharding): ``charts = lazy("olly.charts")``
then ``charts.package(...)`` imports it at that call. ``python -X importtime`` shows it works."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class _LazyModule:
    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)


def lazy(name: str) -> Any:
    return _LazyModule(name)
