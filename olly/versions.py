"""Version stamping: the release version, chart versions and image version tags.

Versions never enter an image key: they become extra image tags and the chart's
version/appVersion, so a new version retags cached images without building.
"""

from __future__ import annotations

import os
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
    """``git describe --tags --always --dirty`` of the workspace, or None when there is no
    version to find: git is not installed, the workspace is not in a git repository, or the
    repository has no commit yet. Any other failure of git (e.g. "dubious ownership" of a
    repository owned by another user, common in CI containers) is an error: treating it as
    "outside git" would publish a dirty tree under the chart's own version, like a release."""
    env = {**os.environ, "LC_ALL": "C"}  # git's messages in English: they are matched below
    try:
        proc = subprocess.run(["git", "describe", "--tags", "--always", "--dirty"], cwd=root,
                              capture_output=True, text=True, timeout=30, env=env)
    except FileNotFoundError:
        return None  # no git on this machine: no version, as outside git
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OllyError("git-error", f"`git describe` failed in {root}: {exc}") from None
    out = proc.stdout.strip()
    if proc.returncode == 0 and out:
        return out
    lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
    first = lines[0] if lines else f"exit status {proc.returncode}"
    if "not a git repository" in first.lower() or _no_commit_yet(root, env):
        return None
    owned = re.search(r"dubious ownership in repository at '(.+)'", first)
    if owned:  # git's own advice spans several lines: say it in one
        fix = f"if you trust it, run: git config --global --add safe.directory {owned.group(1)}"
    else:
        fix = (f"fix git in the workspace, or pass --version (a repository owned by another user needs: "
               f"git config --global --add safe.directory {root})")
    raise OllyError("git-error", f"`git describe` failed in {root}: {first[:300]}; {fix}")


def _no_commit_yet(root: Path, env: dict[str, str]) -> bool:
    """True in a repository git accepts whose HEAD names no commit yet (``git init`` only)."""
    try:
        inside = subprocess.run(["git", "rev-parse", "--git-dir"], cwd=root, capture_output=True, timeout=30, env=env)
        head = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=root, capture_output=True,
                              timeout=30, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return inside.returncode == 0 and head.returncode != 0


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


def names_release(version: str) -> bool:
    """True if ``version`` stamps charts with the release itself (``v2.1.8`` → ``2.1.8``):
    such a chart version is the user's promise of one content and gets no content suffix."""
    return bool(_RELEASE.match(version))


def drop_dirty(version: str) -> str:
    """A non-release version without git's trailing ``-dirty``. The content suffix of the
    chart version (see :func:`content_version`) already tells packages apart, and the
    suffix alone would repackage every chart on the first edit of a clean tree. Kept when
    dropping it would leave a release (``v2.1.8-dirty`` must not read as ``v2.1.8``)."""
    if version.endswith("-dirty") and not names_release(version):
        clean = version[: -len("-dirty")]
        if clean and not names_release(clean):
            return clean
    return version


def content_version(chart_version: str, content_key: str) -> str:
    """``chart_version`` plus ``.<first 8 hex of content_key>`` as a last SemVer pre-release
    identifier, so that equal non-release versions mean equal packages. All-digit hex would
    be a numeric identifier, invalid with a leading zero: it gets a ``c`` prefix."""
    ident = content_key[:8].lower()
    if ident.isdigit():
        ident = "c" + ident
    return f"{chart_version}.{ident}"


def image_tag(version: str) -> str:
    """A Docker tag for a version: invalid characters (``+``, ...) become ``_``."""
    tag = _TAG_BAD.sub("_", version)
    if tag[0] in ".-":
        tag = "_" + tag[1:]
    return tag[:128]


def oci_tag(chart_version: str) -> str:
    """Helm's OCI tag for a chart version: ``+`` is not allowed in tags, Helm maps it to ``_``."""
    return chart_version.replace("+", "_")
