"""olly.buildkit without an engine: trace decoding, log lines, errors, builder choice."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from olly import buildkit, progress
from olly.errors import OllyError
from buildkit_proto import message_classes


def trace_aux(vertexes=(), logs=(), statuses=()) -> str:
    """A moby.buildkit.trace ``aux``: a StatusResponse built with the protobuf runtime, base64."""
    msg = message_classes()["StatusResponse"]()
    for v in vertexes:
        vx = msg.vertexes.add(digest=v["digest"], name=v.get("name", ""), cached=v.get("cached", False),
                              error=v.get("error", ""))
        if v.get("started"):
            vx.started.seconds = 1
        if v.get("completed"):
            vx.completed.seconds = 2
    for vertex, data in logs:
        msg.logs.add(vertex=vertex, stream=1, msg=data)
    for vertex, name in statuses:
        msg.statuses.add(ID=name, vertex=vertex, name=name, current=1, total=2)
    return base64.b64encode(msg.SerializeToString()).decode()


RUN = '[2/3] RUN ["/bin/busybox", "sh", "-c", "exit 3"]'


def test_trace_round_trips_through_base64_protobuf() -> None:
    aux = trace_aux([{"digest": "sha256:a", "name": RUN, "started": True}], [("sha256:a", b"hello\n")],
                    [("sha256:a", "extracting")])
    decoded = buildkit.decode_trace(aux)
    assert decoded.vertexes == [buildkit.TraceVertex("sha256:a", RUN, cached=False, started=True, completed=False, error="")]
    assert decoded.logs == [buildkit.TraceOutput("sha256:a", b"hello\n")]  # the statuses between were skipped


def test_unknown_fields_are_skipped() -> None:
    # A newer engine's fields (e.g. Vertex.progressGroup = 8) must not break decoding.
    raw = base64.b64decode(trace_aux([{"digest": "d", "name": "n", "started": True}]))
    vertex = raw[2:]  # field 1 (vertexes) tag + length, then the Vertex
    extra = bytes([0x42, 0x02, 0x0A, 0x00])  # field 8, length-delimited: {field 1: ""}
    patched = bytes([0x0A, len(vertex) + len(extra)]) + vertex + extra
    assert buildkit.decode_trace(base64.b64encode(patched)).vertexes[0].name == "n"


def feed(log: buildkit.TraceLog, **kwargs) -> None:
    log.feed(buildkit.decode_trace(trace_aux(**kwargs)))


def test_trace_becomes_log_lines_and_steps() -> None:
    lines: list[str] = []
    events: list[progress.Event] = []
    on_line = progress.line_emitter(events.append, "app", "")
    log = buildkit.TraceLog(lambda line: (lines.append(line), on_line(line)))
    feed(log, vertexes=[{"digest": "a", "name": "[internal] load build definition from Dockerfile", "started": True,
                         "completed": True}])
    feed(log, vertexes=[{"digest": "b", "name": "[1/3] COPY busybox /bin/busybox", "cached": True, "completed": True}])
    feed(log, vertexes=[{"digest": "c", "name": RUN}])  # queued: not shown yet
    feed(log, vertexes=[{"digest": "c", "name": RUN, "started": True}], logs=[("c", b"one\ntw")])
    feed(log, logs=[("c", b"o\n")])
    feed(log, vertexes=[{"digest": "c", "name": RUN, "started": True, "completed": True, "error": "exit code: 3"}])
    log.close()
    assert lines == ["[internal] load build definition from Dockerfile", "[1/3] COPY busybox /bin/busybox",
                     "CACHED [1/3] COPY busybox /bin/busybox", RUN, "one", "two", f"ERROR: {RUN}: exit code: 3"]
    steps = [e.text for e in events if e.kind == "step"]
    assert steps == ["[1/3] COPY busybox /bin/busybox", RUN]
    assert log.failed == [(RUN, "exit code: 3")]


def test_failing_run_names_the_step_and_tail() -> None:
    log = buildkit.TraceLog(lambda line: None)
    feed(log, vertexes=[{"digest": "c", "name": RUN, "started": True}], logs=[("c", b"about to fail\n")])
    feed(log, vertexes=[{"digest": "c", "name": RUN, "started": True, "completed": True,
                         "error": "executor failed running [/bin/busybox sh -c exit 3]: exit code: 3"}])
    message, tail = buildkit.explain("executor failed running [/bin/busybox sh -c exit 3]: exit code: 3", log)
    assert message == f"{RUN} returned a non-zero code: 3"
    assert "about to fail" in tail and tail[-1].endswith("exit code: 3")


def test_missing_bridge_says_what_to_set() -> None:
    message, _ = buildkit.explain("failed to solve: network bridge not found", buildkit.TraceLog(lambda line: None))
    assert 'network = "host" or "none"' in message


def test_secrets_are_scrubbed_from_trace_lines() -> None:
    from olly import scrub

    scrub.register("s3cr3t-value")
    lines: list[str] = []
    log = buildkit.TraceLog(lines.append)
    feed(log, vertexes=[{"digest": "c", "name": RUN, "started": True}], logs=[("c", b"token=s3cr3t-value\n")])
    assert all("s3cr3t-value" not in line for line in lines)


@pytest.mark.parametrize("line,kind", [
    ("RUN --mount=type=secret,id=tok cat /run/secrets/tok", "secret"),
    ("RUN --mount=type=ssh git clone git@x:y", "ssh"),
    ("RUN --mount=target=/x,type=secret,id=a true", "secret"),
])
def test_session_mounts_are_refused_with_the_line(line: str, kind: str) -> None:
    dockerfile = f"FROM scratch\n# comment\n{line}\n".encode()
    message = buildkit.session_refusal(dockerfile, "apps/x/Dockerfile")
    assert message is not None and message.startswith(f"apps/x/Dockerfile:3: RUN --mount=type={kind} needs a BuildKit session")
    assert "BUILD.toml" in message and "\n" not in message


def test_other_mounts_need_no_session() -> None:
    dockerfile = b"FROM scratch\nRUN --mount=type=cache,target=/c --mount=type=bind,source=.,target=/s true\n"
    assert buildkit.session_refusal(dockerfile, "Dockerfile") is None


class _Engine:
    def __init__(self, kind: str = "docker", version: str = "1.41") -> None:
        self.kind, self.version, self.endpoint = kind, version, "unix:///x"


def test_default_is_auto_buildkit_where_the_engine_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(buildkit.ENV, raising=False)
    assert buildkit.builder_for(None, None, None, _Engine()) == "buildkit"
    assert buildkit.builder_for(None, None, None, _Engine(version="1.38")) == "classic"
    # Podman's compatible API ignores version=2 and builds with buildah: classic there.
    assert buildkit.builder_for(None, None, None, _Engine(kind="podman")) == "classic"
    assert buildkit.supports(_Engine()) and not buildkit.supports(_Engine(version="1.38"))
    assert not buildkit.supports(_Engine(kind="podman"))
    choice = buildkit.choose(None, None, None, _Engine(kind="podman"))
    assert choice.builder == "classic" and "podman engine cannot build with BuildKit" in choice.reason
    assert not choice.note  # nothing to say in the plan's reasons: the engine decides


def test_auto_without_an_engine_uses_what_was_remembered_or_assumes_buildkit(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(buildkit.ENV, raising=False)
    assumed = buildkit.choose(None, None, None, None)
    assert assumed.builder == "buildkit" and buildkit.ASSUMED in assumed.reason
    assert buildkit.choose(None, None, None, None, known=False).builder == "classic"
    assert buildkit.choose(None, None, None, None, known=True).builder == "buildkit"
    cache = tmp_path / ".cache"
    assert buildkit.remembered(cache, "unix:///x") is None
    buildkit.remember(cache, _Engine(kind="podman"))
    assert buildkit.remembered(cache, "unix:///x") is False
    buildkit.remember(cache, _Engine())
    assert buildkit.remembered(cache, "unix:///x") is True
    buildkit.remember(cache, object())  # a test double says nothing: nothing remembered of it
    assert list(json.loads((cache / buildkit.MEMORY).read_text())) == ["unix:///x"]
    (cache / buildkit.MEMORY).write_text("{not json")
    assert buildkit.remembered(cache, "unix:///x") is None


def test_auto_builds_classic_when_buildkit_would_copy_what_the_daemon_drops(monkeypatch: pytest.MonkeyPatch) -> None:
    from olly.context import Entry

    monkeypatch.delenv(buildkit.ENV, raising=False)
    extras = [Entry(".dockerfile.0123", "f")]
    choice = buildkit.choose(None, None, None, _Engine(), extras, "apps/x")
    assert choice.builder == "classic"
    assert "BuildKit would copy .dockerfile.0123 into the image" in choice.reason
    assert choice.note.startswith("builder classic: BuildKit would copy .dockerfile.0123")
    assert buildkit.choose(None, None, None, None, extras, "apps/x").builder == "classic"  # offline too
    # Asked for explicitly, it stays an error (never a silent switch of a keyed choice).
    with pytest.raises(OllyError, match=r"apps/x: builder \"buildkit\" would copy .dockerfile.0123"):
        buildkit.choose(None, "buildkit", None, _Engine(), extras, "apps/x")
    assert buildkit.choose("classic", None, None, _Engine(), extras, "apps/x").builder == "classic"


def test_buildkit_refuses_contexts_whose_dropped_files_it_would_copy(tmp_path) -> None:
    from olly.context import Entry

    buildkit.check_context("classic", [Entry(".dockerfile.0123", "f")], "apps/x")  # classic drops it
    buildkit.check_context("buildkit", [], "apps/x")
    with pytest.raises(OllyError, match=r"apps/x: builder \"buildkit\" would copy .dockerfile.0123 into the image"):
        buildkit.check_context("buildkit", [Entry(".dockerfile.0123", "f")], "apps/x")


def test_builder_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(buildkit.ENV, "classic")
    engine = _Engine()
    assert buildkit.builder_for(None, None, None, engine) == "classic"  # env beats the default
    assert buildkit.builder_for(None, "buildkit", None, engine) == "buildkit"  # [workspace] beats env
    assert buildkit.builder_for("classic", "buildkit", None, engine) == "classic"  # image beats workspace
    assert buildkit.builder_for("classic", None, "buildkit", engine) == "buildkit"  # --builder beats all
    # "auto" is a choice too: it stops the precedence there.
    assert buildkit.builder_for(None, "auto", None, engine) == "buildkit"  # [workspace] auto beats env classic
    assert buildkit.builder_for("classic", None, "auto", engine) == "buildkit"  # --builder auto beats the image
    assert buildkit.builder_for(None, None, "auto", _Engine(kind="podman")) == "classic"
    assert buildkit.choose(None, None, "classic", engine).reason == "--builder"
    assert buildkit.choose(None, None, None, engine).reason == "$OLLY_BUILDER"
    assert buildkit.choose(None, "auto", None, engine).reason == ("auto (BUILD.toml [workspace] builder): the engine "
                                                                  "builds with BuildKit")
    monkeypatch.setenv(buildkit.ENV, "kaniko")
    with pytest.raises(OllyError, match="unknown builder"):
        buildkit.builder_for(None, None, None, engine)


def test_buildkit_on_podman_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(buildkit.ENV, raising=False)
    with pytest.raises(OllyError, match="builder-unsupported|cannot build with BuildKit"):
        buildkit.builder_for("buildkit", None, None, _Engine(kind="podman"))


def test_build_params_mirror_the_classic_request() -> None:
    from olly.engine import BuildRequest

    req = BuildRequest(context=iter(()), dockerfile_name="Dockerfile", dockerfile=b"", dockerfile_display="D",
                       args={"A": "1"}, target="t", platform="linux/arm64", network=None, labels={"l": "v"},
                       log_path=Path("/dev/null"), pull=True, builder="buildkit")
    params = buildkit.build_params(req)
    assert params["version"] == "2" and params["target"] == "t" and params["platform"] == "linux/arm64"
    assert params["pull"] == "1" and "nocache" not in params
    assert "networkmode" not in params  # unset: the engine's default, as the classic builder gets
    assert params["buildargs"] == '{"A": "1"}' and params["labels"] == '{"l": "v"}'


def test_builder_in_build_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from olly.cache import Cache
    from olly.config import load_workspace
    from olly.graph import Graph
    from olly.plan import make_plan

    monkeypatch.delenv(buildkit.ENV, raising=False)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "BUILD.toml").write_text('[workspace]\nbuilder = "classic"\n[images.a]\nrepository = "x/a"\n'
                                         '[images.b]\nrepository = "x/b"\ncontext = "a"\nbuilder = "buildkit"\n')
    ws = load_workspace(tmp_path)
    graph = Graph.of(ws)
    cache = Cache(tmp_path / ".cache")
    try:
        plan = make_plan(ws, graph, graph.select([]), cache, None).by_label()
        assert plan["a"].manifest["builder"] == "classic" and plan["b"].manifest["builder"] == "buildkit"
        ws.builder_override = "classic"
        again = make_plan(ws, graph, graph.select([]), cache, None).by_label()
        assert again["b"].manifest["builder"] == "classic" and again["b"].key != plan["b"].key
        assert again["a"].key == plan["a"].key
    finally:
        cache.close()
    (tmp_path / "BUILD.toml").write_text('[workspace]\nbuilder = "kaniko"\n[images.a]\nrepository = "x/a"\n')
    with pytest.raises(OllyError, match="builder"):
        load_workspace(tmp_path)


def test_plan_says_when_auto_falls_back_to_classic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from olly import api, report

    monkeypatch.delenv(buildkit.ENV, raising=False)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f.txt").write_text("x\n")
    (tmp_path / "a" / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    (tmp_path / "df").mkdir()
    (tmp_path / "df" / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")  # outside its context
    (tmp_path / "BUILD.toml").write_text('[images.a]\nrepository = "x/a"\n'
                                         '[images.b]\nrepository = "x/b"\ncontext = "a"\ndockerfile = "df/Dockerfile"\n')
    plan = api.plan(tmp_path, [], check_engine=False)
    a, b = plan.by_label()["a"], plan.by_label()["b"]
    assert a.manifest["builder"] == "buildkit" and buildkit.ASSUMED in a.manifest["builder_reason"]
    assert b.manifest["builder"] == "classic"
    assert any(r.startswith("builder classic: BuildKit would copy .dockerfile.") for r in b.reasons), b.reasons
    doc = report.plan_json(plan)
    entry = doc["targets"][1]["platforms"][0]
    assert entry["builder"] == "classic" and "BuildKit would copy .dockerfile." in entry["builder_reason"]
    assert report.plan_lines(plan)[-1].endswith("(engine not reachable: images not verified; keys assume it builds "
                                                 "with BuildKit)")
    assert "builder classic: BuildKit would copy" in api.why(tmp_path, "b")["notes"][0]
    # What a run saw of the engine decides plans without one: Podman (no BuildKit) -> classic.
    from olly.engine import endpoint

    buildkit.remember(tmp_path / ".cache", type("P", (), {"kind": "podman", "endpoint": endpoint()})())
    again = api.plan(tmp_path, [], check_engine=False).by_label()["a"]
    assert again.manifest["builder"] == "classic" and again.key != a.key
    assert report.plan_lines(api.plan(tmp_path, [], check_engine=False))[-1].endswith("images not verified)")
    # Asked for explicitly, BuildKit with such a context is refused with one line.
    (tmp_path / "BUILD.toml").write_text((tmp_path / "BUILD.toml").read_text() + 'builder = "buildkit"\n')
    with pytest.raises(OllyError, match=r'b: builder "buildkit" would copy \.dockerfile\.'):
        api.plan(tmp_path, ["b"], check_engine=False)


def test_why_names_a_builder_change() -> None:
    from olly.manifest import diff_manifests, summarize

    changes = diff_manifests({"schema": 5, "builder": "classic"}, {"schema": 5, "builder": "buildkit"})
    assert changes == ["~ builder 'classic' -> 'buildkit'"]  # as target and platform changes read
    assert summarize(changes).startswith("builder 'classic' -> 'buildkit'")
    assert diff_manifests({"schema": 4}, {"schema": 5, "builder": "buildkit"}) == ["~ key schema 4 -> 5"]


def _random_trace(rng) -> tuple[str, list, list]:
    """A StatusResponse with every field of control.proto set at random (the ones olly skips too),
    encoded by the protobuf runtime; and the vertexes and logs olly should read from it."""
    classes = message_classes()
    msg = classes["StatusResponse"]()
    text = lambda: "".join(rng.choice("ab/é[]1 \n") for _ in range(rng.randrange(0, 40)))  # noqa: E731
    want_vertexes, want_logs = [], []
    for _ in range(rng.randrange(0, 4)):
        vx = msg.vertexes.add(digest=text(), name=text(), cached=rng.random() < 0.5, error=text(),
                              inputs=[text() for _ in range(rng.randrange(3))])
        started, completed = rng.random() < 0.5, rng.random() < 0.5
        if started:
            vx.started.seconds, vx.started.nanos = rng.randrange(1 << 40), rng.randrange(10 ** 9)
        if completed:
            vx.completed.seconds = rng.randrange(1 << 40)
        want_vertexes.append(buildkit.TraceVertex(vx.digest, vx.name, vx.cached, started, completed, vx.error))
        msg.statuses.add(ID=text(), vertex=text(), current=rng.randrange(-5, 1 << 62), total=rng.randrange(1 << 62))
    for _ in range(rng.randrange(0, 4)):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
        log = msg.logs.add(vertex=text(), stream=rng.randrange(3), msg=data)
        log.timestamp.seconds = rng.randrange(1 << 40)
        want_logs.append(buildkit.TraceOutput(log.vertex, data))
        msg.warnings.add(vertex=text(), level=rng.randrange(3), short=b"w", detail=[b"d"], url=text())
    return base64.b64encode(msg.SerializeToString()).decode(), want_vertexes, want_logs


def test_the_wire_decoder_reads_what_the_protobuf_runtime_writes() -> None:
    import random

    rng = random.Random(7)
    for _ in range(500):
        aux, vertexes, logs = _random_trace(rng)
        decoded = buildkit.decode_trace(aux)
        assert decoded.vertexes == vertexes and decoded.logs == logs


@pytest.mark.parametrize("raw", [b"\x0a\x05abc", b"\x08", b"\x0a", b"\x0b", b"\x09\x00\x00"])
def test_a_malformed_trace_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        buildkit.decode_trace(base64.b64encode(raw))
