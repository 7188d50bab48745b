"""BuildKit builds through the engine's own API (``POST /build?version=2``), without a session.

dockerd (API >= 1.39) runs a Dockerfile with BuildKit when ``/build`` gets ``version=2``: the
context is the same tar stream the classic builder gets (so olly's exact-context check holds),
and the response streams JSON lines whose ``moby.buildkit.trace`` items carry a base64
protobuf ``StatusResponse`` (moby/buildkit ``api/services/control/control.proto``) and whose
``moby.image.id`` item names the image built. This module turns that trace into olly's build
log: one line per step (the vertex name, ``[2/5] RUN …``), the steps' output, and a
``BuildFailed`` naming the failing step. Loaded only when something is built (olly.buildkit
chooses the builder, on every plan).

Without a session the engine cannot ask the client for secrets or an ssh agent, so
``RUN --mount=type=secret`` and ``--mount=type=ssh`` are refused here, before anything is sent.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, NamedTuple

from olly import failpoints
from olly.errors import OllyError
from olly.scrub import scrub

if TYPE_CHECKING:
    from olly.engine import BuildRequest, Engine

TAIL = 20


# -- the trace: moby.buildkit.v1.StatusResponse ----------------------------------------
# Decoded by hand: the protobuf runtime costs 40 ms of CPU to load and declare, paid during
# every BuildKit build (on a 2-core machine, beside the engine), for the six fields olly reads.
# The wire format (protobuf.dev/programming-guides/encoding): each field is a varint key
# (number << 3 | wire type), then a varint (type 0), 8 bytes (1), a length and that many bytes
# (2: strings, bytes, messages) or 4 bytes (5). Unknown fields are skipped, as protobuf does;
# a repeated occurrence of a singular field wins, as in protobuf. tests/test_buildkit.py
# checks the decoder against messages the protobuf runtime encodes.


class TraceVertex(NamedTuple):
    """A ``Vertex``: a step or internal operation (``started``/``completed``: the timestamps are set)."""
    digest: str
    name: str
    cached: bool
    started: bool
    completed: bool
    error: str


class TraceOutput(NamedTuple):
    """A ``VertexLog``: output of the vertex ``vertex``."""
    vertex: str
    msg: bytes


class Trace(NamedTuple):
    """A ``StatusResponse``, the parts olly reads (``statuses`` and ``warnings`` are skipped)."""
    vertexes: list[TraceVertex]
    logs: list[TraceOutput]


def decode_trace(aux: Any) -> Trace:
    """A ``moby.buildkit.trace`` item's ``aux`` (base64 of the protobuf bytes) as a Trace;
    ValueError if the bytes are not a well-formed message."""
    vertexes, logs = [], []
    for number, value in _fields(base64.b64decode(aux)):
        if number == 1 and isinstance(value, bytes):
            vertexes.append(_vertex(value))
        elif number == 3 and isinstance(value, bytes):
            fields = _typed(value, {1: bytes, 4: bytes})
            logs.append(TraceOutput(_text(fields.get(1)), fields.get(4, b"")))  # type: ignore[arg-type]
    return Trace(vertexes, logs)


def _vertex(data: bytes) -> TraceVertex:
    fields = _typed(data, {1: bytes, 3: bytes, 4: int, 5: bytes, 6: bytes, 7: bytes})
    return TraceVertex(digest=_text(fields.get(1)), name=_text(fields.get(3)), cached=bool(fields.get(4)),
                       started=5 in fields, completed=6 in fields, error=_text(fields.get(7)))


def _typed(data: bytes, kinds: dict[int, type]) -> dict[int, int | bytes]:
    """The last occurrence of each wanted field of a message, if sent with its own wire type:
    protobuf treats a known number with another wire type as an unknown field."""
    return {number: value for number, value in _fields(data) if isinstance(value, kinds.get(number, ()))}


def _text(value: int | bytes | None) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else ""


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(number, value) of each field of a message: an int for varints, bytes for
    length-delimited fields; fixed-width fields and groups (none that olly reads) are skipped."""
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, value
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > end:
                raise ValueError("truncated BuildKit trace message")
            yield number, data[pos:pos + size]
            pos += size
        else:
            pos = _skip(data, pos, number, wire)
    if pos != end:
        raise ValueError("truncated BuildKit trace message")


def _skip(data: bytes, pos: int, number: int, wire: int) -> int:
    """Where a field of a wire type olly does not read ends: fixed 8 (1) or 4 (5) bytes, or a
    (deprecated) group (3) up to its end marker (4) with the same number."""
    if wire in (1, 5):
        return pos + (8 if wire == 1 else 4)
    if wire != 3:
        raise ValueError(f"BuildKit trace: unexpected protobuf wire type {wire}")
    while pos < len(data):
        key, pos = _varint(data, pos)
        if key & 7 == 4:
            if key >> 3 != number:
                raise ValueError("BuildKit trace: mismatched protobuf group end")
            return pos
        if key & 7 == 0:
            _, pos = _varint(data, pos)
        elif key & 7 == 2:
            size, pos = _varint(data, pos)
            pos += size
        else:
            pos = _skip(data, pos, key >> 3, key & 7)
    raise ValueError("truncated BuildKit trace message")


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while pos < len(data):
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
    raise ValueError("truncated BuildKit trace message")


