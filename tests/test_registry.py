"""olly.registry against a real registry (distribution 2.8, ``@pytest.mark.registry``)
and, where a real one cannot produce the answer (5xx, 405, Bearer tokens), against a
tiny local HTTP stub defined here (``Stub``) — those tests say so."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import socket
import subprocess
import tarfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import quote, quote_plus

import pytest
import requests

from olly.errors import OllyError
from olly.registry import OCI_MANIFEST, Endpoint, RegistryClient, sha256_digest
from registry_server import AUTH_PASSWORD as PASSWORD, AUTH_USER as USER, auth_registry, start_registry  # noqa: F401  (fixture)
from support import unavailable as _unavailable



@pytest.fixture(autouse=True)
def empty_docker_config(tmp_path, monkeypatch) -> Path:
    """No test sees the real ~/.docker/config.json: DOCKER_CONFIG points at an empty dir."""
    conf = tmp_path / "docker-config"
    conf.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(conf))
    return conf


def write_docker_config(conf: Path, host: str, user: str, password: str) -> None:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (conf / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))


def repo() -> str:
    return f"olly-test/{uuid.uuid4().hex[:8]}/app"


def image_parts() -> tuple[bytes, bytes]:
    """(layer, config) of a one-file image."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 6
        tar.addfile(info, io.BytesIO(b"hello\n"))
    layer = buf.getvalue()
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer)]}}).encode()
    return layer, config


def push_image(client: RegistryClient, repository: str, tag: str) -> tuple[bytes, str]:
    layer, config = image_parts()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": client.push_blob(repository, config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": client.push_blob(repository, layer), "size": len(layer)}],
    }).encode()
    return manifest, client.push_manifest(repository, tag, manifest, OCI_MANIFEST)


def skopeo_raw(host: str, ref: str) -> bytes:
    try:
        out = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{host}/{ref}"],
                             capture_output=True, check=True, timeout=30)
    except FileNotFoundError:
        _unavailable("skopeo is not installed (apt-get install skopeo)")
    return out.stdout


def assert_clean(err: OllyError, *secrets: str) -> None:
    """One line, and no secret in any form the user could see."""
    for text in (err.message, err.line(), str(err), repr(err)):
        assert "\n" not in text
        for secret in secrets:
            assert secret not in text


# -- the real registry ------------------------------------------------------

@pytest.mark.registry
def test_push_then_head_matches_skopeo(registry):
    client = RegistryClient(Endpoint("local", registry.host, insecure=True))
    repository = repo()
    manifest, digest = push_image(client, repository, "v1")
    assert digest == sha256_digest(manifest)
    assert client.manifest_digest(repository, "v1") == digest
    assert client.manifest_digest(repository, digest) == digest
    assert sha256_digest(skopeo_raw(registry.host, f"{repository}:v1")) == digest
    assert client.get_manifest(repository, "v1") == (manifest, OCI_MANIFEST, digest)


@pytest.mark.registry
def test_blobs_exist_and_are_not_uploaded_twice(registry):
    client = RegistryClient(Endpoint("local", registry.host, insecure=True))
    repository = repo()
    data = uuid.uuid4().bytes
    assert not client.blob_exists(repository, sha256_digest(data))
    assert client.push_blob(repository, data) == sha256_digest(data)
    assert client.blob_exists(repository, sha256_digest(data))
    assert client.push_blob(repository, data) == sha256_digest(data)  # HEAD hit: no upload
    body = requests.get(f"http://{registry.host}/v2/{repository}/blobs/{sha256_digest(data)}").content
    assert body == data


@pytest.mark.registry
def test_missing_tag_and_missing_repository_are_none(registry):
    client = RegistryClient(Endpoint("local", registry.host, insecure=True))
    repository = repo()
    push_image(client, repository, "v1")
    assert client.manifest_digest(repository, "nope") is None
    assert client.manifest_digest(repo(), "v1") is None
    assert client.manifest_digest(repository, "sha256:" + "0" * 64) is None
    with pytest.raises(OllyError) as exc:
        client.get_manifest(repository, "nope")
    assert exc.value.reason == "registry-error" and "HTTP 404" in exc.value.message


