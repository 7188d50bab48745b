"""olly make against the real Docker engine (FROM scratch + static busybox)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import copy_workspace
from olly import api

pytestmark = [pytest.mark.docker, pytest.mark.builder]  # builds, contexts, symlinks, secrets, failures


@pytest.fixture
def ws(tmp_path: Path, docker_client, busybox: Path, unique_prefix: str) -> Path:
    return copy_workspace("busy", tmp_path, busybox, unique_prefix)


def statuses(result: api.MakeResult) -> dict[str, str]:
    return {o.label: o.status for o in result.outcomes}


def olly(ws: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "olly", "-C", str(ws), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def image_files(client, ref: str, prefix: str) -> dict[str, bytes]:
    """Files under ``prefix`` in the image's filesystem (via docker export)."""
    container = client.containers.create(ref, command="/nonexistent")
    try:
        data = b"".join(container.export())
    finally:
        container.remove()
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            lead = prefix + "/" if prefix else ""
            if m.name.startswith(lead) and m.isfile():
                out[m.name[len(lead):]] = tar.extractfile(m).read()  # type: ignore[union-attr]
    return out


def test_first_build_noop_and_one_file_change(ws: Path, docker_client) -> None:
    first = olly(ws, "make")
    assert first.returncode == 0, first.stderr + first.stdout
    assert first.stdout.count("built ") == 3
    second = olly(ws, "make")
    assert second.returncode == 0
    assert "nothing to build: 3 up to date" in second.stdout
    (ws / "app" / "main.txt").write_text("app v2\n")
    third = api.make(ws, [])
    assert statuses(third) == {"base": "cached", "app": "built", "solo": "cached"}
    app = next(o for o in third.outcomes if o.label == "app")
    files = image_files(docker_client, app.ref, "app")
    assert files["main.txt"] == b"app v2\n"
    assert "debug.log" not in files and "ignored/x.txt" not in files  # .dockerignore honoured


def test_dependency_change_propagates(ws: Path, docker_client) -> None:
    api.make(ws, [])
    (ws / "base" / "etc" / "motd").write_text("base v2\n")
    result = api.make(ws, [])
    assert statuses(result) == {"base": "built", "app": "built", "solo": "cached"}
    app = next(o for o in result.outcomes if o.label == "app")
    # The dependent really was built FROM the new base.
    assert image_files(docker_client, app.ref, "etc")["motd"] == b"base v2\n"


def test_build_arg_change(ws: Path, docker_client) -> None:
    api.make(ws, [])
    build = ws / "BUILD.toml"
    build.write_text(build.read_text().replace('GREETING = "hello"', 'GREETING = "bye"'))
    result = api.make(ws, [])
    assert statuses(result) == {"base": "cached", "app": "cached", "solo": "built"}
    solo = next(o for o in result.outcomes if o.label == "solo")
    assert image_files(docker_client, solo.ref, "")["greeting"] == b"bye\n"


def test_dockerignore_edits(ws: Path) -> None:
    api.make(ws, [])
    (ws / "app" / "debug.log").write_text("changed, but ignored\n")
    assert set(statuses(api.make(ws, [])).values()) == {"cached"}
    (ws / "app" / ".dockerignore").write_text("ignored/\n")  # debug.log now reaches the context
    result = api.make(ws, [])
    assert statuses(result)["app"] == "built"
    assert "+ file debug.log" in (result.plan.by_label()["app"].changes)


def test_rmi_triggers_rebuild(ws: Path, docker_client) -> None:
    first = api.make(ws, ["solo"])
    docker_client.images.remove(first.outcomes[0].image_id, force=True)
    again = api.make(ws, ["solo"])
    assert statuses(again) == {"solo": "built"}
    assert "removed from the engine" in again.outcomes[0].reason


def test_fresh_cache_adopts_images_from_engine(ws: Path) -> None:
    api.make(ws, [])
    shutil.rmtree(ws / ".cache")
    result = api.make(ws, [])
    assert set(statuses(result).values()) == {"cached"}
    assert all("found in engine" in o.reason for o in result.outcomes)


