"""Engine calls as plain HTTP over the engine's unix socket: what a no-op run asks, and what
a BuildKit build sends.

Importing the docker SDK (with requests and urllib3) costs about 0.1 s, more than a whole no-op
run may take, and more than olly's own work around a one-file rebuild. A no-op only asks the
engine what it is (``/version``) and about olly's images (``inspect``, or ``/images/json``
filtered by olly's key label); a build posts its context and reads the engine's JSON stream,
then tags the image. Each is one request on a fresh connection to the socket (a unix connect
costs microseconds), ``Connection: close``: the engine (Go's net/http, in dockerd and in
Podman's service alike) frames each answer by Content-Length or chunks, and olly reads exactly
that — it never waits for the engine, or a proxy in between, to close the connection. No
keep-alive or pooling is needed, nor ``http.client``, whose import (ssl, email) costs 15 ms
here. Classic builds (docker-py adds the proxies of the user's docker config as build args,
as the docker CLI does), pushes, pulls and every tcp:// or ssh:// engine keep the SDK (TLS, ssh
tunnels, auth headers).

Errors are raised as ``EngineHTTPError`` (an answer) or ``OSError`` (no answer, or a cut one),
which olly.engine words as it words the SDK's.
"""

from __future__ import annotations

import codecs
import json
import os
import socket
import time
from typing import Any, Iterable, Iterator
from urllib.parse import quote, urlencode

from olly.later import Later


class EngineHTTPError(Exception):
    """The engine answered with an error status; ``explanation`` is its own message ("" for a
    bare status), as the SDK's ``APIError.explanation`` is (so olly.engine._short words both
    alike); the exception's text is then ``HTTP <status>``."""

    def __init__(self, status: int, explanation: str) -> None:
        super().__init__(f"{status}: {explanation}" if explanation else f"HTTP {status}")
        self.status_code = status
        self.explanation = explanation


def _error(status: int, body: bytes) -> EngineHTTPError:
    return EngineHTTPError(status, _explanation(body))


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
            raise _error(status, body)
        return json.loads(body)

    def send_get(self, path: str) -> Sent:
        """Send ``GET path`` now and read the answer later (:meth:`Sent.json`): the engine
        works on it while olly does something else, with no thread (none waits for the GIL)."""
        return Sent(self._send(path))

    def _get(self, url: str) -> tuple[int, bytes]:
        return _receive(self._send(url))

    def call(self, method: str, path: str, params: dict[str, str] | None = None) -> bytes:
        """The body of a bodyless ``method path`` (a tag, a removal); EngineHTTPError for an
        error status."""
        return self.request(method, path, params).read()

    def request(self, method: str, path: str, params: dict[str, str] | None = None,
                body: bytes | Iterable[bytes] = b"", headers: dict[str, str] | None = None,
                timeout: float | None = -1.0) -> Response:
        """Send ``method path`` with ``body`` (bytes, or an iterable sent chunk by chunk as it
        is produced: a build context) and return the answer with its body still to be read;
        EngineHTTPError for an error status. ``timeout`` for reading the answer: None waits as
        long as the engine works (a build), -1 is this client's own."""
        url = path + ("?" + urlencode(params) if params else "")
        sock = self._connect()
        try:
            sock.settimeout(self.timeout if timeout is not None and timeout < 0 else timeout)
            _send_request(sock, method, url, body, headers or {})
            response = Response(sock)
        except BaseException:
            sock.close()
            raise
        if response.status >= 300:
            raise _error(response.status, response.read())
        return response

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
            raise _error(status, body)
        return json.loads(body)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _send_request(sock: socket.socket, method: str, url: str, body: bytes | Iterable[bytes],
                  headers: dict[str, str]) -> None:
    lines = [f"{method} {url} HTTP/1.1", "Host: docker", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    streamed = not isinstance(body, (bytes, bytearray))
    lines.append("Transfer-Encoding: chunked" if streamed else f"Content-Length: {len(body)}")  # type: ignore[arg-type]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if not streamed:
        _send(sock, head + body)  # type: ignore[operator]
        return
    if not _send(sock, head):
        return
    for chunk in body:  # what the body itself raises is the caller's
        if chunk and not _send(sock, b"%x\r\n%b\r\n" % (len(chunk), chunk)):  # an empty chunk would end the body
            return
    _send(sock, b"0\r\n\r\n")


def _send(sock: socket.socket, data: bytes) -> bool:
    """Send ``data``; False if the engine closed its side: it answered before taking the whole
    request (an error), and that answer is what the caller reads next."""
    try:
        sock.sendall(data)
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False


class Response:
    """An answer whose head has been read; its body is read with :meth:`read`, :meth:`chunks`
    or :meth:`json_items` (once), and the connection closed at its end or by :meth:`close`."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock: socket.socket | None = sock
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += self._more()
        head, _, self._rest = buf.partition(b"\r\n\r\n")
        status = _status(head)
        if status is None:
            self.close()
            raise ConnectionError("the engine's answer is not HTTP")
        self.status, self.headers = status, _headers(head)

    def _more(self) -> bytes:
        data = self._sock.recv(1 << 16) if self._sock is not None else b""
        if not data:
            self.close()
            raise ConnectionError("the engine's answer was cut short")
        return data

    def chunks(self) -> Iterator[bytes]:
        """The body as it arrives (dechunked), then the connection closed."""
        try:
            if self.headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                yield from self._dechunked()
            elif b"content-length" in self.headers:
                left = int(self.headers[b"content-length"])
                data, self._rest = self._rest[:left], b""
                while True:
                    if data:
                        yield data
                    left -= len(data)
                    if left <= 0:
                        return
                    data = self._more()[:left]
            else:  # delimited by the connection's end
                if self._rest:
                    yield self._rest
                while self._sock is not None and (data := self._sock.recv(1 << 16)):
                    yield data
        finally:
            self.close()

    def _dechunked(self) -> Iterator[bytes]:
        buf = bytearray(self._rest)
        while True:
            while (end := buf.find(b"\r\n")) < 0:
                buf += self._more()
            size = int(bytes(buf[:end]).split(b";", 1)[0], 16)
            if size == 0:
                return
            while len(buf) < end + 2 + size + 2:
                buf += self._more()
            yield bytes(buf[end + 2:end + 2 + size])
            del buf[:end + 2 + size + 2]

    def read(self) -> bytes:
        return b"".join(self.chunks())

    def json_items(self) -> Iterator[Any]:
        """The JSON values of a streamed body (the engine writes one per line as it goes)."""
        decoder, text = json.JSONDecoder(), ""
        utf8 = codecs.getincrementaldecoder("utf-8")("replace")  # a character may span two chunks
        for chunk in self.chunks():
            text += utf8.decode(chunk)
            while text := text.lstrip():
                try:
                    item, end = decoder.raw_decode(text)
                except ValueError:
                    break  # the rest of this value is still to come
                yield item
                text = text[end:]
        if text.strip():
            raise ConnectionError("the engine's answer was cut short")

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
