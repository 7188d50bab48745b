"""The few read-only engine calls a no-op run makes, as plain HTTP over the engine's unix socket.

Importing the docker SDK (with requests, urllib3 and paramiko) costs more than a whole no-op
run may take, and a no-op only asks the engine what it is (``/version``) and about olly's
images (``inspect``, or ``/images/json`` filtered by olly's key label). Those are one GET each,
on a fresh connection to the socket (a unix connect costs microseconds), ``Connection: close``:
the engine (Go's net/http, in dockerd and in Podman's service alike) frames each answer by
Content-Length or chunks, and olly reads exactly that — it never waits for the engine, or a
proxy in between, to close the connection. No keep-alive or pooling is needed, nor
``http.client``, whose import (ssl, email) costs 15 ms here. Builds, pushes, pulls and every
tcp:// or ssh:// engine keep the SDK (TLS, ssh tunnels, auth headers, streaming).

Errors are raised as ``EngineHTTPError`` (an answer) or ``OSError`` (no answer, or a cut one),
which olly.engine words as it words the SDK's.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any
from urllib.parse import quote, urlencode

from olly.later import Later


class EngineHTTPError(Exception):
    """The engine answered with an error status; ``explanation`` is its own message, as the
    SDK's ``APIError.explanation`` is (so olly.engine._short words both alike)."""

    def __init__(self, status: int, explanation: str) -> None:
        super().__init__(f"{status}: {explanation}")
        self.status_code = status
        self.explanation = explanation


def socket_path(url: str) -> str | None:
    """The socket path of a ``unix:///path`` engine URL this module can talk to, else None:
    tcp:// and ssh:// engines, and TLS settings (DOCKER_TLS_VERIFY), are the SDK's."""
    if not url.startswith("unix:///") or os.environ.get("DOCKER_TLS_VERIFY"):
        return None
    return url[len("unix://"):]


DEFAULT_ENDPOINT = "unix:///var/run/docker.sock"


def default_endpoint() -> str:
    """The engine DOCKER_HOST names, else the default socket (olly.engine.endpoint)."""
    return os.environ.get("DOCKER_HOST") or DEFAULT_ENDPOINT


class UnixEngineHTTP:
    """GET requests to one engine socket; safe from any thread (a connection per request)."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.path, self.timeout = path, timeout

    def get_json(self, path: str, params: dict[str, str] | None = None) -> Any:
        """The decoded JSON body of ``GET path``; EngineHTTPError for an error status."""
        url = path + ("?" + urlencode(params) if params else "")
        status, body = self._get(url)
        if status >= 300:  # olly's references never need a redirect (which Go's router sends for `//`)
            raise EngineHTTPError(status, _explanation(body) or f"HTTP {status}")
        return json.loads(body)

    def send_get(self, path: str) -> Sent:
        """Send ``GET path`` now and read the answer later (:meth:`Sent.json`): the engine
        works on it while olly does something else, with no thread (none waits for the GIL)."""
        return Sent(self._send(path))

    def _get(self, url: str) -> tuple[int, bytes]:
        return _receive(self._send(url))

    def _send(self, url: str) -> socket.socket:
        request = f"GET {url} HTTP/1.1\r\nHost: docker\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
        sock = self._connect()
        try:
            sock.sendall(request.encode())
        except BaseException:
            sock.close()
            raise
        return sock

    def _connect(self) -> socket.socket:
        """A connection to the socket. A unix socket whose listen backlog is full refuses at
        once (EAGAIN: sockets with a timeout do not block in connect) rather than queueing the
        caller, as when a plan sends its inspects together: asked again until the timeout."""
        deadline = time.monotonic() + self.timeout
        pause = 0.001
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(self.timeout)
                sock.connect(self.path)
                return sock
            except BlockingIOError:
                sock.close()
                if time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)  # the engine accepts what is queued within milliseconds
                pause = min(pause * 2, 0.05)
            except BaseException:
                sock.close()
                raise


class Sent:
    """A GET sent, its answer not read yet: :meth:`json` reads it (once); :meth:`close` drops it."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock: socket.socket | None = sock

    def json(self) -> Any:
        sock, self._sock = self._sock, None
        if sock is None:
            raise RuntimeError("answer already read")
        status, body = _receive(sock)
        if status >= 300:
            raise EngineHTTPError(status, _explanation(body) or f"HTTP {status}")
        return json.loads(body)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _receive(sock: socket.socket) -> tuple[int, bytes]:
    """Read one response from ``sock``, then close it."""
    with sock:
        raw = b""
        while data := sock.recv(1 << 16):
            raw += data
            done = complete_response(raw)
            if done is not None:
                return done
    return parse_response(raw)  # the engine closed the connection: all there is


