from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from olly.errors import OllyError
from olly.versions import chart_version, image_tag, oci_tag, resolve_version


@pytest.mark.parametrize("base, version, expected", [
    ("0.1.1", "v2.1.8", "2.1.8"),
    ("0.1.1", "2.1.8", "2.1.8"),
    ("0.1.1", "v2.1.x-description", "0.1.1-v2.1.x-description"),
    ("0.1.1-rc1", "v2.1.8-3-gabc123-dirty", "0.1.1-v2.1.8-3-gabc123-dirty"),
    ("0.1.5", "feature/x+y", "0.1.5-feature-x-y"),
    ("0.1.1", "v1.0.0-rc.1", "1.0.0-rc.1"),
    ("0.1.1", "v1.0.0+build.7", "1.0.0+build.7"),
    ("0.1.1", "v2.1.8-3-gabc123", "0.1.1-v2.1.8-3-gabc123"),
])
def test_chart_version(base: str, version: str, expected: str) -> None:
    assert chart_version(base, version) == expected


def test_chart_version_needs_semver_base() -> None:
    with pytest.raises(OllyError, match="not SemVer"):
        chart_version("one", "dev")


def test_tags() -> None:
    assert image_tag("v2.1.8+build.1") == "v2.1.8_build.1"
    assert image_tag("-x") == "_x"
    assert oci_tag("0.1.1+meta") == "0.1.1_meta"


def test_version_from_git(tmp_path: Path) -> None:
    run = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    (tmp_path / "f").write_text("x")
    run("add", "f")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    run("tag", "v1.2.3")
    assert resolve_version(tmp_path, None) == "v1.2.3"
    (tmp_path / "f").write_text("y")
    assert resolve_version(tmp_path, None) == "v1.2.3-dirty"
    assert resolve_version(tmp_path, "v9.9.9") == "v9.9.9"


def test_no_git_no_version(tmp_path: Path) -> None:
    with pytest.raises(OllyError, match="pass --version"):
        resolve_version(tmp_path, None)
