"""olly.lock: references, the lock file, pinning, keys, plan notes, lock/--update/--check.

The registry is faked here (tests/test_lock_docker.py uses a real one and a real engine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fakes import FakeEngine
from olly import api, locking
from olly.baselock import Locked, parse_lock, parse_reference
from olly.locking import render_lock
from olly.errors import OllyError
from olly.registry import OCI_INDEX, OCI_MANIFEST, sha256_digest

D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


# -- a fake registry ----------------------------------------------------------------


class FakeRegistry:
    """Manifests by (host, repository, tag); remembers the endpoints clients were made for."""

    def __init__(self) -> None:
        self.tags: dict[tuple[str, str, str], bytes] = {}
        self.by_digest: dict[tuple[str, str, str], bytes] = {}  # kept when a tag moves on
        self.endpoints: list = []

    def put(self, host: str, repository: str, tag: str, body: bytes) -> str:
        self.tags[(host, repository, tag)] = body
        self.by_digest[(host, repository, sha256_digest(body))] = body
        return sha256_digest(body)

    def client(self, endpoint):
        self.endpoints.append(endpoint)
        registry = self

        class Client:
            def manifest_digest(self, repository: str, reference: str) -> str | None:
                body = registry.tags.get((endpoint.host, repository, reference))
                return None if body is None else sha256_digest(body)

            def get_manifest(self, repository: str, digest: str):
                body = registry.by_digest.get((endpoint.host, repository, digest))
                if body is None:
                    raise OllyError("registry-error", f"no {digest}")
                return body, json.loads(body)["mediaType"], digest

        return Client()


def manifest(n: int) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "n": n}).encode()


def index(platforms: dict[str, str]) -> bytes:
    items = []
    for plat, digest in platforms.items():
        os_name, arch, *variant = plat.split("/")
        p = {"os": os_name, "architecture": arch} | ({"variant": variant[0]} if variant else {})
        items.append({"mediaType": OCI_MANIFEST, "digest": digest, "size": 1, "platform": p})
    items.append({"mediaType": OCI_MANIFEST, "digest": D3, "size": 1, "platform": {"os": "unknown", "architecture": "unknown"}})
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": items}).encode()


@pytest.fixture
def fake(monkeypatch) -> FakeRegistry:
    registry = FakeRegistry()
    monkeypatch.setattr(locking, "RegistryClient", registry.client)
    monkeypatch.setattr(api, "_optional_engine", lambda: FakeEngine())  # linux/amd64
    return registry


def workspace(tmp_path: Path, files: dict[str, str], build: str) -> Path:
    root = tmp_path / "ws"
    for rel, text in {**files, "BUILD.toml": build}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


BUILD = """
[images.py]
repository = "t/py"
[images.al]
repository = "t/al"
[images.dep]
repository = "t/dep"
depends_on = ["py"]
"""


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return workspace(tmp_path, {
        "py/Dockerfile": "# the python one\nARG V=3.14\nFROM example.com/python:${V}-slim AS build\nFROM build\nCOPY . /src\n",
        "py/app.txt": "app\n",
        "al/Dockerfile": "FROM localhost:5000/alpine\nCOPY . /\n",
        "dep/Dockerfile": "ARG PY\nFROM ${PY}\nCOPY . /\n",
    }, BUILD)


def lock_two(fake: FakeRegistry) -> tuple[str, str]:
    return (fake.put("example.com", "python", "3.14-slim", manifest(1)),
            fake.put("localhost:5000", "alpine", "latest", manifest(2)))


# -- references ---------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("python:3.14-slim", ("docker.io", "library/python", "3.14-slim", None)),
    ("python", ("docker.io", "library/python", "latest", None)),
    ("bitnami/redis:7", ("docker.io", "bitnami/redis", "7", None)),
    ("docker.io/python:3", ("docker.io", "library/python", "3", None)),
    ("index.docker.io/library/python", ("docker.io", "library/python", "latest", None)),
    ("ghcr.io/o/r:1.2", ("ghcr.io", "o/r", "1.2", None)),
    ("localhost/a", ("localhost", "a", "latest", None)),
    ("localhost:5000", ("docker.io", "library/localhost", "5000", None)),
    ("127.0.0.1:5000/p/base:1", ("127.0.0.1:5000", "p/base", "1", None)),
    ("[::1]:5000/p/base:1", ("[::1]:5000", "p/base", "1", None)),
    ("python:3@" + D1, ("docker.io", "library/python", "3", D1)),
])
def test_reference_parsing(text: str, expected: tuple) -> None:
    ref = parse_reference(text)
    assert ref is not None and (ref.host, ref.repository, ref.tag, ref.digest) == expected


@pytest.mark.parametrize("text", ["Python:3", "python:", "a//b", "python@sha256:12", "python:3 x", "-a"])
def test_invalid_references(text: str) -> None:
    assert parse_reference(text) is None


# -- the file -----------------------------------------------------------------------


def test_render_and_read_back() -> None:
    uses = {"python:3.14-slim": [locking.Use("b/Dockerfile", 3, "b", ("linux/amd64",)),
                                 locking.Use("a/Dockerfile", 1, "a", ("linux/amd64",))]}
    entries = {"python:3.14-slim": Locked("python:3.14-slim", D1, "index", {"linux/arm64": D3, "linux/amd64": D2}),
               "alpine:3": Locked("alpine:3", D2, "manifest")}
    text = render_lock(entries, uses)
    assert text.startswith("# olly.lock: the base images") and "olly lock --update" in text and "--check" in text
    body = text[text.index("version = 1"):]
    assert body == (
        'version = 1\n\n[base."alpine:3"]\nkind = "manifest"\ndigest = "' + D2 + '"\n\n'
        '# a/Dockerfile:1\n# b/Dockerfile:3\n[base."python:3.14-slim"]\nkind = "index"\ndigest = "' + D1 + '"\n'
        'platforms."linux/amd64" = "' + D2 + '"\nplatforms."linux/arm64" = "' + D3 + '"\n')
    read = parse_lock(text.encode())
    assert {r: (e.digest, e.kind, e.platforms) for r, e in read.items()} == {
        r: (e.digest, e.kind, e.platforms) for r, e in entries.items()}
    assert read["python:3.14-slim"].line == text.splitlines().index('[base."python:3.14-slim"]') + 1


@pytest.mark.parametrize("text, line, words", [
    ('version = 1\n[base."a:1"]\ndigest = "sha256:12"\nkind = "manifest"\n', 3, "digest must be"),
    ('version = 1\n\n[base."a:1"\n', 3, "olly.lock:3"),
    ('version = 2\n', 1, "version must be 1"),
    ('version = 1\nextra = 1\n', 2, "unknown key 'extra'"),
    ('version = 1\n[base."A:1"]\n', 2, "not an image reference"),
    (f'version = 1\n[base."a:1"]\ndigest = "{D1}"\nkind = "manifest"\nplatforms."linux/amd64" = "{D1}"\n', 5, "platforms"),
    (f'version = 1\n[base."a:1"]\ndigest = "{D1}"\nkind = "image"\n', 4, "kind must be"),
    (f'version = 1\n[base."a:1"]\ndigest = "{D1}"\nkind = "manifest"\nfoo = 1\n', 2, "expected only"),
])
def test_a_broken_lock_is_one_located_error(text: str, line: int, words: str) -> None:
    with pytest.raises(OllyError) as err:
        parse_lock(text.encode())
    assert err.value.reason == "lock-invalid"
    assert err.value.location == f"olly.lock:{line}" and words in err.value.line()


def test_a_broken_lock_stops_plan_and_make(ws: Path) -> None:
    (ws / "olly.lock").write_text("version = 1\n[base.\n")
    with pytest.raises(OllyError) as err:
        api.plan(ws, [], check_engine=False)
    assert err.value.reason == "lock-invalid" and err.value.exit_code == 2


# -- olly lock ----------------------------------------------------------------------


def test_lock_resolves_every_external_base(ws: Path, fake: FakeRegistry) -> None:
    py, al = lock_two(fake)
    result = api.lock(ws)
    assert [(c.action, c.reference, c.new) for c in result.changes] == [
        ("added", "example.com/python:3.14-slim", py), ("added", "localhost:5000/alpine", al)]
    entries = parse_lock((ws / "olly.lock").read_bytes())
    assert {r: (e.digest, e.kind) for r, e in entries.items()} == {
        "example.com/python:3.14-slim": (py, "manifest"), "localhost:5000/alpine": (al, "manifest")}
    text = (ws / "olly.lock").read_text()
    assert "# py/Dockerfile:3\n" in text and "# al/Dockerfile:1\n" in text
    # http only for the loopback registry
    assert {(e.host, e.insecure) for e in fake.endpoints} == {("example.com", False), ("localhost:5000", True)}


def test_lock_keeps_locked_digests_until_update(ws: Path, fake: FakeRegistry) -> None:
    py, al = lock_two(fake)
    api.lock(ws)
    py2 = fake.put("example.com", "python", "3.14-slim", manifest(10))
    al2 = fake.put("localhost:5000", "alpine", "latest", manifest(20))
    assert {c.action for c in api.lock(ws).changes} == {"kept"}
    assert parse_lock((ws / "olly.lock").read_bytes())["example.com/python:3.14-slim"].digest == py
    changes = api.lock(ws, update=True, images=["localhost:5000/alpine"]).changes
    assert [(c.action, c.old, c.new) for c in changes] == [("kept", py, py), ("updated", al, al2)]
    changes = api.lock(ws, update=True).changes
    assert [(c.action, c.new) for c in changes] == [("updated", py2), ("unchanged", al2)]


def test_lock_drops_unused_entries_and_refuses_unknown_images(ws: Path, fake: FakeRegistry) -> None:
    lock_two(fake)
    api.lock(ws)
    (ws / "al" / "Dockerfile").write_text("FROM scratch\n")
    changes = api.lock(ws).changes
    assert [(c.action, c.reference) for c in changes][-1] == ("removed", "localhost:5000/alpine")
    assert list(parse_lock((ws / "olly.lock").read_bytes())) == ["example.com/python:3.14-slim"]
    with pytest.raises(OllyError) as err:
        api.lock(ws, update=True, images=["python:3.13"])
    assert err.value.reason == "usage" and "example.com/python:3.14-slim" in err.value.message
    with pytest.raises(OllyError):
        api.lock(ws, images=["example.com/python:3.14-slim"])  # IMAGE needs --update
    with pytest.raises(OllyError):
        api.lock(ws, check=True, update=True)


def test_missing_tag_is_located_at_the_dockerfile_line(ws: Path, fake: FakeRegistry) -> None:
    fake.put("example.com", "python", "3.14-slim", manifest(1))
    with pytest.raises(OllyError) as err:
        api.lock(ws)
    assert err.value.reason == "base-not-found" and err.value.location == "al/Dockerfile:1"
    assert not (ws / "olly.lock").exists()


def test_build_args_choose_the_base(ws: Path, fake: FakeRegistry) -> None:
    lock_two(fake)
    build = (ws / "BUILD.toml").read_text().replace('repository = "t/py"', 'repository = "t/py"\nargs = { V = "3.13" }')
    (ws / "BUILD.toml").write_text(build)
    py313 = fake.put("example.com", "python", "3.13-slim", manifest(3))
    api.lock(ws)
    assert parse_lock((ws / "olly.lock").read_bytes())["example.com/python:3.13-slim"].digest == py313


def test_an_index_records_its_digest_and_each_platform_built(tmp_path: Path, fake: FakeRegistry) -> None:
    root = workspace(tmp_path, {"a/Dockerfile": "FROM example.com/base:1\n", "b/Dockerfile": "FROM example.com/base:1\n"},
                     '[images.a]\nrepository = "t/a"\n[images.b]\nrepository = "t/b"\nplatforms = ["linux/arm64"]\n')
    digest = fake.put("example.com", "base", "1", index({"linux/amd64": D1, "linux/arm64/v8": D2, "linux/arm/v7": D3}))
    api.lock(root)
    entry = parse_lock((root / "olly.lock").read_bytes())["example.com/base:1"]
    assert (entry.kind, entry.digest, entry.platforms) == ("index", digest, {"linux/amd64": D1, "linux/arm64": D2})
    assert api.lock(root, check=True).problems == []
    # A platform the index lacks is an error naming what it has.
    (root / "BUILD.toml").write_text((root / "BUILD.toml").read_text() + '[images.c]\nrepository = "t/c"\n'
                                     'context = "a"\nplatforms = ["linux/s390x"]\n')
    problems = api.lock(root, check=True).problems
    assert problems == [f"olly.lock:{entry.line}: base example.com/base:1 lists no linux/s390x digest, which a build "
                        "uses (run olly lock)"]
    with pytest.raises(OllyError) as err:
        api.lock(root)
    assert err.value.reason == "base-platform-missing" and "linux/amd64, linux/arm/v7, linux/arm64/v8" in err.value.message


def test_a_kept_index_learns_new_platforms_from_its_locked_digest(tmp_path: Path, fake: FakeRegistry) -> None:
    root = workspace(tmp_path, {"a/Dockerfile": "FROM example.com/base:1\n"}, '[images.a]\nrepository = "t/a"\n')
    digest = fake.put("example.com", "base", "1", index({"linux/amd64": D1, "linux/arm64": D2}))
    api.lock(root)
    fake.put("example.com", "base", "1", index({"linux/amd64": D3, "linux/arm64": D3}))  # the tag moves on
    (root / "BUILD.toml").write_text('[images.a]\nrepository = "t/a"\nplatforms = ["linux/amd64", "linux/arm64"]\n')
    assert [c.action for c in api.lock(root).changes] == ["kept"]
    entry = parse_lock((root / "olly.lock").read_bytes())["example.com/base:1"]
    assert (entry.digest, entry.platforms) == (digest, {"linux/amd64": D1, "linux/arm64": D2})


# -- check --------------------------------------------------------------------------


def test_check_names_missing_and_stale_entries(ws: Path, fake: FakeRegistry) -> None:
    problems = api.lock(ws, check=True).problems
    assert sorted(problems) == sorted([
        "py/Dockerfile:3: base example.com/python:3.14-slim is not locked in olly.lock (run olly lock)",
        "al/Dockerfile:1: base localhost:5000/alpine is not locked in olly.lock (run olly lock)"])
    lock_two(fake)
    api.lock(ws)
    assert api.lock(ws, check=True).problems == []
    (ws / "al" / "Dockerfile").write_text("FROM localhost:5000/alpine:3\n")
    line = parse_lock((ws / "olly.lock").read_bytes())["localhost:5000/alpine"].line
    assert api.lock(ws, check=True).problems == [
        "al/Dockerfile:1: base localhost:5000/alpine:3 is not locked in olly.lock (run olly lock)",
        f"olly.lock:{line}: base localhost:5000/alpine is locked but no Dockerfile uses it (run olly lock)"]


def test_check_exit_codes_through_the_cli(ws: Path, fake: FakeRegistry) -> None:
    def olly(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "olly", "-C", str(ws), *args], capture_output=True, text=True,
                              env={"PATH": "/usr/bin:/bin", "DOCKER_HOST": "unix:///nonexistent.sock"})
    missing = olly("lock", "--check")
    assert missing.returncode == 1 and missing.stdout.count("is not locked") == 2, missing.stderr
    (ws / "al" / "Dockerfile").write_text("FROM scratch\n")
    (ws / "py" / "Dockerfile").write_text("FROM example.com/python@" + D1 + "\n")  # pinned by hand: no entry needed
    ok = olly("lock", "--check")
    assert ok.returncode == 0 and "every base image is locked" in ok.stdout
    bad = olly("lock", "--check", "--update")
    assert bad.returncode == 2 and bad.stderr.startswith("olly: error:")


# -- builds -------------------------------------------------------------------------


def keys_of(root: Path) -> dict[str, str]:
    return {tp.label: tp.key for tp in api.plan(root, [], check_engine=False).targets}


def test_plan_notes_unlocked_bases_without_failing(ws: Path) -> None:
    plan = {tp.label: tp for tp in api.plan(ws, [], check_engine=False).targets}
    assert "base example.com/python:3.14-slim not locked (run olly lock)" in plan["py"].reasons
    assert "base localhost:5000/alpine not locked (run olly lock)" in plan["al"].reasons
    assert not any("not locked" in r for r in plan["dep"].reasons)  # FROM ${PY}: a dependency


def test_builds_send_the_pinned_dockerfile_and_key_the_digest(ws: Path, fake: FakeRegistry) -> None:
    before = keys_of(ws)
    eng = FakeEngine()
    assert {o.status for o in api.make(ws, [], engine=eng).outcomes} == {"built"}
    plain = (ws / "py" / "Dockerfile").read_bytes()
    py, al = lock_two(fake)
    api.lock(ws)
    locked = keys_of(ws)
    assert all(locked[k] != before[k] for k in before)  # every image stands on a locked base now
    result = api.make(ws, [], engine=eng)
    assert {o.label: o.status for o in result.outcomes} == {"py": "built", "al": "built", "dep": "built"}
    py_image = next(o.image_id for o in result.outcomes if o.label == "py")
    sent = eng.received[py_image]
    pinned = plain.replace(b"example.com/python:${V}-slim", f"example.com/python:3.14-slim@{py}".encode())
    assert sent["Dockerfile"] == pinned  # COPY . sees the pinned text: what the engine read
    assert (ws / "py" / "Dockerfile").read_bytes() == plain  # the source is never modified
    tp = api.inputs(ws, "py")
    assert tp.manifest["bases"] == {"example.com/python:3.14-slim": py}
    assert not any("not locked" in r for r in tp.reasons)
    # Nothing moved: nothing builds; a new digest for one base rebuilds its images only.
    assert {o.status for o in api.make(ws, [], engine=eng).outcomes} == {"cached"}
    fake.put("localhost:5000", "alpine", "latest", manifest(99))
    api.lock(ws, update=True, images=["localhost:5000/alpine"])
    statuses = {o.label: o.status for o in api.make(ws, [], engine=eng).outcomes}
    assert statuses == {"py": "cached", "al": "built", "dep": "cached"}
    (ws / "olly.lock").unlink()
    assert keys_of(ws) == before  # without olly.lock, keys are what they were


def test_a_digest_pinned_from_needs_no_entry_and_is_keyed_by_its_text(tmp_path: Path) -> None:
    root = workspace(tmp_path, {"a/Dockerfile": f"FROM example.com/base:1@{D1}\n"}, '[images.a]\nrepository = "t/a"\n')
    first = keys_of(root)["a"]
    assert not any("not locked" in r for r in api.plan(root, [], check_engine=False).targets[0].reasons)
    (root / "a" / "Dockerfile").write_text(f"FROM example.com/base:1@{D2}\n")
    assert keys_of(root)["a"] != first


def test_symlinked_and_outside_dockerfiles_are_sent_pinned(tmp_path: Path, fake: FakeRegistry) -> None:
    root = workspace(tmp_path, {"a/real.Dockerfile": "FROM example.com/base:1\n", "df/b.Dockerfile": "FROM example.com/base:1\n"},
                     '[images.a]\nrepository = "t/a"\n'
                     '[images.b]\nrepository = "t/b"\ncontext = "a"\ndockerfile = "df/b.Dockerfile"\n')
    (root / "a" / "Dockerfile").symlink_to("real.Dockerfile")
    digest = fake.put("example.com", "base", "1", manifest(1))
    api.lock(root)
    eng = FakeEngine()
    outcomes = {o.label: o for o in api.make(root, [], engine=eng).outcomes}
    want = f"FROM example.com/base:1@{digest}\n".encode()
    sent_a = eng.received[outcomes["a"].image_id]
    assert sent_a["Dockerfile"] == want and sent_a["real.Dockerfile"] == b"FROM example.com/base:1\n"
    sent_b = eng.received[outcomes["b"].image_id]
    assert [v for k, v in sent_b.items() if k.startswith(".dockerfile.")] == [want]


def test_a_dockerfile_with_a_bad_directive_is_located_by_lock_and_left_to_the_engine_by_plan(ws: Path) -> None:
    (ws / "al" / "Dockerfile").write_text("# escape=x\nFROM localhost:5000/alpine\n")
    with pytest.raises(OllyError) as err:
        api.lock(ws, check=True)
    assert (err.value.reason, err.value.location) == ("dockerfile-invalid", "al/Dockerfile:1")
    assert {tp.label for tp in api.plan(ws, [], check_engine=False).targets} == {"py", "al", "dep"}
