"""A small OCI distribution (registry v2) client: manifests and blobs over HTTP.

Only what olly needs: ask a registry for a manifest's digest, fetch a manifest,
push blobs and manifests, and delete a manifest (tests). Authentication follows
the docker CLI: anonymous first; on ``401`` with a ``Bearer`` challenge a token
is fetched from the challenge's realm (sending the user's docker credentials for
the host, if any) and the request is retried once; on a ``Basic`` challenge the
credentials are sent directly. Credentials come from :mod:`olly.credentials`
(``$DOCKER_CONFIG/config.json``, helpers run under a deadline).

Trust: a digest this client returns is one it computed from bytes it fetched, and
confirmed to resolve by itself to the same bytes; a registry's ``Docker-Content-Digest``
is never taken on its word (a proxy's stale HEAD answer would be pinned and 404).

Every HTTP request (token fetches too) has a total deadline (``timeout``, default
``OLLY_REGISTRY_TIMEOUT`` or 30 s), not only a per-read one: a server dripping one byte
every few seconds never trips a read timeout.

Every failure is an :class:`~olly.errors.OllyError` whose one-line message names
the registry (BUILD.toml name and host) and the HTTP status when there is one;
credentials and tokens never appear in messages, in any encoding, even when a
registry's error body echoes them.

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

from olly import credentials
from olly.credentials import Credentials
from olly.errors import OllyError


class _LazyModule:
    """``requests`` (and urllib3 under it) imported on first use: a run that never talks to
    a registry (most local `olly make` and `plan` runs) does not pay ~60 ms for it."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        import importlib

        return getattr(importlib.import_module(self._name), attr)


requests: Any = _LazyModule("requests")

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST))