def complete_response(raw: bytes) -> tuple[int, bytes] | None:
    """Status and body once ``raw`` holds a whole response framed by Content-Length or
    chunks; None while more is to come (or when only the connection's end delimits it)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    status = _status(head) if sep else None
    if status is None:
        return None  # not (yet) a response: read on; at the end parse_response says what is wrong
    headers = _headers(head)
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        try:
            return status, _dechunk(body)
        except ConnectionError:
            return None
    if b"content-length" in headers and len(body) >= int(headers[b"content-length"]):
        return status, body[:int(headers[b"content-length"])]
    return None


def parse_response(raw: bytes) -> tuple[int, bytes]:
    """Status and body of a whole HTTP/1.x response; ConnectionError if it is cut short."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    status = _status(head) if sep else None
    if status is None:
        raise ConnectionError("the engine's answer was cut short or is not HTTP")
    headers = _headers(head)
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = _dechunk(body)
    elif b"content-length" in headers:
        length = int(headers[b"content-length"])
        if len(body) < length:
            raise ConnectionError("the engine's answer was cut short")
        body = body[:length]
    return status, body


def _status(head: bytes) -> int | None:
    parts = head.split(b"\r\n", 1)[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return None
    return int(parts[1])


def _headers(head: bytes) -> dict[bytes, bytes]:
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return headers


def _dechunk(body: bytes) -> bytes:
    out, pos = [], 0
    while True:
        end = body.find(b"\r\n", pos)
        if end < 0:
            raise ConnectionError("the engine's answer was cut short")
        size = int(body[pos:end].split(b";", 1)[0], 16)
        if size == 0:
            return b"".join(out)
        if end + 2 + size > len(body):
            raise ConnectionError("the engine's answer was cut short")
        out.append(body[end + 2:end + 2 + size])
        pos = end + 2 + size + 2


def _explanation(body: bytes) -> str:
    """The engine's error text: ``{"message": "…"}`` (Docker and Podman), else the body."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()
    if isinstance(data, dict) and data.get("message"):
        return str(data["message"])
    return body.decode("utf-8", "replace").strip()


def image_path(version: str, ref: str) -> str:
    """``/v<version>/images/<ref>/json``, the reference quoted as the SDK quotes it."""
    return f"/v{version}/images/{quote(ref, safe='/:')}/json"


_PREFETCHED: dict[str, Later] = {}
PREFETCH_FOR_S = 5.0  # a prefetched answer older than this (a long-lived process) is asked again


def prefetch_version(url: str | None = None) -> None:
    """Ask the engine at ``url`` (default: DOCKER_HOST's) for ``/version`` on a thread, now.
    dockerd takes about 10 ms to answer (it runs runc and containerd for their versions);
    asked before olly imports its modules, the answer is there when the Engine is made. The
    same question, asked a few milliseconds earlier in the same run: nothing can be staler."""
    url = url or default_endpoint()
    path = socket_path(url)
    if path is not None and url not in _PREFETCHED:
        _PREFETCHED[url] = Later(UnixEngineHTTP(path).get_json, "/version", name="olly-engine-version")


def version_of(url: str, client: UnixEngineHTTP) -> Any:
    """``/version`` of the engine at ``url``: the prefetched answer if there is one (taken
    once), else asked now."""
    fetch = _PREFETCHED.pop(url, None)
    if fetch is not None and time.monotonic() - fetch.asked < PREFETCH_FOR_S:
        return fetch.get()
    return client.get_json("/version")
