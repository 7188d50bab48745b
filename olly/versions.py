"""Version stamping: the release version, chart versions and image version tags.

Versions never enter an image key: they become extra image tags and the chart's
version/appVersion, so a new version retags cached images without building.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from olly.errors import OllyError

# A release, possibly a pre-release of one (v1.0.0-rc.1) or with build metadata; not a
# `git describe` suffix (v1.0.0-3-gabc123, -dirty), which comes after the release.
_RELEASE = re.compile(r"^v?(\d+\.\d+\.\d+(?:-(?:alpha|beta|rc|pre)[0-9A-Za-z.]*)?(?:\+[0-9A-Za-z.-]+)?)$")
_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
_TAG_BAD = re.compile(r"[^A-Za-z0-9_.-]")


def git_version(root: Path) -> str | None:
    """``git describe --tags --always --dirty`` of the workspace, or None outside git."""
    try:
        proc = subprocess.run(["git", "describe", "--tags", "--always", "--dirty"], cwd=root,
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = proc.stdout.strip()
    return out if proc.returncode == 0 and out else None


def resolve_version(root: Path, explicit: str | None) -> str:
    """The release version: ``--version`` if given, else derived from git."""
    version = explicit if explicit is not None else git_version(root)
    if version is None:
        raise OllyError("version-unknown", "no --version given and `git describe` found no commit: pass --version")
    version = version.strip()
    if not version or len(version) > 100 or re.search(r"\s", version):
        raise OllyError("usage", f"invalid version {version!r}: non-empty, no whitespace, at most 100 characters")
    return version


def is_release(version: str) -> bool:
    """A release version names one immutable artifact: never overwritten in a registry."""
    return bool(_RELEASE.match(version)) and "+" not in version


def chart_version(chart_base: str, version: str) -> str:
    """The chart's SemVer: ``2.1.8`` for a release ``v2.1.8`` (``1.0.0-rc.1`` for
    ``v1.0.0-rc.1``); otherwise the chart's own
    ``X.Y.Z`` with the version as pre-release, the seed's ``0.1.1-v2.1.x-description``."""
    release = _RELEASE.match(version)
    if release:
        return release.group(1)
    base = _SEMVER.match(chart_base)
    if not base:
        raise OllyError("chart-invalid", f"Chart.yaml version {chart_base!r} is not SemVer (X.Y.Z)")
    pre = re.sub(r"[^0-9A-Za-z.-]", "-", version).strip(".-") or "dev"
    return f"{base.group(1)}.{base.group(2)}.{base.group(3)}-{pre}"


def image_tag(version: str) -> str:
    """A Docker tag for a version: invalid characters (``+``, ...) become ``_``."""
    tag = _TAG_BAD.sub("_", version)
    if tag[0] in ".-":
        tag = "_" + tag[1:]
    return tag[:128]


def oci_tag(chart_version: str) -> str:
    """Helm's OCI tag for a chart version: ``+`` is not allowed in tags, Helm maps it to ``_``."""
    return chart_version.replace("+", "_")
