"""Crash safety and concurrency with the real engine and registry: SIGKILL at named
points and at random moments, Ctrl-C, two olly processes at once."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import copy_workspace
from olly import charts
from olly.registry import Endpoint, RegistryClient
from support import EngineProxy

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.builder]


def workspace(tmp_path: Path, busybox: Path, prefix: str, host: str) -> Path:
    root = copy_workspace("pub", tmp_path, busybox, prefix)
    build = root / "BUILD.toml"
    build.write_text(build.read_text().replace("REGISTRY_HOST", host).replace("CHARTS_PREFIX", prefix))
    return root


def olly_cmd(ws: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "olly", "-C", str(ws), *args]


def run(ws: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(olly_cmd(ws, *args), capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


MAKE = ("make", "--registry", "test", "--push", "--version", "v1.0.x-crash")  # a dev version: re-pointable


def assert_consistent(ws: Path, docker_client, host: str) -> None:
    """The db is intact and claims nothing that does not exist."""
    db = ws / ".cache" / "olly.db"
    if not db.exists():
        return
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:  # killed after the file was created, before its schema (one transaction): claims nothing
        conn.close()
        return
    assert {"results", "pushes", "artifacts"} <= tables, tables  # the schema is created whole or not at all
    for (image_id,) in conn.execute("SELECT image_id FROM results"):
        docker_client.images.get(image_id)  # raises if the image is missing
    client = RegistryClient(Endpoint("test", host, insecure=True))
    for ref, digest, target in conn.execute("SELECT ref, digest, target FROM pushes"):
        repo, tag = ref.rsplit(":", 1)
        if target == "chart":  # ref is "<chart name>:<version>" under the registry's chart path
            repo = f"{charts_path(ws)}/{repo}"
        # By digest: a dev version tag may since point elsewhere, the pushed manifest must exist.
        assert client.manifest_digest(repo, digest) == digest, ref
    for path, digest in conn.execute("SELECT path, digest FROM artifacts"):
        assert charts.sha256((ws / path).read_bytes()) == digest
    conn.close()


def charts_path(ws: Path) -> str:
    """The chart repository path of registry 'test' in this workspace's BUILD.toml."""
    text = (ws / "BUILD.toml").read_text()
    return text.split("[registries.test]", 1)[1].split('charts = "', 1)[1].split('"', 1)[0]


@pytest.mark.parametrize("point", ["hash", "stream", "building", "built", "record", "pushing", "pushed",
                                   "write", "write:2", "write:3"])
def test_sigkill_at_each_point_leaves_a_consistent_cache(point: str, tmp_path: Path, docker_client, busybox: Path,
                                                          unique_prefix: str, registry) -> None:
    ws = workspace(tmp_path, busybox, unique_prefix, registry.host)
    killed = run(ws, *MAKE, env={"OLLY_FAILPOINT": point})
    assert killed.returncode == -signal.SIGKILL, (point, killed.stdout, killed.stderr)
    assert_consistent(ws, docker_client, registry.host)
    after = run(ws, *MAKE)
    assert after.returncode == 0, after.stdout + after.stderr
    assert_consistent(ws, docker_client, registry.host)
    assert not list(ws.rglob(".olly-tmp-*"))  # what a killed run left half-written is gone
    again = run(ws, *MAKE)
    assert "nothing to build: 3 up to date" in again.stdout, again.stdout


def test_sigkill_at_random_moments(tmp_path: Path, docker_client, busybox: Path, unique_prefix: str, registry) -> None:
    ws = workspace(tmp_path, busybox, unique_prefix, registry.host)
    rng = random.Random(1234)
    for _ in range(5):
        (ws / "web" / "index.html").write_text(f"<h1>{rng.random()}</h1>\n")
        proc = subprocess.Popen(olly_cmd(ws, *MAKE), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=rng.uniform(0.2, 2.0))  # a random moment, not a wait for a condition
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert_consistent(ws, docker_client, registry.host)
    final = run(ws, *MAKE)
    assert final.returncode == 0, final.stdout + final.stderr
    assert_consistent(ws, docker_client, registry.host)


