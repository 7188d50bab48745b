"""`olly gc` on the real engine and the real registry: nothing still referenced goes, the
superseded goes, a dry run removes nothing."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from olly import api, registry as registry_mod
from olly.engine import KEY_LABEL, familiar_ref
from olly.errors import OllyError
from olly.registry import Endpoint, RegistryClient
from olly.signing import signature_tag
from test_publish_docker import by_label, pub

pytestmark = [pytest.mark.docker, pytest.mark.registry]

SIGNING_KEY = "0123456789abcdef0123456789abcdef"


def edit_web(ws: Path, n: int) -> None:
    (ws / "web" / "index.html").write_text(f"version {n}\n")


def tags_in_engine(docker_client, prefix: str) -> set[str]:
    tags = (familiar_ref(t) for image in docker_client.images.list() for t in image.tags)  # Podman: docker.io/...
    return {t.split("/", 1)[1] for t in tags if t.startswith(prefix + "/")}


def gone(client: RegistryClient, name: str, digest: str) -> bool:
    return client.manifest_digest(name, digest) is None


def plain_image(docker_client, ref: str, labels: dict[str, str] | None = None) -> str:
    """A tiny image olly did not build (no key label unless given), tagged ``ref``."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in (("Dockerfile", b"FROM scratch\nCOPY f /f\n"), ("f", ref.encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    raw.seek(0)
    image, _ = docker_client.images.build(fileobj=raw, custom_context=True, labels=labels or {}, rm=True)
    repo, _, tag = ref.rpartition(":")
    image.tag(repo, tag)
    return image.id


def test_gc_keeps_everything_referenced_and_removes_the_superseded(tmp_path: Path, docker_client, busybox: Path,
                                                                  unique_prefix: str, registry, monkeypatch) -> None:
    monkeypatch.setenv("OLLY_SIGNING_KEY", SIGNING_KEY)  # every pushed content tag gets a signature
    ws = pub(tmp_path, busybox, unique_prefix, registry.host)
    client = RegistryClient(Endpoint("test", registry.host, insecure=True))
    web, chart = f"{unique_prefix}/web", f"{unique_prefix}/charts/fixture"
    # 1: everything, no version: chart 0.3.0 pins web1 (and base) by digest, no version tag names them.
    first = by_label(api.make(ws, [], registry="test", push=True))
    assert {o.status for o in first.values()} == {"built"}, [o.reason for o in first.values()]
    # 2: web2, released as v2.0.0 (a version tag). 3: web3, superseded. 4: web4, current.
    edit_web(ws, 2)
    second = by_label(api.make(ws, ["web"], registry="test", push=True, version="v2.0.0"))
    edit_web(ws, 3)
    third = by_label(api.make(ws, ["web"], registry="test", push=True))
    edit_web(ws, 4)
    fourth = by_label(api.make(ws, ["web"], registry="test", push=True))
    digests = [o["web"].digest for o in (first, second, third, fourth)]
    tags = [o["web"].ref.rsplit(":", 1)[1] for o in (first, second, third, fourth)]
    assert len(set(digests)) == 4
    assert (ws / ".cache" / "logs" / "old").is_dir()

    dry = api.gc(ws, keep=1, registry="test", dry_run=True)
    listed = {(i.kind, i.name) for i in dry.items}
    assert ("engine-tag", f"{web}:{tags[2]}") in listed
    assert ("registry-manifest", f"{registry.host}/{web}@{digests[2]}") in listed
    assert all(i.status == "would remove" for i in dry.items) and any(i.size > 0 for i in dry.items)
    # A dry run removes nothing: web3 still resolves everywhere, the logs are still there.
    assert not gone(client, web, digests[2]) and tags[2] in {t.split(":")[1] for t in tags_in_engine(docker_client, unique_prefix)}
    assert any((ws / ".cache" / "logs" / "old").iterdir())

    result = api.gc(ws, keep=1, registry="test")
    assert not result.failed, [(i.name, i.status) for i in result.items]
    assert {i.status for i in result.items} == {"removed"}
    # Superseded: web3, its signature, its engine tag.
    assert gone(client, web, digests[2])
    assert client.manifest_digest(web, signature_tag(digests[2])) is None
    left = tags_in_engine(docker_client, unique_prefix)
    assert f"web:{tags[2]}" not in left
    # Still referenced: web1 (the chart pins it), web2 (v2.0.0), web4 (current), base, the chart.
    for digest in (digests[0], digests[1], digests[3], first["base"].digest):
        assert not gone(client, web if digest != first["base"].digest else f"{unique_prefix}/base", digest)
    assert client.manifest_digest(web, "v2.0.0") == digests[1]
    assert client.manifest_digest(chart, "0.3.0") == first["chart"].digest
    for d in (digests[0], digests[1], digests[3]):
        assert client.manifest_digest(web, signature_tag(d)) is not None
    assert {f"web:{tags[0]}", f"web:{tags[1]}", f"web:{tags[3]}", f"base:{first['base'].ref.rsplit(':', 1)[1]}"} <= left
    assert not any((ws / ".cache" / "logs" / "old").iterdir())
    # The current build is intact: nothing to build, nothing to push.
    again = by_label(api.make(ws, ["web"], registry="test", push=True))
    assert {o.status for o in again.values()} == {"cached"} and not any(o.pushed for o in again.values())
    # A second gc finds nothing more to remove.
    assert [i for i in api.gc(ws, keep=1, registry="test").items if i.kind != "db-rows"] == []


