"""Per-platform engines ([engines] / --engine): each platform's build goes to its engine.

Two endpoints to the one engine here: the default unix socket and a TCP listener on
127.0.0.1 that forwards to it and counts the API requests it carries, so the routing is
observable. (ssh:// engines go through the docker SDK's ssh support; not exercised here.)"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest

from olly import api
from support import EngineProxy
from test_multiplatform_docker import arm64_busybox, multi  # noqa: F401  (fixture)

pytestmark = pytest.mark.docker

@pytest.fixture
def forwarder():
    """tcp://127.0.0.1:PORT -> the engine under test's unix socket, counting `/build` requests."""
    fwd = EngineProxy()
    yield fwd
    fwd.cut()


def test_each_platform_builds_on_its_engine(tmp_path: Path, docker_client, busybox: Path, arm64_busybox: Path,
                                           unique_prefix: str, registry, forwarder: EngineProxy) -> None:
    root = multi(tmp_path, busybox, arm64_busybox, unique_prefix, registry.host)
    build = root / "BUILD.toml"
    text = build.read_text().replace("[images.base]\n", '[images.base]\nplatforms = ["linux/amd64", "linux/arm64"]\n')
    text = text.replace("[images.app]\n", '[images.app]\nplatforms = ["linux/amd64", "linux/arm64"]\n')
    build.write_text(text + f'\n[engines]\n"linux/arm64" = "tcp://127.0.0.1:{forwarder.port}"\n')
    first = {o.label: o for o in api.make(root, ["app"]).outcomes}
    assert first["app"].status == "built", first["app"].reason
    # Every build the forwarder carried was an arm64 build, and both arm64 images went through it.
    # (base's arm64 build may run twice: the classic builder's cache can hand back an amd64 layer)
    builds = len(forwarder.builds)
    assert builds >= 2 and all(b"platform=linux%2Farm64" in b for b in forwarder.builds), forwarder.builds
    # Recorded per engine: a second run checks the arm64 images on the arm64 engine and builds nothing.
    before = forwarder.requests
    again = {o.label: o for o in api.make(root, ["app"]).outcomes}
    assert {o.status for o in again.values()} == {"cached"}
    assert forwarder.requests > before and len(forwarder.builds) == builds
    # --engine on the command line beats BUILD.toml: route arm64 to the default socket.
    forced = api.make(root, ["app"], force=["app"], engines={"linux/arm64": f"unix://{forwarder.target}"})
    assert forced.outcomes[-1].status == "built" and len(forwarder.builds) == builds


def test_bad_engine_routes_are_located_errors(tmp_path: Path) -> None:
    from olly.config import load_workspace
    from olly.errors import OllyError

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "Dockerfile").write_text("FROM scratch\n")
    for routes, needle in (('"linux/arm64" = "http://x"', "invalid engine endpoint"),
                           ('"arm64" = "tcp://x:2375"', "invalid platform")):
        (tmp_path / "BUILD.toml").write_text(f'[images.a]\nrepository = "x/a"\n[engines]\n{routes}\n')
        with pytest.raises(OllyError) as exc:
            load_workspace(tmp_path)
        assert needle in exc.value.message and "BUILD.toml:4" in str(exc.value.location)


@pytest.fixture
def sshd(tmp_path: Path, monkeypatch):
    """An sshd on 127.0.0.1 (Debian openssh-server) that lets this test's key in as root,
    and a HOME whose ~/.ssh knows it: ssh://root@127.0.0.1:PORT reaches this machine's
    engine through `docker system dial-stdio`, as a remote builder would."""
    import shutil
    import subprocess
    import time

    from support import unavailable

    sshd_bin = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd_bin).exists() or shutil.which("ssh-keygen") is None:
        unavailable("no sshd (apt-get install openssh-server)")
    try:
        import paramiko  # noqa: F401  (the docker SDK's ssh transport)
    except ImportError:
        unavailable("paramiko is not installed (pip install -e '.[test]')")
    d = tmp_path / "ssh"
    (d / "home" / ".ssh").mkdir(parents=True)
    for name in ("host", "id"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "id.pub").read_text())
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", "/dev/null", "-p", str(port), "-o", "ListenAddress=127.0.0.1",
                             "-o", f"HostKey={d / 'host'}", "-o", f"AuthorizedKeysFile={d / 'authorized_keys'}",
                             "-o", "PermitRootLogin=prohibit-password", "-o", "StrictModes=no", "-o", "UsePAM=no",
                             "-o", f"PidFile={d / 'pid'}"], stderr=open(d / "sshd.log", "wb"), start_new_session=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.05)
    host_key = " ".join((d / "host.pub").read_text().split()[:2])
    (d / "home" / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key}\n")
    (d / "home" / ".ssh" / "config").write_text(f"Host 127.0.0.1\n  IdentityFile {d / 'id'}\n")
    monkeypatch.setenv("HOME", str(d / "home"))
    yield f"ssh://root@127.0.0.1:{port}", d / "sshd.log"
    os.killpg(proc.pid, signal.SIGTERM)  # sshd and its per-connection children
    proc.wait(timeout=10)


def test_a_platform_built_over_ssh(tmp_path: Path, docker_client, busybox: Path, arm64_busybox: Path,
                                   unique_prefix: str, registry, sshd) -> None:
    url, log = sshd
    root = multi(tmp_path, busybox, arm64_busybox, unique_prefix, registry.host)
    result = {o.label: o for o in api.make(root, ["app"], registry="test", push=True,
                                           engines={"linux/arm64": url}).outcomes}
    assert result["app"].status == "built", result["app"].reason
    assert [v.platform for v in result["app"].variants] == ["linux/amd64", "linux/arm64"]
    assert "Accepted publickey for root" in log.read_text()  # the arm64 builds really went over ssh