@pytest.mark.registry
def test_delete_manifest_then_head_is_none(registry):
    client = RegistryClient(Endpoint("local", registry.host, insecure=True))
    repository = repo()
    _, digest = push_image(client, repository, "v1")
    client.delete_manifest(repository, digest)
    assert client.manifest_digest(repository, digest) is None
    assert client.manifest_digest(repository, "v1") is None  # 2.8 untags on delete


@pytest.mark.registry
def test_manifest_with_missing_blob_is_a_registry_error(registry):
    client = RegistryClient(Endpoint("local", registry.host, insecure=True))
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": "sha256:" + "1" * 64, "size": 2},
                           "layers": []}).encode()
    with pytest.raises(OllyError) as exc:
        client.push_manifest(repo(), "v1", manifest, OCI_MANIFEST)
    assert exc.value.reason == "registry-error"
    assert "'local'" in exc.value.message and registry.host in exc.value.message
    assert "HTTP 400" in exc.value.message and "MANIFEST_BLOB_UNKNOWN" in exc.value.message


@pytest.mark.registry
def test_oci_manifest_is_404_without_oci_accept(registry):
    """Why every manifest request sends all four Accept types: distribution 2.8 answers
    404 MANIFEST_UNKNOWN for an OCI manifest when the client does not accept OCI."""
    client = RegistryClient(Endpoint("local", registry.host, insecure=True))
    repository = repo()
    push_image(client, repository, "v1")
    url = f"http://{registry.host}/v2/{repository}/manifests/v1"
    docker_only = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
    assert requests.head(url, headers=docker_only).status_code == 404
    assert requests.head(url, headers={"Accept": OCI_MANIFEST}).status_code == 200
    assert client.manifest_digest(repository, "v1") is not None


@pytest.mark.registry
def test_stopped_registry_is_unreachable(tmp_path):
    server = start_registry(tmp_path)
    client = RegistryClient(Endpoint("local", server.host, insecure=True), timeout=5)
    repository = repo()
    _, digest = push_image(client, repository, "v1")
    server.stop()
    with pytest.raises(OllyError) as exc:
        client.manifest_digest(repository, "v1")
    err = exc.value
    assert err.reason == "registry-unreachable"
    assert err.message == f"registry 'local' ({server.host}) is unreachable: connection refused"
    server.start()  # same port and storage
    assert client.manifest_digest(repository, "v1") == digest
    server.stop()


@pytest.mark.registry
def test_https_to_plain_http_registry_is_a_tls_error(registry):
    client = RegistryClient(Endpoint("local", registry.host), timeout=5)
    with pytest.raises(OllyError) as exc:
        client.manifest_digest("x/y", "v1")
    assert exc.value.reason == "registry-unreachable"
    assert "TLS error" in exc.value.message and "insecure = true" in exc.value.message


@pytest.mark.registry
def test_htpasswd_without_credentials_is_denied(auth_registry):
    client = RegistryClient(Endpoint("private", auth_registry.host, insecure=True))
    with pytest.raises(OllyError) as exc:
        client.manifest_digest("olly/app", "v1")
    err = exc.value
    assert err.reason == "registry-denied"
    assert err.message.startswith(f"registry 'private' ({auth_registry.host}): HTTP 401 unauthorized for "
                                  "GET olly/app:v1")
    assert err.message.endswith(f"; run: docker login {auth_registry.host}")
    with pytest.raises(OllyError) as exc:
        client.push_blob("olly/app", b"data")
    assert exc.value.reason == "registry-denied" and "HTTP 401" in exc.value.message


@pytest.mark.registry
def test_htpasswd_with_docker_config_credentials(auth_registry, empty_docker_config):
    write_docker_config(empty_docker_config, auth_registry.host, USER, PASSWORD)
    client = RegistryClient(Endpoint("private", auth_registry.host, insecure=True))
    repository = repo()
    _, digest = push_image(client, repository, "v1")
    assert client.manifest_digest(repository, "v1") == digest
    assert client.manifest_digest(repository, "v2") is None
    # Errors raised while credentials are in use never show them.
    encoded = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    with pytest.raises(OllyError) as exc:
        client.get_manifest(repository, "v2")
    assert_clean(exc.value, PASSWORD, encoded)
    with pytest.raises(OllyError) as exc:
        client.delete_manifest(repository, "sha256:" + "2" * 64)
    assert_clean(exc.value, PASSWORD, encoded)


