"""Scale-out: several runners (clones with their own .cache) share one real registry.

Three shards start at the same time; the one whose image depends on another shard's image
waits for it in the registry. Then a chart job builds no image. And when a shard fails, the
shard waiting on it fails with a message naming the missing target and its shard."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from olly import charts
from test_publish_docker import pub, skopeo_raw

pytestmark = [pytest.mark.docker, pytest.mark.registry]

# The base checks a secret build arg: only its *name* is in the key, so a runner with a bad
# value fails the very key another runner would build fine (a shard that breaks).
# Unique to the test and slow (2 s): BuildKit's cache outlives images, and a base built at once
# would be in the registry before web's shard looks, which then has nothing to wait for.
GATED = ('FROM scratch\nCOPY busybox /bin/busybox\nARG TOKEN\n'
         'RUN ["/bin/busybox", "sh", "-c", "echo {prefix}; /bin/busybox sleep 2; test \\"$TOKEN\\" = ok"]\n')


def runner(tmp_path: Path, busybox: Path, prefix: str, host: str, name: str) -> Path:
    root = pub(tmp_path, busybox, prefix, host, name)
    (root / "base" / "Dockerfile").write_text(GATED.replace("{prefix}", prefix))
    build = root / "BUILD.toml"
    build.write_text(build.read_text().replace('[images.base]\n', '[images.base]\nsecrets = ["TOKEN"]\n'))
    return root


def start(root: Path, *args: str, token: str = "ok") -> subprocess.Popen[str]:
    env = {**os.environ, "TOKEN": token, "CI": "true"}
    return subprocess.Popen([sys.executable, "-m", "olly", "-C", str(root), "make", "--registry", "test", "--push",
                             "--json", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(proc: subprocess.Popen[str]) -> tuple[int, dict[str, dict]]:
    out, err = proc.communicate(timeout=300)
    try:
        data = json.loads(out)
    except ValueError:
        raise AssertionError(f"not JSON: {out}\n{err}") from None
    return proc.returncode, {o["label"]: o for o in data["outcomes"]}


def test_three_shards_build_each_image_once_then_charts_build_no_image(tmp_path: Path, docker_client, busybox: Path,
                                                                         unique_prefix: str, registry) -> None:
    roots = [runner(tmp_path, busybox, unique_prefix, registry.host, f"runner-{i}") for i in (1, 2, 3)]
    plan = subprocess.run([sys.executable, "-m", "olly", "-C", str(roots[0]), "plan", "--registry", "test",
                           "--shards", "3", "--json"], capture_output=True, text=True, env={**os.environ, "TOKEN": "ok"})
    shards = json.loads(plan.stdout)["shards"]
    assert sorted(label for s in shards["list"] for label in s["images"]) == ["base", "web"]
    assert shards["with_work"] == [s["index"] for s in shards["list"] if s["build"]]
    procs = [start(root, "--shard", f"{i}/3", "--wait", "120s") for i, root in enumerate(roots, start=1)]
    results = [finish(p) for p in procs]
    assert [code for code, _ in results] == [0, 0, 0], results
    built = [label for _, outcomes in results for label, o in outcomes.items() if o["status"] == "built"]
    assert sorted(built) == ["base", "web"]  # every image exactly once across all runners
    waited = [o for _, outcomes in results for o in outcomes.values() if "pushed by shard" in (o["reason"] or "")]
    assert [o["label"] for o in waited] == ["base"]  # web's shard waited for base's shard
    assert all(o["status"] == "skipped" for _, outcomes in results for o in outcomes.values() if o["label"] == "chart")
    # The chart job: a fourth clone, no shard: builds no image, pins digests that resolve.
    final = runner(tmp_path, busybox, unique_prefix, registry.host, "charts")
    code, outcomes = finish(start(final))
    assert code == 0 and {outcomes[l]["status"] for l in ("base", "web")} == {"cached"}
    assert outcomes["chart"]["status"] == "built"
    values = yaml.safe_load(charts.read_members(Path(outcomes["chart"]["artifact"]).read_bytes())["fixture/values.yaml"])
    for block in (values["web"]["image"], values["tools"]["image"]):
        tag, digest = block["tag"].split("@")
        assert charts.sha256(skopeo_raw(f"{block['repository']}@{digest}")) == digest


def test_a_failed_shard_fails_its_waiting_dependents_without_recording(tmp_path: Path, docker_client, busybox: Path,
                                                                         unique_prefix: str, registry) -> None:
    roots = [runner(tmp_path, busybox, unique_prefix, registry.host, f"runner-{i}") for i in (1, 2, 3)]
    shards = json.loads(subprocess.run([sys.executable, "-m", "olly", "-C", str(roots[0]), "plan", "--registry",
                                        "test", "--shards", "3", "--json"], capture_output=True, text=True,
                                       env={**os.environ, "TOKEN": "ok"}).stdout)["shards"]
    owner = {label: s["index"] for s in shards["list"] for label in s["images"]}
    procs = [start(root, "--shard", f"{i}/3", "--wait", "15s", token="ok" if i != owner["base"] else "bad")
             for i, root in enumerate(roots, start=1)]
    results = [finish(p) for p in procs]
    code_base, base_out = results[owner["base"] - 1]
    code_web, web_out = results[owner["web"] - 1]
    assert code_base == 1 and base_out["base"]["status"] == "failed"
    assert code_web == 1 and web_out["base"]["status"] == "failed"
    assert f"(shard {owner['base']}/3)" in web_out["base"]["reason"] and "not building it here" in web_out["base"]["reason"].lower()
    assert web_out["web"]["status"] == "skipped"
    for root in roots:  # nothing recorded as built or pushed anywhere
        db = root / ".cache" / "olly.db"
        conn = sqlite3.connect(db)
        try:
            rows = [conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("results", "pushes")]
        finally:
            conn.close()
        assert rows == [0, 0], root
