"""Raw HTTP to a unix-socket engine (olly.enginehttp) and olly.engine.Engine on top of it,
against a small fake engine: same answers and errors as through the docker SDK."""

from __future__ import annotations

import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from olly.engine import Engine
from olly.enginehttp import UnixEngineHTTP, parse_response
from olly.errors import OllyError

VERSION = {"ApiVersion": "1.41", "Version": "20.10.24", "Os": "linux", "Arch": "x86_64",
           "Components": [{"Name": "Engine", "Version": "20.10.24"}]}
IMAGE = {"Id": "sha256:" + "a" * 64, "RepoTags": ["x/app:olly-1"], "Config": {"Labels": {"dev.olly.key": "k1"}}}


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline().decode()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        path = line.split(" ")[1]
        self.server.paths.append(path)  # type: ignore[attr-defined]
        status, body, chunked = self.server.answer(path)  # type: ignore[attr-defined]
        if chunked:  # an engine may chunk even an HTTP/1.0 answer's body: olly copes
            half = len(body) // 2
            data = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:half], body[half:]) if p) + b"0\r\n\r\n"
            head = "Transfer-Encoding: chunked\r\n"
        else:
            data, head = body, f"Content-Length: {len(body)}\r\n"
        self.wfile.write(f"HTTP/1.0 {status} X\r\nContent-Type: application/json\r\n{head}\r\n".encode() + data)


@pytest.fixture
def fake_engine(tmp_path: Path) -> Iterator[Any]:
    server = socketserver.ThreadingUnixStreamServer(str(tmp_path / "engine.sock"), _Handler)
    server.paths = []  # type: ignore[attr-defined]

    def answer(path: str) -> tuple[int, bytes, bool]:
        if path == "/version":
            return 200, json.dumps(VERSION).encode(), False
        if path.startswith("/v1.41/images/json"):
            return 200, json.dumps([{"Id": IMAGE["Id"], "RepoTags": IMAGE["RepoTags"],
                                     "Labels": IMAGE["Config"]["Labels"]}]).encode(), True
        if path == f"/v1.41/images/{IMAGE['Id']}/json" or path == "/v1.41/images/x/app:olly-1/json":
            return 200, json.dumps(IMAGE).encode(), True
        if path.startswith("/v1.41/images/broken"):
            return 500, b'{"message": "disk on fire"}', False
        return 404, b'{"message": "No such image"}', False

    server.answer = answer  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_engine_over_a_unix_socket(fake_engine: Any) -> None:
    engine = Engine(f"unix://{fake_engine.server_address}")
    assert (engine.version, engine.kind, engine.platform) == ("1.41", "docker", "linux/amd64")
    assert engine.inspect(IMAGE["Id"]) == IMAGE
    assert engine.inspect("x/app:olly-1") == IMAGE
    assert engine.inspect("x/gone:1") is None
    assert engine.labelled_images() == [IMAGE]
    with pytest.raises(OllyError) as info:
        engine.inspect("broken:1")
    assert info.value.reason == "engine-error" and "disk on fire" in info.value.message
    assert "/v1.41/images/json?filters=%7B%22label%22%3A+%5B%22dev.olly.key%22%5D%7D" in fake_engine.paths


def test_references_are_quoted_as_the_sdk_quotes_them(fake_engine: Any) -> None:
    engine = Engine(f"unix://{fake_engine.server_address}")
    engine.inspect("x/app@sha256:" + "b" * 64)
    assert fake_engine.paths[-1] == "/v1.41/images/x/app%40sha256:" + "b" * 64 + "/json"


def test_no_engine_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(OllyError) as info:
        Engine(f"unix://{tmp_path}/none.sock")
    assert info.value.reason == "engine-unreachable"
    assert info.value.message.startswith(f"no Docker engine at unix://{tmp_path}/none.sock (No such file or directory)")