@pytest.mark.registry
def test_wrong_password_is_denied_without_echoing_it(auth_registry, empty_docker_config):
    wrong = "not-the-Pa55word-abc"
    write_docker_config(empty_docker_config, auth_registry.host, USER, wrong)
    client = RegistryClient(Endpoint("private", auth_registry.host, insecure=True))
    with pytest.raises(OllyError) as exc:
        client.manifest_digest("olly/app", "v1")
    assert exc.value.reason == "registry-denied" and "HTTP 401" in exc.value.message
    assert_clean(exc.value, wrong, base64.b64encode(f"{USER}:{wrong}".encode()).decode())


# -- stubs: answers a real distribution 2.8 will not give on demand -------------

Handler = Callable[[BaseHTTPRequestHandler], tuple[int, dict[str, str], bytes]]


class Stub:
    """A tiny local HTTP server (NOT a registry): ``handle(request)`` -> (status, headers, body).
    Records (method, path, headers) of every request."""

    def __init__(self, handle: Handler) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        stub = self

        class _Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                stub.requests.append((self.command, self.path, dict(self.headers)))
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                status, headers, body = handle(self)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _any

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Stub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _errors(code: str, message: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message}]}).encode()


def test_server_error_is_a_registry_error_not_none():
    """Stub: a registry answering 500 with a distribution-style JSON error body."""
    with Stub(lambda r: (500, {"Content-Type": "application/json"}, _errors("UNKNOWN", "disk on fire"))) as stub:
        client = RegistryClient(Endpoint("flaky", stub.host, insecure=True))
        with pytest.raises(OllyError) as exc:
            client.get_manifest("a/b", "v1")
        assert exc.value.reason == "registry-error"
        assert exc.value.message == (f"registry 'flaky' ({stub.host}): HTTP 500 for GET a/b:v1: "
                                     "UNKNOWN: disk on fire")
        with pytest.raises(OllyError) as exc:  # never None: a 5xx is not "not built"
            client.manifest_digest("a/b", "v1")
        assert exc.value.reason == "registry-error"
        assert exc.value.message.startswith(f"registry 'flaky' ({stub.host}): HTTP 500 for GET a/b:v1")


def test_403_is_denied_and_405_delete_is_explained():
    """Stub: 403 on reads, 405 on DELETE (a registry with deletion disabled)."""
    def handle(r):
        if r.command == "DELETE":
            return 405, {}, _errors("UNSUPPORTED", "The operation is unsupported.")
        return 403, {}, _errors("DENIED", "requested access to the resource is denied")

    with Stub(handle) as stub:
        client = RegistryClient(Endpoint("hub", stub.host, insecure=True))
        with pytest.raises(OllyError) as exc:
            client.blob_exists("a/b", "sha256:" + "3" * 64)
        assert exc.value.reason == "registry-denied" and "HTTP 403 denied" in exc.value.message
        with pytest.raises(OllyError) as exc:  # GET has a body: its error code is shown
            client.get_manifest("a/b", "v1")
        assert exc.value.message == (f"registry 'hub' ({stub.host}): HTTP 403 denied for GET a/b:v1: DENIED: "
                                     f"requested access to the resource is denied; run: docker login {stub.host}")
        with pytest.raises(OllyError) as exc:
            client.delete_manifest("a/b", "sha256:" + "3" * 64)
        assert exc.value.reason == "registry-error"
        assert "HTTP 405" in exc.value.message and "deletion is disabled" in exc.value.message


def test_digest_is_hashed_from_fetched_bytes_and_confirmed_by_digest():
    """Stub: a registry that sends no Docker-Content-Digest at all."""
    body = b'{"schemaVersion":2}'
    with Stub(lambda r: (200, {"Content-Type": OCI_MANIFEST}, body)) as stub:
        client = RegistryClient(Endpoint("bare", stub.host, insecure=True))
        assert client.manifest_digest("a/b", "v1") == sha256_digest(body)
        assert [(m, p) for m, p, _ in stub.requests] == [
            ("GET", "/v2/a/b/manifests/v1"), ("GET", f"/v2/a/b/manifests/{sha256_digest(body)}")]