# -- the trace as a build log ---------------------------------------------------------


@dataclass
class _Vertex:
    name: str = ""
    shown: bool = False
    done: bool = False
    partial: str = ""  # output after the last newline
    lines: list[str] = field(default_factory=list)  # its last output lines


class TraceLog:
    """Turns StatusResponses into log lines: a vertex's name when it starts (``[2/5] RUN …``,
    what the live view shows as the step), ``CACHED`` after a cached one, its output, and
    ``ERROR: …`` for a failed one. ``emit`` gets every line (already scrubbed)."""

    def __init__(self, emit: Any) -> None:
        self._emit = emit
        self.vertexes: dict[str, _Vertex] = {}
        self.failed: list[tuple[str, str]] = []  # (vertex name, error), in order
        self.tail: list[str] = []

    def _line(self, line: str, v: _Vertex | None = None) -> None:
        line = scrub(line.rstrip("\r"))
        if not line.strip():
            return
        self.tail = (self.tail + [line])[-TAIL:]
        if v is not None:
            v.lines = (v.lines + [line])[-TAIL:]
        self._emit(line)

    def feed(self, response: Trace) -> None:
        for vx in response.vertexes:
            v = self.vertexes.setdefault(vx.digest, _Vertex())
            v.name = vx.name or v.name
            if not v.shown and (vx.started or vx.cached or vx.completed):
                v.shown = True
                self._line(v.name)
                if _STEP.match(v.name):
                    failpoints.hit("building")  # the engine is mid-build
            if vx.completed and not v.done:
                v.done = True
                self._flush(v)
                if vx.cached:
                    self._line(f"CACHED {v.name}")
                if vx.error:
                    self.failed.append((v.name, vx.error))
                    self._line(f"ERROR: {v.name}: {vx.error}")
        for log in response.logs:
            v = self.vertexes.setdefault(log.vertex, _Vertex())
            text = v.partial + log.msg.decode("utf-8", "replace")
            *complete, v.partial = text.split("\n")
            for line in complete:
                self._line(line, v)

    def _flush(self, v: _Vertex) -> None:
        if v.partial:
            partial, v.partial = v.partial, ""
            self._line(partial, v)

    def close(self) -> None:
        for v in self.vertexes.values():
            self._flush(v)


_STEP = re.compile(r"^\[(?:[\w-]+ )?\d+/\d+\] ")
_EXIT_CODE = re.compile(r"exit code: (\d+)")
_FROM_STEP = re.compile(r"^\[(?:[\w-]+ )?\d+/\d+\] FROM (\S+)")
_METADATA = re.compile(r"^\[internal\] load metadata for (\S+)")


def _from_line(dockerfile: bytes, reference: str) -> tuple[int | None, str]:
    """The Dockerfile line whose FROM names ``reference`` (BuildKit says it normalised:
    ``docker.io/library/python:3.14-slim``) and the reference as written there."""
    from olly.engine import _FROM, canonical_ref

    for number, line in enumerate(dockerfile.decode("utf-8", "replace").splitlines(), start=1):
        match = _FROM.match(line)
        if match and canonical_ref(match.group(1)) == canonical_ref(reference):
            return number, match.group(1)
    return None, reference


def explain(error: str, trace: TraceLog, req: BuildRequest | None = None) -> tuple[str, list[str]]:
    """One line for a failed BuildKit build (the failing step first), and the tail to show."""
    first = (error.strip().splitlines() or ["build failed"])[0]
    name, vertex_error = trace.failed[0] if trace.failed else ("", "")
    v = next((v for v in trace.vertexes.values() if v.name == name), None) if name else None
    tail = (v.lines if v is not None and v.lines else trace.tail) + [first]
    if "network bridge not found" in first or "network default not found" in first:
        return (f"{first}: the engine has no bridge network for RUN steps; set network = \"host\" or \"none\" "
                "(BUILD.toml or --network)", tail)
    base = _FROM_STEP.match(name) or _METADATA.match(name)
    if base:
        line, image = _from_line(req.dockerfile, base.group(1)) if req is not None else (None, base.group(1))
        where = f" ({req.dockerfile_display}:{line})" if req is not None and line else ""
        return f"base image {image} cannot be pulled{where}: {first}", tail
    if name and _STEP.match(name):
        code = _EXIT_CODE.search(vertex_error or first)
        if " RUN " in name and code:
            return f"{name} returned a non-zero code: {code.group(1)}", tail
        return f"{name} failed: {(vertex_error or first).splitlines()[0]}", tail
    return first, tail