def slow_workspace(tmp_path: Path, busybox: Path, prefix: str, seconds: int = 30) -> Path:
    root = tmp_path / "slow"
    (root / "slow").mkdir(parents=True)
    (root / "slow" / "busybox").write_bytes(busybox.read_bytes())
    (root / "slow" / "busybox").chmod(0o755)
    # The step is unique to the test: BuildKit's cache outlives the images, a cached step takes no time.
    (root / "slow" / "Dockerfile").write_text(
        f'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "sh", "-c", "echo {prefix}; /bin/busybox sleep {seconds}"]\n')
    (root / "BUILD.toml").write_text(f'[images.slow]\nrepository = "{prefix}/slow"\n')
    return root


def running_step(log: Path) -> bool:
    """The slow RUN step has started (classic: ``Step 3/3 : RUN [...]``, BuildKit: ``[2/2] RUN [...]``)."""
    return log.exists() and 'RUN ["/bin/busybox"' in log.read_text()


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        time.sleep(0.05)


def test_ctrl_c_stops_cleanly_with_130(tmp_path: Path, docker_client, busybox: Path, unique_prefix: str) -> None:
    ws = slow_workspace(tmp_path, busybox, unique_prefix)
    proc = subprocess.Popen(olly_cmd(ws, "make"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = ws / ".cache" / "logs" / "slow.log"
    wait_for(lambda: running_step(log))
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert "interrupted" in err
    conn = sqlite3.connect(ws / ".cache" / "olly.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 0


def test_two_makes_at_once_second_waits(tmp_path: Path, docker_client, busybox: Path, unique_prefix: str) -> None:
    ws = slow_workspace(tmp_path, busybox, unique_prefix, seconds=3)
    first = subprocess.Popen(olly_cmd(ws, "make"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = ws / ".cache" / "lock"
    wait_for(lambda: lock.exists() and lock.read_text().strip() == str(first.pid))
    second = subprocess.Popen(olly_cmd(ws, "make"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out1, _ = first.communicate(timeout=120)
    out2, err2 = second.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0
    assert "built   slow" in out1
    assert f"waiting for another olly (pid {first.pid})" in err2
    assert "nothing to build: 1 up to date" in out2
    conn = sqlite3.connect(ws / ".cache" / "olly.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_make_racing_cache_import(tmp_path: Path, docker_client, busybox: Path, unique_prefix: str) -> None:
    ws = slow_workspace(tmp_path, busybox, unique_prefix, seconds=2)
    assert run(ws, "make").returncode == 0
    export = tmp_path / "cache.db"
    assert run(ws, "cache", "export", str(export)).returncode == 0
    (ws / "slow" / "Dockerfile").write_text((ws / "slow" / "Dockerfile").read_text() + "# changed\n")
    maker = subprocess.Popen(olly_cmd(ws, "make"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    importer = subprocess.Popen(olly_cmd(ws, "cache", "import", str(export)), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    out_m, _ = maker.communicate(timeout=120)
    out_i, _ = importer.communicate(timeout=120)
    assert maker.returncode == 0 and importer.returncode == 0, (out_m, out_i)
    conn = sqlite3.connect(ws / ".cache" / "olly.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 2  # old key + new key
    assert "nothing to build" in run(ws, "make").stdout


def test_engine_down_mid_build_fails_cleanly(tmp_path: Path, docker_client, busybox: Path, unique_prefix: str) -> None:
    ws = slow_workspace(tmp_path, busybox, unique_prefix, seconds=20)
    proxy = EngineProxy(tmp_path / "engine.sock")
    proc = subprocess.Popen(olly_cmd(ws, "make"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "DOCKER_HOST": f"unix://{tmp_path / 'engine.sock'}"})
    log = ws / ".cache" / "logs" / "slow.log"
    wait_for(lambda: running_step(log))
    proxy.cut()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, (out, err)
    assert "failed  slow" in out and "engine error during build" in out
    assert "Traceback" not in out + err
    conn = sqlite3.connect(ws / ".cache" / "olly.db")
    assert conn.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 0
