"""The CLI: output shapes, one-line errors, exit codes (no engine needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/olly-test.sock"}


def olly(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "olly", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **NO_ENGINE}, timeout=120)


def test_plan_on_repo_without_engine(tmp_path: Path) -> None:
    proc = olly("plan")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(l.startswith("build   apps/ollyscale  ollyscale/ollyscale:olly-") for l in lines)
    assert any(l.startswith("package charts/ollyscale") for l in lines)
    assert "engine not reachable" in lines[-1]


def test_plan_json() -> None:
    proc = olly("plan", "--json", "charts/ollyscale-demos")
    data = json.loads(proc.stdout)
    assert [t["label"] for t in data["targets"]] == ["apps/demo", "charts/ollyscale-demos"]
    assert data["targets"][0]["action"] == "build" and len(data["targets"][0]["key"]) == 32
    assert data["targets"][1]["depends_on"] == ["apps/demo"]


def test_inputs_lists_files_and_key() -> None:
    proc = olly("inputs", "apps/ollyscale")
    assert proc.returncode == 0
    assert "main.py" in proc.stdout and "tests/test_smoke.py" not in proc.stdout  # excluded by .dockerignore
    data = json.loads(olly("inputs", "--json", "apps/ollyscale").stdout)
    assert data["key"] in proc.stdout


def test_graph_formats() -> None:
    assert "digraph olly" in olly("graph", "--format", "dot").stdout
    assert olly("graph", "--format", "mermaid").stdout.startswith("graph LR")
    assert "charts/ollyscale-demos  <- apps/demo" in olly("graph").stdout


def test_unknown_target_suggests_and_exits_2() -> None:
    proc = olly("plan", "apps/olyscale")
    assert proc.returncode == 2
    assert proc.stderr.startswith("olly: error: unknown target 'apps/olyscale'; did you mean apps/ollyscale,")


def test_config_error_one_line_and_debug_traceback(tmp_path: Path) -> None:
    (tmp_path / "BUILD.toml").write_text('[images."a"]\nrepository = "x/a"\n')
    proc = olly("plan", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == 'olly: error: BUILD.toml:1: images.a.context: directory not found: a'
    debug = olly("--debug", "plan", cwd=tmp_path)
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_no_workspace(tmp_path: Path) -> None:
    proc = olly("plan", cwd=tmp_path)
    assert proc.returncode == 2 and "no BUILD.toml found" in proc.stderr


def test_make_without_engine_exits_3() -> None:
    proc = olly("-C", str(REPO / "examples" / "quickstart"), "make")
    assert proc.returncode == 3
    assert "no Docker engine at unix:///nonexistent/olly-test.sock" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_inputs_of_a_chart() -> None:
    proc = olly("inputs", "charts/ollyscale-demos")
    assert proc.returncode == 0, proc.stderr
    assert "image    frontend.image <- apps/demo" in proc.stdout and "templates/" in proc.stdout
    why = olly("why", "charts/ollyscale")
    assert why.returncode == 2 and "olly inputs charts/ollyscale" in why.stderr
