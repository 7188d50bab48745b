"""olly.buildkitbuild without an engine: trace decoding, log lines, errors, what is sent."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from buildkit_proto import message_classes
from olly import buildkitbuild, progress
from olly.engine import BuildRequest


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
    decoded = buildkitbuild.decode_trace(aux)
    assert decoded.vertexes == [buildkitbuild.TraceVertex("sha256:a", RUN, cached=False, started=True, completed=False, error="")]
    assert decoded.logs == [buildkitbuild.TraceOutput("sha256:a", b"hello\n")]  # the statuses between were skipped


def test_unknown_fields_are_skipped() -> None:
    # A newer engine's fields (e.g. Vertex.progressGroup = 8) must not break decoding.
    raw = base64.b64decode(trace_aux([{"digest": "d", "name": "n", "started": True}]))
    vertex = raw[2:]  # field 1 (vertexes) tag + length, then the Vertex
    extra = bytes([0x42, 0x02, 0x0A, 0x00])  # field 8, length-delimited: {field 1: ""}
    patched = bytes([0x0A, len(vertex) + len(extra)]) + vertex + extra
    assert buildkitbuild.decode_trace(base64.b64encode(patched)).vertexes[0].name == "n"


def feed(log: buildkitbuild.TraceLog, **kwargs) -> None:
    log.feed(buildkitbuild.decode_trace(trace_aux(**kwargs)))


def test_trace_becomes_log_lines_and_steps() -> None:
    lines: list[str] = []
    events: list[progress.Event] = []
    on_line = progress.line_emitter(events.append, "app", "")
    log = buildkitbuild.TraceLog(lambda line: (lines.append(line), on_line(line)))
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
    log = buildkitbuild.TraceLog(lambda line: None)
    feed(log, vertexes=[{"digest": "c", "name": RUN, "started": True}], logs=[("c", b"about to fail\n")])
    feed(log, vertexes=[{"digest": "c", "name": RUN, "started": True, "completed": True,
                         "error": "executor failed running [/bin/busybox sh -c exit 3]: exit code: 3"}])
    message, tail = buildkitbuild.explain("executor failed running [/bin/busybox sh -c exit 3]: exit code: 3", log)
    assert message == f"{RUN} returned a non-zero code: 3"
    assert "about to fail" in tail and tail[-1].endswith("exit code: 3")


def test_missing_bridge_says_what_to_set() -> None:
    message, _ = buildkitbuild.explain("failed to solve: network bridge not found", buildkitbuild.TraceLog(lambda line: None))
    assert 'network = "host" or "none"' in message


def test_secrets_are_scrubbed_from_trace_lines() -> None:
    from olly import scrub

    scrub.register("s3cr3t-value")
    lines: list[str] = []
    log = buildkitbuild.TraceLog(lines.append)
    feed(log, vertexes=[{"digest": "c", "name": RUN, "started": True}], logs=[("c", b"token=s3cr3t-value\n")])
    assert all("s3cr3t-value" not in line for line in lines)


@pytest.mark.parametrize("line,kind", [
    ("RUN --mount=type=secret,id=tok cat /run/secrets/tok", "secret"),
    ("RUN --mount=type=ssh git clone git@x:y", "ssh"),
    ("RUN --mount=target=/x,type=secret,id=a true", "secret"),
])
def test_session_mounts_are_refused_with_the_line(line: str, kind: str) -> None:
    dockerfile = f"FROM scratch\n# comment\n{line}\n".encode()
    message = buildkitbuild.session_refusal(dockerfile, "apps/x/Dockerfile")
    assert message is not None and message.startswith(f"apps/x/Dockerfile:3: RUN --mount=type={kind} needs a BuildKit session")
    assert "BUILD.toml" in message and "\n" not in message


def test_other_mounts_need_no_session() -> None:
    dockerfile = b"FROM scratch\nRUN --mount=type=cache,target=/c --mount=type=bind,source=.,target=/s true\n"
    assert buildkitbuild.session_refusal(dockerfile, "Dockerfile") is None


def test_build_params_mirror_the_classic_request() -> None:
    req = BuildRequest(context=iter(()), dockerfile_name="Dockerfile", dockerfile=b"", dockerfile_display="D",
                       args={"A": "1"}, target="t", platform="linux/arm64", network=None, labels={"l": "v"},
                       log_path=Path("/dev/null"), pull=True, builder="buildkit")
    params = buildkitbuild.build_params(req)
    assert params["version"] == "2" and params["target"] == "t" and params["platform"] == "linux/arm64"
    assert params["pull"] == "1" and "nocache" not in params
    assert "networkmode" not in params  # unset: the engine's default, as the classic builder gets
    assert params["buildargs"] == '{"A": "1"}' and params["labels"] == '{"l": "v"}'


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
        want_vertexes.append(buildkitbuild.TraceVertex(vx.digest, vx.name, vx.cached, started, completed, vx.error))
        msg.statuses.add(ID=text(), vertex=text(), current=rng.randrange(-5, 1 << 62), total=rng.randrange(1 << 62))
    for _ in range(rng.randrange(0, 4)):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
        log = msg.logs.add(vertex=text(), stream=rng.randrange(3), msg=data)
        log.timestamp.seconds = rng.randrange(1 << 40)
        want_logs.append(buildkitbuild.TraceOutput(log.vertex, data))
        msg.warnings.add(vertex=text(), level=rng.randrange(3), short=b"w", detail=[b"d"], url=text())
    return base64.b64encode(msg.SerializeToString()).decode(), want_vertexes, want_logs


def test_the_wire_decoder_reads_what_the_protobuf_runtime_writes() -> None:
    import random

    rng = random.Random(7)
    for _ in range(500):
        aux, vertexes, logs = _random_trace(rng)
        decoded = buildkitbuild.decode_trace(aux)
        assert decoded.vertexes == vertexes and decoded.logs == logs


@pytest.mark.parametrize("raw", [b"\x0a\x05abc", b"\x08", b"\x0a", b"\x0b", b"\x09\x00\x00"])
def test_a_malformed_trace_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        buildkitbuild.decode_trace(base64.b64encode(raw))


def test_fields_of_another_wire_type_and_groups_are_skipped_as_protobuf_does() -> None:
    vertex = lambda body: base64.b64encode(bytes([0x0A, len(body)]) + body)  # noqa: E731  StatusResponse.vertexes
    # cached (4) sent length-delimited after the real one: an unknown field, the real value stands
    assert buildkitbuild.decode_trace(vertex(bytes.fromhex("0a0164" "2001" "220100"))).vertexes[0].cached is True
    # digest (1) sent as a varint: unknown, the string stands
    assert buildkitbuild.decode_trace(vertex(bytes.fromhex("0a0164" "0801"))).vertexes[0].digest == "d"
    # a group (field 13: start 0x6b ... end 0x6c) holding a varint and a string is skipped whole
    assert buildkitbuild.decode_trace(vertex(bytes.fromhex("0a0164" "6b" "0801" "1201" "78" "6c"))).vertexes[0].digest == "d"
    with pytest.raises(ValueError):  # a group that never ends
        buildkitbuild.decode_trace(vertex(bytes.fromhex("0a0164" "6b" "0801")))