def test_an_engine_lost_after_connecting_is_engine_unreachable(fake_engine: Any) -> None:
    engine = Engine(f"unix://{fake_engine.server_address}")
    fake_engine.answer = lambda path: (200, b"", False)  # a body cut to nothing: not JSON
    with pytest.raises(OllyError) as info:
        engine.inspect("x/app:olly-1")
    assert info.value.reason == "engine-unreachable"


def test_the_docker_sdk_is_not_imported_for_what_a_noop_asks(fake_engine: Any) -> None:
    code = ("import sys; from olly.engine import Engine; e = Engine(); e.inspect('x/app:olly-1'); "
            "e.labelled_images(); print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('docker', 'requests', 'urllib3', 'http')))")
    env = {**os.environ, "DOCKER_HOST": f"unix://{fake_engine.server_address}"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_sdk_is_used_on_first_need(fake_engine: Any) -> None:
    engine = Engine(f"unix://{fake_engine.server_address}")
    assert engine._sdk is None
    assert engine.api.base_url == "http+docker://localhost"  # created now, for the socket olly was given
    assert engine.api is engine.api


@pytest.mark.parametrize("raw, expected", [
    (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}", (200, b"{}")),
    (b"HTTP/1.1 404 Not Found\r\n\r\nnope", (404, b"nope")),  # no length: the body runs to EOF
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n[1\r\n1;x=y\r\n]\r\n0\r\n\r\n", (200, b"[1]")),
])
def test_parse_response(raw: bytes, expected: tuple[int, bytes]) -> None:
    assert parse_response(raw) == expected


@pytest.mark.parametrize("raw", [
    b"", b"HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\n{}", b"garbage\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n[1", b"HTTP/1.0 200 OK\r\n",
])
def test_a_cut_answer_is_a_connection_error(raw: bytes) -> None:
    with pytest.raises(ConnectionError):
        parse_response(raw)


def test_tls_and_tcp_engines_are_left_to_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    from olly.enginehttp import socket_path

    assert socket_path("unix:///var/run/docker.sock") == "/var/run/docker.sock"
    assert socket_path("tcp://127.0.0.1:2375") is None and socket_path("ssh://me@host") is None
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    assert socket_path("unix:///var/run/docker.sock") is None


def test_requests_are_independent_per_call(fake_engine: Any) -> None:
    client = UnixEngineHTTP(fake_engine.server_address)
    threads = [threading.Thread(target=client.get_json, args=("/version",)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake_engine.paths.count("/version") == 8


def test_podman_onbuild_triggers_come_from_the_history_without_the_sdk(fake_engine: Any) -> None:
    podman = {**VERSION, "Components": [{"Name": "Podman Engine", "Version": "4.3.1"}]}
    history = [{"CreatedBy": "/bin/sh -c #(nop) ONBUILD COPY . /src"}, {"CreatedBy": "/bin/sh -c #(nop) FROM x"}]
    plain = fake_engine.answer

    def answer(path: str) -> tuple[int, bytes, bool]:
        if path == "/version":
            return 200, json.dumps(podman).encode(), False
        if path == f"/v1.41/images/{IMAGE['Id']}/history":
            return 200, json.dumps(history).encode(), False
        return plain(path)

    fake_engine.answer = answer
    engine = Engine(f"unix://{fake_engine.server_address}")
    assert engine.kind == "podman"
    assert engine.inspect("x/app:olly-1")["Config"]["OnBuild"] == ["COPY . /src"]  # type: ignore[index]
    assert engine._sdk is None


def test_an_answer_is_read_by_its_framing_not_by_the_connection_closing(tmp_path: Path) -> None:
    """A proxy between olly and the engine may keep the connection open after the answer."""
    import socket

    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / "proxy.sock"))
    server.listen(1)
    held: list[socket.socket] = []

    def serve() -> None:
        conn, _ = server.accept()
        held.append(conn)  # never closed while olly reads
        conn.recv(65536)
        body = json.dumps(VERSION).encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))

    threading.Thread(target=serve, daemon=True).start()
    client = UnixEngineHTTP(str(tmp_path / "proxy.sock"), timeout=5)
    assert client.get_json("/version") == VERSION
    server.close()


