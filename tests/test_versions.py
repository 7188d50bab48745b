from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from olly.errors import OllyError
from olly.versions import (chart_version, content_version, drop_dirty, git_version, image_tag, names_release,
                           oci_tag, resolve_version)


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


@pytest.mark.parametrize("version, expected", [
    ("v2.1.8-3-gabc123-dirty", "v2.1.8-3-gabc123"),  # git's -dirty: the content suffix tells packages apart
    ("abc1234-dirty", "abc1234"),
    ("v2.1.8-3-gabc123", "v2.1.8-3-gabc123"),
    ("v2.1.8", "v2.1.8"),  # a release is left alone
    ("v2.1.8-dirty", "v2.1.8-dirty"),  # dropping it would make a dirty tree read as the release
    ("-dirty", "-dirty"),
])
def test_drop_dirty(version: str, expected: str) -> None:
    assert drop_dirty(version) == expected


def test_names_release() -> None:
    assert names_release("v2.1.8") and names_release("1.0.0-rc.1") and names_release("v1.0.0+build.7")
    assert not names_release("v2.1.8-3-gabc123") and not names_release("v2.1.8-dirty") and not names_release("main")


def test_content_version_is_a_semver_prerelease_identifier() -> None:
    assert content_version("0.1.1-v2.1.8-3-gabc123", "0a1b2c3d" + "0" * 24) == "0.1.1-v2.1.8-3-gabc123.0a1b2c3d"
    # All digits would be a numeric identifier, which SemVer forbids with a leading zero.
    assert content_version("0.1.1-main", "01234567" + "f" * 24) == "0.1.1-main.c01234567"


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def test_git_version_none_outside_git_without_commit_and_without_git(tmp_path: Path, monkeypatch) -> None:
    assert git_version(tmp_path) is None  # not a git repository
    _git(tmp_path, "init", "-q")
    assert git_version(tmp_path) is None  # a repository without a commit yet
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no git on this machine
    assert git_version(tmp_path) is None


def test_git_dubious_ownership_is_an_error_not_no_version(tmp_path: Path) -> None:
    """A repository owned by another user (CI containers): git refuses it. That must stop
    the run (exit 3) naming the fix, not publish the tree as the chart's own version."""
    ws = tmp_path / "ws"
    (ws / "a").mkdir(parents=True)
    # A registry: its version tags use the version (images alone, without one, use none).
    (ws / "BUILD.toml").write_text('[registries.r]\npush = "127.0.0.1:9"\n\n[images.a]\nrepository = "x/a"\n')
    (ws / "a" / "Dockerfile").write_text("FROM scratch\n")
    _git(ws, "init", "-q")
    _git(ws, "add", ".")
    _git(ws, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    for path in [ws, *ws.rglob("*")]:
        os.chown(path, 12345, 12345, follow_symlinks=False)  # we run as root: now someone else's repo
    empty = tmp_path / "gitconfig"
    empty.write_text("")  # no safe.directory from the machine's own git config
    env = {**os.environ, "GIT_CONFIG_GLOBAL": str(empty), "GIT_CONFIG_NOSYSTEM": "1",
           "DOCKER_HOST": "unix:///nonexistent/olly-test.sock"}
    for command in (["plan", "--registry", "r"], ["make", "--registry", "r"]):
        proc = subprocess.run([sys.executable, "-m", "olly", "-C", str(ws), *command], capture_output=True,
                              text=True, env=env, timeout=120, cwd=Path(__file__).resolve().parent.parent)
        assert proc.returncode == 3, (command, proc.stdout, proc.stderr)
        assert "dubious ownership" in proc.stderr, proc.stderr
        assert f"git config --global --add safe.directory {ws}" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    # Where no version is used, git is not asked: images alone, no registry.
    alone = subprocess.run([sys.executable, "-m", "olly", "-C", str(ws), "plan"], capture_output=True, text=True,
                           env=env, timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert alone.returncode == 0 and "dubious" not in alone.stderr, alone.stderr
