"""olly.credentials: docker config lookup, and credential helpers run under a deadline
(issue #7, item 10). Helpers are small shell scripts put first on PATH; registries are
the ``Stub`` of test_registry (NOT a registry) or a real htpasswd ``docker-registry``."""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest

from olly import credentials
from olly.credentials import INDEX_URL, Credentials
from olly.errors import OllyError
from olly.registry import Endpoint, RegistryClient
from registry_server import AUTH_PASSWORD as PASSWORD, AUTH_USER as USER, auth_registry  # noqa: F401  (fixture)
from test_registry import Stub, assert_clean, push_image, repo

HOST = "registry.example.test:5000"


@pytest.fixture(autouse=True)
def docker_config(tmp_path, monkeypatch) -> Path:
    """DOCKER_CONFIG points at an empty dir; no test sees the real ~/.docker."""
    conf = tmp_path / "docker-config"
    conf.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(conf))
    monkeypatch.delenv(credentials.TIMEOUT_ENV, raising=False)
    return conf


@pytest.fixture
def helpers(tmp_path, monkeypatch) -> Callable[[str, str], Path]:
    """``make(name, body)`` writes ``docker-credential-<name>`` (a /bin/sh script) first on PATH."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")

    def make(name: str, body: str) -> Path:
        path = bindir / f"docker-credential-{name}"
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
        return path

    return make


def write_config(conf: Path, config: dict[str, Any]) -> None:
    (conf / "config.json").write_text(json.dumps(config))


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def answer_helper(user: str, secret: str, record: Path) -> str:
    """A helper body that records what it was asked and answers with credentials."""
    return (f'cat > "{record}"\n'
            f"printf '%s' '{json.dumps({'ServerURL': 'x', 'Username': user, 'Secret': secret})}'\n")


def call_within(seconds: float, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a thread; fail (instead of hanging the suite) if it has not returned
    within ``seconds``. Returns its result or the exception it raised."""
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(fn())
        except BaseException as exc:  # handed back to the test
            box.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds}s: a hung helper hangs olly"
    return box[0]


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")  # a zombie is dead, only not yet reaped by init


# -- the config file ---------------------------------------------------------------

def test_auths_entries(docker_config):
    write_config(docker_config, {"auths": {
        HOST: {"auth": b64(f"{USER}:{PASSWORD}")},
        "https://other.test/v1/": {"username": "u", "password": "p:w"},  # key as an URL, fields
        "tok.test": {"auth": b64("u2:"), "identitytoken": "refresh-123"},
        INDEX_URL: {"auth": b64("hubuser:hubpass")},
    }})
    assert credentials.resolve(HOST) == Credentials(USER, PASSWORD)
    assert credentials.resolve("other.test") == Credentials("u", "p:w")
    assert credentials.resolve("tok.test") == Credentials("u2", "", "refresh-123")
    for hub in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        assert credentials.resolve(hub) == Credentials("hubuser", "hubpass")
    assert credentials.resolve("nobody.test") == Credentials()
    assert credentials.auth_config(HOST) == {"username": USER, "password": PASSWORD, "serveraddress": HOST}
    assert credentials.auth_config("tok.test") == {"identitytoken": "refresh-123", "serveraddress": "tok.test"}
    assert credentials.auth_config("docker.io")["serveraddress"] == INDEX_URL
    assert credentials.auth_config("nobody.test") == {}


def test_missing_config_is_anonymous(docker_config):
    assert not credentials.resolve(HOST)
    assert credentials.auth_config(HOST) == {}


@pytest.mark.parametrize("text", ['{"auths": {"h": {"auth": "' + PASSWORD + '"', "[1, 2]"])
def test_broken_config_is_one_line_without_its_content(docker_config, text):
    (docker_config / "config.json").write_text(text)
    with pytest.raises(OllyError) as exc:
        credentials.resolve(HOST)
    assert exc.value.reason == "registry-denied" and exc.value.exit_code == 3
    assert str(docker_config / "config.json") in exc.value.message
    assert_clean(exc.value, PASSWORD)


def test_auth_that_is_not_base64_user_password(docker_config):
    write_config(docker_config, {"auths": {HOST: {"auth": "!!" + PASSWORD}}})
    with pytest.raises(OllyError) as exc:
        credentials.resolve(HOST)
    assert exc.value.reason == "registry-denied" and "not base64 'user:password'" in exc.value.message
    assert_clean(exc.value, PASSWORD)


