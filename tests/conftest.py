"""Shared fixtures. Tests that need the real engine use the ``docker_client`` fixture
and carry ``@pytest.mark.docker``; with CI=true a missing engine fails them.

``OLLY_TEST_ENGINE=podman`` runs them against Podman's Docker-compatible API instead: the
session sets DOCKER_HOST to a Podman service (``support.PodmanService``), which the SDK
client, olly's Engine and every olly subprocess follow."""

from __future__ import annotations

import os
import shutil
import signal
import uuid
from pathlib import Path

import pytest

from registry_server import registry, start_registry  # noqa: F401  (shared fixtures)
from olly.engine import PODMAN, add_params, canonical_ref, engine_kind
from support import PodmanService, engine_under_test
from support import unavailable as _unavailable

DATA = Path(__file__).parent / "data"
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")

# Skipped with OLLY_TEST_ENGINE=podman: tests of Docker's own behaviour rather than olly's,
# and what Podman cannot do. Keys: a module, module::test (every parametrization), or
# module::test[params].
_LINK_OUT = ("Podman limit: it cannot unpack a build context holding a symlink that leaves the context "
             "(l -> ../x: HTTP 500 'invalid symlink'); dockerd unpacks contexts in a chroot")
PODMAN_SKIPS = {
    "test_dockerignore_docker.py": "Docker-only: compares olly's .dockerignore matcher with the docker CLI and "
    "dockerd's classic builder; Podman's builder re-applies .dockerignore with its own (buildah) matcher",
    "test_make_docker.py::test_secret_never_reaches_logs_or_output_when_the_engine_rejects_the_build":
    "Docker-only: it checks dockerd's own words for a build target that is not in the Dockerfile",
    "test_make_docker.py::test_retargeted_symlink_reaches_the_image[../outside-/etc/hostname]": _LINK_OUT,
    "test_make_docker.py::test_retargeted_symlink_reaches_the_image[missing-../x]": _LINK_OUT,
    "test_reach_docker.py::test_forms_this_engine_cannot_build": "Docker-only: which Dockerfile forms "
    "dockerd's builders refuse (Podman's buildah takes some of them)",
    "test_reach_docker.py::test_buildkit_forms_fail_on_the_classic_builder": "Docker-only: dockerd's classic "
    "builder refuses BuildKit forms such as COPY --chmod; Podman's buildah takes them",
    "test_property.py::test_property_on_the_real_engine": _LINK_OUT + "; its edits retarget links to ../outside",
}

_podman = PodmanService()

# A shell runs background jobs with SIGINT ignored (tests/all.sh runs the Podman pass that way),
# and the olly processes tests start would inherit that: Ctrl-C tests need it handled.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# OLLY_TEST_BUILDER=buildkit|classic: every olly of the session (and its subprocesses) defaults to
# that builder through OLLY_BUILDER, the lowest-precedence choice (README: Builders).
if os.environ.get("OLLY_TEST_BUILDER"):
    os.environ["OLLY_BUILDER"] = os.environ["OLLY_TEST_BUILDER"]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Point DOCKER_HOST at Podman before any test runs, if the session has engine tests."""
    if engine_under_test() != "podman":
        return
    for item in session.items:
        keys = (item.path.name, f"{item.path.name}::{item.originalname}", f"{item.path.name}::{item.name}")
        reason = next((PODMAN_SKIPS[k] for k in keys if k in PODMAN_SKIPS), None)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))
    if any(item.get_closest_marker("docker") for item in session.items):
        os.environ["DOCKER_HOST"] = _podman.start()


def pytest_unconfigure(config: pytest.Config) -> None:
    _remove_podman_leftovers()
    _podman.stop()


# Podman removes images one by one slowly (seconds per test): the prefixes of a Podman session's
# tests are removed at its end, in one call of its own API (libpod's batch remove).
_podman_leftovers: list[str] = []


def _remove_podman_leftovers() -> None:
    if not _podman_leftovers:
        return
    import docker

    client = docker.from_env(timeout=120)
    try:
        ids = [image["Id"] for image in client.api.images()
               if any(f"/{prefix}/" in canonical_ref(ref) for prefix in _podman_leftovers
                      for ref in (image.get("RepoTags") or []) + (image.get("RepoDigests") or []))]
        if ids:
            client.api._delete(client.api._url("/libpod/images/remove"), params={"images": ids, "force": "true"})
    except Exception as exc:  # leftovers are tiny and uniquely named: report, do not fail the session
        print(f"\nconftest: could not remove the Podman session's test images: {exc}")
    finally:
        client.close()


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

    wanted = engine_under_test()
    if _podman.error:
        _unavailable(_podman.error)
    try:
        client = docker.from_env(timeout=30)
        client.ping()
        kind = engine_kind(client.version())
    except Exception as exc:  # any failure means "no engine here"
        _unavailable(f"no {wanted} engine reachable: {exc}")
    if kind != wanted:  # never pass a Podman run on Docker, or the other way round
        pytest.fail(f"OLLY_TEST_ENGINE={wanted} but {os.environ.get('DOCKER_HOST') or 'the default socket'} is {kind}")
    if kind == PODMAN:
        # Tests push (impostor images) to loopback registries only, over http as Docker does
        # by default; olly's Engine asks Podman for that itself, so no registries.conf is needed.
        add_params(client.api, "/push", {"tlsVerify": "false"})
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
    if engine_under_test() == PODMAN:
        _podman_leftovers.append(prefix)  # removed in one call when the session ends
        return
    # Several passes: a base image cannot go while an image built on it is still there.
    for _ in range(4):
        # The plain list (images.list() inspects each image: one removed meanwhile, e.g. by a
        # concurrent session on the same engine, would fail the teardown).
        try:
            images = docker_client.api.images()
        except Exception:  # Podman: HTTP 500 when an image goes while it lists (another test's cleanup)
            continue
        left = [image["Id"] for image in images
                # Also registry-qualified tags (127.0.0.1:PORT/<prefix>/...) and digests left by
                # pulls, and Podman's spelling of local ones (docker.io/<prefix>/...).
                if any(f"/{prefix}/" in canonical_ref(ref)
                       for ref in (image.get("RepoTags") or []) + (image.get("RepoDigests") or []))]
        if not left:
            break
        for image_id in left:
            try:
                docker_client.images.remove(image_id, force=True)
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
