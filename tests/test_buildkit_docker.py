"""BuildKit builds on the real Docker engine (FROM scratch + static busybox, no network)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from olly import api, buildkit, progress
from support import run_output

pytestmark = pytest.mark.docker

ARM64_BUSYBOX = Path("/usr/local/lib/olly-test/busybox-arm64")


@pytest.fixture(autouse=True)
def buildkit_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """BuildKit whatever the session's builder (OLLY_TEST_BUILDER=classic sets $OLLY_BUILDER):
    these tests ask for it through $OLLY_BUILDER, the lowest-precedence choice, so BUILD.toml
    and --builder still beat it."""
    monkeypatch.setenv(buildkit.ENV, "buildkit")


@pytest.fixture
def ws(tmp_path: Path, docker_client, busybox: Path, unique_prefix: str) -> Path:
    if docker_client.version().get("Components") and any(
            "podman" in str(c.get("Name", "")).lower() for c in docker_client.version()["Components"]):
        pytest.skip("BuildKit through the API is Docker's: Podman builds classic")
    root = tmp_path / "ws"
    app = root / "app"
    app.mkdir(parents=True)
    shutil.copyfile(busybox, app / "busybox")
    (app / "busybox").chmod(0o755)
    (app / "src.txt").write_text("v1\n")
    # The cache mount's id is unique to this test: cache mounts are shared engine-wide.
    (app / "Dockerfile").write_text(
        "FROM scratch AS base\n"
        "COPY busybox /bin/busybox\n"
        "ARG GREETING\n"
        'RUN ["/bin/busybox", "sh", "-c", "echo $GREETING > /greeting"]\n'
        "FROM base AS final\n"
        "COPY src.txt /src.txt\n"
        f"RUN --mount=type=cache,id={unique_prefix},target=/c "
        '["/bin/busybox", "sh", "-c", "echo cache-had: $(/bin/busybox ls /c); /bin/busybox cp /src.txt /c/$(/bin/busybox cat /src.txt)"]\n'
        "FROM base AS other\n"
        'RUN ["/bin/busybox", "sh", "-c", "echo other > /other"]\n'
    )
    (root / "BUILD.toml").write_text(
        '[workspace]\nname = "bk"\nnetwork = "none"\n'
        f'[images.app]\nrepository = "{unique_prefix}/app"\nargs = {{ GREETING = "hello" }}\ntarget = "final"\n'
    )
    return root


def outcome(result: api.MakeResult, label: str = "app"):
    return next(o for o in result.outcomes if o.label == label)


def read(client, ref: str, path: str) -> bytes:
    return run_output(client, ref, ["/bin/busybox", "cat", path])


def test_cache_mount_builds_and_is_reused_after_an_edit(ws: Path, docker_client) -> None:
    events: list[progress.Event] = []
    first = api.make(ws, [], on_event=events.append)
    o = outcome(first)
    assert o.status == "built", (o.reason, o.tail)
    plan = api.plan(ws, [])
    assert plan.targets[0].manifest["builder"] == "buildkit"  # from $OLLY_BUILDER
    log = Path(o.log).read_text()
    assert "cache-had:" in log and "[final 2/2] RUN --mount=type=cache" in log
    # The live view's steps come from BuildKit's vertices.
    steps = [e.text for e in events if e.kind == "step"]
    assert any(s.startswith("[2/2] RUN --mount=type=cache") for s in steps), steps  # progress drops the stage
    (ws / "app" / "src.txt").write_text("v2\n")
    second = outcome(api.make(ws, []))
    assert second.status == "built", (second.reason, second.tail)
    assert "cache-had: v1" in Path(second.log).read_text()  # build 1 wrote v1 into the cache mount
    assert read(docker_client, second.ref, "/src.txt") == b"v2\n"


def test_labels_target_and_args_hold(ws: Path, docker_client) -> None:
    o = outcome(api.make(ws, []))
    assert o.status == "built", (o.reason, o.tail)
    image = docker_client.api.inspect_image(o.ref)
    labels = image["Config"]["Labels"]
    assert labels["dev.olly.key"] == o.key
    assert labels["org.opencontainers.image.title"].endswith("/app")
    assert read(docker_client, o.ref, "/greeting") == b"hello\n"
    with pytest.raises(Exception):
        read(docker_client, o.ref, "/other")  # stage `other` is not the target


def test_platform_arm64(ws: Path, docker_client) -> None:
    if not ARM64_BUSYBOX.is_file():
        pytest.skip(f"no {ARM64_BUSYBOX}")
    shutil.copyfile(ARM64_BUSYBOX, ws / "app" / "busybox")
    build = ws / "BUILD.toml"
    build.write_text(build.read_text() + 'platform = "linux/arm64"\n')
    o = outcome(api.make(ws, []))
    assert o.status == "built", (o.reason, o.tail)
    assert docker_client.api.inspect_image(o.ref)["Architecture"] == "arm64"
    assert not any(n.startswith("layer cache not used") for n in o.notes)  # no classic workaround


def test_exact_context_is_rehashed(ws: Path, docker_client, monkeypatch) -> None:
    import olly.jobs

    target = ws / "app" / "src.txt"

    class EditingStream(olly.jobs.TarStream):
        def __iter__(self):
            for i, chunk in enumerate(super().__iter__()):
                if i == 0:
                    target.write_text("edited-mid-build\n")
                yield chunk

    monkeypatch.setattr(olly.jobs, "TarStream", EditingStream)
    first = outcome(api.make(ws, []))
    assert first.status == "failed" and "changed during the build" in first.reason
    monkeypatch.undo()  # also undoes the autouse opt-in: opt in again
    monkeypatch.setenv(buildkit.ENV, "buildkit")
    again = outcome(api.make(ws, []))
    assert again.status == "built", (again.reason, again.tail)
    assert read(docker_client, again.ref, "/src.txt") == target.read_bytes()


def test_failing_run_gives_the_step_and_tail(ws: Path, docker_client) -> None:
    df = ws / "app" / "Dockerfile"
    df.write_text(df.read_text().replace('/bin/busybox cp /src.txt', 'echo about-to-fail; exit 3; /bin/busybox cp /src.txt'))
    o = outcome(api.make(ws, []))
    assert o.status == "failed"
    assert o.reason.startswith("[final 2/2] RUN --mount=type=cache") and o.reason.endswith("returned a non-zero code: 3")
    assert any("about-to-fail" in line for line in o.tail)
    assert "about-to-fail" in Path(o.log).read_text()


def test_secret_mount_is_refused_before_sending(ws: Path, docker_client) -> None:
    df = ws / "app" / "Dockerfile"
    df.write_text(df.read_text() + "RUN --mount=type=secret,id=tok [\"/bin/busybox\", \"true\"]\n")
    o = outcome(api.make(ws, []))
    assert o.status == "failed"
    assert o.reason.startswith("app/Dockerfile:10: RUN --mount=type=secret needs a BuildKit session")
    assert "[internal]" not in Path(o.log).read_text()  # nothing was sent


def test_builder_choice_changes_the_key(ws: Path, docker_client) -> None:
    kit = outcome(api.make(ws, [], builder="buildkit"))
    plan_classic = api.plan(ws, [])  # unchanged workspace: same key as built
    assert plan_classic.targets[0].key == kit.key
    ws_toml = ws / "BUILD.toml"
    ws_toml.write_text(ws_toml.read_text().replace('network = "none"\n', 'network = "none"\nbuilder = "classic"\n'))
    classic_plan = api.plan(ws, [])
    assert classic_plan.targets[0].manifest["builder"] == "classic"
    assert classic_plan.targets[0].key != kit.key
    # --builder beats BUILD.toml: back to the BuildKit key, nothing to build.
    again = outcome(api.make(ws, [], builder="buildkit"))
    assert again.status == "cached" and again.key == kit.key


@pytest.mark.parametrize("builder", ["buildkit", "classic"])
def test_the_docker_config_proxies_reach_run_steps(ws: Path, docker_client, tmp_path: Path, unique_prefix: str,
                                                   monkeypatch: pytest.MonkeyPatch, builder: str) -> None:
    """As `docker build` (CLI and buildx): the docker config's proxies are build args of RUN
    steps, whichever builder; olly keeps them out of the key, as Docker keeps them out of its
    layer cache (so the RUN line is unique to this test: no cached layer without them)."""
    (ws / "app" / "Dockerfile").write_text(
        'FROM scratch\nCOPY busybox /bin/busybox\n'
        f'RUN ["/bin/busybox", "sh", "-c", "echo {unique_prefix} $http_proxy > /proxy"]\n')
    build = ws / "BUILD.toml"
    build.write_text(build.read_text().replace('target = "final"\n', ""))
    monkeypatch.setenv(buildkit.ENV, builder)  # the plans below key for this builder
    before = api.plan(ws, [], check_engine=False).targets[0].key
    config = tmp_path / "docker-config"
    config.mkdir()
    (config / "config.json").write_text('{"proxies": {"default": {"httpProxy": "http://proxy.invalid:3128"}}}')
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    assert api.plan(ws, [], check_engine=False).targets[0].key == before  # not keyed
    o = outcome(api.make(ws, [], builder=builder))
    assert o.status == "built", (o.reason, o.tail)
    assert read(docker_client, o.ref, "/proxy") == f"{unique_prefix} http://proxy.invalid:3128\n".encode()


def test_classic_builder_still_builds(ws: Path, docker_client) -> None:
    df = ws / "app" / "Dockerfile"
    lines = [line for line in df.read_text().splitlines() if "--mount" not in line]
    df.write_text("\n".join(lines) + "\n")
    o = outcome(api.make(ws, [], builder="classic"))
    assert o.status == "built", (o.reason, o.tail)
    assert "Step 1/" in Path(o.log).read_text()
    assert read(docker_client, o.ref, "/greeting") == b"hello\n"


def test_auto_default_buildkit_and_classic_for_an_outside_dockerfile(ws: Path, docker_client,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The default (auto): BuildKit on this engine; an image whose Dockerfile is outside its context
    (sent as .dockerfile.<hex>, which BuildKit would copy) builds with classic, and says so. Plans
    without an engine (olly why, an offline plan) key as the build did."""
    monkeypatch.delenv(buildkit.ENV)
    (ws / "other").mkdir()
    (ws / "other" / "Dockerfile").write_text("FROM scratch\nCOPY . /ctx/\n")
    build = ws / "BUILD.toml"
    repository = build.read_text().split('repository = "', 1)[1].split("/", 1)[0] + "/out"  # the test's prefix
    build.write_text(build.read_text() + f'[images.out]\nrepository = "{repository}"\ncontext = "app"\n'
                     'dockerfile = "other/Dockerfile"\n')
    result = api.make(ws, [])
    app, out = outcome(result), outcome(result, "out")
    assert app.status == "built" and out.status == "built", (app.reason, out.reason)
    plan = result.plan.by_label()
    assert plan["app"].manifest["builder"] == "buildkit"
    assert plan["out"].manifest["builder"] == "classic"
    assert "builder classic: BuildKit would copy .dockerfile." in out.reason
    container = docker_client.containers.create(out.ref, command="/nonexistent")
    try:
        names = set(_members(container))
    finally:
        container.remove()
    assert "ctx/src.txt" in names and not any(".dockerfile." in n for n in names)  # exactly the keyed files
    offline = api.plan(ws, [], check_engine=False).by_label()
    assert offline["app"].key == app.key and offline["out"].key == out.key  # remembered: .cache/engines.json
    assert api.why(ws, "out")["current_key_built"]


def _members(container) -> list[str]:
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(b"".join(container.export()))) as tar:
        return [m.name for m in tar.getmembers()]