# -- helpers -----------------------------------------------------------------------

def test_helper_answers_per_host_and_for_docker_hub(docker_config, helpers, tmp_path):
    asked = tmp_path / "asked"
    helpers("store", answer_helper(USER, PASSWORD, asked))
    helpers("hubhelper", f'cat > "{asked}"\nprintf \'{{"Username":"<token>","Secret":"idtok-9"}}\'\n')
    write_config(docker_config, {"credsStore": "store", "credHelpers": {"docker.io": "hubhelper"},
                                 "auths": {HOST: {}}})
    assert credentials.resolve(HOST) == Credentials(USER, PASSWORD)
    assert asked.read_text() == HOST
    assert credentials.resolve("index.docker.io") == Credentials(identitytoken="idtok-9")
    assert asked.read_text() == INDEX_URL  # what docker asks helpers for Docker Hub


def test_helper_saying_not_found_is_anonymous_or_the_auths_entry(docker_config, helpers):
    helpers("empty", "echo 'credentials not found in native keychain'\nexit 1\n")
    helpers("pass", "printf '{\"ServerURL\":\"\",\"Username\":\"\",\"Secret\":\"\"}'\n")
    for name in ("empty", "pass"):
        write_config(docker_config, {"credsStore": name, "auths": {"kept.test": {"auth": b64("k:v")}}})
        assert credentials.resolve(HOST) == Credentials()
        assert credentials.auth_config(HOST) == {}
        assert credentials.resolve("kept.test") == Credentials("k", "v")


def test_helper_not_installed_is_named(docker_config, helpers):
    write_config(docker_config, {"credHelpers": {HOST: "no-such-helper-xyz"}})
    with pytest.raises(OllyError) as exc:
        credentials.resolve(HOST)
    assert exc.value.reason == "registry-denied"
    assert "docker-credential-no-such-helper-xyz is not installed" in exc.value.message
    assert "credHelpers in" in exc.value.message


def test_hanging_helper_times_out_names_itself_and_is_killed(docker_config, helpers, tmp_path, monkeypatch):
    """Stub registry asking for Basic auth; the credsStore helper never answers (its child
    sleeps): one line naming the helper, within the deadline, and no helper process left."""
    pidfile = tmp_path / "helper-child.pid"
    helpers("hang", f'sleep 1000 &\necho $! > "{pidfile}"\nwait\n')
    write_config(docker_config, {"credsStore": "hang"})
    monkeypatch.setenv(credentials.TIMEOUT_ENV, "1")
    challenge = {"WWW-Authenticate": 'Basic realm="stub"'}
    with Stub(lambda r: (401, challenge, b"")) as stub:
        client = RegistryClient(Endpoint("private", stub.host, insecure=True))
        started = time.monotonic()
        err = call_within(20, lambda: client.manifest_digest("a/b", "v1"))
        elapsed = time.monotonic() - started
    assert isinstance(err, OllyError), err
    assert err.reason == "registry-denied" and err.exit_code == 3
    assert err.message.startswith(f"registry 'private' ({stub.host}): docker-credential-hang did not answer "
                                  "within 1s (credsStore in ")
    assert "\n" not in err.line() and elapsed < 10
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(pid), "the helper's child outlived the timeout"


def test_failing_helper_stderr_is_named_and_scrubbed(docker_config, helpers):
    """A helper that fails after writing its secret (and the config's) to stderr."""
    secret = "leaked-" + uuid.uuid4().hex
    helpers("leaky", f"printf '{{\"Username\":\"{USER}\",\"Secret\":\"{secret}\"}}'\n"
                     f"echo \"error: {secret} rejected; Authorization: Basic {b64(USER + ':' + secret)}; "
                     f"other={PASSWORD}\" >&2\nexit 2\n")
    write_config(docker_config, {"credsStore": "leaky", "auths": {"other.test": {"auth": b64(f"u:{PASSWORD}")}}})
    with pytest.raises(OllyError) as exc:
        credentials.resolve(HOST)
    err = exc.value
    assert err.reason == "registry-denied" and err.exit_code == 3
    assert err.message.startswith(f"docker-credential-leaky failed for {HOST} (exit 2): error: *** rejected")
    assert_clean(err, secret, PASSWORD, b64(f"{USER}:{secret}"), b64(f"u:{PASSWORD}"))


