"""BUILD.toml's schema: pydantic models, strict (no coercion) and closed (unknown keys rejected).

Imported only when a BUILD.toml has to be validated, i.e. when olly.speccache holds no
validation of these very bytes by this very schema: importing pydantic costs more than a
whole no-op run may take. ``validate`` returns plain data (every default filled in), which is
what olly.config resolves and what the spec cache stores.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError


class Invalid(Exception):
    """The first schema error: where (a key path) and what."""

    def __init__(self, loc: tuple[Any, ...], message: str) -> None:
        super().__init__(message)
        self.loc, self.message = loc, message


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class WorkspaceSpec(_Strict):
    name: str = "workspace"
    network: str | None = None
    builder: Literal["auto", "buildkit", "classic"] | None = None  # None: auto (olly.buildkit.choose)
    source: str | None = None


class ImageSpec(_Strict):
    repository: str
    context: str | None = None
    dockerfile: str | None = None
    args: dict[str, str] = {}
    secrets: list[str] = []
    target: str | None = None
    inputs: list[str] = []
    depends_on: list[str] = []
    platform: str | None = None  # one platform; `platforms` for several (an OCI image index)
    platforms: list[str] | None = None
    network: str | None = None
    builder: Literal["auto", "buildkit", "classic"] | None = None  # beats [workspace] builder


class ChartSpec(_Strict):
    path: str | None = None
    images: dict[str, str] = {}


class RegistrySpec(_Strict):
    push: str
    pull: str | None = None
    insecure: bool = False
    charts: str = "charts"
    platforms: list[str] = []  # built for this registry unless an image sets its own
    values: dict[str, Any] = {}  # dotted values path (or nested tables) -> scalar, for its values files
    values_file: str | None = None  # workspace-relative YAML merged into its values files


class BuildFileSpec(_Strict):
    workspace: WorkspaceSpec = WorkspaceSpec()
    registries: dict[str, RegistrySpec] = {}
    images: dict[str, ImageSpec] = {}
    charts: dict[str, ChartSpec] = {}
    engines: dict[str, str] = {}  # platform -> engine endpoint (unix://, tcp://, ssh://)


def validate(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (parsed TOML) checked against the schema, as plain data with defaults filled
    in; raises Invalid (or RecursionError for absurd nesting)."""
    try:
        return BuildFileSpec.model_validate(data).model_dump()
    except ValidationError as exc:
        # An unknown key explains a "missing" one (a typo), so report it first.
        first = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
        raise Invalid(tuple(first["loc"]), _message(first)) from None


def _message(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "required key is missing"
    return str(err["msg"]).lower() if err["msg"] else "invalid value"
