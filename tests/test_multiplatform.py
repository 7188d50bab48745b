"""Multi-platform planning and recording on the FakeEngine (the real engine and registry:
tests/test_multiplatform_docker.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import copy_workspace
from fakes import FakeEngine
from olly import api, report
from olly.errors import OllyError

BOTH = 'platforms = ["linux/amd64", "linux/arm64"]'


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = copy_workspace("busy", tmp_path)
    build = root / "BUILD.toml"
    text = build.read_text()
    for label in ("base", "app"):
        text = text.replace(f'[images.{label}]\n', f'[images.{label}]\n{BOTH}\n')
    build.write_text(text)
    return root


def make(ws: Path, eng: FakeEngine, *targets: str) -> dict[str, object]:
    return {o.label: o for o in api.make(ws, list(targets), engine=eng, jobs=2).outcomes}


def test_each_platform_builds_and_stands_on_its_dependency_of_that_platform(ws: Path) -> None:
    eng = FakeEngine()
    first = make(ws, eng, "app")
    app = first["app"]
    assert app.status == "built" and [v.platform for v in app.variants] == ["linux/amd64", "linux/arm64"]
    assert len(eng.builds) == 4  # base and app, each for two platforms
    base = {v.platform: v.ref for v in first["base"].variants}
    for v in app.variants:
        image = eng.images[v.image_id]
        assert image["Architecture"] == v.platform.split("/")[1]
    # The arm64 app got the arm64 base's reference as its BASE build arg.
    plan = api.plan(ws, ["app"], check_engine=False).by_label()["app"]
    assert {v.platform: v.args["BASE"] for v in plan.variants} == base
    assert len({v.key for v in plan.variants} | {plan.key}) == 3  # one key per platform, one for the index
    again = make(ws, eng, "app")
    assert {o.status for o in again.values()} == {"cached"} and len(eng.builds) == 4


def test_one_platform_edit_is_explained_per_platform(ws: Path) -> None:
    eng = FakeEngine()
    make(ws, eng, "app")
    (ws / "app" / "main.txt").write_text("changed\n")
    info = api.why(ws, "app")
    assert info["changes"] == ["linux/amd64: ~ file main.txt (content)", "linux/arm64: ~ file main.txt (content)"]
    data = report.plan_json(api.plan(ws, ["app"], check_engine=False))
    row = next(t for t in data["targets"] if t["label"] == "app")
    assert [(p["platform"], p["action"]) for p in row["platforms"]] == [("linux/amd64", "build"), ("linux/arm64", "build")]


def test_inputs_show_every_platform(ws: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "olly", "-C", str(ws), "inputs", "app"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "(index of 2 platforms)" in proc.stdout
    assert "  platform linux/amd64" in proc.stdout and "  platform linux/arm64" in proc.stdout
    data = json.loads(subprocess.run([sys.executable, "-m", "olly", "-C", str(ws), "inputs", "app", "--json"],
                                     capture_output=True, text=True).stdout)
    assert set(data["platforms"]) == {"linux/amd64", "linux/arm64"}


def test_a_dependency_without_the_platform_is_a_located_error(ws: Path) -> None:
    build = ws / "BUILD.toml"
    build.write_text(build.read_text().replace('[images.base]\n' + BOTH, '[images.base]\nplatforms = ["linux/amd64", "linux/s390x"]'))
    with pytest.raises(OllyError) as exc:
        api.plan(ws, ["app"], check_engine=False)
    assert "builds linux/arm64 but its dependency base is built for linux/amd64, linux/s390x only" in exc.value.message
    assert exc.value.location and "BUILD.toml:" in exc.value.location


def test_a_single_platform_dependency_serves_every_platform(ws: Path) -> None:
    build = ws / "BUILD.toml"
    build.write_text(build.read_text().replace('[images.base]\n' + BOTH, '[images.base]\nplatform = "linux/amd64"'))
    plan = api.plan(ws, ["app"], check_engine=False).by_label()
    assert {v.args["BASE"] for v in plan["app"].variants} == {plan["base"].ref}
