"""The docker SDK, imported without its ssh transport unless an ssh:// engine needs it.

``import docker`` loads paramiko (and invoke) for the ssh:// transport: 0.1 s of the 0.2 s the
import takes here, paid before every build even on a unix socket. docker-py treats paramiko as
optional (the ``docker[ssh]`` extra): without it, ``docker.transport`` simply has no
``SSHHTTPAdapter``. So olly imports the SDK with paramiko hidden, unless the engine is ssh://
or paramiko is already loaded, and adds the ssh transport when an ssh:// engine turns up later
(``[engines]`` routes one platform to a remote machine): the adapter is then imported and
given to the two modules that look it up by name.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

_LOCK = threading.Lock()  # build threads may be first to need the SDK


def load(ssh: bool = False) -> Any:
    """The ``docker`` package; with ``ssh``, able to talk to ssh:// engines."""
    with _LOCK:
        if "docker" not in sys.modules:
            _import_without_paramiko(ssh)
        import docker

        if ssh:
            _add_ssh_transport()
        return docker


def _import_without_paramiko(ssh: bool) -> None:
    hide = not ssh and "paramiko" not in sys.modules
    if hide:
        sys.modules["paramiko"] = None  # type: ignore[assignment]  # import paramiko -> ImportError
    try:
        import docker  # noqa: F401
    finally:
        if hide and sys.modules.get("paramiko", False) is None:
            del sys.modules["paramiko"]


def _add_ssh_transport() -> None:
    import docker.api.client
    import docker.transport

    if getattr(docker.api.client, "SSHHTTPAdapter", None) is not None:
        return
    sys.modules.pop("docker.transport.sshconn", None)  # its failed import left nothing usable
    from docker.transport.sshconn import SSHHTTPAdapter  # raises ImportError without paramiko, as docker-py would

    docker.transport.SSHHTTPAdapter = SSHHTTPAdapter  # type: ignore[attr-defined]
    docker.api.client.SSHHTTPAdapter = SSHHTTPAdapter  # type: ignore[attr-defined]
