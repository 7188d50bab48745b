"""olly.dockersdk: the docker SDK without paramiko for unix and tcp engines, with it for ssh://."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
from olly import dockersdk
docker = dockersdk.load()
assert "paramiko" not in sys.modules, "paramiko loaded for a unix engine"
assert "paramiko" not in sys.modules or sys.modules["paramiko"] is not None
client = docker.APIClient(base_url="unix:///nonexistent.sock", version="1.41")  # no connection is made
assert type(client._custom_adapter).__name__ == "UnixHTTPAdapter"
from docker.auth import resolve_repository_name  # what olly.credentials imports afterwards
docker = dockersdk.load(ssh=True)  # an ssh:// engine turns up later ([engines])
assert sys.modules["paramiko"] is not None
from docker.transport.sshconn import SSHHTTPAdapter
assert docker.api.client.SSHHTTPAdapter is SSHHTTPAdapter
print("ok")
"""


def test_paramiko_is_loaded_only_for_ssh_engines() -> None:
    proc = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_an_ssh_engine_first_loads_everything() -> None:
    code = ("import sys; from olly import dockersdk; d = dockersdk.load(ssh=True); "
            "print('paramiko' in sys.modules and d.api.client.SSHHTTPAdapter is not None)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "True", proc.stderr