def test_helper_timeout_setting(docker_config, monkeypatch):
    assert credentials.helper_timeout() == 30
    monkeypatch.setenv(credentials.TIMEOUT_ENV, "2.5")
    assert credentials.helper_timeout() == 2.5
    monkeypatch.setenv(credentials.TIMEOUT_ENV, "never")
    with pytest.raises(OllyError) as exc:
        credentials.helper_timeout()
    assert exc.value.reason == "usage" and credentials.TIMEOUT_ENV in exc.value.message


# -- against a real registry with htpasswd -------------------------------------------

@pytest.mark.registry
def test_helper_credentials_open_an_htpasswd_registry(auth_registry, docker_config, helpers, tmp_path):
    asked = tmp_path / "asked"
    helpers("good", answer_helper(USER, PASSWORD, asked))
    write_config(docker_config, {"credHelpers": {auth_registry.host: "good"}})
    client = RegistryClient(Endpoint("private", auth_registry.host, insecure=True))
    repository = repo()
    _, digest = push_image(client, repository, "v1")
    assert client.manifest_digest(repository, "v1") == digest
    assert asked.read_text() == auth_registry.host


def _scratch_image(docker_client: Any, tag: str) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("Dockerfile", b"FROM scratch\nCOPY id.txt /id.txt\n"),
                           ("id.txt", uuid.uuid4().hex.encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    image, _ = docker_client.images.build(fileobj=buf, custom_context=True, tag=tag, rm=True)
    return str(image.id)


@pytest.mark.docker
@pytest.mark.registry
def test_engine_push_and_pull_use_helper_credentials(auth_registry, docker_client, unique_prefix, docker_config,
                                                     helpers, tmp_path):
    from olly.engine import Engine

    repository = f"{auth_registry.host}/{unique_prefix}/app"
    image_id = _scratch_image(docker_client, f"{repository}:v1")
    engine = Engine()
    with pytest.raises(OllyError) as exc:  # anonymous: the engine is refused
        engine.push(repository, "v1", "private")
    assert exc.value.reason == "push-failed"
    asked = tmp_path / "asked"
    helpers("good", answer_helper(USER, PASSWORD, asked))
    write_config(docker_config, {"credsStore": "good"})
    digest = engine.push(repository, "v1", "private")
    assert asked.read_text() == auth_registry.host
    docker_client.images.remove(image_id, force=True)
    assert engine.pull(f"{repository}@{digest}", "private") == image_id


@pytest.mark.docker
@pytest.mark.parametrize("action", ["push", "pull"])
def test_engine_with_a_hanging_helper_fails_within_the_deadline(docker_client, docker_config, helpers,
                                                                monkeypatch, action):
    """The docker SDK would run the helper itself, without a timeout, unless olly hands it the
    credentials: push and pull must not hang."""
    from olly.engine import Engine

    helpers("hang", "exec sleep 1000\n")
    write_config(docker_config, {"credsStore": "hang"})
    monkeypatch.setenv(credentials.TIMEOUT_ENV, "1")
    engine = Engine()
    ref = "127.0.0.1:9/olly-test/never"
    call = (lambda: engine.push(ref, "v1", "reg")) if action == "push" else (lambda: engine.pull(f"{ref}:v1", "reg"))
    err = call_within(20, call)
    assert isinstance(err, OllyError), err
    assert err.reason == "registry-denied" and err.exit_code == 3
    assert err.message.startswith("registry 'reg' (127.0.0.1:9): docker-credential-hang did not answer within 1s")


@pytest.mark.docker
def test_build_with_a_hanging_helper_fails_within_the_deadline(docker_client, docker_config, helpers, monkeypatch,
                                                               tmp_path):
    """docker-py's build sends every registry's credentials, running each helper without a
    timeout; olly sends only the FROM images' registries, resolved under its time limit."""
    from olly.engine import BuildRequest, Engine

    helpers("hang", "exec sleep 1000\n")
    write_config(docker_config, {"credsStore": "hang"})
    monkeypatch.setenv(credentials.TIMEOUT_ENV, "1")
    engine = Engine()
    dockerfile = b"FROM 127.0.0.1:9/olly-test/base:1\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    req = BuildRequest(context=[buf.getvalue()], dockerfile_name="Dockerfile", dockerfile=dockerfile,
                       dockerfile_display="Dockerfile", args={}, target=None, platform=None, network="none",
                       labels={}, log_path=tmp_path / "build.log")
    err = call_within(20, lambda: engine.build(req))
    assert isinstance(err, OllyError), err
    assert "docker-credential-hang did not answer within 1s" in err.message