def test_failing_dockerfile_reports_and_records_nothing(ws: Path) -> None:
    df = ws / "solo" / "Dockerfile"
    df.write_text(df.read_text() + 'RUN ["/bin/busybox", "sh", "-c", "echo broken-step >&2; exit 3"]\n')
    proc = olly(ws, "make", "solo")
    assert proc.returncode == 1
    assert "failed  solo" in proc.stdout
    assert "returned a non-zero code: 3" in proc.stdout
    assert "broken-step" in (ws / ".cache" / "logs" / "solo.log").read_text()
    assert api.why(ws, "solo")["built_before"] is False
    assert "Traceback" not in proc.stderr


def test_unpullable_base_image_is_one_clear_error(ws: Path) -> None:
    (ws / "solo" / "Dockerfile").write_text("# base\nFROM python:3.14-slim\nCOPY data.txt /\n")
    proc = olly(ws, "make", "solo")
    assert proc.returncode == 1
    line = next(l for l in proc.stdout.splitlines() if l.startswith("failed"))
    assert "base image python:3.14-slim cannot be pulled (solo/Dockerfile:2)" in line


def test_independent_targets_build_in_parallel(tmp_path: Path, docker_client, busybox: Path, unique_prefix: str) -> None:
    root = tmp_path / "par"
    lines = ["[workspace]\nname = \"par\"\n"]
    for name in ("one", "two"):
        (root / name).mkdir(parents=True)
        shutil.copyfile(busybox, root / name / "busybox")
        (root / name / "busybox").chmod(0o755)
        (root / name / "Dockerfile").write_text(
            f'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "sh", "-c", "sleep 2; echo {name} > /n"]\n')
        lines.append(f'[images.{name}]\nrepository = "{unique_prefix}/{name}"\n')
    (root / "BUILD.toml").write_text("\n".join(lines))
    result = api.make(root, [], jobs=2)
    one, two = result.outcomes
    assert (one.status, two.status) == ("built", "built"), (one.reason, two.reason)
    # The two build intervals overlap: neither waited for the other.
    assert one.started < two.finished and two.started < one.finished


def test_olly_context_matches_what_arrives(tmp_path: Path, docker_client, unique_prefix: str) -> None:
    """The tar olly streams yields, at COPY, exactly olly's planned file set."""
    root = tmp_path / "golden"
    shutil.copytree(Path(__file__).parent / "data" / "golden", root, symlinks=True)
    (root / "app" / "empty").mkdir()
    build = root / "BUILD.toml"
    build.write_text(build.read_text().replace('"golden/', f'"{unique_prefix}/').replace('platform = "linux/amd64"\n', ""))
    result = api.make(root, ["app"])
    assert statuses(result) == {"base": "built", "app": "built"}
    app = result.plan.by_label()["app"]
    # Its Dockerfile is outside the context (sent as .dockerfile.<hex>, which only the classic
    # daemon drops): the default builder (auto) builds it with classic, and says so.
    assert app.manifest["builder"] == "classic"
    container = docker_client.containers.create(app.ref, command="/nonexistent")
    try:
        data = b"".join(container.export())
    finally:
        container.remove()
    arrived = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            if m.name.startswith("app/"):
                arrived[m.name[4:].rstrip("/")] = m
    planned = {row[0]: row for row in app.manifest["files"]}
    assert set(arrived) == set(planned)
    assert arrived["run.sh"].mode & 0o111 and not arrived["KEEP.md"].mode & 0o111
    assert arrived["link.py"].issym() and arrived["link.py"].linkname == "src/main.py"


