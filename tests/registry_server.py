"""A real OCI registry (Debian ``docker-registry``, distribution 2.8) for tests.

``RegistryServer`` runs ``docker-registry serve`` on 127.0.0.1 only, on a free port,
with filesystem storage under a temporary directory and deletion enabled; optionally
with htpasswd (bcrypt) auth. It can be stopped and started again on the same port
and storage. The ``registry`` fixture is one session-wide server without auth;
``start_registry`` starts a private one (stop it yourself, or use it as a context
manager). When ``docker-registry`` is missing the tests skip, or fail with CI=true.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from support import unavailable as _unavailable

BINARY = "docker-registry"
START_TIMEOUT = 15.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _htpasswd_line(user: str, password: str) -> str:
    try:
        import bcrypt
    except ImportError:
        _unavailable("bcrypt is not installed (needed for an htpasswd registry): pip install bcrypt")
        raise
    # Cost 4 is the minimum Go's bcrypt accepts; it keeps each authenticated request fast.
    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"


class RegistryServer:
    """A ``docker-registry serve`` process listening on ``self.host`` ("127.0.0.1:PORT")."""

    def __init__(self, tmp_dir: Path, *, htpasswd: tuple[str, str] | None = None) -> None:
        self.dir = Path(tmp_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.htpasswd = htpasswd
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "registry.log"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        auth = ""
        if self.htpasswd is not None:
            htpasswd_file = self.dir / "htpasswd"
            htpasswd_file.write_text(_htpasswd_line(*self.htpasswd))
            auth = f"auth:\n  htpasswd:\n    realm: olly-test\n    path: {htpasswd_file}\n"
        config = self.dir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.dir / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n  secret: olly-test-secret\n"
            + auth
        )
        return config

    def start(self) -> RegistryServer:
        """Start (or restart, keeping port and storage) and wait until ``/v2/`` answers."""
        if shutil.which(BINARY) is None:
            _unavailable(f"{BINARY} is not installed (apt-get install docker-registry)")
        if self.process is not None and self.process.poll() is None:
            return self
        attempts = 1 if self.port else 3  # a fresh free port may be taken before we bind it
        for attempt in range(attempts):
            if not self.port or attempt:
                self.port = _free_port()
            config = self._write_config()
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen([BINARY, "serve", str(config)], stdout=log,
                                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            if self._wait_ready():
                return self
        tail = self.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{BINARY} did not start on {self.host}:\n{tail}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False  # exited (e.g. address in use)
            try:
                # Any HTTP answer (200, or 401 with auth) means it is serving.
                requests.get(f"http://{self.host}/v2/", timeout=1)
                return True
            except requests.RequestException:
                time.sleep(0.02)
        self.stop()
        return False

    def stop(self) -> None:
        """Terminate the process and wait for it (idempotent)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_registry(tmp_path: Path, htpasswd: tuple[str, str] | None = None) -> RegistryServer:
    """Start a private registry under ``tmp_path``; the caller stops it."""
    return RegistryServer(Path(tmp_path) / "registry", htpasswd=htpasswd).start()


_session_server: RegistryServer | None = None


class ExternalRegistry:
    """The registry `.ci/run` started (OLLY_TEST_REGISTRY=host:port): used, never stopped."""

    def __init__(self, host: str) -> None:
        self.host = host

    def start(self) -> "ExternalRegistry":
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                requests.get(f"http://{self.host}/v2/", timeout=1)
                return self
            except requests.RequestException:
                time.sleep(0.05)
        _unavailable(f"OLLY_TEST_REGISTRY={self.host} does not answer")
        return self

    def stop(self) -> None:
        pass


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory):
    """One registry (no auth, deletion enabled) shared by the whole session: the one `.ci/run`
    started (OLLY_TEST_REGISTRY), else a private one on a free 127.0.0.1 port."""
    global _session_server
    external = os.environ.get("OLLY_TEST_REGISTRY")
    if external:
        yield ExternalRegistry(external).start()
        return
    if _session_server is None:  # shared even if this fixture is imported in several places
        _session_server = RegistryServer(tmp_path_factory.mktemp("registry"))
    server = _session_server.start()
    yield server
    server.stop()


AUTH_USER, AUTH_PASSWORD = "olly", "s3cret-Pa55word-xyz"


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory):
    """A private registry that needs basic auth (htpasswd: AUTH_USER / AUTH_PASSWORD)."""
    server = start_registry(tmp_path_factory.mktemp("auth"), htpasswd=(AUTH_USER, AUTH_PASSWORD))
    yield server
    server.stop()
