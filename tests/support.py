"""Helpers shared by conftest and test servers (kept apart to avoid import cycles)."""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(what: str) -> None:
    """A missing service: skip locally, fail under CI (a missing engine is never a skip there)."""
    if in_ci():
        pytest.fail(f"{what} (CI=true: this is a failure, not a skip)")
    pytest.skip(what)
