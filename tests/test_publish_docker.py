"""Registries and charts against a real engine and a real local registry."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import copy_workspace
from olly import api, charts
from olly.errors import OllyError
from olly.registry import Endpoint, RegistryClient

pytestmark = [pytest.mark.docker, pytest.mark.registry]


def pub(tmp_path: Path, busybox: Path, prefix: str, host: str, name: str = "ws") -> Path:
    root = copy_workspace("pub", tmp_path / name, busybox, prefix)
    build = root / "BUILD.toml"
    build.write_text(build.read_text().replace("REGISTRY_HOST", host).replace("CHARTS_PREFIX", prefix))
    return root


@pytest.fixture
def ws(tmp_path: Path, docker_client, busybox: Path, unique_prefix: str, registry) -> Path:
    return pub(tmp_path, busybox, unique_prefix, registry.host)


def by_label(result: api.MakeResult) -> dict:
    return {o.label: o for o in result.outcomes}


def skopeo_raw(ref: str) -> bytes:
    return subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                          check=True, capture_output=True, timeout=60).stdout


def chart_values(tgz: Path, name: str = "fixture") -> dict:
    return yaml.safe_load(charts.read_members(tgz.read_bytes())[f"{name}/values.yaml"])


def test_push_records_registry_digest_and_pins_chart(ws: Path, registry, unique_prefix: str) -> None:
    result = api.make(ws, [], registry="test", push=True, version="v1.2.3")
    o = by_label(result)
    assert [o[t].status for t in ("base", "web", "chart")] == ["built", "built", "built"], [x.reason for x in result.outcomes]
    web_ref = f"{registry.host}/{unique_prefix}/web"
    manifest = skopeo_raw(f"{web_ref}:{o['web'].ref.rsplit(':', 1)[1]}")
    assert o["web"].digest == charts.sha256(manifest)  # the registry's digest, not the image id
    assert charts.sha256(skopeo_raw(f"{web_ref}:v1.2.3")) == o["web"].digest  # version tag, same image
    tgz = Path(o["chart"].artifact)
    assert tgz.name == "fixture-1.2.3.tgz"
    values = chart_values(tgz)
    assert values["web"]["image"] == {"repository": web_ref, "tag": f"{o['web'].ref.rsplit(':', 1)[1]}@{o['web'].digest}"}
    assert values["web"]["port"] == 8080
    text = charts.read_members(tgz.read_bytes())["fixture/values.yaml"].decode()
    assert "# the web server image" in text  # comments survive pinning
    members = charts.read_members(tgz.read_bytes())
    assert "fixture/notes/todo.txt" not in members and "fixture/values.yaml.swp" not in members
    meta = yaml.safe_load(members["fixture/Chart.yaml"])
    assert (meta["version"], meta["appVersion"]) == ("1.2.3", "v1.2.3")
    assert "version: 0.3.0" in (ws / "chart" / "Chart.yaml").read_text()  # source untouched
    # The chart in the registry, as Helm would have pushed it.
    raw = json.loads(skopeo_raw(f"{registry.host}/{unique_prefix}/charts/fixture:1.2.3"))
    assert raw["config"]["mediaType"] == "application/vnd.cncf.helm.config.v1+json"
    assert raw["layers"][0]["mediaType"] == "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
    assert raw["layers"][0]["digest"] == charts.sha256(tgz.read_bytes())
    assert raw["annotations"] == {  # what `helm push` sets from Chart.yaml, but no wall-clock `created`
        "org.opencontainers.image.title": "fixture", "org.opencontainers.image.version": "1.2.3",
        "org.opencontainers.image.description": "olly fixture chart"}
    assert tgz.parent == ws / "dist" / "charts" / "test"
    # Second run: nothing built, nothing pushed.
    again = by_label(api.make(ws, [], registry="test", push=True, version="v1.2.3"))
    assert {x.status for x in again.values()} == {"cached"}
    assert all(not x.pushed for x in again.values())


def test_second_cache_dir_builds_nothing(tmp_path: Path, docker_client, busybox: Path, unique_prefix: str, registry) -> None:
    a = pub(tmp_path, busybox, unique_prefix, registry.host, "machine-a")
    first = by_label(api.make(a, ["web"], registry="test", push=True))
    # Machine B: another checkout path, its own empty .cache, and none of A's images locally.
    for o in reversed(list(first.values())):  # dependents first
        docker_client.images.remove(o.image_id, force=True)
    b = pub(tmp_path, busybox, unique_prefix, registry.host, "machine-b")
    second = by_label(api.make(b, ["web"], registry="test"))
    assert {o.status for o in second.values()} == {"cached"}
    assert all("found in registry 'test'" in o.reason for o in second.values())
    assert second["web"].digest == first["web"].digest


def test_remote_hit_dependency_is_pulled_for_a_dependent_build(tmp_path: Path, docker_client, busybox: Path,
                                                               unique_prefix: str, registry) -> None:
    a = pub(tmp_path, busybox, unique_prefix, registry.host, "machine-a")
    first = by_label(api.make(a, ["base"], registry="test", push=True))
    docker_client.images.remove(first["base"].image_id, force=True)
    b = pub(tmp_path, busybox, unique_prefix, registry.host, "machine-b")
    result = by_label(api.make(b, ["web"], registry="test"))
    assert result["base"].status == "cached" and result["web"].status == "built", [o.reason for o in result.values()]


def test_deleted_remote_tag_is_pushed_again(ws: Path, registry, unique_prefix: str) -> None:
    first = by_label(api.make(ws, ["base"], registry="test", push=True))
    client = RegistryClient(Endpoint("test", registry.host, insecure=True))
    client.delete_manifest(f"{unique_prefix}/base", first["base"].digest)
    again = by_label(api.make(ws, ["base"], registry="test", push=True))
    assert again["base"].pushed and again["base"].status == "cached"
    assert client.manifest_digest(f"{unique_prefix}/base", first["base"].ref.rsplit(":", 1)[1]) == again["base"].digest


def test_chart_packaging_is_reproducible_across_paths(tmp_path: Path, docker_client, busybox: Path,
                                                     unique_prefix: str, registry) -> None:
    a = pub(tmp_path, busybox, unique_prefix, registry.host, "one")
    b = pub(tmp_path, busybox, unique_prefix, registry.host, "two")
    ra = by_label(api.make(a, [], registry="test", push=True, version="v0.9.0"))
    rb = by_label(api.make(b, [], registry="test", version="v0.9.0"))
    assert rb["chart"].status == "built"
    tgz_a, tgz_b = Path(ra["chart"].artifact).read_bytes(), Path(rb["chart"].artifact).read_bytes()
    assert tgz_a == tgz_b
    assert ra["chart"].key == rb["chart"].key
    # The OCI manifest (hence its digest) is reproducible too: B's equals what A pushed.
    _, manifest_b = charts.oci_artifact(tgz_b, charts.read_chart_meta(tgz_b, "fixture"))
    assert charts.sha256(manifest_b) == ra["chart"].digest


def test_new_image_digest_rebuilds_chart(ws: Path) -> None:
    api.make(ws, [], registry="test", push=True, version="v1.0.x-dev")
    (ws / "web" / "index.html").write_text("<h1>v2</h1>\n")
    result = by_label(api.make(ws, [], registry="test", push=True, version="v1.0.x-dev"))
    assert (result["base"].status, result["web"].status, result["chart"].status) == ("cached", "built", "built")


def test_split_endpoints_pin_the_pull_endpoint(ws: Path, registry, unique_prefix: str) -> None:
    result = by_label(api.make(ws, [], registry="split", push=True, version="v1.0.0"))
    assert result["chart"].status == "built", result["chart"].reason
    values = chart_values(Path(result["chart"].artifact))
    assert values["web"]["image"]["repository"] == f"registry.cluster.local:5000/team/{unique_prefix}/web"
    text = b"".join(charts.read_members(Path(result["chart"].artifact).read_bytes()).values()).decode()
    assert registry.host not in text
    assert json.loads(skopeo_raw(f"{registry.host}/team/team/{unique_prefix}/charts/fixture:1.0.0"))["layers"]


def test_push_endpoint_in_chart_fails_the_build(ws: Path, registry) -> None:
    values = ws / "chart" / "values.yaml"
    values.write_text(values.read_text() + f"redis:\n  image: {registry.host}/team/redis:7\n")
    result = by_label(api.make(ws, ["chart"], registry="split", version="v1.0.0"))
    assert result["chart"].status == "failed"
    assert "push endpoint of registry 'split'" in result["chart"].reason
    assert "pods pull from registry.cluster.local:5000/team" in result["chart"].reason
    assert not list((ws / "dist").rglob("*.tgz"))


def test_without_registry_chart_pins_tag_and_says_so(ws: Path) -> None:
    result = by_label(api.make(ws, [], version="v1.0.0"))
    assert result["chart"].status == "built"
    assert any("not digest-pinned" in n for n in result["chart"].notes)
    values = chart_values(Path(result["chart"].artifact))
    assert "@sha256:" not in values["web"]["image"]["tag"]


def test_registry_down_is_a_clear_error(ws: Path, registry) -> None:
    build = ws / "BUILD.toml"
    build.write_text(build.read_text().replace(f'push = "{registry.host}"', 'push = "127.0.0.1:1"', 1))
    with pytest.raises(OllyError) as info:
        api.make(ws, ["base"], registry="test", push=True)
    assert info.value.reason == "registry-unreachable"
    assert "registry 'test' (127.0.0.1:1)" in info.value.message
    assert api.why(ws, "base")["built_before"] is False  # nothing recorded


def test_registry_401_is_a_clear_error(ws: Path, tmp_path: Path, registry) -> None:
    from registry_server import start_registry

    locked = start_registry(tmp_path / "locked", htpasswd=("olly", "s3cret-pass"))
    try:
        build = ws / "BUILD.toml"
        build.write_text(build.read_text().replace(f'push = "{registry.host}"', f'push = "{locked.host}"', 1))
        with pytest.raises(OllyError) as info:
            api.make(ws, ["base"], registry="test", push=True)
        assert info.value.reason == "registry-denied"
        assert "HTTP 401" in info.value.message and locked.host in info.value.message
        assert api.why(ws, "base")["built_before"] is False
    finally:
        locked.stop()


def test_released_versions_are_never_overwritten(ws: Path, registry) -> None:
    api.make(ws, [], registry="test", push=True, version="v3.0.0")
    (ws / "chart" / "templates" / "extra.yaml").write_text("kind: ConfigMap\n")
    result = by_label(api.make(ws, [], registry="test", push=True, version="v3.0.0"))
    assert result["chart"].status == "failed"
    assert "never overwritten" in result["chart"].reason and "/charts/fixture:3.0.0" in result["chart"].reason
    # A development version may be re-pointed.
    api.make(ws, [], registry="test", push=True, version="v3.0.x-dev")
    (ws / "chart" / "templates" / "extra.yaml").write_text("kind: Secret\n")
    again = by_label(api.make(ws, [], registry="test", push=True, version="v3.0.x-dev"))
    assert again["chart"].status == "built" and again["chart"].pushed


def test_plan_predicts_charts_and_missing_pushes(ws: Path, registry, unique_prefix: str) -> None:
    api.make(ws, [], registry="test", push=True, version="v1.0.0")
    plan = api.plan(ws, [], registry="test", version="v1.0.0").by_label()
    assert [plan[t].action for t in ("base", "web", "chart")] == ["cached", "cached", "cached"]
    client = RegistryClient(Endpoint("test", registry.host, insecure=True))
    client.delete_manifest(f"{unique_prefix}/web", plan["web"].remote_digest)
    plan = api.plan(ws, [], registry="test", version="v1.0.0").by_label()
    assert "not in registry 'test'" in plan["web"].reasons
    assert plan["chart"].action == "package"


def test_labels_values_file_and_a_new_version_costs_no_build(ws: Path, docker_client, registry, unique_prefix: str) -> None:
    first = by_label(api.make(ws, [], registry="test", push=True, version="v5.0.0"))
    labels = docker_client.images.get(first["web"].image_id).labels
    assert labels["org.opencontainers.image.title"] == f"{unique_prefix}/web"
    assert labels["org.opencontainers.image.source"] == "https://example.invalid/olly-fixture"
    assert labels["dev.olly.key"] == first["web"].key
    assert "org.opencontainers.image.revision" not in labels and "org.opencontainers.image.version" not in labels
    values = yaml.safe_load(Path(first["chart"].artifact).with_suffix(".values.yaml").read_text())
    assert values == {
        "web": {"image": {"repository": f"{registry.host}/{unique_prefix}/web",
                          "tag": f"{first['web'].ref.rsplit(':', 1)[1]}@{first['web'].digest}"}},
        "tools": {"image": {"repository": f"{registry.host}/{unique_prefix}/base",
                            "tag": f"{first['base'].ref.rsplit(':', 1)[1]}@{first['base'].digest}"}},
    }
    second = by_label(api.make(ws, [], registry="test", push=True, version="v5.1.0"))
    assert (second["base"].status, second["web"].status) == ("cached", "cached")  # no image build
    assert second["web"].image_id == first["web"].image_id
    assert second["chart"].status == "built" and second["chart"].version == "5.1.0"
    assert charts.sha256(skopeo_raw(f"{registry.host}/{unique_prefix}/web:v5.1.0")) == first["web"].digest


def test_image_adopted_from_the_engine_is_recorded_with_a_registry(ws: Path) -> None:
    """A fresh cache finds the images in the engine (not yet in the registry): recorded as built."""
    import shutil

    api.make(ws, ["base"])
    shutil.rmtree(ws / ".cache")
    result = by_label(api.make(ws, ["base"], registry="test"))
    assert result["base"].status == "cached" and "found in engine" in result["base"].reason
    assert api.why(ws, "base")["current_key_built"] is True


def test_why_of_a_chart_plans_for_the_registry_it_was_packaged_for(ws: Path) -> None:
    # A git checkout: make and why then stamp the same `git describe` version (a dev version:
    # a push of other content under it is allowed).
    git = ["git", "-C", str(ws), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(git[:3] + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-qm", "fixture"], check=True)
    first = by_label(api.make(ws, [], registry="test", push=True))
    assert first["chart"].status == "built", first["chart"].reason
    info = api.why(ws, "chart")
    assert (info["built_before"], info["current_key_built"], info["changes"]) == (True, True, [])
    (ws / "chart" / "templates" / "deployment.yaml").write_text("kind: Deployment\n")
    info = api.why(ws, "chart")  # pins from the registry's digests: unchanged, only the file is
    assert info["changes"][0] == "~ file templates/deployment.yaml (content)"
    assert [line.split(":")[0] for line in info["changes"][1:]] == ["~ version"]  # its content suffix
    (ws / "web" / "index.html").write_text("<h1>v3</h1>\n")
    second = by_label(api.make(ws, [], registry="test", push=True))
    assert second["chart"].status == "built", second["chart"].reason
    old, new = (f"{o['web'].ref.rsplit(':', 1)[1]}@{o['web'].digest}" for o in (first, second))
    (ws / "chart" / "templates" / "deployment.yaml").write_text("kind: StatefulSet\n")
    (ws / "web" / "index.html").write_text("<h1>v1</h1>\n")  # back to the first image, in the registry
    changes = api.why(ws, "chart")["changes"]
    assert changes[:2] == ["~ file templates/deployment.yaml (content)", f"~ pin web.image: {new} -> {old}"], changes
    by_label(api.make(ws, [], registry="test", push=True))
    assert api.why(ws, "chart")["current_key_built"] is True
