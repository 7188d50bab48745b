"""`olly init`: a BUILD.toml guessed from the repository that olly's own loader accepts and
`olly plan` plans; .gitignore gains olly's directories once; never overwrites."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from olly import api
from olly.cli import cli
from olly.config import ChartTarget, ImageTarget, load_workspace
from olly.errors import OllyError

REPO = Path(__file__).resolve().parent.parent
NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/olly-test.sock"}


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def olly(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "olly", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **NO_ENGINE}, timeout=120)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return write(tmp_path / "shop", {
        "base/Dockerfile": "FROM scratch\nCOPY busybox /bin/busybox\n",
        "base/busybox": "",
        "web/Dockerfile": "ARG BASE\nFROM ${BASE}\nCOPY index.html /www/\n",
        "web/index.html": "hi\n",
        "tools/Dockerfile": "FROM shop/base:latest AS b\nFROM b\nCOPY x /x\n",
        "tools/x": "x\n",
        "svc/Dockerfile.worker": "ARG IMAGE=shop/base\nFROM $IMAGE\n",
        "svc/Dockerfile": "FROM python:3.12-slim\n",
        "node_modules/pkg/Dockerfile": "FROM scratch\n",
        ".hidden/Dockerfile": "FROM scratch\n",
        "deploy/chart/Chart.yaml": "apiVersion: v2\nname: shop\nversion: 1.0.0\n",
        "deploy/chart/values.yaml": "web:\n  image:\n    repository: ghcr.io/acme/shop/web\n    tag: v1\n"
                                    "worker:\n  image: {repository: registry.local/worker, tag: v1}\n"
                                    "cache:\n  image:\n    repository: docker.io/library/redis\n    tag: '7'\n"
                                    "list:\n  - image: {repository: x, tag: y}\n",
        "deploy/chart/charts/sub/Chart.yaml": "apiVersion: v2\nname: sub\nversion: 0.1.0\n",
    })


def test_generated_file_loads_and_plans(repo: Path) -> None:
    result = api.init(repo)
    ws = load_workspace(repo)  # olly's own loader: every key known, every path there
    images = {label: t for label, t in ws.targets.items() if isinstance(t, ImageTarget)}
    assert sorted(images) == ["base", "svc", "svc/worker", "tools", "web"]
    assert images["web"].depends_on == ["base"]  # FROM ${BASE}: the build arg olly passes for base
    assert images["tools"].depends_on == ["base"]  # FROM <base's repository>
    assert images["svc/worker"].depends_on == ["base"]  # ARG IMAGE defaults to base's repository
    assert images["svc/worker"].dockerfile == "svc/Dockerfile.worker" and images["svc/worker"].context == "svc"
    assert images["web"].repository == "shop/web" and images["svc"].depends_on == []
    (chart,) = [t for t in ws.targets.values() if isinstance(t, ChartTarget)]
    assert chart.label == "deploy/chart"  # not its vendored subchart
    assert chart.images == {"web.image": "web", "worker.image": "svc/worker"}  # matched by repository name
    text = (repo / "BUILD.toml").read_text()
    assert '# "cache.image" = "<image label>"  # values.yaml: docker.io/library/redis' in text
    assert "rename ARG IMAGE to it" in text and "FROM ${BASE}" in text
    assert len(result.images) == 5 and result.gitignore == "created"
    assert (repo / ".gitignore").read_text().splitlines()[-2:] == [".cache/", "dist/"]
    plan = api.plan(repo, [], check_engine=False)
    assert {tp.label: tp.action for tp in plan.targets}["web"] == "build"
    assert olly("plan", cwd=repo).returncode == 0


def test_refuses_to_overwrite_and_gitignore_is_appended_once(repo: Path) -> None:
    (repo / ".gitignore").write_text("node_modules/\ndist")  # no final newline; dist/ already there
    api.init(repo)
    first = (repo / "BUILD.toml").read_text()
    proc = olly("init", cwd=repo)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "already exists" in proc.stderr and proc.stdout == ""
    assert (repo / "BUILD.toml").read_text() == first
    with pytest.raises(OllyError) as err:
        api.init(repo)
    assert err.value.reason == "build-file-exists"
    (repo / "BUILD.toml").unlink()
    assert api.init(repo).gitignore == "unchanged"
    lines = (repo / ".gitignore").read_text().splitlines()
    assert lines.count(".cache/") == 1 and "dist/" not in lines and lines[:2] == ["node_modules/", "dist"]


def test_nothing_to_declare(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["-C", str(tmp_path), "init"])
    assert result.exit_code == 2 and "no Dockerfile and no Chart.yaml" in result.output
    assert not (tmp_path / "BUILD.toml").exists() and not (tmp_path / ".gitignore").exists()


def test_on_a_copy_of_this_repository(tmp_path: Path) -> None:
    root = tmp_path / "ollyscale"
    for part in ("apps", "charts"):
        shutil.copytree(REPO / part, root / part)
    result = CliRunner().invoke(cli, ["-C", str(root), "init"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "4 image(s), 2 chart(s)" in result.output
    ws = load_workspace(root)
    assert {label: t.repository for label, t in ws.targets.items() if isinstance(t, ImageTarget)} == {
        "apps/demo": "ollyscale/demo", "apps/ollyscale": "ollyscale/ollyscale",
        "apps/ollyscale-ui": "ollyscale/ollyscale-ui", "apps/opamp-server": "ollyscale/opamp-server"}
    charts = {label: t.images for label, t in ws.targets.items() if isinstance(t, ChartTarget)}
    assert charts["charts/ollyscale-demos"] == {"frontend.image": "apps/demo", "backend.image": "apps/demo"}
    assert charts["charts/ollyscale"] == {"frontend.image": "apps/ollyscale", "receiver.image": "apps/ollyscale",
                                          "opampServer.image": "apps/opamp-server"}
    assert "webui.image" in (root / "BUILD.toml").read_text()  # unmatched (webui), left commented for the user
    proc = olly("plan", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert "6 of 6 target(s) would build" in proc.stdout
