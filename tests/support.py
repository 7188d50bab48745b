"""Helpers shared by conftest and test servers (kept apart to avoid import cycles)."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ENGINES = ("docker", "podman")
PODMAN_START_TIMEOUT = 60.0


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(what: str) -> None:
    """A missing service: skip locally, fail under CI (a missing engine is never a skip there)."""
    if in_ci():
        pytest.fail(f"{what} (CI=true: this is a failure, not a skip)")
    pytest.skip(what)


def engine_under_test() -> str:
    """The engine the ``docker``-marked tests run against: ``OLLY_TEST_ENGINE`` = docker
    (default: DOCKER_HOST or the default socket) or podman."""
    name = os.environ.get("OLLY_TEST_ENGINE", "docker").strip().lower() or "docker"
    if name not in ENGINES:
        raise pytest.UsageError(f"OLLY_TEST_ENGINE={name!r}: use one of {', '.join(ENGINES)}")
    return name


def _answers(host: str) -> bool:
    import docker

    try:
        return bool(docker.APIClient(base_url=host, version="auto", timeout=2).ping())
    except Exception:  # not up (yet)
        return False


def containers_conf() -> str:
    """Podman configuration for test containers (``docker_client.containers.run``): rootful
    Podman raises a container's nofile/nproc limits to 1048576/4194304, which fails ("error
    setting rlimit type 7: operation not permitted") where root lacks CAP_SYS_RESOURCE (CI
    sandboxes). Ask for at most what this process has; Podman itself runs with nproc 32768."""
    limits = []
    for name, which in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        hard = resource.getrlimit(which)[1]
        value = 32768 if hard == resource.RLIM_INFINITY else min(hard, 32768)
        limits.append(f'"{name}={value}:{value}"')
    return f"[containers]\ndefault_ulimits = [{', '.join(limits)}]\n"


class PodmanService:
    """The Podman API socket for an ``OLLY_TEST_ENGINE=podman`` session: the one named by
    ``OLLY_TEST_PODMAN_HOST`` (`.ci/run` starts it), else a private ``podman system service``
    on a socket in a temporary directory, stopped when the session ends."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.dir: Path | None = None
        self.error: str | None = None  # why no service answers; the docker_client fixture reports it

    def start(self) -> str:
        """Start (or find) the service and return its DOCKER_HOST."""
        given = os.environ.get("OLLY_TEST_PODMAN_HOST")
        if given:
            return given
        binary = shutil.which("podman")
        self.dir = Path(tempfile.mkdtemp(prefix="olly-test-podman-"))
        host = f"unix://{self.dir}/podman.sock"
        if binary is None:
            self.error = "podman is not installed (apt-get install podman)"
            return host  # a socket nobody serves: nothing falls back to another engine
        conf = self.dir / "containers.conf"
        conf.write_text(containers_conf())
        log = open(self.dir / "service.log", "wb")
        # --time=0: no idle timeout, the session decides when it ends.
        self.process = subprocess.Popen([binary, "system", "service", "--time=0", host], stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                        env={**os.environ, "CONTAINERS_CONF": str(conf)})
        deadline = time.monotonic() + PODMAN_START_TIMEOUT
        while time.monotonic() < deadline and self.process.poll() is None and not _answers(host):
            time.sleep(0.1)
        if not _answers(host):
            tail = (self.dir / "service.log").read_text(errors="replace")[-500:]
            self.error = f"podman system service did not answer on {host} within {PODMAN_START_TIMEOUT:.0f}s: {tail}"
        return host

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


class EngineProxy:
    """A listener that forwards each connection to the engine's unix socket (DOCKER_HOST's, else
    the default): tests count what olly sends through it (``requests``, ``builds``: the request
    lines of ``/build`` calls) or cut the engine off mid-run (``cut``). ``path``: listen on that
    unix socket; None: on tcp://127.0.0.1:``port``."""

    def __init__(self, path: Path | None = None) -> None:
        import socket
        import threading

        host = os.environ.get("DOCKER_HOST", "")
        self.target = host[len("unix://"):] if host.startswith("unix://") else "/var/run/docker.sock"
        if path is None:
            self.server = socket.socket()
            self.server.bind(("127.0.0.1", 0))
            self.port = self.server.getsockname()[1]
        else:
            self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.server.bind(str(path))
        self.server.listen(16)
        self.conns: list[socket.socket] = []
        self.builds: list[bytes] = []
        self.requests = 0
        self.alive = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while self.alive:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.target)
            self.conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src, dst, inbound: bool) -> None:  # noqa: ANN001
        import socket

        try:
            while data := src.recv(65536):
                if inbound and data[:5] in (b"POST ", b"GET /", b"HEAD ", b"DELET"):
                    self.requests += 1
                    first = data.split(b"\r\n", 1)[0]
                    if b"/build?" in first:
                        self.builds.append(first)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        """Engine down: refuse new connections and break every open one."""
        import socket

        self.alive = False
        for s in [self.server, *self.conns]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def run_output(client, ref: str, command: list[str], within_s: float = 120.0) -> bytes:
    """Run ``command`` in a container of ``ref`` (no network) and return its stdout. Polls the
    container's state with a deadline instead of the SDK's ``wait`` (no timeout): Podman 4.3's
    compat ``wait`` can miss a container that already exited, and a CI run would hang on it."""
    container = client.containers.create(ref, command, network_mode="none")
    try:
        container.start()
        deadline = time.monotonic() + within_s
        while True:
            container.reload()
            if container.status in ("exited", "dead", "stopped"):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"{ref}: {command} still {container.status} after {within_s:.0f} s")
            time.sleep(0.05)
        code = container.attrs.get("State", {}).get("ExitCode")
        out = container.logs(stdout=True, stderr=False)
        if code:
            raise AssertionError(f"{ref}: {command} exited {code}: {container.logs(stdout=False, stderr=True)!r}")
        return bytes(out)
    finally:
        container.remove(force=True)

