"""Shared fixtures. Tests that need the real engine use the ``docker_client`` fixture
and carry ``@pytest.mark.docker``; with CI=true a missing engine fails them."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from registry_server import registry, start_registry  # noqa: F401  (shared fixtures)
from support import unavailable as _unavailable

DATA = Path(__file__).parent / "data"
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")


@pytest.fixture(autouse=True)
def forget_secrets():
    """Secret values registered by one test (olly.scrub is process-wide) never mask the next test's text."""
    yield
    from olly import scrub

    scrub.clear()


@pytest.fixture(scope="session")
def docker_client():
    """A docker SDK client for a live engine (skip locally, fail under CI when absent)."""
    import docker

    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:  # any failure means "no engine here"
        _unavailable(f"no Docker engine reachable: {exc}")
    return client


@pytest.fixture(scope="session")
def busybox() -> Path:
    """Path of a static busybox binary (Debian busybox-static)."""
    for cand in BUSYBOX_CANDIDATES:
        if Path(cand).is_file():
            return Path(cand)
    _unavailable("no static busybox (apt-get install busybox-static)")
    raise AssertionError("unreachable")


@pytest.fixture
def unique_prefix(docker_client) -> str:
    """A repository prefix unique to this test; images under it are removed afterwards."""
    prefix = f"olly-test-{uuid.uuid4().hex[:10]}"
    yield prefix
    # Several passes: a base image cannot go while an image built on it is still there.
    for _ in range(4):
        left = [image for image in docker_client.images.list()
                # Also registry-qualified tags (127.0.0.1:PORT/<prefix>/...) left by pulls.
                if any(tag.startswith(prefix + "/") or f"/{prefix}/" in tag for tag in image.tags)]
        if not left:
            break
        for image in left:
            try:
                docker_client.images.remove(image.id, force=True)
            except Exception:
                pass  # retried next pass; a leftover image cannot break another test


def copy_workspace(name: str, dest: Path, busybox_path: Path | None = None, prefix: str | None = None) -> Path:
    """Copy fixture workspace ``tests/data/<name>`` to ``dest``.

    ``busybox`` placeholders (empty files named ``busybox``) are replaced by the real
    binary; ``olly-fixture/`` repositories in BUILD.toml get ``prefix``.
    """
    root = dest / name
    shutil.copytree(DATA / name, root, symlinks=True)
    if busybox_path is not None:
        for placeholder in root.rglob("busybox"):
            shutil.copyfile(busybox_path, placeholder)
            placeholder.chmod(0o755)
    if prefix is not None:
        build = root / "BUILD.toml"
        build.write_text(build.read_text().replace("olly-fixture/", prefix + "/"))
    return root
