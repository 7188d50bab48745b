"""The no-op path of `olly make` (olly.api.make with everything built) against the real
engine: what it must not import, and that it still notices what it must."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import copy_workspace

pytestmark = pytest.mark.docker

# What a no-op run must never load: each costs more than the whole run may take (issue #12).
HEAVY = ("pydantic", "docker", "requests", "urllib3", "paramiko", "ruamel.yaml", "yaml", "sqlite_utils", "numpy", "rich")

# Runs olly as `python -m olly` does, then reports which of HEAVY got imported.
PROBE = f"""
import json, runpy, sys
sys.argv = ["olly", *sys.argv[1:]]
code = 0
try:
    runpy.run_module("olly", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code or 0
loaded = sorted(set(sys.modules) & set({HEAVY!r}))
print(json.dumps({{"exit": code, "loaded": loaded}}), file=sys.stderr)
"""


def probe(ws: Path, *args: str) -> tuple[str, dict[str, object]]:
    proc = subprocess.run([sys.executable, "-c", PROBE, "-C", str(ws), *args], capture_output=True, text=True,
                          env=os.environ, timeout=300)
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    return proc.stdout, report


@pytest.fixture
def ws(tmp_path: Path, docker_client, busybox: Path, unique_prefix: str) -> Path:
    return copy_workspace("busy", tmp_path, busybox, unique_prefix)


def test_a_noop_make_imports_none_of_the_heavy_libraries(ws: Path) -> None:
    out, report = probe(ws, "make")  # builds: this run may load what it likes
    assert report["exit"] == 0, out
    probe(ws, "make")  # fills what a first no-op run caches (the validated BUILD.toml)
    out, report = probe(ws, "make")
    assert report == {"exit": 0, "loaded": []}, out
    assert "nothing to build: 3 up to date" in out
    out, report = probe(ws, "plan")
    assert report == {"exit": 0, "loaded": []} and "0 of 3 target(s) would build" in out, out


def test_the_noop_path_still_sees_a_removed_image(ws: Path, docker_client) -> None:
    assert probe(ws, "make")[1]["exit"] == 0
    out, _ = probe(ws, "plan", "--json")
    solo = next(t for t in json.loads(out)["targets"] if t["label"] == "solo")
    docker_client.images.remove(solo["ref"], force=True)
    out, report = probe(ws, "make")
    assert report["exit"] == 0, out
    assert "built   solo" in out and "removed from the engine" in out


def test_a_noop_make_with_charts_packages_nothing_and_loads_nothing_heavy(tmp_path: Path, docker_client, busybox: Path,
                                                                          unique_prefix: str) -> None:
    import time

    ws = copy_workspace("pub", tmp_path, busybox, unique_prefix)
    build = ws / "BUILD.toml"
    build.write_text(build.read_text().replace("REGISTRY_HOST", "127.0.0.1:9").replace("CHARTS_PREFIX", "p"))
    assert probe(ws, "make")[1]["exit"] == 0
    time.sleep(2.1)  # past the racy window: the next run's verification of the chart can be recorded
    out, report = probe(ws, "make")  # packages the chart once more, finds it equal, records the proof
    assert report["exit"] == 0, out
    out, report = probe(ws, "make")
    assert report == {"exit": 0, "loaded": []}, out
    assert "nothing to build: 3 up to date" in out