def test_a_prefetched_version_is_the_engines_answer_taken_once(fake_engine: Any) -> None:
    from olly import enginehttp

    url = f"unix://{fake_engine.server_address}"
    enginehttp.prefetch_version(url)
    engine = Engine(url)
    assert engine.version == "1.41" and fake_engine.paths.count("/version") == 1
    Engine(url)  # nothing prefetched any more: asked again
    assert fake_engine.paths.count("/version") == 2


def test_a_prefetch_that_failed_fails_the_engine_as_asking_would(tmp_path: Path) -> None:
    from olly import enginehttp

    url = f"unix://{tmp_path}/none.sock"
    enginehttp.prefetch_version(url)
    with pytest.raises(OllyError) as info:
        Engine(url)
    assert info.value.reason == "engine-unreachable" and "No such file or directory" in info.value.message


def test_an_old_prefetch_is_not_used(fake_engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from olly import enginehttp

    url = f"unix://{fake_engine.server_address}"
    enginehttp.prefetch_version(url)
    enginehttp._PREFETCHED[url].get()  # answered, then too old to use
    monkeypatch.setattr(enginehttp, "PREFETCH_FOR_S", 0.0)
    Engine(url)
    assert fake_engine.paths.count("/version") == 2  # the prefetch, then asked afresh


def test_a_full_listen_backlog_is_waited_out(tmp_path: Path) -> None:
    """A unix socket with a full backlog refuses a connect at once (EAGAIN); the client asks
    again until the engine has accepted the ones before it, within its timeout."""
    path = str(tmp_path / "slow.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    queued = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(4)]
    for s in queued:
        s.setblocking(False)
        try:
            s.connect(path)
        except BlockingIOError:
            pass  # the backlog is full now
    accepted: list[socket.socket] = []
    done = threading.Event()

    def accept_later() -> None:  # an engine that drains its queue while the client retries
        server.settimeout(0.05)
        while not done.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept_later, daemon=True)
    t.start()
    sock = UnixEngineHTTP(path, timeout=10)._connect()
    done.set()
    t.join(timeout=10)
    assert sock.fileno() >= 0 and accepted
    for s in [sock, *queued, *accepted, server]:
        s.close()


def _serve_once(path: Path, respond: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """A one-connection server on ``path``: ``respond(conn, seen)`` reads what it wants and answers."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    seen: dict[str, Any] = {}

    def run() -> None:
        conn, _ = listener.accept()
        with conn, listener:
            respond(conn, seen)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, seen


def _read_request(conn: socket.socket) -> tuple[bytes, bytes]:
    """The head and the dechunked body of one chunked request."""
    raw = b""
    while not raw.endswith(b"0\r\n\r\n"):
        data = conn.recv(65536)
        assert data, "the client closed before the body's end"
        raw += data
    head, _, body = raw.partition(b"\r\n\r\n")
    out, pos = b"", 0
    while True:
        end = body.index(b"\r\n", pos)
        size = int(body[pos:end], 16)
        if size == 0:
            return head, out
        out += body[end + 2:end + 2 + size]
        pos = end + 2 + size + 2


def test_a_streamed_body_and_a_streamed_answer(tmp_path: Path) -> None:
    """A build's shape: the context sent in chunks as produced, the answer read as it comes,
    JSON values cut at any byte (mid-value, mid-character) by the engine's chunks."""
    items = [{"stream": "Step 1/2 : FROM scratch\n"}, {"stream": "é ünïcode ✓\n"}, {"aux": {"ID": "sha256:" + "b" * 64}}]
    answer = "".join(json.dumps(i, ensure_ascii=False) + "\r\n" for i in items).encode()

    def respond(conn: socket.socket, seen: dict[str, Any]) -> None:
        seen["head"], seen["body"] = _read_request(conn)
        pieces = [answer[i:i + 7] for i in range(0, len(answer), 7)]  # 7 bytes: cuts values and characters
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n")

    thread, seen = _serve_once(tmp_path / "e.sock", respond)
    body = [b"a" * 100, b"", b"b" * 70000, b"c"]
    got = list(UnixEngineHTTP(str(tmp_path / "e.sock")).request(
        "POST", "/v1.41/build", {"q": "0"}, iter(body), {"Content-Type": "application/x-tar"}, timeout=None).json_items())
    thread.join(5)
    assert got == items
    assert seen["body"] == b"".join(body)
    head = seen["head"].decode()
    assert head.startswith("POST /v1.41/build?q=0 HTTP/1.1\r\n") and "Transfer-Encoding: chunked" in head
    assert "Content-Type: application/x-tar" in head


def test_an_answer_before_the_whole_body_is_read(tmp_path: Path) -> None:
    """An engine that refuses a request from its head answers and closes without reading the
    body: the sender's broken pipe is not the error, the engine's answer is."""
    from olly.enginehttp import EngineHTTPError

    def respond(conn: socket.socket, seen: dict[str, Any]) -> None:
        while b"\r\n\r\n" not in conn.recv(4096):
            pass
        conn.sendall(b'HTTP/1.1 400 Bad Request\r\nContent-Length: 29\r\n\r\n{"message": "no such target"}')
        conn.shutdown(socket.SHUT_RDWR)

    thread, _ = _serve_once(tmp_path / "e.sock", respond)
    with pytest.raises(EngineHTTPError) as info:
        UnixEngineHTTP(str(tmp_path / "e.sock")).request("POST", "/build", None, (b"x" * 65536 for _ in range(200)))
    thread.join(5)
    assert (info.value.status_code, info.value.explanation) == (400, "no such target")


def test_a_stream_cut_short_is_an_error(tmp_path: Path) -> None:
    def respond(conn: socket.socket, seen: dict[str, Any]) -> None:
        _read_request(conn)
        conn.sendall(b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{"stream": "a"}\n\r\n8\r\n{"stream')

    thread, _ = _serve_once(tmp_path / "e.sock", respond)
    response = UnixEngineHTTP(str(tmp_path / "e.sock")).request("POST", "/build", None, iter([b"x"]), timeout=None)
    items = response.json_items()
    assert next(items) == {"stream": "a"}
    with pytest.raises(ConnectionError):
        next(items)
    thread.join(5)


def test_tag_and_remove_over_the_socket(fake_engine: Any) -> None:
    engine = Engine(f"unix://{fake_engine.server_address}")
    fake_engine.answer = lambda path: (201, b"", False) if "/tag?" in path else (404, b'{"message": "No such image"}', False)
    engine.tag("sha256:" + "a" * 64, "x/app", "olly-2")
    engine.untag("x/gone:1")  # best effort: a 404 is no error
    assert fake_engine.paths[-2:] == ["/v1.41/images/sha256:" + "a" * 64 + "/tag?repo=x%2Fapp&tag=olly-2&force=1",
                                      "/v1.41/images/x/gone:1?force=0&noprune=1"]
    fake_engine.answer = lambda path: (500, b'{"message": "disk on fire"}', False)
    with pytest.raises(OllyError) as info:
        engine.tag("sha256:" + "a" * 64, "x/app", "olly-2")
    assert info.value.reason == "engine-error" and "disk on fire" in info.value.message


def test_what_the_body_raises_is_the_caller_s_even_a_broken_pipe(tmp_path: Path) -> None:
    """Only the engine closing its side means "it answered early"; the body's own error
    propagates at once (no wait for an answer the engine will not send)."""
    def respond(conn: socket.socket, seen: dict[str, Any]) -> None:
        while conn.recv(65536):
            pass

    def body() -> Iterator[bytes]:
        yield b"x"
        raise BrokenPipeError("the body's own pipe")

    thread, _ = _serve_once(tmp_path / "e.sock", respond)
    with pytest.raises(BrokenPipeError, match="the body's own pipe"):
        UnixEngineHTTP(str(tmp_path / "e.sock"), timeout=5).request("POST", "/build", None, body(), timeout=None)
    thread.join(5)
    assert not thread.is_alive()  # olly closed the connection