def test_bearer_token_flow_with_docker_config_credentials(empty_docker_config):
    """Stub: registry + token server on one port, as ghcr.io does it (Bearer challenge)."""
    token = "tok-" + uuid.uuid4().hex
    digest = "sha256:" + hashlib.sha256(b'{"m":1}').hexdigest()
    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    def handle(r):
        if r.path.startswith("/token"):
            if r.headers.get("Authorization") != basic:
                return 401, {}, b""
            return 200, {"Content-Type": "application/json"}, json.dumps({"token": token}).encode()
        if r.headers.get("Authorization") != f"Bearer {token}":
            challenge = (f'Bearer realm="http://{stub.host}/token",service="stub",'
                         'scope="repository:a/b:pull"')
            return 401, {"WWW-Authenticate": challenge}, _errors("UNAUTHORIZED", "authentication required")
        return 200, {"Docker-Content-Digest": digest}, b'{"m":1}'

    with Stub(handle) as stub:
        client = RegistryClient(Endpoint("ghcr", stub.host, insecure=True))
        with pytest.raises(OllyError) as exc:  # no credentials: the token server says 401
            client.manifest_digest("a/b", "v1")
        assert exc.value.reason == "registry-denied" and "HTTP 401" in exc.value.message
        assert "GET a/b:v1" in exc.value.message

        write_docker_config(empty_docker_config, stub.host, USER, PASSWORD)
        client = RegistryClient(Endpoint("ghcr", stub.host, insecure=True))
        stub.requests.clear()
        assert client.manifest_digest("a/b", "v1") == digest
        assert client.manifest_digest("a/b", "v2") == digest  # token cached: sent up front
        paths = [p.split("?")[0] for _, p, _ in stub.requests]
        by_digest = f"/v2/a/b/manifests/{digest}"
        assert paths == ["/v2/a/b/manifests/v1", "/token", "/v2/a/b/manifests/v1", by_digest,
                         "/v2/a/b/manifests/v2", by_digest]
        assert "scope=repository%3Aa%2Fb%3Apull" in stub.requests[1][1]
        assert "service=stub" in stub.requests[1][1]


def test_unknown_host_and_timeout_are_unreachable():
    """No registry at all: a name that cannot resolve, and a socket that never answers."""
    with pytest.raises(OllyError) as exc:
        RegistryClient(Endpoint("typo", "registry.invalid"), timeout=5).manifest_digest("a/b", "v1")
    assert exc.value.reason == "registry-unreachable"
    assert exc.value.message == "registry 'typo' (registry.invalid) is unreachable: cannot resolve host name"
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        host = f"127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(OllyError) as exc:
            RegistryClient(Endpoint("slow", host, insecure=True), timeout=0.3).blob_exists("a/b", "sha256:" + "4" * 64)
    assert exc.value.reason == "registry-unreachable"
    assert exc.value.message == f"registry 'slow' ({host}) is unreachable: timed out after 0.3s"


# -- trust: a digest olly returns is one it fetched and hashed (issue #7, item 4) ------

CT = {"Content-Type": OCI_MANIFEST}
MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": sha256_digest(b"{}"), "size": 2}, "layers": []}).encode()
OTHER = b'{"schemaVersion":2,"layers":["not the manifest you asked for"]}'
M = "/v2/a/b/manifests/"


def routes(table: dict[tuple[str, str], tuple[int, dict[str, str], bytes]]) -> Handler:
    """A stub answering from ``table[(method, path)]``; anything else is 404 MANIFEST_UNKNOWN."""
    missing = (404, {"Content-Type": "application/json"}, _errors("MANIFEST_UNKNOWN", "manifest unknown"))
    return lambda r: table.get((r.command, r.path.split("?")[0]), missing)


