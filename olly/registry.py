"""A small OCI distribution (registry v2) client: manifests and blobs over HTTP.

Only what olly needs: ask a registry for a manifest's digest, fetch a manifest,
push blobs and manifests, and delete a manifest (tests). Authentication follows
the docker CLI: anonymous first; on ``401`` with a ``Bearer`` challenge a token
is fetched from the challenge's realm (sending the user's docker credentials for
the host, if any) and the request is retried once; on a ``Basic`` challenge the
credentials are sent directly. Credentials come from ``$DOCKER_CONFIG/config.json``
(default ``~/.docker/config.json``), including ``credsStore``/``credHelpers``.

Every failure is an :class:`~olly.errors.OllyError` whose one-line message names
the registry (BUILD.toml name and host) and the HTTP status when there is one;
credentials and tokens never appear in messages.

Threading: a :class:`RegistryClient` owns one ``requests.Session`` and a token
cache; it is meant for sequential use. Give each thread its own client.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from olly.errors import OllyError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST))

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')
# Docker Hub's well-known names: credentials live under "docker.io", the API elsewhere.
_DOCKER_HUB = {"docker.io", "index.docker.io", "registry-1.docker.io"}


@dataclass(frozen=True)
class Endpoint:
    """A registry as configured in BUILD.toml."""

    name: str  # the registry's name in BUILD.toml, e.g. "local" (used in every message)
    host: str  # "host[:port]", e.g. "127.0.0.1:5000", "ghcr.io"
    insecure: bool = False  # True = plain http (opt-in per registry), else https


def sha256_digest(data: bytes) -> str:
    """The OCI digest string (``sha256:<hex>``) of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