IMAGE_MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
IMAGE_CONFIGS = ("application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json")
DEFAULT_TIMEOUT = 30.0
TIMEOUT_ENV = "OLLY_REGISTRY_TIMEOUT"

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')
_NEXT_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')
TAGS_PAGE = 1000  # tags asked for per page of a tag list
MAX_TAG_PAGES = 1000
# Docker Hub's well-known names: credentials live under "docker.io", the API elsewhere.
_DOCKER_HUB = credentials.DOCKER_HUB


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

    def __init__(self, endpoint: Endpoint, timeout: float | None = None) -> None:
        """``timeout``: total seconds per HTTP request (default: ``OLLY_REGISTRY_TIMEOUT`` or 30)."""
        self.endpoint = endpoint
        self.timeout = credentials.seconds_from_env(TIMEOUT_ENV, DEFAULT_TIMEOUT) if timeout is None else timeout
        api_host = "registry-1.docker.io" if endpoint.host in _DOCKER_HUB else endpoint.host
        self._base = f"{'http' if endpoint.insecure else 'https'}://{api_host}"
        self._session = requests.Session()
        for prefix in ("http://", "https://"):
            self._session.mount(prefix, _deadline().DeadlineAdapter())
        self._tokens: dict[tuple[str, str, str], str] = {}  # (realm, service, scope) -> token
        self._scopes: dict[tuple[str, bool], tuple[str, str, str]] = {}  # (repo, write) -> key
        self._basic = False  # the registry asked for Basic auth
        self._creds: Credentials | None = None  # loaded lazily, on the first challenge
        self._secrets: set[str] = set()  # masked in every message, in every encoding

    # -- public API -------------------------------------------------------

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """Digest of ``repository:reference`` (tag or digest), or None if it does not exist (404).

        olly records and pins what this returns, so it is never the registry's word (a HEAD's
        Docker-Content-Digest can be stale or wrong): the manifest is fetched and hashed, and
        the digest is fetched too, its bytes hashing to it. Either 404 = None."""
        found = self._verified_manifest(repository, reference)
        return None if found is None else found[2]

    def manifest_config_digest(self, repository: str, reference: str) -> tuple[str, str] | None:
        """``(manifest digest, config digest)`` of a single image manifest (OCI or Docker v2
        schema 2), both verified from fetched bytes; None if the manifest or its config blob
        is missing (404). A Docker engine's image id is the config digest."""
        found = self._verified_manifest(repository, reference)
        if found is None:
            return None
        body, media_type, digest = found
        what = _ref(repository, reference)
        doc = _json_object(body)
        media_type = doc.get("mediaType") or media_type
        config = doc.get("config") if isinstance(doc.get("config"), dict) else {}
        if media_type not in IMAGE_MANIFESTS or config.get("mediaType") not in IMAGE_CONFIGS:
            raise self._error("registry-error", f"{what} is not a single image manifest ({media_type or 'no media type'}"
                              f", config {str(config.get('mediaType') or 'missing')[:80]})")
        config_digest = config.get("digest")
        if not isinstance(config_digest, str) or not _DIGEST.match(config_digest):
            raise self._error("registry-error", f"manifest {what} names no sha256 config digest")
        resp = self._request("GET", repository, f"blobs/{config_digest}", f"{repository} blob {config_digest}",
                             ok=(200, 404))
        if resp.status_code == 404:
            return None
        if sha256_digest(resp.content) != config_digest:
            raise self._error("registry-error", f"blob {repository}@{config_digest} has digest "
                              f"{sha256_digest(resp.content)}")
        return digest, config_digest

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str, str]:
        """``(body, media type, digest)`` of a manifest; a missing one is a ``registry-error``."""
        found = self._fetch_manifest(repository, reference, missing_ok=False)
        assert found is not None
        return found

    def _verified_manifest(self, repository: str, reference: str) -> tuple[bytes, str, str] | None:
        """A tag's manifest whose digest was confirmed to resolve to the same bytes."""
        found = self._fetch_manifest(repository, reference)
        if found is not None and found[2] != reference:
            # What olly pins is the digest: it must answer by itself, with these bytes.
            again = self._fetch_manifest(repository, found[2])
            if again is None:
                return None
        return found

    def _fetch_manifest(self, repository: str, reference: str,
                        missing_ok: bool = True) -> tuple[bytes, str, str] | None:
        """GET a manifest: ``(body, media type, sha256 of body)``; the body must hash to a digest
        reference and to any Docker-Content-Digest the registry claims."""
        what = _ref(repository, reference)
        resp = self._request("GET", repository, f"manifests/{reference}", what,
                             headers={"Accept": MANIFEST_ACCEPT}, ok=(200, 404) if missing_ok else (200,))
        if resp.status_code == 404:
            return None
        body = resp.content
        digest = sha256_digest(body)
        if not _json_object(body):  # e.g. a response cut short: never hash it into a pin
            raise self._error("registry-error", f"manifest {what} is not a JSON object ({len(body)} bytes)")
        if ":" in reference and reference != digest:
            raise self._error("registry-error", f"manifest {what} has digest {digest}: its bytes do not match")
        claimed = resp.headers.get("Docker-Content-Digest", "").strip()
        if claimed and claimed != digest:
            raise self._error("registry-error", f"manifest {what} has digest {digest}, but the registry "
                              f"claims {claimed[:80]}")
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        if not media_type or media_type in ("application/json", "application/octet-stream"):
            media_type = _json_object(body).get("mediaType") or media_type
        return body, media_type, digest

    def blob_exists(self, repository: str, digest: str) -> bool:
        """True if the registry has blob ``digest`` in ``repository``."""
        resp = self._request("HEAD", repository, f"blobs/{digest}", f"{repository} blob {digest}", ok=(200, 404))
        return resp.status_code == 200

    def list_tags(self, repository: str) -> list[str]:
        """Every tag of ``repository`` (``GET /v2/<name>/tags/list``, following ``Link`` pages);
        an unknown repository has none (404)."""
        tags: list[str] = []
        url = f"tags/list?n={TAGS_PAGE}"
        for _ in range(MAX_TAG_PAGES):  # a registry whose Link loops must not keep olly here
            resp = self._request("GET", repository, url, f"{repository} tags", ok=(200, 404))
            if resp.status_code == 404:
                return tags
            page = _json_object(resp.content).get("tags") or []
            if not isinstance(page, list) or not all(isinstance(t, str) for t in page):
                raise self._error("registry-error", f"tag list of {repository} is not a list of names")
            tags += page
            link = _NEXT_LINK.search(resp.headers.get("Link", ""))
            if link is None:
                return tags
            url = urljoin(self._base + "/", link.group(1))
        raise self._error("registry-error", f"tag list of {repository} has over {MAX_TAG_PAGES} pages")

    def get_blob(self, repository: str, digest: str) -> bytes | None:
        """The bytes of blob ``digest`` (checked to hash to it), or None if missing (404)."""
        what = f"{repository} blob {digest}"
        resp = self._request("GET", repository, f"blobs/{digest}", what, ok=(200, 404))
        if resp.status_code == 404:
            return None
        if sha256_digest(resp.content) != digest:
            raise self._error("registry-error", f"blob {repository}@{digest} has digest {sha256_digest(resp.content)}")
        return resp.content

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
        detail = self._detail(resp)
        if status in (401, 403):
            word = "unauthorized" if status == 401 else "denied"
            raise self._error("registry-denied", f"HTTP {status} {word} for {method} {what}{detail}; "
                              f"run: docker login {self.endpoint.host}")
        raise self._error("registry-error", f"HTTP {status} for {method} {what}{detail}")

    def _send(self, method: str, url: str, headers: dict[str, str], kwargs: dict[str, Any]) -> requests.Response:
        return self._http(method, url, "", headers=headers, allow_redirects=method in ("GET", "HEAD"), **kwargs)

    def _http(self, method: str, url: str, where: str, **kwargs: Any) -> requests.Response:
        """One HTTP exchange, body included, within ``self.timeout`` seconds in total."""
        deadline = _deadline().Deadline(self.timeout)
        try:
            with deadline:
                resp = self._session.request(method, url, timeout=self.timeout, **kwargs)
        except (requests.RequestException, OSError) as exc:
            cause = f"timed out after {self.timeout:g}s" if deadline.expired else self._describe(exc)
            raise self._error("registry-unreachable", f"is unreachable{where}: {cause}") from None
        if deadline.expired:
            # Cut off mid-headers, http.client returns what it had as a whole response
            # (urllib3 only logs the defect): whatever came back is not an answer.
            raise self._error("registry-unreachable", f"is unreachable{where}: timed out after {self.timeout:g}s")
        return resp

    def _auth_header(self, repository: str, write: bool) -> dict[str, str]:
        key = self._scopes.get((repository, write))
        if key is not None and key in self._tokens:
            return {"Authorization": f"Bearer {self._tokens[key]}"}
        if self._basic and self._credentials().password:
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
            return None if sent or not creds.password else {"Authorization": _basic_header(creds)}
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
        if creds.identitytoken:  # OAuth2 refresh token stored by `docker login`
            form = [*query, ("grant_type", "refresh_token"), ("client_id", "olly"),
                    ("refresh_token", creds.identitytoken)]
            resp = self._http("POST", realm, f" for {where}", data=form)
        else:
            auth = (creds.username, creds.password) if creds.password else None
            resp = self._http("GET", realm, f" for {where}", params=query, auth=auth)
        if resp.status_code in (401, 403):
            word = "unauthorized" if resp.status_code == 401 else "denied"
            raise self._error("registry-denied", f"HTTP {resp.status_code} {word} for {where}"
                              f"{self._detail(resp)}; run: docker login {self.endpoint.host}")
        try:
            payload = resp.json() if resp.status_code == 200 else {}
            token = payload.get("token") or payload.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise self._error("registry-error", f"HTTP {resp.status_code} for {where}: no token in the answer")
        self._remember(token)
        return token

    def _credentials(self) -> Credentials:
        """The user's docker credentials for this host (empty = anonymous)."""
        if self._creds is None:
            try:
                self._creds = credentials.resolve(self.endpoint.host)
            except OllyError as exc:  # a helper that hangs or fails: name the registry too
                raise self._error(exc.reason, exc.message) from None
            self._remember(*self._creds.secrets())
        return self._creds

    def _remember(self, *secrets: str) -> None:
        """Mask these in this client's messages, and in every output of this process."""
        self._secrets.update(s for s in secrets if s)
        credentials.remember(*secrets)

    # -- messages ---------------------------------------------------------

    def _check_digest(self, resp: requests.Response, digest: str, what: str) -> None:
        reported = resp.headers.get("Docker-Content-Digest")
        if reported and reported != digest:
            raise self._error("registry-error", f"registry reported digest {reported} for {what}, expected {digest}")

    def _error(self, reason: str, text: str) -> OllyError:
        sep = " " if text.startswith("is ") else ": "
        message = credentials.mask(f"registry '{self.endpoint.name}' ({self.endpoint.host}){sep}{text}",
                                   self._secrets)
        return OllyError(reason, " ".join(message.split()))

    def _detail(self, resp: requests.Response) -> str:
        """``": CODE: message"`` from a registry's JSON error body, or "". Masked before it is
        cut short: a cut could leave a partial secret that no longer matches the whole one."""
        text = _error_detail(resp)
        return f": {credentials.mask(text, self._secrets)[:200]}" if text else ""

    def _describe(self, exc: OSError) -> str:
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


def _deadline() -> Any:
    from olly import deadline

    return deadline


def _basic_header(creds: Credentials) -> str:
    pair = f"{creds.username}:{creds.password}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _error_detail(resp: requests.Response) -> str:
    """``CODE: message`` of a registry's JSON error body (the first error, whole), or ""."""
    try:
        first = (resp.json().get("errors") or [])[0]
        return f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
    except (ValueError, AttributeError, IndexError, TypeError, KeyError):
        return ""
