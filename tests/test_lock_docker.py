"""Locked base images against a real engine and a real registry: bases are FROM scratch +
static busybox images pushed to the loopback registry, then moved under the same tag."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import requests

from olly import api
from olly.baselock import parse_lock
from olly.registry import DOCKER_MANIFEST, OCI_INDEX, Endpoint, RegistryClient, sha256_digest

pytestmark = [pytest.mark.docker, pytest.mark.registry]


@pytest.fixture
def prefix(unique_prefix: str) -> str:
    """``unique_prefix``: its teardown also removes the images the engine pulled by digest (untagged)."""
    return unique_prefix


def olly(ws: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "olly", "-C", str(ws), *args], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=300)


def push_base(client, busybox: Path, ref: str, marker: str) -> str:
    """Build FROM scratch (busybox + /etc/base = marker), push as ``ref``, drop it locally so
    a build must pull it by digest; returns the manifest digest the registry serves."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data, mode in (("Dockerfile", b"FROM scratch\nCOPY busybox /bin/busybox\nCOPY base /etc/base\n", 0o644),
                                 ("busybox", busybox.read_bytes(), 0o755), ("base", marker.encode(), 0o644)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    image, _ = client.images.build(fileobj=io.BytesIO(buf.getvalue()), custom_context=True, tag=ref, rm=True)
    repo, tag = ref.rsplit(":", 1)
    for line in client.images.push(repo, tag=tag, stream=True, decode=True):
        assert "error" not in line, line
    client.images.remove(image.id, force=True)
    host, name = repo.split("/", 1)
    digest = RegistryClient(Endpoint("test", host, True)).manifest_digest(name, tag)
    assert digest
    return digest


def file_in(client, ref: str, path: str) -> str:
    """A file of the image, read from a created (never started) container."""
    container = client.containers.create(ref, command="/nonexistent")
    try:
        data = b"".join(container.get_archive(path)[0])
    finally:
        container.remove()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.extractfile(tar.getmembers()[0])
        assert member is not None
        return member.read().decode()


def statuses(result: api.MakeResult) -> dict[str, str]:
    return {o.label: o.status for o in result.outcomes}


