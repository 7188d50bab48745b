"""Trust nothing that was not verified: registry content tags, local tags, signatures.

Real engine, real registry. Each test stages what an attacker or an unlucky colleague
could leave behind (an image under someone else's content tag, a re-pointed local tag,
an unsigned or forged cache entry) and checks olly neither ships nor pins nor skips on it.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from olly import api
from olly.engine import KEY_LABEL
from olly.registry import Endpoint, RegistryClient
from olly.signing import signature_tag
from test_publish_docker import by_label, chart_values, pub

pytestmark = [pytest.mark.docker, pytest.mark.registry]

KEY = "0123456789abcdef0123456789abcdef"  # a signing key (>= 16 bytes)


def impostor(docker_client, ref: str, key: str, content: bytes = b"not what the key says\n") -> str:
    """Build an image whose label claims ``key`` but whose content is something else; tag it ``ref``."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in (("Dockerfile", b"FROM scratch\nCOPY evil /evil\n"), ("evil", content)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    raw.seek(0)
    image, _ = docker_client.images.build(fileobj=raw, custom_context=True, labels={KEY_LABEL: key}, rm=True)
    repo, _, tag = ref.rpartition(":")
    image.tag(repo, tag)
    return image.id


def push_impostor(docker_client, registry_host: str, local_ref: str, key: str) -> str:
    """Push an impostor under the registry's copy of ``local_ref`` (the content tag). Returns its id."""
    remote = f"{registry_host}/{local_ref}"
    image_id = impostor(docker_client, remote, key)
    repo, _, tag = remote.rpartition(":")
    for line in docker_client.api.push(repo, tag=tag, stream=True, decode=True):
        assert "error" not in line, line
    docker_client.images.remove(remote)
    return image_id


def config_digest(registry_host: str, repo: str, tag: str) -> str:
    found = RegistryClient(Endpoint("test", registry_host, insecure=True)).manifest_config_digest(repo, tag)
    assert found is not None
    return found[1]


def test_registry_content_tag_holding_other_content_is_not_trusted(ws: Path, docker_client, registry,
                                                                   unique_prefix: str) -> None:
    local = by_label(api.make(ws, ["base"]))["base"]
    evil = push_impostor(docker_client, registry.host, local.ref, local.key)
    # Without --push: the chart must not pin what the registry serves under base's tag.
    result = by_label(api.make(ws, [], registry="test"))
    assert "serves other content" in result["base"].reason
    assert "@" not in chart_values(Path(result["chart"].artifact))["tools"]["image"]["tag"]
    # With --push: the local image is pushed over it, loudly, and pinned.
    pushed = by_label(api.make(ws, [], registry="test", push=True))
    assert any("WARNING" in n and "other content" in n for n in pushed["base"].notes), pushed["base"].notes
    tag = local.ref.rsplit(":", 1)[1]
    assert config_digest(registry.host, f"{unique_prefix}/base", tag) == local.image_id != evil
    pin = chart_values(Path(pushed["chart"].artifact))["tools"]["image"]["tag"]
    assert pin == f"{tag}@{pushed['base'].digest}"


@pytest.mark.builder  # built FROM the real base, whichever builder
def test_a_wrong_local_tag_of_a_pulled_dependency_is_not_built_on(tmp_path: Path, docker_client, busybox: Path,
                                                                    unique_prefix: str, registry) -> None:
    a = pub(tmp_path, busybox, unique_prefix, registry.host, "machine-a")
    first = by_label(api.make(a, ["base"], registry="test", push=True))["base"]
    docker_client.images.remove(first.image_id, force=True)
    # Machine B: base's content tag exists locally but holds another image (the label even
    # claims the key), so the plan sees a remote hit; the dependent build must not use the tag.
    b = pub(tmp_path, busybox, unique_prefix, registry.host, "machine-b")
    evil = impostor(docker_client, first.ref, "some-other-key")
    result = by_label(api.make(b, ["web"], registry="test"))
    assert result["web"].status == "built", result["web"].reason
    base_now = docker_client.images.get(first.ref)
    assert base_now.id != evil and base_now.labels[KEY_LABEL] == first.key
    web = docker_client.images.get(result["web"].ref)
    # Built FROM the real base: its layers come first (BuildKit's history names no parent image ids).
    layers = web.attrs["RootFS"]["Layers"]
    assert layers[:len(base_now.attrs["RootFS"]["Layers"])] == base_now.attrs["RootFS"]["Layers"]
    assert docker_client.images.get(evil).attrs["RootFS"]["Layers"][0] not in layers


