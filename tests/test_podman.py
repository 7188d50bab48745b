"""Podman as an engine (issue #8): what differs from Docker is hidden in olly.engine.

The unit tests need no engine. The engine tests run against whichever engine the session
uses (``OLLY_TEST_ENGINE=docker|podman``), so each difference is checked on both.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import copy_workspace
from olly import api
from olly.cache import Cache
import json

from olly.engine import (DOCKER, PODMAN, Engine, _base_images, _explain, _literal_pattern, _loopback,
                         _podman_network_params, _pushed_digest, canonical_ref, engine_kind, familiar_ref, has_tag)
from olly.registry import Endpoint, RegistryClient
from support import engine_under_test
from test_publish_docker import by_label, pub

DIGEST = "sha256:" + "ab" * 32


# -- no engine ------------------------------------------------------------------------


@pytest.mark.parametrize("reported", ["olly/app:olly-1", "docker.io/olly/app:olly-1", "index.docker.io/olly/app:olly-1",
                                      "localhost/olly/app:olly-1"])
def test_a_local_tag_is_found_however_the_engine_spells_it(reported: str) -> None:
    assert has_tag({"RepoTags": ["other:x", reported]}, "olly/app:olly-1")


@pytest.mark.parametrize("reported", ["docker.io/library/app:t", "app:t", "localhost/app:t", "library/app:t"])
def test_single_component_names_are_docker_hub_library_names(reported: str) -> None:
    assert has_tag({"RepoTags": [reported]}, "app:t")


@pytest.mark.parametrize("reported", ["olly/app:olly-2", "localhost:5000/olly/app:olly-1",
                                      "127.0.0.1:5000/olly/app:olly-1", "quay.io/olly/app:olly-1"])
def test_another_tag_or_a_registry_qualified_one_is_not_the_local_tag(reported: str) -> None:
    assert not has_tag({"RepoTags": [reported]}, "olly/app:olly-1")


def test_no_tags_at_all() -> None:
    assert not has_tag({"RepoTags": None}, "olly/app:olly-1") and not has_tag({}, "olly/app:olly-1")


def test_canonical_ref_keeps_registry_hosts() -> None:
    assert canonical_ref("127.0.0.1:5000/a/b:t") == "127.0.0.1:5000/a/b:t"
    assert canonical_ref("localhost:5000/b@" + DIGEST) == "localhost:5000/b@" + DIGEST


def test_familiar_ref_is_dockers_spelling() -> None:
    assert [familiar_ref(r) for r in ("docker.io/library/app:t", "docker.io/org/app:t", "localhost/org/app:t",
                                      "org/app:t", "127.0.0.1:5000/org/app:t")] == \
        ["app:t", "org/app:t", "org/app:t", "org/app:t", "127.0.0.1:5000/org/app:t"]


def test_engine_kind_from_version() -> None:
    podman = {"Platform": {"Name": "linux/amd64/debian-12"}, "Version": "4.3.1",
              "Components": [{"Name": "Podman Engine", "Version": "4.3.1", "Details": {"APIVersion": "4.3.1"}}]}
    docker = {"Platform": {"Name": "Docker Engine - Community"}, "Version": "20.10.24",
              "Components": [{"Name": "Engine", "Version": "20.10.24"}, {"Name": "containerd"}]}
    assert engine_kind(podman) == PODMAN and engine_kind(docker) == DOCKER and engine_kind({}) == DOCKER


def test_pushed_digest_from_docker_aux_or_podman_status() -> None:
    assert _pushed_digest({"aux": {"Tag": "t", "Digest": DIGEST, "Size": 1}}) == DIGEST  # Docker
    assert _pushed_digest({"status": f"t: digest: {DIGEST} size: 423"}) == DIGEST  # Docker and Podman
    assert _pushed_digest({"status": "Pushing", "progressDetail": {}}) is None


@pytest.mark.parametrize("ref,loopback", [("127.0.0.1:5000/a/b", True), ("127.1.2.3:80/a", True),
                                          ("localhost:5000/a", True), ("localhost/a", True), ("[::1]:5000/a", True),
                                          ("registry.example:5000/a", False), ("10.0.0.1:5000/a", False),
                                          ("olly/app", False)])
def test_loopback_registries_are_the_ones_docker_treats_as_insecure(ref: str, loopback: bool) -> None:
    assert _loopback(ref) is loopback


def test_podman_run_step_failure_is_worded_as_dockers() -> None:
    error = 'building at STEP "RUN /bin/busybox sh -c exit 3": while running runtime: exit status 3'
    req = type("Req", (), {"dockerfile": b"FROM scratch\n", "dockerfile_display": "Dockerfile"})()
    assert _explain(error, [], req) == "The command '/bin/busybox sh -c exit 3' returned a non-zero code: 3"  # type: ignore[arg-type]


def test_podman_build_network_is_sent_as_podman_takes_it() -> None:
    assert _podman_network_params(None) == {}  # the engine's default
    assert _podman_network_params("none") == {"networkmode": "1"}  # buildah NetworkDisabled
    host = _podman_network_params("host")
    assert host["networkmode"] == "2" and json.loads(host["nsoptions"]) == [{"Name": "network", "Host": True}]
    named = _podman_network_params("ci-net")
    assert json.loads(named["nsoptions"]) == [{"Name": "network", "Path": "ci-net"}]
    assert json.loads(_podman_network_params("bridge")["nsoptions"])[0]["Host"] is False


def test_dropped_paths_become_patterns_matching_only_themselves() -> None:
    assert _literal_pattern(".dockerfile.0123abcd") == ".dockerfile.0123abcd"
    assert _literal_pattern("a*b?[c]\\d") == "a\\*b\\?\\[c]\\\\d"
    assert _literal_pattern("!x") == "\\!x"  # not an exception pattern


def test_base_images_are_the_external_from_images() -> None:
    df = b"ARG DEP\nFROM 127.0.0.1:5000/a/b:1 AS build\nFROM ${DEP}\nFROM build\nFROM scratch\nFROM python:3\n"
    assert _base_images(df, {"DEP": "p/base:olly-1"}) == ["127.0.0.1:5000/a/b:1", "p/base:olly-1", "python:3"]


# -- the session's engine (Docker or Podman) -----------------------------------------


@pytest.mark.docker
def test_engine_kind_is_the_engine_under_test(docker_client) -> None:
    engine = Engine()
    assert engine.kind == engine_under_test()
    assert engine.platform.startswith("linux/")


@pytest.mark.docker
def test_no_op_run_says_cached_not_retagged(tmp_path: Path, docker_client, busybox: Path, unique_prefix: str) -> None:
    """Podman reports docker.io/<repo>:<tag>: a tag olly set must count as present."""
    ws = copy_workspace("busy", tmp_path, busybox, unique_prefix)
    first = api.make(ws, [])
    assert {o.status for o in first.outcomes} == {"built"}, [o.reason for o in first.outcomes]
    again = api.make(ws, [])
    assert {o.status for o in again.outcomes} == {"cached"}
    assert {o.reason for o in again.outcomes} == {"up to date"}  # not "retagged existing image"
    assert {t.action for t in api.plan(ws, []).targets} == {"cached"}


@pytest.mark.docker
@pytest.mark.registry
def test_push_records_the_registrys_digest_of_the_local_image(tmp_path: Path, docker_client, busybox: Path,
                                                              unique_prefix: str, registry) -> None:
    """Podman's push stream has no aux digest: olly records what the registry serves, and the
    registry serves the local image as it is (its config digest is the local image id)."""
    ws = pub(tmp_path, busybox, unique_prefix, registry.host)
    o = by_label(api.make(ws, ["web"], registry="test", push=True))
    assert (o["base"].status, o["web"].status) == ("built", "built"), (o["base"].reason, o["web"].reason)
    client = RegistryClient(Endpoint("test", registry.host, insecure=True))
    for label in ("base", "web"):
        digest, config = client.manifest_config_digest(f"{unique_prefix}/{label}", o[label].ref.rsplit(":", 1)[1])
        assert (o[label].digest, o[label].image_id) == (digest, config)
        cache = Cache(ws / ".cache")
        try:
            assert cache.push(label, o[label].key, registry.host) == digest
        finally:
            cache.close()
    again = by_label(api.make(ws, ["web"], registry="test", push=True))
    assert {x.status for x in again.values()} == {"cached"} and not any(x.pushed for x in again.values())


@pytest.mark.docker
@pytest.mark.registry
def test_engine_push_reports_the_registrys_digest_or_none(tmp_path: Path, docker_client, busybox: Path,
                                                          unique_prefix: str, registry) -> None:
    ws = copy_workspace("busy", tmp_path, busybox, unique_prefix)
    built = by_label(api.make(ws, ["base"]))["base"]
    engine = Engine()
    remote = f"{registry.host}/{unique_prefix}/base"
    engine.tag(built.image_id, remote, "t1")
    reported = engine.push(remote, "t1", "test")
    served = RegistryClient(Endpoint("test", registry.host, insecure=True)).manifest_digest(f"{unique_prefix}/base", "t1")
    assert served is not None and reported in (served, None)
    # Pulled back by digest from the loopback registry (Podman: without a registries.conf entry).
    engine.untag(f"{remote}:t1")
    assert engine.pull(f"{remote}@{served}", "test") == built.image_id


@pytest.mark.docker
def test_a_link_leaving_the_context(tmp_path: Path, docker_client, busybox: Path, unique_prefix: str) -> None:
    """dockerd builds it; Podman cannot unpack such a context, and olly says why in one line
    (Podman's bare HTTP 500 would quote the request URL instead)."""
    ws = copy_workspace("busy", tmp_path, busybox, unique_prefix)
    df = ws / "solo" / "Dockerfile"
    df.write_text(df.read_text() + "COPY . /ctx/\n")  # the link is sent (olly sends what COPY can reach)
    (ws / "solo" / "l").symlink_to("../outside")
    o = api.make(ws, ["solo"]).outcomes[0]
    if engine_under_test() == PODMAN:
        assert o.status == "failed" and "a symlink that leaves it" in o.reason, o.reason
        assert "buildargs" not in o.reason
    else:
        assert o.status == "built", o.reason


@pytest.mark.docker
def test_an_images_onbuild_triggers_are_seen(tmp_path: Path, docker_client, busybox: Path, unique_prefix: str) -> None:
    """Podman runs ONBUILD triggers but its inspect omits Config.OnBuild: olly must still see
    them (a trigger like COPY . makes the whole context an input of the images built on it)."""
    ws = copy_workspace("busy", tmp_path, busybox, unique_prefix)
    df = ws / "base" / "Dockerfile"
    df.write_text(df.read_text() + "ONBUILD COPY . /ctx/\n")
    base = by_label(api.make(ws, ["base"]))["base"]
    assert base.status == "built", base.reason
    image = Engine().inspect(base.ref)
    assert image is not None and image["Config"]["OnBuild"] == ["COPY . /ctx/"]


def image_files(docker_client, ref: str) -> set[str]:
    """Every path in ``ref``'s layers (from the engine's export, as either engine writes it)."""
    import io
    import tarfile

    saved = io.BytesIO(b"".join(docker_client.images.get(ref).save()))
    names: set[str] = set()
    with tarfile.open(fileobj=saved) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        for layer in manifest[0]["Layers"]:
            with tarfile.open(fileobj=io.BytesIO(outer.extractfile(layer).read())) as inner:  # type: ignore[union-attr]
                names.update(m.name.removeprefix("./") for m in inner)
    return names


@pytest.mark.docker
def test_copy_sees_exactly_what_olly_sent(tmp_path: Path, docker_client, busybox: Path, unique_prefix: str) -> None:
    """COPY sees the files olly sent and keyed, on both engines: the Dockerfile olly sends from
    outside the context (as .dockerfile.<hex>) is dropped, and a .containerignore, which Podman
    would otherwise apply on top of .dockerignore, takes nothing away."""
    ws = copy_workspace("busy", tmp_path, busybox, unique_prefix)
    solo = ws / "solo"
    (ws / "solo.Dockerfile").write_text((solo / "Dockerfile").read_text() + "COPY . /ctx/\n")
    (solo / "Dockerfile").unlink()
    (ws / "BUILD.toml").write_text((ws / "BUILD.toml").read_text() + 'dockerfile = "solo.Dockerfile"\n')
    (solo / ".dockerignore").write_text("*.log\n")
    (solo / ".containerignore").write_text("data.txt\n")
    (solo / "skip.log").write_text("not sent\n")
    o = api.make(ws, ["solo"]).outcomes[0]
    assert o.status == "built", o.reason
    ctx = {name[len("ctx/"):] for name in image_files(docker_client, o.ref) if name.startswith("ctx/")}
    assert ctx == {"busybox", "data.txt", ".dockerignore", ".containerignore"}, ctx
