"""A total deadline for one HTTP request made with ``requests``.

requests' timeout bounds each socket read; nothing bounds a whole request, so a server
that drips one byte every few seconds holds a client forever. A timer per request shuts
the request's socket down when the deadline passes, which wakes the blocked read with EOF
(the caller then reports a timeout). The socket is found through the urllib3 connection
class, which reports it to the deadline of the request running in its thread: urllib3 does
all of a request's I/O in the calling thread. Not bounded: a hanging DNS lookup (no socket
exists yet) and a TCP connect (bounded by requests' connect timeout).
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import urllib3.connection
import urllib3.connectionpool
from requests.adapters import HTTPAdapter

_active = threading.local()


class Deadline:
    """The total deadline of one HTTP request: ``with Deadline(s): session.request(...)``;
    ``expired`` says whether it cut the request off."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._done = False
        self._sock: socket.socket | None = None  # our dup: shutting it down ends the connection
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Deadline:
        _active.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        _active.deadline = None
        with self._lock:
            self._done = True
            if self._sock is not None:
                self._sock.close()  # the dup only; the connection stays usable for keep-alive

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            if self._done:
                return
            try:
                # A dup of the fd, not the object: TLS wrapping detaches the raw socket object.
                dup = socket.fromfd(sock.fileno(), sock.family, sock.type)
            except OSError:
                return
            if self._sock is not None:
                self._sock.close()
            self._sock = dup
            if self.expired:
                self._shutdown()

    def _expire(self) -> None:
        with self._lock:
            if not self._done:
                self.expired = True
                self._shutdown()

    def _shutdown(self) -> None:
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed: nothing left to wait for


def _watch(sock: socket.socket | None) -> None:
    deadline = getattr(_active, "deadline", None)
    if deadline is not None and sock is not None:
        deadline.watch(sock)


class _Watched:
    """Mixin for urllib3 connections: report each socket to the running request's deadline."""

    sock: socket.socket | None

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # type: ignore[misc]
        _watch(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> Any:
        _watch(self.sock)  # a kept-alive connection: no new socket, still this request's
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_Watched, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_Watched, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """Mount on a ``requests.Session`` so its requests can be cut off by a :class:`Deadline`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        if hasattr(manager, "pool_classes_by_scheme"):
            manager.pool_classes_by_scheme = _POOLS
        return manager