def test_head_digest_is_not_trusted():
    """Stub, a caching proxy: HEAD answers a stale digest that no longer resolves."""
    good, stale = sha256_digest(MANIFEST), sha256_digest(OTHER)
    table = {("HEAD", M + "v1"): (200, {**CT, "Docker-Content-Digest": stale}, b""),
             ("GET", M + "v1"): (200, CT, MANIFEST),
             ("GET", M + good): (200, CT, MANIFEST)}
    with Stub(routes(table)) as stub:
        client = RegistryClient(Endpoint("proxy", stub.host, insecure=True))
        assert client.manifest_digest("a/b", "v1") == good


def test_head_200_for_a_missing_tag_is_none():
    """Stub: HEAD says 200 (with a digest that exists) for a tag that GET does not find."""
    good = sha256_digest(MANIFEST)
    table = {("HEAD", M + "gone"): (200, {**CT, "Docker-Content-Digest": good}, b""),
             ("GET", M + good): (200, CT, MANIFEST)}
    with Stub(routes(table)) as stub:
        assert RegistryClient(Endpoint("liar", stub.host, insecure=True)).manifest_digest("a/b", "gone") is None


def test_tag_whose_digest_does_not_resolve_is_none():
    """Stub: the tag answers, but the digest olly would pin 404s (stale tag cache)."""
    good = sha256_digest(MANIFEST)
    table = {("HEAD", M + "v1"): (200, {**CT, "Docker-Content-Digest": good}, b""),
             ("GET", M + "v1"): (200, {**CT, "Docker-Content-Digest": good}, MANIFEST)}
    with Stub(routes(table)) as stub:
        client = RegistryClient(Endpoint("liar", stub.host, insecure=True))
        assert client.manifest_digest("a/b", "v1") is None
        assert client.manifest_config_digest("a/b", "v1") is None


@pytest.mark.parametrize("reference", ["v1", "digest"])
def test_body_not_matching_its_digest_is_a_registry_error(reference):
    """Stub: GET by digest returns other bytes (HEAD claims the digest all the same)."""
    good = sha256_digest(MANIFEST)
    table = {("HEAD", M + good): (200, {**CT, "Docker-Content-Digest": good}, b""),
             ("HEAD", M + "v1"): (200, {**CT, "Docker-Content-Digest": good}, b""),
             ("GET", M + "v1"): (200, CT, MANIFEST),
             ("GET", M + good): (200, CT, OTHER)}
    with Stub(routes(table)) as stub:
        client = RegistryClient(Endpoint("liar", stub.host, insecure=True))
        with pytest.raises(OllyError) as exc:
            client.manifest_digest("a/b", good if reference == "digest" else reference)
    assert exc.value.reason == "registry-error"
    assert f"manifest a/b@{good} has digest {sha256_digest(OTHER)}: its bytes do not match" in exc.value.message


def test_claimed_digest_contradicting_the_body_is_a_registry_error():
    """Stub: GET's Docker-Content-Digest names other bytes than it sends."""
    claimed = sha256_digest(OTHER)
    table = {("HEAD", M + "v1"): (200, {**CT, "Docker-Content-Digest": claimed}, b""),
             ("GET", M + "v1"): (200, {**CT, "Docker-Content-Digest": claimed}, MANIFEST),
             ("GET", M + claimed): (200, CT, OTHER)}
    with Stub(routes(table)) as stub:
        with pytest.raises(OllyError) as exc:
            RegistryClient(Endpoint("liar", stub.host, insecure=True)).manifest_digest("a/b", "v1")
    assert exc.value.reason == "registry-error" and f"claims {claimed}" in exc.value.message