def write_ws(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.fixture
def ws(tmp_path: Path, docker_client, busybox: Path, prefix: str, registry) -> Path:
    h = registry.host
    return write_ws(tmp_path / "ws", {
        "BUILD.toml": f"""
[workspace]
network = "none"
[images.a]
repository = "{prefix}/a"
[images.b]
repository = "{prefix}/b"
depends_on = ["a"]
[images.c]
repository = "{prefix}/c"
args = {{ REG = "{h}" }}
""",
        "a/Dockerfile": f"FROM {h}/{prefix}/base:1\nCOPY data.txt /a.txt\n",
        "a/data.txt": "a\n",
        "b/Dockerfile": "ARG A\nFROM ${A}\nCOPY data.txt /b.txt\n",
        "b/data.txt": "b\n",
        # ARG substitution (BUILD.toml args over the defaults) and a stage name that is not a base.
        "c/Dockerfile": (f"ARG REG=unset.invalid\nARG TAG=1\nFROM ${{REG}}/{prefix}/other:${{TAG}} AS build\n"
                         'RUN ["/bin/busybox", "sh", "-c", "cat /etc/base > /built"]\nFROM build\nCOPY . /c\n'),
        "c/data.txt": "c\n",
    })


@pytest.mark.builder  # the engine builds FROM the pinned reference
def test_locked_bases_build_and_rebuild_only_on_update(ws: Path, docker_client, busybox: Path, prefix: str,
                                                       registry) -> None:
    h = registry.host
    base1 = push_base(docker_client, busybox, f"{h}/{prefix}/base:1", "base v1")
    other = push_base(docker_client, busybox, f"{h}/{prefix}/other:1", "other v1")
    plan = olly(ws, "plan")
    assert f"base {h}/{prefix}/base:1 not locked (run olly lock)" in plan.stdout, plan.stdout + plan.stderr
    assert olly(ws, "lock", "--check").returncode == 1

    locked = olly(ws, "lock")
    assert locked.returncode == 0, locked.stderr
    entries = parse_lock((ws / "olly.lock").read_bytes())
    assert {r: (e.kind, e.digest) for r, e in entries.items()} == {
        f"{h}/{prefix}/base:1": ("manifest", base1), f"{h}/{prefix}/other:1": ("manifest", other)}
    assert "# a/Dockerfile:1\n" in (ws / "olly.lock").read_text() and "# c/Dockerfile:3\n" in (ws / "olly.lock").read_text()
    assert olly(ws, "lock", "--check").returncode == 0

    first = api.make(ws, [])
    assert statuses(first) == {"a": "built", "b": "built", "c": "built"}, [o.reason for o in first.outcomes]
    ref = {o.label: o.ref for o in first.outcomes}
    assert file_in(docker_client, ref["b"], "/etc/base") == "base v1"
    assert file_in(docker_client, ref["c"], "/built") == "other v1"
    assert file_in(docker_client, ref["c"], "/c/Dockerfile").startswith(f"ARG REG=unset.invalid\nARG TAG=1\nFROM {h}/{prefix}/other:1@{other} AS build\n")
    # The engine got the pinned reference (classic: "Step 1/4 : FROM <ref>", BuildKit: "[1/2] FROM <ref>").
    assert f"FROM {h}/{prefix}/base:1@{base1}\n" in (ws / ".cache" / "logs" / "a.log").read_text()

    # The tag moves upstream: locked, nothing builds.
    base2 = push_base(docker_client, busybox, f"{h}/{prefix}/base:1", "base v2")
    assert base2 != base1
    assert statuses(api.make(ws, [])) == {"a": "cached", "b": "cached", "c": "cached"}

    update = olly(ws, "lock", "--update")
    assert update.returncode == 0, update.stderr
    assert f"updated   {h}/{prefix}/base:1  {base1} -> {base2}" in update.stdout
    assert f"unchanged {h}/{prefix}/other:1" in update.stdout
    again = api.make(ws, [])
    assert statuses(again) == {"a": "built", "b": "built", "c": "cached"}
    ref = {o.label: o.ref for o in again.outcomes}
    assert file_in(docker_client, ref["a"], "/etc/base") == "base v2"
    assert file_in(docker_client, ref["b"], "/etc/base") == "base v2"
    assert statuses(api.make(ws, [])) == {"a": "cached", "b": "cached", "c": "cached"}


def test_check_names_a_missing_entry(ws: Path, docker_client, busybox: Path, prefix: str, registry) -> None:
    h = registry.host
    push_base(docker_client, busybox, f"{h}/{prefix}/base:1", "base v1")
    push_base(docker_client, busybox, f"{h}/{prefix}/other:1", "other v1")
    assert olly(ws, "lock").returncode == 0
    (ws / "BUILD.toml").write_text((ws / "BUILD.toml").read_text() + f'[images.d]\nrepository = "{prefix}/d"\n')
    write_ws(ws, {"d/Dockerfile": f"# new\nFROM {h}/{prefix}/third:1\n"})
    check = olly(ws, "lock", "--check")
    assert check.returncode == 1
    assert check.stdout.splitlines() == [f"d/Dockerfile:2: base {h}/{prefix}/third:1 is not locked in olly.lock (run olly lock)"]
    missing = olly(ws, "lock")  # not in the registry: one located error, the lock unchanged
    assert missing.returncode == 2 and f"d/Dockerfile:2: base image {h}/{prefix}/third:1 not found" in missing.stderr
    assert f"{prefix}/third" not in (ws / "olly.lock").read_text()


def push_index(registry_host: str, amd64_ref: str, tag: str) -> tuple[str, str, str]:
    """An OCI index tagged ``tag`` in the repository of ``amd64_ref``: that image plus an arm64
    manifest naming a config that says arm64 (same layers; never run). Returns the (index,
    amd64, arm64) digests. One repository: an index may only name manifests and blobs it holds."""
    client = RegistryClient(Endpoint("test", registry_host, True))
    name = amd64_ref.split("/", 1)[1].rsplit(":", 1)[0]
    body, media_type, amd64 = client.get_manifest(name, amd64_ref.rsplit(":", 1)[1])
    doc = json.loads(body)
    config = requests.get(f"http://{registry_host}/v2/{name}/blobs/{doc['config']['digest']}", timeout=30).json()
    config["architecture"] = "arm64"
    raw = json.dumps(config).encode()
    client.push_blob(name, raw)
    doc["config"] = doc["config"] | {"digest": sha256_digest(raw), "size": len(raw)}
    arm_body = json.dumps(doc).encode()
    arm64 = client.push_manifest(name, sha256_digest(arm_body), arm_body, DOCKER_MANIFEST)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": media_type, "digest": amd64, "size": len(body), "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": DOCKER_MANIFEST, "digest": arm64, "size": len(arm_body),
         "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}]}
    return client.push_manifest(name, tag, json.dumps(index).encode(), OCI_INDEX), amd64, arm64


@pytest.mark.builder
def test_an_index_base_is_locked_by_its_digest(tmp_path: Path, docker_client, busybox: Path, prefix: str,
                                               registry) -> None:
    h = registry.host
    push_base(docker_client, busybox, f"{h}/{prefix}/other:1", "multi v1")
    index, amd64, arm64 = push_index(h, f"{h}/{prefix}/other:1", "multi")
    root = write_ws(tmp_path / "ws", {
        "BUILD.toml": f'[workspace]\nnetwork = "none"\n[registries.r]\npush = "{h}"\ninsecure = true\n'
                      f'platforms = ["linux/amd64", "linux/arm64"]\n[images.e]\nrepository = "{prefix}/e"\n',
        "e/Dockerfile": f"FROM {h}/{prefix}/other:multi AS base\nFROM base\nCOPY x /x\n",
        "e/x": "x\n",
    })
    assert olly(root, "lock").returncode == 0
    entry = parse_lock((root / "olly.lock").read_bytes())[f"{h}/{prefix}/other:multi"]
    assert (entry.kind, entry.digest, entry.platforms) == ("index", index, {"linux/amd64": amd64, "linux/arm64": arm64})
    text = (root / "olly.lock").read_text()
    assert f'platforms."linux/arm64" = "{arm64}"' in text
    result = api.make(root, [])  # the engine's own platform, from the index
    assert statuses(result) == {"e": "built"}, [o.reason for o in result.outcomes]
    assert file_in(docker_client, result.outcomes[0].ref, "/etc/base") == "multi v1"
    # Classic: "Step 1/2 : FROM <ref> AS base"; BuildKit: "[base 1/1] FROM <ref>".
    assert f"FROM {h}/{prefix}/other:multi@{index}" in (root / ".cache" / "logs" / "e.log").read_text()
