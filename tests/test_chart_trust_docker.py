"""Issue #7, trust: never ship, pin or skip on something that was not verified (charts and
version tags), against a real engine and a real registry."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
import yaml

from olly import api, charts, report
from olly.cache import Cache
from olly.registry import Endpoint, RegistryClient
from test_publish_docker import by_label, pub

pytestmark = [pytest.mark.docker, pytest.mark.registry]


@pytest.fixture
def ws(tmp_path: Path, docker_client, busybox: Path, unique_prefix: str, registry) -> Path:
    return pub(tmp_path, busybox, unique_prefix, registry.host)


def client(registry) -> RegistryClient:
    return RegistryClient(Endpoint("test", registry.host, insecure=True))


# -- 3: a tampered stored package ------------------------------------------------------


def test_tampered_stored_package_is_repackaged_not_pushed(ws: Path, registry, unique_prefix: str) -> None:
    """A restored CI cache carries a replaced .cache/charts/<key>.tgz and a db row matching it:
    the next `make --push` must push the genuine package, not the stored one."""
    api.make(ws, ["web"], registry="test", push=True)  # images in the registry: the chart is digest-pinned
    first = by_label(api.make(ws, ["chart"], registry="test", version="v7.7.7"))
    assert first["chart"].status == "built", first["chart"].reason
    store = ws / ".cache" / "charts" / f"{first['chart'].key}.tgz"
    genuine = store.read_bytes()
    members = charts.read_members(genuine)
    members["fixture/values.yaml"] += b"backdoor: true\n"
    tampered = charts._tgz(members)
    store.write_bytes(tampered)
    with sqlite3.connect(ws / ".cache" / "olly.db") as db:
        changed = db.execute("UPDATE artifacts SET digest = ? WHERE key = ?",
                             [charts.sha256(tampered), first["chart"].key]).rowcount
    assert changed == 1

    second = by_label(api.make(ws, ["chart"], registry="test", push=True, version="v7.7.7"))
    chart = second["chart"]
    assert chart.status == "built" and chart.reason == "stored package did not match its key: repackaged"
    assert chart.pushed and chart.key == first["chart"].key
    body, _, _ = client(registry).get_manifest(f"{unique_prefix}/charts/fixture", "7.7.7")
    assert json.loads(body)["layers"][0]["digest"] == charts.sha256(genuine)  # the registry serves the genuine chart
    assert store.read_bytes() == genuine and Path(chart.artifact).read_bytes() == genuine
    # Recorded as what it now is: the next run is a plain cache hit.
    third = by_label(api.make(ws, ["chart"], registry="test", push=True, version="v7.7.7"))
    assert third["chart"].status == "cached" and not third["chart"].pushed, third["chart"].reason


# -- 6: two runs publishing one version at once ----------------------------------------


def race_on(monkeypatch: pytest.MonkeyPatch, tag: str, charts_repo: bool) -> list[str]:
    """Right after our PUT of ``tag``, "another run" PUTs a different manifest to it (same
    blobs, other bytes: as a non-reproducible rebuild would). Returns its digest."""
    real = RegistryClient.push_manifest
    other_digest: list[str] = []

    def push_manifest(self: RegistryClient, repository: str, reference: str, body: bytes, media_type: str) -> str:
        digest = real(self, repository, reference, body, media_type)
        if reference == tag and ("/charts/" in repository) == charts_repo and not other_digest:
            other = json.dumps(json.loads(body), indent=1).encode() + b"\n"  # docker indents by 3, olly by 0
            assert charts.sha256(other) != charts.sha256(body)
            other_digest.append(real(RegistryClient(self.endpoint), repository, reference, other, media_type))
        return digest

    monkeypatch.setattr(RegistryClient, "push_manifest", push_manifest)
    return other_digest


def test_image_version_tag_published_concurrently_fails(ws: Path, registry, unique_prefix: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    other = race_on(monkeypatch, "v9.9.3", charts_repo=False)
    result = api.make(ws, [], registry="test", push=True, version="v9.9.3")
    o = by_label(result)
    assert other, "the race was not staged"
    assert o["base"].status == "failed", o["base"].reason
    assert "v9.9.3 was published concurrently by another run" in o["base"].reason
    assert report.exit_code(result.outcomes) == 1
    assert client(registry).manifest_digest(f"{unique_prefix}/base", "v9.9.3") == other[0]
    cache = Cache(ws / ".cache")
    try:  # nothing recorded for it: no push row, no build result
        assert cache.push("base", o["base"].key, registry.host) is None
        assert cache.result("base", o["base"].key) is None
    finally:
        cache.close()


def test_chart_version_tag_published_concurrently_fails(ws: Path, registry, unique_prefix: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    other = race_on(monkeypatch, "9.9.3", charts_repo=True)
    result = api.make(ws, [], registry="test", push=True, version="v9.9.3")
    o = by_label(result)
    assert other, "the race was not staged"
    assert (o["base"].status, o["web"].status) == ("built", "built")
    assert o["chart"].status == "failed"
    assert "v9.9.3 was published concurrently by another run" in o["chart"].reason
    assert report.exit_code(result.outcomes) == 1
    assert client(registry).manifest_digest(f"{unique_prefix}/charts/fixture", "9.9.3") == other[0]
    cache = Cache(ws / ".cache")
    try:
        assert cache.push("chart", o["chart"].key, registry.host) is None
        assert cache.artifact("chart", o["chart"].key, registry.host) is None
    finally:
        cache.close()


# -- 7: versions identify content --------------------------------------------------------


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True,
                          capture_output=True, text=True).stdout.strip()


def chart_version(o) -> str:
    meta = yaml.safe_load(charts.read_members(Path(o.artifact).read_bytes())[f"{o.ref.split(':')[0]}/Chart.yaml"])
    assert meta["version"] == o.version
    return meta["version"]


def test_dirty_tree_versions_identify_content(tmp_path: Path, docker_client, busybox: Path, unique_prefix: str) -> None:
    """Two charts in a git workspace. Editing one makes the tree dirty: only that chart is
    packaged again, under a new version; every edit gives another version."""
    root = pub(tmp_path, busybox, unique_prefix, "127.0.0.1:9")
    shutil.copytree(root / "chart", root / "chart2")
    meta = root / "chart2" / "Chart.yaml"
    meta.write_text(meta.read_text().replace("name: fixture", "name: fixture2"))
    with (root / "BUILD.toml").open("a") as f:
        f.write('\n[charts.chart2]\nimages = { "web.image" = "web" }\n')
    (root / ".gitignore").write_text(".cache/\ndist/\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-qm", "c")
    sha = git(root, "rev-parse", "--short", "HEAD")

    clean = by_label(api.make(root, []))
    assert (clean["chart"].status, clean["chart2"].status) == ("built", "built")
    v1, w1 = chart_version(clean["chart"]), chart_version(clean["chart2"])
    assert v1.startswith(f"0.3.0-{sha}.") and "dirty" not in v1

    values = root / "chart2" / "values.yaml"
    values.write_text(values.read_text().replace("replicas: 1", "replicas: 2"))
    assert git(root, "describe", "--tags", "--always", "--dirty").endswith("-dirty")
    dirty = by_label(api.make(root, []))
    assert dirty["chart"].status == "cached", dirty["chart"].reason  # untouched: not repackaged
    assert dirty["chart"].version == v1
    assert dirty["chart2"].status == "built"
    w2 = chart_version(dirty["chart2"])
    assert w2 != w1 and w2.startswith(f"0.3.0-{sha}.") and "dirty" not in w2

    values.write_text(values.read_text().replace("replicas: 2", "replicas: 3"))
    again = by_label(api.make(root, []))
    assert again["chart"].status == "cached" and again["chart2"].status == "built"
    w3 = chart_version(again["chart2"])
    assert w3 not in (w1, w2)  # equal versions mean equal bytes: every content its own version
    # Plan agrees with make: after the run, nothing is left to package.
    assert {tp.action for tp in api.plan(root, []).targets} == {"cached"}