# -- what needs a session -------------------------------------------------------------

_NEEDS_SESSION = {
    "secret": "pass the secret as a build arg instead (BUILD.toml `secrets = [\"NAME\"]`, then `ARG NAME`)",
    "ssh": "fetch with a token passed as a secret build arg (BUILD.toml `secrets`) instead of an ssh agent",
}


def session_refusal(dockerfile: bytes, display: str) -> str | None:
    """One line naming the first ``RUN --mount=type=secret|ssh`` (which BuildKit serves from a
    client session olly does not open) and what to do instead; None if there is none."""
    from olly import dockerfile as parser

    try:
        df = parser.parse(dockerfile)
    except Exception:  # the engine will say what is wrong with it
        return None
    for inst in df.instructions:
        if inst.keyword != "RUN":
            continue
        for name, value in parser.arguments(inst).flags:
            if name != "mount" or not value:
                continue
            options = dict(part.partition("=")[::2] for part in value.split(","))
            kind = options.get("type", "bind")
            if kind in _NEEDS_SESSION:
                return (f"{display}:{inst.line}: RUN --mount=type={kind} needs a BuildKit session, which olly does "
                        f"not open: {_NEEDS_SESSION[kind]}")
    return None


# -- the build ------------------------------------------------------------------------


def build_params(req: BuildRequest, network: str | None = None, endpoint: str | None = None) -> dict[str, str]:
    """/build query parameters for a BuildKit build; the same values the classic build gets
    (``network``: the one to send when ``req.network`` is unset, see ``_default_network``),
    the docker config's proxies for ``endpoint`` among the build args, as `docker build` with
    buildx gives them (predefined args: outside the layer cache, and never keyed by olly)."""
    from olly.engine import build_args

    args = build_args(req, endpoint) if endpoint is not None else req.args
    params = {"version": "2", "dockerfile": req.dockerfile_name, "rm": "1", "forcerm": "1",
              "buildargs": json.dumps(args), "labels": json.dumps(req.labels)}
    if req.target:
        params["target"] = req.target
    if req.platform:
        params["platform"] = req.platform
    if req.network or network:  # unset: the engine's default, as for the classic builder
        params["networkmode"] = req.network or network  # type: ignore[assignment]
    if req.pull:
        params["pull"] = "1"
    if req.no_cache:
        params["nocache"] = "1"
    return params


_BRIDGE: dict[str, bool] = {}  # engine endpoint -> has a "bridge" network


def _default_network(engine: Any) -> str | None:
    """The network a build with none set gets: the engine's default (None), as classic builds
    get; but dockerd started without a bridge (``--bridge=none``) gives classic RUN steps no
    network, while BuildKit would fail ("network bridge not found"): send ``none`` there."""
    endpoint = str(getattr(engine, "endpoint", ""))
    if endpoint not in _BRIDGE:
        # Only a definite "no such network" counts; anything else: leave it to the engine.
        _BRIDGE[endpoint] = engine.has_network("bridge") is not False
    return None if _BRIDGE[endpoint] else "none"


def build(engine: Engine, req: BuildRequest) -> str:
    """Build ``req`` with BuildKit on ``engine``; return the image id or raise BuildFailed."""
    from olly.engine import BuildFailed, build_headers, engine_failure

    req.log_path.parent.mkdir(parents=True, exist_ok=True)
    image_id: str | None = None
    with open(req.log_path, "w", encoding="utf-8", errors="replace", buffering=1) as log:
        refusal = session_refusal(req.dockerfile, req.dockerfile_display)
        if refusal:
            log.write(f"ERROR: {refusal}\n")
            raise BuildFailed(refusal, [refusal])

        def emit(line: str) -> None:
            log.write(line + "\n")
            if req.on_line is not None:
                req.on_line(line)  # progress: the live view, --progress json

        trace = TraceLog(emit)
        try:
            headers = build_headers(req.dockerfile)
            params = build_params(req, _default_network(engine), str(getattr(engine, "endpoint", "")))
            for item in engine.post_stream("/build", params, req.context, headers):
                if item.get("id") == "moby.buildkit.trace" and item.get("aux"):
                    trace.feed(decode_trace(item["aux"]))
                elif item.get("id") == "moby.image.id" and isinstance(item.get("aux"), dict):
                    image_id = item["aux"].get("ID") or image_id
                elif "stream" in item:
                    for line in str(item["stream"]).splitlines():
                        trace._line(line)
                if "error" in item:
                    trace.close()
                    error = scrub(str(item["error"]).strip())
                    log.write(f"ERROR: {error}\n")
                    message, tail = explain(error, trace, req)
                    raise BuildFailed(message, tail)
            trace.close()
        except BuildFailed:
            raise
        except OllyError:
            raise
        except Exception as exc:
            raise engine_failure(exc, log, trace.tail)
    if image_id is None:
        raise BuildFailed("the engine reported no image id", trace.tail)
    return image_id