@pytest.mark.registry
def test_manifest_config_digest_of_oci_and_docker_manifests(registry):
    client = RegistryClient(Endpoint("local", registry.host, insecure=True))
    repository = repo()
    layer, config = image_parts()
    manifest, digest = push_image(client, repository, "oci")
    assert client.manifest_config_digest(repository, "oci") == (digest, sha256_digest(config))
    assert client.manifest_config_digest(repository, digest) == (digest, sha256_digest(config))
    docker_manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": sha256_digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar",
                    "digest": sha256_digest(layer), "size": len(layer)}]}).encode()
    docker_digest = client.push_manifest(repository, "docker", docker_manifest,
                                         "application/vnd.docker.distribution.manifest.v2+json")
    assert client.manifest_config_digest(repository, "docker") == (docker_digest, sha256_digest(config))
    assert client.manifest_config_digest(repository, "nope") is None
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest, "size": len(manifest),
                                       "platform": {"architecture": "amd64", "os": "linux"}}]}).encode()
    client.push_manifest(repository, "index", index, "application/vnd.oci.image.index.v1+json")
    with pytest.raises(OllyError) as exc:
        client.manifest_config_digest(repository, "index")
    assert exc.value.reason == "registry-error" and "is not a single image manifest" in exc.value.message


@pytest.mark.parametrize("blob", [None, b'{"os":"other"}'])
def test_manifest_config_digest_verifies_the_config_blob(blob):
    """Stub: the config blob is missing (None), or its bytes are not its digest."""
    good, config = sha256_digest(MANIFEST), sha256_digest(b"{}")
    table = {("GET", M + "v1"): (200, CT, MANIFEST), ("GET", M + good): (200, CT, MANIFEST)}
    if blob is not None:
        table[("GET", f"/v2/a/b/blobs/{config}")] = (200, {}, blob)
    with Stub(routes(table)) as stub:
        client = RegistryClient(Endpoint("liar", stub.host, insecure=True))
        if blob is None:
            assert client.manifest_config_digest("a/b", "v1") is None
            return
        with pytest.raises(OllyError) as exc:
            client.manifest_config_digest("a/b", "v1")
    assert exc.value.reason == "registry-error"
    assert f"blob a/b@{config} has digest {sha256_digest(blob)}" in exc.value.message


# -- a total deadline per request (issue #7, item 9) ----------------------------------

class Drip:
    """A raw TCP server (NOT a registry): reads one request, sends ``head`` at once, then
    ``drip`` one byte every ``interval`` s, so no single read ever times out. It gives up
    after ``limit`` s, so a client without a total deadline fails a test instead of hanging it."""

    def __init__(self, head: bytes, drip: bytes, interval: float = 0.3, limit: float = 20.0) -> None:
        self.head, self.drip, self.interval, self.limit = head, drip, interval, limit
        self.stop = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    request += chunk
                conn.sendall(self.head)
                started = time.monotonic()
                for byte in self.drip:
                    if self.stop.wait(self.interval) or time.monotonic() - started > self.limit:
                        return
                    conn.sendall(bytes([byte]))
            except OSError:
                return  # the client hung up: what a deadline does

    def __enter__(self) -> Drip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.sock.close()


