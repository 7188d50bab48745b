"""Multi-platform images on the real engine and registry: amd64 + arm64 (arm64 RUN steps
under qemu-user-static binfmt), one OCI image index per image, charts pinning the index."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import copy_workspace
from olly import api
from olly.registry import OCI_INDEX, Endpoint, RegistryClient
from support import run_output, unavailable
from test_publish_docker import by_label, chart_values, skopeo_raw

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.builder]

ARM64_BUSYBOX = Path("/usr/local/lib/olly-test/busybox-arm64")  # installed by .ci/run (busybox-static:arm64)


@pytest.fixture(scope="session")
def arm64_busybox() -> Path:
    if not ARM64_BUSYBOX.is_file():
        unavailable(f"no arm64 busybox at {ARM64_BUSYBOX} (see .ci/run: apt-get download busybox-static:arm64)")
    probe = subprocess.run([str(ARM64_BUSYBOX), "uname", "-m"], capture_output=True, text=True)
    if probe.stdout.strip() != "aarch64":
        unavailable("arm64 binaries do not run: install qemu-user-static and binfmt-support, enable qemu-aarch64")
    return ARM64_BUSYBOX


def multi(tmp_path: Path, busybox: Path, arm64: Path, prefix: str, host: str, name: str = "ws") -> Path:
    root = copy_workspace("multi", tmp_path / name, None, prefix)
    shutil.copyfile(busybox, root / "base" / "busybox-amd64")
    shutil.copyfile(arm64, root / "base" / "busybox-arm64")
    for f in ("busybox-amd64", "busybox-arm64"):
        (root / "base" / f).chmod(0o755)
    build = root / "BUILD.toml"
    build.write_text(build.read_text().replace("REGISTRY_HOST", host).replace("CHARTS_PREFIX", prefix))
    return root


@pytest.fixture
def ws(tmp_path: Path, docker_client, busybox: Path, arm64_busybox: Path, unique_prefix: str, registry) -> Path:
    return multi(tmp_path, busybox, arm64_busybox, unique_prefix, registry.host)


def arch_of(docker_client, ref: str) -> str:
    """Runs the image (under qemu for arm64) and prints the machine it believes it is on."""
    return run_output(docker_client, ref, ["/bin/busybox-amd64", "cat", "/arch"]).decode().strip()


def test_local_builds_the_native_platform_only(ws: Path) -> None:
    result = by_label(api.make(ws, ["app"]))
    assert result["app"].status == "built" and result["app"].variants == []
    plan = api.plan(ws, ["app"], registry="dev").by_label()["app"]
    assert plan.platforms == [plan.platform] and plan.action == "cached"


def test_registry_platforms_build_an_index_that_charts_pin(ws: Path, docker_client, registry, unique_prefix: str) -> None:
    plan = api.plan(ws, [], registry="test").by_label()["app"]
    assert plan.platforms == ["linux/amd64", "linux/arm64"] and plan.action == "build"
    result = by_label(api.make(ws, [], registry="test", push=True, version="v1.0.0"))
    app = result["app"]
    assert app.status == "built", app.reason
    assert [v.platform for v in app.variants] == ["linux/amd64", "linux/arm64"]
    assert {v.status for v in app.variants} == {"built"}
    # The index: OCI media type, one entry per platform, each digest resolves.
    repo = f"{registry.host}/{unique_prefix}/app"
    tag = app.ref.rsplit(":", 1)[1]
    raw = skopeo_raw(f"{repo}:{tag}")
    index = json.loads(raw)
    assert index["mediaType"] == OCI_INDEX
    assert {(m["platform"]["os"], m["platform"]["architecture"]) for m in index["manifests"]} == {
        ("linux", "amd64"), ("linux", "arm64")}
    for m in index["manifests"]:
        assert json.loads(skopeo_raw(f"{repo}@{m['digest']}"))["config"]["digest"].startswith("sha256:")
    assert app.digest == "sha256:" + __import__("hashlib").sha256(raw).hexdigest()
    assert json.loads(skopeo_raw(f"{repo}:v1.0.0")) == index  # the version tag names the index
    # Each platform's image really is that platform: arm64 ran its RUN step under qemu.
    arches = {v.platform: arch_of(docker_client, v.ref) for v in app.variants}
    assert arches == {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}
    # The chart pins the index digest: one chart for both architectures.
    values = chart_values(Path(result["chart"].artifact), "multi")
    assert values["app"]["image"] == {"repository": repo, "tag": f"{tag}@{app.digest}"}
    # Plan JSON: one row per target, its platforms and per-platform actions.
    again = api.plan(ws, [], registry="test").by_label()["app"]
    assert again.action == "cached" and again.remote_digest == app.digest
    assert [v.action for v in again.variants] == ["cached", "cached"]


def test_a_second_machine_builds_nothing_and_a_missing_platform_alone_rebuilds(
        tmp_path: Path, docker_client, busybox: Path, arm64_busybox: Path, unique_prefix: str, registry) -> None:
    a = multi(tmp_path, busybox, arm64_busybox, unique_prefix, registry.host, "machine-a")
    first = by_label(api.make(a, ["app"], registry="test", push=True))
    for label in ("app", "base"):  # dependents first
        for v in first[label].variants:
            docker_client.images.remove(v.image_id, force=True)
    b = multi(tmp_path, busybox, arm64_busybox, unique_prefix, registry.host, "machine-b")
    second = by_label(api.make(b, ["app"], registry="test"))
    assert {o.status for o in second.values()} == {"cached"}, [o.reason for o in second.values()]
    assert second["app"].digest == first["app"].digest
    # The arm64 image of app disappears from the registry: only it is rebuilt, the index re-made.
    client = RegistryClient(Endpoint("test", registry.host, insecure=True))
    arm = next(v for v in first["app"].variants if v.platform == "linux/arm64")
    client.delete_manifest(f"{unique_prefix}/app", arm.digest)
    c = multi(tmp_path, busybox, arm64_busybox, unique_prefix, registry.host, "machine-c")
    third = by_label(api.make(c, ["app"], registry="test", push=True))
    assert third["base"].status == "cached"
    assert {v.platform: v.status for v in third["app"].variants} == {"linux/amd64": "cached", "linux/arm64": "built"}
    arm3 = next(v for v in third["app"].variants if v.platform == "linux/arm64")
    assert client.manifest_digest(f"{unique_prefix}/app", arm3.digest) == arm3.digest  # back in the registry
    if arm3.digest != arm.digest:  # classic: a rebuild is a new image (timestamps), so a new index is pushed
        assert third["app"].pushed and third["app"].digest != first["app"].digest
    else:  # BuildKit: its cache outlives the removed images, the rebuild is the same image, the index too
        assert arm3.pushed and third["app"].digest == first["app"].digest
    listed = json.loads(skopeo_raw(f"{registry.host}/{unique_prefix}/app:{third['app'].ref.rsplit(':', 1)[1]}"))
    assert {m["digest"] for m in listed["manifests"]} == {v.digest for v in third["app"].variants}
    assert arch_of(docker_client, next(v.ref for v in third["app"].variants if v.platform == "linux/arm64")) == "aarch64"