def test_no_engine_is_one_line(ws: Path) -> None:
    proc = olly(ws, "make", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert proc.returncode == 3
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "unix:///nonexistent/docker.sock" in proc.stderr and "DOCKER_HOST" in proc.stderr
    plan = olly(ws, "plan", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert plan.returncode == 0 and "engine not reachable" in plan.stdout


def test_odd_file_names_arrive_exactly(tmp_path: Path, docker_client, unique_prefix: str) -> None:
    root = tmp_path / "odd"
    ctx = root / "odd"
    raw = os.fsencode(ctx)
    os.makedirs(raw + b"/caf\xe9")
    for name in (b"/caf\xe9/na\xefve.txt", b"/space name.txt", b"/\xe2\x9c\x93.txt", b"/" + b"l" * 150):
        with open(raw + name, "wb") as f:
            f.write(name)
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY . /ctx/\n")
    (root / "BUILD.toml").write_text(f'[images.odd]\nrepository = "{unique_prefix}/odd"\n')
    result = api.make(root, [])
    assert statuses(result) == {"odd": "built"}, result.outcomes[0].reason
    container = docker_client.containers.create(result.outcomes[0].ref, command="/nonexistent")
    try:
        data = b"".join(container.export())
    finally:
        container.remove()
    with tarfile.open(fileobj=io.BytesIO(data), encoding="utf-8", errors="surrogateescape") as tar:
        names = {os.fsencode(m.name) for m in tar.getmembers() if m.isfile() and m.name.startswith("ctx/")}
    assert names == {b"ctx/caf\xe9/na\xefve.txt", b"ctx/space name.txt", b"ctx/\xe2\x9c\x93.txt",
                     b"ctx/" + b"l" * 150, b"ctx/Dockerfile"}
    assert statuses(api.make(root, [])) == {"odd": "cached"}


def test_default_platform_is_the_engines(ws: Path, docker_client) -> None:
    info = docker_client.version()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(info["Arch"], info["Arch"])
    plan = api.plan(ws, ["solo"])
    assert plan.targets[0].manifest["platform"] == f"{info['Os']}/{arch}"


def test_edit_during_a_real_build_records_nothing(ws: Path, docker_client, monkeypatch) -> None:
    import olly.jobs

    target = ws / "solo" / "data.txt"

    class EditingStream(olly.jobs.TarStream):
        def __iter__(self):
            for i, chunk in enumerate(super().__iter__()):
                if i == 0:
                    target.write_text("edited while the engine was reading the context\n")
                yield chunk

    monkeypatch.setattr(olly.jobs, "TarStream", EditingStream)
    first = api.make(ws, ["solo"])
    assert first.outcomes[0].status == "failed" and "changed during the build" in first.outcomes[0].reason
    assert api.why(ws, "solo")["built_before"] is False
    monkeypatch.undo()
    again = api.make(ws, ["solo"])
    assert statuses(again) == {"solo": "built"}
    assert image_files(docker_client, again.outcomes[0].ref, "")["data.txt"] == target.read_bytes()


def test_secret_build_arg_reaches_the_build_but_nothing_olly_keeps(ws: Path, docker_client, monkeypatch) -> None:
    import json
    import sqlite3

    build = ws / "BUILD.toml"
    build.write_text(build.read_text().replace('args = { GREETING = "hello" }', 'secrets = ["GREETING"]'))
    monkeypatch.setenv("GREETING", "s3cr3t-value-xyz")
    result = api.make(ws, ["solo"])
    assert statuses(result) == {"solo": "built"}, result.outcomes[0].reason
    assert image_files(docker_client, result.outcomes[0].ref, "")["greeting"] == b"s3cr3t-value-xyz\n"
    dump = "\n".join(sqlite3.connect(ws / ".cache" / "olly.db").iterdump())
    logs = "".join(p.read_text() for p in (ws / ".cache" / "logs").iterdir())
    assert "s3cr3t-value-xyz" not in dump + logs + json.dumps(api.inputs(ws, "solo").manifest)


def test_build_network_setting_reaches_run_steps(tmp_path: Path, docker_client, busybox: Path, unique_prefix: str) -> None:
    root = tmp_path / "net"
    (root / "n").mkdir(parents=True)
    shutil.copyfile(busybox, root / "n" / "busybox")
    (root / "n" / "busybox").chmod(0o755)
    (root / "n" / "Dockerfile").write_text(
        'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "sh", "-c", "/bin/busybox ls /sys/class/net > /nets"]\n')
    (root / "BUILD.toml").write_text(f'[workspace]\nnetwork = "host"\n[images.n]\nrepository = "{unique_prefix}/n"\n')
    host = api.make(root, [])
    assert image_files(docker_client, host.outcomes[0].ref, "")["nets"].decode().split() == sorted(os.listdir("/sys/class/net"))
    # A different RUN line: the engine's layer cache (like olly's key) ignores the network.
    df = root / "n" / "Dockerfile"
    df.write_text(df.read_text().replace("> /nets", "> /nets; true"))
    none = api.make(root, [], network="none")  # the flag overrides BUILD.toml
    assert image_files(docker_client, none.outcomes[0].ref, "")["nets"].decode().split() == ["lo"]


def test_run_step_killed_like_an_oom_kill(ws: Path) -> None:
    """The OOM killer SIGKILLs the RUN process: exit 137. One line, nothing recorded."""
    df = ws / "solo" / "Dockerfile"
    # Not PID 1 (the container's init ignores SIGKILL from inside): a child shell kills itself;
    # the trailing `exit` stops busybox from exec-ing the child in place of PID 1.
    df.write_text(df.read_text() + 'RUN ["/bin/busybox", "sh", "-c", "/bin/busybox sh -c \'kill -9 $$\'; exit $?"]\n')
    result = api.make(ws, ["solo"])
    assert result.outcomes[0].status == "failed"
    assert "returned a non-zero code: 137" in result.outcomes[0].reason
    assert api.why(ws, "solo")["built_before"] is False


@pytest.mark.parametrize("builder", ["classic", "buildkit"])
def test_secret_never_reaches_logs_or_output_when_the_engine_rejects_the_build(ws: Path, builder: str) -> None:
    """The classic builder answers with an HTTP 400 (which the docker SDK, used for tcp:// engines,
    words with the /build URL, buildargs included: the secret JSON- and URL-encoded); BuildKit
    streams its error instead. Neither may show the value."""
    secret = 'tok "s3cr3t"/+&value'
    build = ws / "BUILD.toml"
    build.write_text(build.read_text().replace('args = { GREETING = "hello" }',
                                               'secrets = ["GREETING"]\ntarget = "no-such-stage"'))
    proc = olly(ws, "make", "solo", "--json", env={"GREETING": secret, "OLLY_BUILDER": builder})
    assert proc.returncode == 1, proc.stderr + proc.stdout
    log = (ws / ".cache" / "logs" / "solo.log").read_text()
    assert "no-such-stage" in log  # the engine's error was logged...
    from olly.scrub import encodings

    for form in encodings(secret):  # ...without the value in any form
        assert form not in log and form not in proc.stdout and form not in proc.stderr, form
    if builder == "classic":  # olly's own HTTP client gives the engine's message, not the request
        assert "ERROR: 400: failed to reach build target no-such-stage" in log and "buildargs=" not in log


@pytest.mark.parametrize("first,second", [("missing", "gone"), ("../outside", "/etc/hostname"), ("missing", "../x")])
def test_retargeted_symlink_reaches_the_image(ws: Path, docker_client, first: str, second: str) -> None:
    """The classic builder's layer cache keys a dangling or escaping link by its path only:
    olly must not record the old layer under the new key (builds without the cache). BuildKit
    keys its cache by the link target: no workaround, and the image must be right all the same."""
    df = ws / "solo" / "Dockerfile"
    df.write_text(df.read_text() + "COPY . /ctx/\n")
    link = ws / "solo" / "l"
    link.symlink_to(first)
    one = api.make(ws, ["solo"])
    classic = one.plan.by_label()["solo"].manifest["builder"] == "classic"  # the session's builder decides
    assert ("layer cache not used: symlink l" in "; ".join(one.outcomes[0].notes)) == classic, one.outcomes[0].notes
    link.unlink()
    link.symlink_to(second)
    two = api.make(ws, ["solo"])
    assert statuses(two) == {"solo": "built"}

    def target_in_image(ref: str) -> str:
        container = docker_client.containers.create(ref, command="/nonexistent")
        try:
            data = b"".join(container.export())
        finally:
            container.remove()
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            return next(m.linkname for m in tar.getmembers() if m.name == "ctx/l")

    assert target_in_image(two.outcomes[0].ref) == second
    # An arg-only rebuild must not bring the first layer back either.
    build = ws / "BUILD.toml"
    build.write_text(build.read_text().replace('GREETING = "hello"', 'GREETING = "other"'))
    assert target_in_image(api.make(ws, ["solo"]).outcomes[0].ref) == second


def test_a_link_to_a_context_file_keeps_the_layer_cache(ws: Path) -> None:
    (ws / "solo" / "l").symlink_to("data.txt")
    assert api.make(ws, ["solo"]).outcomes[0].notes == []