class RegistryClient:
    """Talks to one registry. Not shared between threads (see the module docstring)."""

    def __init__(self, endpoint: Endpoint, timeout: float = 30.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        api_host = "registry-1.docker.io" if endpoint.host in _DOCKER_HUB else endpoint.host
        self._base = f"{'http' if endpoint.insecure else 'https'}://{api_host}"
        self._session = requests.Session()
        self._tokens: dict[tuple[str, str, str], str] = {}  # (realm, service, scope) -> token
        self._scopes: dict[tuple[str, bool], tuple[str, str, str]] = {}  # (repo, write) -> key
        self._basic = False  # the registry asked for Basic auth
        self._creds: dict[str, str] | None = None  # loaded lazily, on the first challenge
        self._secrets: set[str] = set()  # scrubbed from every message (defence in depth)

    # -- public API -------------------------------------------------------

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """Digest of ``repository:reference`` (tag or digest), or None if it does not exist (404)."""
        resp = self._request("HEAD", repository, f"manifests/{reference}", _ref(repository, reference),
                             headers={"Accept": MANIFEST_ACCEPT}, ok=(200, 404))
        if resp.status_code == 404:
            return None
        digest = resp.headers.get("Docker-Content-Digest", "")
        if _DIGEST.match(digest):
            return digest
        resp = self._request("GET", repository, f"manifests/{reference}", _ref(repository, reference),
                             headers={"Accept": MANIFEST_ACCEPT}, ok=(200, 404))
        return None if resp.status_code == 404 else sha256_digest(resp.content)

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str, str]:
        """``(body, media type, digest)`` of a manifest; a missing one is a ``registry-error``."""
        what = _ref(repository, reference)
        resp = self._request("GET", repository, f"manifests/{reference}", what,
                             headers={"Accept": MANIFEST_ACCEPT})
        body = resp.content
        digest = sha256_digest(body)
        claimed = resp.headers.get("Docker-Content-Digest", "")
        expected = reference if reference.startswith("sha256:") else claimed
        if expected.startswith("sha256:") and expected != digest:
            raise self._error("registry-error", f"manifest {what} has digest {digest}, expected {expected}")
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        if not media_type or media_type in ("application/json", "application/octet-stream"):
            try:
                media_type = json.loads(body).get("mediaType") or media_type
            except (ValueError, AttributeError):
                pass
        return body, media_type, digest

    def blob_exists(self, repository: str, digest: str) -> bool:
        """True if the registry has blob ``digest`` in ``repository``."""
        resp = self._request("HEAD", repository, f"blobs/{digest}", f"{repository} blob {digest}", ok=(200, 404))
        return resp.status_code == 200

    def push_blob(self, repository: str, data: bytes) -> str:
        """Upload ``data`` (monolithic POST + PUT) unless present; returns its digest."""
        digest = sha256_digest(data)
        if self.blob_exists(repository, digest):
            return digest
        what = f"{repository} blob {digest}"
        resp = self._request("POST", repository, "blobs/uploads/", what, write=True, ok=(202,))
        location = resp.headers.get("Location")
        if not location:
            raise self._error("registry-error", f"HTTP {resp.status_code} for POST {what}: no upload Location")
        resp = self._request("PUT", repository, urljoin(self._base + "/", location), what, write=True,
                             ok=(201,), params={"digest": digest}, data=data,
                             headers={"Content-Type": "application/octet-stream"})
        self._check_digest(resp, digest, what)
        return digest

    def push_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        """PUT a manifest under ``reference`` (tag or digest); returns its digest, checked against the body."""
        what = _ref(repository, reference)
        resp = self._request("PUT", repository, f"manifests/{reference}", what, write=True, ok=(201,),
                             data=body, headers={"Content-Type": media_type})
        digest = sha256_digest(body)
        self._check_digest(resp, digest, what)
        return digest

    def delete_manifest(self, repository: str, digest: str) -> None:
        """DELETE a manifest by digest (the registry must have deletion enabled)."""
        what = _ref(repository, digest)
        resp = self._request("DELETE", repository, f"manifests/{digest}", what, write=True, ok=(202, 200, 405))
        if resp.status_code == 405:
            raise self._error("registry-error", f"HTTP 405 for DELETE {what}: deletion is disabled on this "
                              "registry (distribution: storage.delete.enabled)")

    # -- HTTP and auth ----------------------------------------------------

    def _request(self, method: str, repository: str, path: str, what: str, *, write: bool = False,
                 ok: tuple[int, ...] = (200,), headers: dict[str, str] | None = None,
                 **kwargs: Any) -> requests.Response:
        """Send one request (auth handled), return it if its status is in ``ok``, else raise."""
        url = path if "://" in path else f"{self._base}/v2/{repository}/{path}"
        headers = dict(headers or {})
        ours = urlsplit(url).netloc == urlsplit(self._base).netloc  # never send credentials elsewhere
        sent = self._auth_header(repository, write) if ours else {}
        resp = self._send(method, url, {**headers, **sent}, kwargs)
        if resp.status_code == 401 and ours:
            answer = self._answer(resp.headers.get("WWW-Authenticate", ""), repository, write, sent,
                                  f"{method} {what}")
            if answer is not None:
                resp = self._send(method, url, {**headers, **answer}, kwargs)
        if resp.status_code in ok:
            return resp
        status = resp.status_code
        detail = _error_detail(resp)
        if status in (401, 403):
            word = "unauthorized" if status == 401 else "denied"
            raise self._error("registry-denied", f"HTTP {status} {word} for {method} {what}{detail}; "
                              f"run: docker login {self.endpoint.host}")
        raise self._error("registry-error", f"HTTP {status} for {method} {what}{detail}")

    def _send(self, method: str, url: str, headers: dict[str, str], kwargs: dict[str, Any]) -> requests.Response:
        try:
            return self._session.request(method, url, headers=headers, timeout=self.timeout,
                                         allow_redirects=method in ("GET", "HEAD"), **kwargs)
        except requests.RequestException as exc:
            raise self._error("registry-unreachable", f"is unreachable: {self._describe(exc)}") from None

    def _auth_header(self, repository: str, write: bool) -> dict[str, str]:
        key = self._scopes.get((repository, write))
        if key is not None and key in self._tokens:
            return {"Authorization": f"Bearer {self._tokens[key]}"}
        if self._basic and self._credentials().get("password"):
            return {"Authorization": _basic_header(self._credentials())}
        return {}

    def _answer(self, challenge: str, repository: str, write: bool, sent: dict[str, str],
                where: str) -> dict[str, str] | None:
        """Authorization headers answering a 401 challenge, or None if retrying is pointless."""
        scheme, _, rest = challenge.strip().partition(" ")
        params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
                  for m in _PARAM.finditer(rest)}
        if scheme.lower() == "basic":
            self._basic = True
            creds = self._credentials()
            return None if sent or not creds.get("password") else {"Authorization": _basic_header(creds)}
        if scheme.lower() != "bearer" or not params.get("realm"):
            return None
        scope = params.get("scope") or f"repository:{repository}:{'pull,push' if write else 'pull'}"
        key = (params["realm"], params.get("service", ""), scope)
        self._scopes[(repository, write)] = key
        cached = self._tokens.get(key)
        if cached is None or sent.get("Authorization") == f"Bearer {cached}":
            # None yet, or the one we sent was refused (expired): fetch a fresh one, once.
            self._tokens[key] = cached = self._fetch_token(key, f"{where} (token from {key[0]})")
        return {"Authorization": f"Bearer {cached}"}

    def _fetch_token(self, key: tuple[str, str, str], where: str) -> str:
        realm, service, scope = key
        creds = self._credentials()
        query: list[tuple[str, str]] = [("service", service)] if service else []
        query += [("scope", s) for s in scope.split()]
        try:
            if creds.get("identitytoken"):  # OAuth2 refresh token stored by `docker login`
                form = [*query, ("grant_type", "refresh_token"), ("client_id", "olly"),
                        ("refresh_token", creds["identitytoken"])]
                resp = self._session.post(realm, data=form, timeout=self.timeout)
            else:
                auth = (creds.get("username", ""), creds["password"]) if creds.get("password") else None
                resp = self._session.get(realm, params=query, auth=auth, timeout=self.timeout)
        except requests.RequestException as exc:
            raise self._error("registry-unreachable", f"is unreachable for {where}: {self._describe(exc)}") from None
        if resp.status_code in (401, 403):
            word = "unauthorized" if resp.status_code == 401 else "denied"
            raise self._error("registry-denied", f"HTTP {resp.status_code} {word} for {where}"
                              f"{_error_detail(resp)}; run: docker login {self.endpoint.host}")
        try:
            payload = resp.json() if resp.status_code == 200 else {}
            token = payload.get("token") or payload.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise self._error("registry-error", f"HTTP {resp.status_code} for {where}: no token in the answer")
        self._secrets.add(token)
        return token

    def _credentials(self) -> dict[str, str]:
        """The user's docker credentials for this host (lower-case keys), or {}."""
        if self._creds is None:
            import docker.auth
            import docker.errors

            host = self.endpoint.host
            try:
                cfg = docker.auth.resolve_authconfig(docker.auth.load_config(),
                                                     None if host in _DOCKER_HUB else host) or {}
            except (docker.errors.DockerException, ValueError, TypeError) as exc:
                raise self._error("registry-denied", f"cannot read docker credentials for {host} "
                                  f"({type(exc).__name__}); run: docker login {host}") from None
            self._creds = {k.lower(): v for k, v in cfg.items() if isinstance(v, str) and v}
            self._secrets.update(v for k, v in self._creds.items() if k in ("password", "identitytoken"))
        return self._creds

    # -- messages ---------------------------------------------------------

    def _check_digest(self, resp: requests.Response, digest: str, what: str) -> None:
        reported = resp.headers.get("Docker-Content-Digest")
        if reported and reported != digest:
            raise self._error("registry-error", f"registry reported digest {reported} for {what}, expected {digest}")

    def _error(self, reason: str, text: str) -> OllyError:
        sep = " " if text.startswith("is ") else ": "
        message = f"registry '{self.endpoint.name}' ({self.endpoint.host}){sep}{text}"
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return OllyError(reason, " ".join(message.split()))

    def _describe(self, exc: requests.RequestException) -> str:
        """A short cause for a transport failure, without URLs or headers."""
        text = repr(exc)
        if isinstance(exc, requests.exceptions.SSLError):
            hint = "; is it a plain-http registry (set insecure = true)?" if "WRONG_VERSION" in text else ""
            return "TLS error" + (": certificate verify failed" if "CERTIFICATE_VERIFY" in text else "") + hint
        if isinstance(exc, requests.exceptions.Timeout):
            return f"timed out after {self.timeout:g}s"
        if "Connection refused" in text or "ConnectionRefused" in text:
            return "connection refused"
        if "NameResolution" in text or "Name or service not known" in text or "getaddrinfo" in text:
            return "cannot resolve host name"
        if isinstance(exc, requests.exceptions.ConnectionError):
            return "connection failed"
        return type(exc).__name__


def _ref(repository: str, reference: str) -> str:
    return f"{repository}{'@' if ':' in reference else ':'}{reference}"


def _basic_header(creds: dict[str, str]) -> str:
    pair = f"{creds.get('username', '')}:{creds.get('password', '')}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _error_detail(resp: requests.Response) -> str:
    """``": CODE: message"`` from a registry's JSON error body, or ""."""
    try:
        errors = resp.json().get("errors") or []
        first = errors[0]
        text = f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""
    return f": {text[:200]}" if text else ""