DRIPS = {
    "status line": (b"", b"HTTP/1.1 200 OK\r\n" + b"X-Drip: " + b"a" * 10_000),
    "headers": (b"HTTP/1.1 200 OK\r\n", b"X-Drip: " + b"a" * 10_000),
    "body": (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10000\r\n\r\n", b" " * 10_000),
}


@pytest.mark.parametrize("where", sorted(DRIPS))
def test_a_dripping_registry_hits_the_total_deadline(where):
    with Drip(*DRIPS[where]) as drip:
        client = RegistryClient(Endpoint("drip", drip.host, insecure=True), timeout=1.5)
        started = time.monotonic()
        with pytest.raises(OllyError) as exc:
            client.manifest_digest("a/b", "v1")
        elapsed = time.monotonic() - started
    assert exc.value.reason == "registry-unreachable" and exc.value.exit_code == 3
    assert exc.value.message == f"registry 'drip' ({drip.host}) is unreachable: timed out after 1.5s"
    assert 1.4 < elapsed < 6


def test_a_dripping_token_server_hits_the_deadline_set_by_env(monkeypatch):
    """Stub registry with a Bearer challenge whose realm drips; the deadline comes from
    OLLY_REGISTRY_TIMEOUT."""
    monkeypatch.setenv("OLLY_REGISTRY_TIMEOUT", "1.5")
    with Drip(*DRIPS["headers"]) as drip:
        challenge = {"WWW-Authenticate": f'Bearer realm="http://{drip.host}/token",service="s"'}
        with Stub(lambda r: (401, challenge, b"")) as stub:
            client = RegistryClient(Endpoint("ghcr", stub.host, insecure=True))
            started = time.monotonic()
            with pytest.raises(OllyError) as exc:
                client.manifest_digest("a/b", "v1")
            elapsed = time.monotonic() - started
    assert exc.value.reason == "registry-unreachable"
    assert exc.value.message == (f"registry 'ghcr' ({stub.host}) is unreachable for GET a/b:v1 "
                                 f"(token from http://{drip.host}/token): timed out after 1.5s")
    assert elapsed < 6


def test_registry_timeout_setting(monkeypatch):
    monkeypatch.delenv("OLLY_REGISTRY_TIMEOUT", raising=False)
    assert RegistryClient(Endpoint("r", "h")).timeout == 30
    assert RegistryClient(Endpoint("r", "h"), timeout=2).timeout == 2
    monkeypatch.setenv("OLLY_REGISTRY_TIMEOUT", "7.5")
    assert RegistryClient(Endpoint("r", "h")).timeout == 7.5
    for bad in ("soon", "0", "-1", "inf"):
        monkeypatch.setenv("OLLY_REGISTRY_TIMEOUT", bad)
        with pytest.raises(OllyError) as exc:
            RegistryClient(Endpoint("r", "h"))
        assert exc.value.reason == "usage" and "OLLY_REGISTRY_TIMEOUT" in exc.value.message


@pytest.mark.registry
def test_kept_alive_connections_survive_many_deadlines(registry):
    """Each request's deadline is cancelled and forgotten: 50 requests on one session, all fine."""
    client = RegistryClient(Endpoint("local", registry.host, insecure=True), timeout=5)
    repository = repo()
    _, digest = push_image(client, repository, "v1")
    before = threading.active_count()
    for _ in range(25):
        assert client.manifest_digest(repository, "v1") == digest
    deadline = time.monotonic() + 5  # cancelled timer threads end on their own, promptly
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() <= before  # no timer thread left behind


# -- secrets echoed by a registry (issue #7, item 13) --------------------------------

SPECIAL = "s3cr/t+P@ss=w0rd&x é"  # every encoding of it differs from the raw value


def test_error_bodies_echoing_credentials_are_masked(empty_docker_config):
    """Stub: Basic auth; 401 and 500 error bodies echo the Authorization header and the
    password, raw and URL-encoded; the 500 one puts the header where messages are cut."""
    pair = f"{USER}:{SPECIAL}".encode()
    encoded = base64.b64encode(pair).decode()
    forms = [SPECIAL, encoded, encoded.rstrip("="), base64.urlsafe_b64encode(pair).decode(),
             quote(SPECIAL, safe=""), quote_plus(SPECIAL), encoded[:10]]

    def handle(r):
        auth = r.headers.get("Authorization", "")
        if not auth:
            return 401, {"WWW-Authenticate": 'Basic realm="stub"'}, _errors("UNAUTHORIZED", "authentication required")
        echo = (f"you sent Authorization: {auth} for {USER} with {SPECIAL} "
                f"(?p={quote(SPECIAL, safe='')}&q={quote_plus(SPECIAL)})")
        if r.path.endswith("/v1"):
            return 401, {"WWW-Authenticate": 'Basic realm="stub"'}, _errors("UNAUTHORIZED", echo)
        return 500, {}, _errors("UNKNOWN", "x" * 150 + echo)  # the 200-char cut falls in the base64

    with Stub(handle) as stub:
        write_docker_config(empty_docker_config, stub.host, USER, SPECIAL)
        client = RegistryClient(Endpoint("echo", stub.host, insecure=True))
        with pytest.raises(OllyError) as exc:
            client.get_manifest("a/b", "v1")
        assert exc.value.reason == "registry-denied" and "HTTP 401" in exc.value.message
        assert_clean(exc.value, *forms)
        assert "you sent Authorization: Basic ***" in exc.value.message
        with pytest.raises(OllyError) as exc:
            client.manifest_digest("a/b", "v2")
        assert exc.value.reason == "registry-error" and "HTTP 500" in exc.value.message
        assert_clean(exc.value, *forms)