def test_signed_remote_cache(tmp_path: Path, docker_client, busybox: Path, unique_prefix: str, registry,
                             monkeypatch) -> None:
    client = RegistryClient(Endpoint("test", registry.host, insecure=True))
    monkeypatch.setenv("OLLY_SIGNING_KEY", KEY)
    a = pub(tmp_path, busybox, unique_prefix, registry.host, "machine-a")
    first = by_label(api.make(a, ["base"], registry="test", push=True))["base"]
    assert client.manifest_digest(f"{unique_prefix}/base", signature_tag(first.digest)) is not None
    docker_client.images.remove(first.image_id, force=True)
    # B holds the key and nothing local: the signed entry is a hit, nothing builds.
    b = pub(tmp_path, busybox, unique_prefix, registry.host, "machine-b")
    hit = by_label(api.make(b, ["base"], registry="test"))["base"]
    assert hit.status == "cached" and "signed" in hit.reason and hit.digest == first.digest
    # C verifies with another key: the signature is invalid, so C builds instead of trusting it.
    monkeypatch.setenv("OLLY_SIGNING_KEY", "another-key-entirely-0000")
    c = pub(tmp_path, busybox, unique_prefix, registry.host, "machine-c")
    forged = by_label(api.make(c, ["base"], registry="test"))["base"]
    assert forged.status == "built" and "invalid signature in registry 'test'" in forged.reason


def test_unsigned_entry_is_rebuilt_when_a_signing_key_is_set(tmp_path: Path, docker_client, busybox: Path,
                                                              unique_prefix: str, registry, monkeypatch) -> None:
    monkeypatch.delenv("OLLY_SIGNING_KEY", raising=False)
    a = pub(tmp_path, busybox, unique_prefix, registry.host, "machine-a")
    first = by_label(api.make(a, ["base"], registry="test", push=True))["base"]  # a PR job: no key
    docker_client.images.remove(first.image_id, force=True)
    monkeypatch.setenv("OLLY_SIGNING_KEY", KEY)
    b = pub(tmp_path, busybox, unique_prefix, registry.host, "machine-b")
    plan = api.plan(b, ["base"], registry="test").by_label()["base"]
    assert plan.action == "build" and "unsigned in registry 'test'" in "; ".join(plan.reasons)
    built = by_label(api.make(b, ["base"], registry="test", push=True))["base"]
    assert built.status == "built"
    # Its push re-signs the tag's digest (same bytes when the build is reproducible, else the
    # local image replaces the unsigned one): a third machine with the key now gets a hit.
    docker_client.images.remove(built.image_id, force=True)
    c = pub(tmp_path, busybox, unique_prefix, registry.host, "machine-c")
    assert by_label(api.make(c, ["base"], registry="test"))["base"].status == "cached"


def test_short_signing_key_is_refused(ws: Path, monkeypatch) -> None:
    from olly.errors import OllyError

    monkeypatch.setenv("OLLY_SIGNING_KEY", "short")
    with pytest.raises(OllyError, match="at least 16 bytes"):
        api.plan(ws, [], registry="test")


@pytest.fixture
def ws(tmp_path: Path, docker_client, busybox: Path, unique_prefix: str, registry) -> Path:
    return pub(tmp_path, busybox, unique_prefix, registry.host)