def test_gc_engine_charts_logs_and_rows_without_registry(tmp_path: Path, docker_client, busybox: Path,
                                                          unique_prefix: str, registry) -> None:
    ws = pub(tmp_path, busybox, unique_prefix, registry.host)
    runs = []
    for n in range(3):
        edit_web(ws, n)
        runs.append(by_label(api.make(ws, [])))
    tags = [r["web"].ref.rsplit(":", 1)[1] for r in runs]
    store = ws / ".cache" / "charts"
    assert len(list(store.glob("*.tgz"))) == 3
    # Not olly's: a key-less image under a content-tag name, and another tag on web1's image.
    foreign = plain_image(docker_client, f"{unique_prefix}/web:olly-{'0' * 20}")
    docker_client.api.tag(runs[0]["web"].image_id, f"{unique_prefix}/web", "mine")
    other_repo = plain_image(docker_client, f"{unique_prefix}/elsewhere:olly-{'1' * 20}", {KEY_LABEL: "x" * 32})

    before = tags_in_engine(docker_client, unique_prefix)
    dry = api.gc(ws, keep=1, dry_run=True)
    assert tags_in_engine(docker_client, unique_prefix) == before and len(list(store.glob("*.tgz"))) == 3
    assert {i.name for i in dry.items if i.kind == "engine-tag"} == {f"{unique_prefix}/web:{t}" for t in tags[:2]}

    result = api.gc(ws, keep=1)
    left = tags_in_engine(docker_client, unique_prefix)
    assert f"web:{tags[2]}" in left and not {f"web:{tags[0]}", f"web:{tags[1]}"} & left
    assert {"web:mine", f"web:olly-{'0' * 20}", f"elsewhere:olly-{'1' * 20}"} <= left  # never anything else
    assert docker_client.images.get(foreign) and docker_client.images.get(other_repo)
    assert docker_client.images.get(runs[0]["web"].image_id)  # its other tag holds it
    assert [p.name for p in store.glob("*.tgz")] == [f"{runs[2]['chart'].key}.tgz"]
    assert any(i.kind == "db-rows" for i in result.items)
    plan = api.plan(ws, [])
    assert {tp.action for tp in plan.targets} == {"cached"}, [(tp.label, tp.reasons) for tp in plan.targets]
    # The removed builds are forgotten: going back to web1's inputs builds it again.
    edit_web(ws, 0)
    assert api.plan(ws, ["web"]).by_label()["web"].action == "build"


def test_gc_reports_a_registry_that_refuses_deletion(tmp_path: Path, docker_client, busybox: Path,
                                                     unique_prefix: str, registry, monkeypatch) -> None:
    ws = pub(tmp_path, busybox, unique_prefix, registry.host)
    for n in range(2):
        edit_web(ws, n)
        api.make(ws, ["web"], registry="test", push=True)

    def refuse(self, repository: str, digest: str) -> None:
        raise OllyError("registry-error", f"registry 'test' ({registry.host}): HTTP 405 for DELETE "
                        f"{repository}@{digest}: deletion is disabled on this registry")

    monkeypatch.setattr(RegistryClient, "delete_manifest", refuse)
    result = api.gc(ws, keep=1, registry="test")
    assert not result.failed
    assert any("405" in note for note in result.notes)
    assert {i.status for i in result.items if i.kind == "registry-manifest"} == {"kept: the registry does not allow deletion"}
    assert any(i.kind == "engine-tag" and i.status == "removed" for i in result.items)


def test_list_tags_follows_pages(registry, unique_prefix: str, monkeypatch) -> None:
    client = RegistryClient(Endpoint("test", registry.host, insecure=True))
    name = f"{unique_prefix}/tags"
    assert client.list_tags(name) == []  # no such repository yet
    body = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":' \
           b'{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}'
    client.push_blob(name, b"{}")
    wanted = [f"t{i}" for i in range(5)]
    for tag in wanted:
        client.push_manifest(name, tag, body, "application/vnd.oci.image.manifest.v1+json")
    monkeypatch.setattr(registry_mod, "TAGS_PAGE", 2)
    assert sorted(client.list_tags(name)) == wanted
