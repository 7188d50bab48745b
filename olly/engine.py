"""The Docker engine: over its unix socket with olly's own HTTP (olly.enginehttp: version,
inspects, builds, tags, removals), and through the docker Python SDK for pushes, pulls and
tcp:// or ssh:// engines — a one-file rebuild does not pay the SDK's import.

Only this module talks to the engine. Errors become OllyError (engine down) or
BuildFailed (a target's build failed), never raw SDK exceptions.

Podman's Docker-compatible API (``podman system service``) is supported too; where it
differs (tag spelling, push output, TLS for loopback registries, build output and error
text) this module hides the difference, so the rest of olly sees one engine.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import quote

from olly import dockersdk, failpoints
from olly.enginehttp import EngineHTTPError, UnixEngineHTTP, default_endpoint, image_path, socket_path, version_of
from olly.errors import OllyError
from olly.lazy import lazy
from olly.scrub import scrub

credentials: Any = lazy("olly.credentials")  # auth for pulls, pushes and FROM images: not for a no-op

KEY_LABEL = "dev.olly.key"
DOCKER, PODMAN = "docker", "podman"  # Engine.kind
_FROM = re.compile(r"^\s*FROM\s+(?:--\S+\s+)*(\S+)", re.IGNORECASE)
_STEP_FROM = re.compile(r"^Step \d+/\d+ : FROM\s+(?:--\S+\s+)*(\S+)", re.IGNORECASE)
# Podman (buildah) heads a step "STEP 1/3: FROM x"; olly's logs use Docker's "Step 1/3 : FROM x".
_PODMAN_STEP = re.compile(r"^STEP (\d+/\d+): ", re.MULTILINE)
# Podman's failed RUN step; olly words it as Docker does, so messages do not depend on the engine.
_PODMAN_RUN_FAILED = re.compile(r'^building at STEP "RUN (.*)": while running runtime: exit status (\d+)$')
_ONBUILD = re.compile(r"#\(nop\) ONBUILD (.+)$")  # an image history entry of an ONBUILD instruction
_PUSHED_DIGEST = re.compile(r"\bdigest: (sha256:[0-9a-f]{64})\b")  # "<tag>: digest: sha256:… size: N"
_PULL_ERRORS = ("pull access denied", "manifest unknown", "not found: manifest", "dial tcp", "no such host",
                "failed to resolve", "connection refused", "i/o timeout", "repository does not exist",
                "tls: ", "unauthorized", "denied:")


_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}  # kernel names -> OCI platform names


def oci_platform(os_name: str, machine: str) -> str:
    """``linux/amd64`` from ``("Linux", "x86_64")``: the engine's or this machine's names."""
    arch = machine.lower()
    return f"{os_name.lower()}/{_ARCH.get(arch, arch)}"


class BuildFailed(Exception):
    """A build that the engine rejected; ``message`` is one line, ``tail`` the last log lines."""

    def __init__(self, message: str, tail: list[str]) -> None:
        super().__init__(message)
        self.message = message
        self.tail = tail


@dataclass
class BuildRequest:
    context: Iterable[bytes]  # the tar stream
    dockerfile_name: str  # inside the tar
    dockerfile: bytes
    dockerfile_display: str  # workspace-relative, for messages
    args: dict[str, str]
    target: str | None
    platform: str | None
    network: str | None
    labels: dict[str, str]
    log_path: Path
    no_cache: bool = False  # build every layer afresh (the layer cache would be wrong here)
    pull: bool = False  # ask the engine to refresh base images (--pull)
    on_line: Callable[[str], None] | None = None  # called with each build-log line, on the build's thread
    builder: str = "classic"  # classic | buildkit (olly.buildkit): the one the key was computed for
    # Paths sent that COPY must not see (the context's extras: a generated .dockerfile.<hex>, an
    # excluded Dockerfile or .dockerignore). dockerd drops them itself; Podman is told (excludes).
    dropped: tuple[str, ...] | None = None


def endpoint() -> str:
    return default_endpoint()


def engine_kind(version: dict[str, Any]) -> str:
    """``podman`` or ``docker``, from the engine's ``/version``: Podman names itself in
    ``Components`` ("Podman Engine"); Docker says "Engine" there."""
    names = [str(c.get("Name", "")) for c in version.get("Components") or [] if isinstance(c, dict)]
    names.append(str((version.get("Platform") or {}).get("Name", "")))
    return PODMAN if any("podman" in name.lower() for name in names) else DOCKER


def _libpod_version(version: dict[str, Any]) -> str:
    """The version of Podman's own API (its ``/v<version>/libpod/…`` paths)."""
    for component in version.get("Components") or []:
        if isinstance(component, dict) and "podman" in str(component.get("Name", "")).lower():
            return str((component.get("Details") or {}).get("APIVersion") or component.get("Version") or "4.0.0")
    return "4.0.0"


def canonical_ref(ref: str) -> str:
    """``ref`` fully qualified, as Docker normalises names (``app:t`` → ``docker.io/library/app:t``,
    ``org/app:t`` → ``docker.io/org/app:t``), with Podman's ``localhost/`` (its prefix for local
    names) read as Docker Hub's: engines spell one local tag several ways in ``RepoTags``."""
    host, slash, path = ref.partition("/")
    if not slash or not ("." in host or ":" in host or host == "localhost"):
        host, path = "docker.io", ref
    elif host in ("index.docker.io", "localhost"):
        host = "docker.io"
    if host == "docker.io" and "/" not in path:
        path = "library/" + path
    return f"{host}/{path}"


def familiar_ref(ref: str) -> str:
    """``ref`` as Docker shows it (``docker.io/library/app:t`` → ``app:t``, ``localhost/org/app:t``
    → ``org/app:t``): for messages; talk to the engine with the spelling it reported."""
    full = canonical_ref(ref)
    for prefix in ("docker.io/library/", "docker.io/"):
        if full.startswith(prefix):
            return full[len(prefix):]
    return full


def has_tag(image: dict[str, Any], ref: str) -> bool:
    """Does ``image`` (an inspect result) carry the tag ``ref`` (``repository:tag``)? Docker
    reports ``repo:tag``, Podman ``docker.io/repo:tag`` or ``localhost/repo:tag``."""
    wanted = canonical_ref(ref)
    return any(canonical_ref(str(tag)) == wanted for tag in image.get("RepoTags") or [])


def _loopback(reference: str) -> bool:
    """Is the registry of ``reference`` (``host[:port]/repo…``) on this machine? Docker treats
    127.0.0.0/8 as an insecure (http) registry by default; Podman must be told so per request."""
    host = reference.split("/", 1)[0]
    name = host[1:].partition("]")[0] if host.startswith("[") else host.rpartition(":")[0] or host
    if name == "localhost":
        return True
    import ipaddress  # 1 ms to import: only pushes, pulls and Podman builds ask

    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _fill_onbuild(api: Any, image: dict[str, Any]) -> None:
    """Podman's inspect reports no ``Config.OnBuild`` (4.3), though its builds run the triggers:
    take them from the image history. A trigger that a build of this image already ran (from
    its base) shows there too: olly then keys more of the context than needed, never less."""
    config = image.get("Config")
    if not isinstance(config, dict) or config.get("OnBuild"):
        return
    history = api.history(image["Id"])  # newest first
    triggers = [m.group(1).strip() for item in reversed(history or [])
                if (m := _ONBUILD.search(str(item.get("CreatedBy") or "")))]
    if triggers:
        config["OnBuild"] = triggers


def _pushed_digest(item: dict[str, Any]) -> str | None:
    """The manifest digest a push stream line reports: Docker's ``aux.Digest``, or the
    ``<tag>: digest: sha256:… size: N`` status line (the only one Podman writes)."""
    aux = item.get("aux")
    if isinstance(aux, dict) and aux.get("Digest"):
        return str(aux["Digest"])
    match = _PUSHED_DIGEST.search(str(item.get("status") or ""))
    return match.group(1) if match else None


class _HTTPHistory:
    """An image's history over the unix socket, for ``_fill_onbuild`` (what the SDK's
    ``history`` gives): a Podman inspect needs no SDK either."""

    def __init__(self, http: UnixEngineHTTP, version: str) -> None:
        self._http, self._version = http, version

    def history(self, image_id: str) -> Any:
        return self._http.get_json(image_path(self._version, image_id).removesuffix("/json") + "/history")


class _LaterInspect:
    """An inspect sent, read when called (once); ``close`` drops it unread."""

    def __init__(self, engine: Engine, ref: str, sent: Any) -> None:
        self._engine, self._ref, self._sent = engine, ref, sent

    def __call__(self) -> dict[str, Any] | None:
        return self._engine._inspect_http(self._ref, self._sent.json)

    def close(self) -> None:
        self._sent.close()


class Engine:
    """A reachable Docker engine. Construct once; safe to use from build threads."""

    def __init__(self, base_url: str | None = None) -> None:
        """The engine at ``base_url`` (``unix://``, ``tcp://``, ``ssh://``), by default the one
        DOCKER_HOST (or the default socket) names. A unix socket is asked what it is over raw
        HTTP (olly.enginehttp): the docker SDK is imported only once something needs it."""
        self.endpoint = base_url or endpoint()
        self._base_url = base_url
        self._sdk: Any = None
        self._sdk_lock = threading.Lock()
        path = socket_path(self.endpoint)
        self._http = UnixEngineHTTP(path) if path is not None else None
        try:
            self._info: dict[str, Any] = version_of(self.endpoint, self._http) if self._http else self._probe()
            self.version = str(self._info["ApiVersion"])
        except OllyError:
            raise
        except Exception as exc:  # the SDK raises many types for "not there"
            raise OllyError(
                "engine-unreachable",
                f"no Docker engine at {self.endpoint} ({_short(exc)}): start the engine (dockerd) or set DOCKER_HOST",
            )
        self.kind = engine_kind(self._info)  # docker | podman: asked once, for messages and behaviour
        self.engine_version = str(self._info.get("Version", ""))

    def _probe(self) -> dict[str, Any]:
        """An SDK engine (tcp://, ssh://, TLS): connect, negotiate the API version, ask /version."""
        docker = self._docker()
        self._sdk = docker.APIClient(version="auto", timeout=10, **self._sdk_kwargs())
        self._sdk.ping()
        try:
            info: dict[str, Any] = self._sdk.version()
        except Exception as exc:
            raise OllyError("engine-unreachable", f"lost the Docker engine at {self.endpoint}: {_short(exc)}")
        return {**info, "ApiVersion": self._sdk.api_version}

    def _docker(self) -> Any:
        """The docker SDK (olly.dockersdk: without paramiko unless this engine is ssh://)."""
        return dockersdk.load(ssh=self.endpoint.startswith("ssh://"))

    def _sdk_kwargs(self) -> dict[str, Any]:
        self._docker()
        from docker.utils import kwargs_from_env

        return {"base_url": self._base_url} if self._base_url else kwargs_from_env()

    @property
    def api(self) -> Any:
        """The docker SDK's client, created on first use (builds, pushes, tags, gc)."""
        with self._sdk_lock:  # build threads may ask at once
            if self._sdk is None:
                self._sdk = self._docker().APIClient(version=self.version, timeout=10, **self._sdk_kwargs())
            return self._sdk

    @property
    def platform(self) -> str:
        """The engine's own platform (``linux/amd64``): what it builds when none is asked for."""
        return oci_platform(str(self._info.get("Os", "linux")), str(self._info.get("Arch", "")))

    def _client(self) -> Any:
        return self._docker().APIClient(version=self.version, timeout=120, **self._sdk_kwargs())

    def inspect(self, ref: str) -> dict[str, Any] | None:
        if self._http is not None:
            return self._inspect_http(ref)
        import docker.errors

        try:
            image: dict[str, Any] = self.api.inspect_image(ref)
            if self.kind == PODMAN:
                _fill_onbuild(self.api, image)
            return image
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as exc:
            if exc.status_code == 404:
                return None
            raise OllyError("engine-error", f"engine error inspecting {ref}: {_short(exc)}")
        except Exception as exc:
            raise OllyError("engine-unreachable", f"lost the Docker engine at {self.endpoint}: {_short(exc)}")

    def inspect_later(self, ref: str) -> Callable[[], dict[str, Any] | None] | None:
        """``inspect`` asked now, answered when the result is called (olly.imageview prefetch):
        over olly's own socket client only, and not on Podman (its answer needs more calls).
        None when it cannot be asked that way or sending failed (then ask :meth:`inspect`)."""
        if self._http is None or self.kind == PODMAN:
            return None
        try:
            sent = self._http.send_get(image_path(self.version, ref))
        except OSError:
            return None
        return _LaterInspect(self, ref, sent)

    def _inspect_http(self, ref: str, fetch: Callable[[], Any] | None = None) -> dict[str, Any] | None:
        """``inspect`` over the unix socket, with the SDK path's results and errors."""
        try:
            if fetch is None:
                fetch = lambda: self._http.get_json(image_path(self.version, ref))  # type: ignore[union-attr]  # noqa: E731
            image: dict[str, Any] = fetch()
            if self.kind == PODMAN:
                _fill_onbuild(_HTTPHistory(self._http, self.version), image)  # type: ignore[arg-type]
            return image
        except EngineHTTPError as exc:
            if exc.status_code == 404:
                return None
            raise OllyError("engine-error", f"engine error inspecting {ref}: {_short(exc)}")
        except Exception as exc:
            raise OllyError("engine-unreachable", f"lost the Docker engine at {self.endpoint}: {_short(exc)}")

    def labelled_images(self) -> list[dict[str, Any]]:
        """Every image carrying olly's key label, in one call, shaped as ``inspect`` results
        (``Id``, ``RepoTags``, ``Config.Labels``): what a plan checks per target."""
        try:
            if self._http is not None:
                filters = json.dumps({"label": [KEY_LABEL]})
                listed = self._http.get_json(f"/v{self.version}/images/json", {"filters": filters})
            else:
                listed = self.api.images(filters={"label": KEY_LABEL})
        except Exception as exc:
            raise OllyError("engine-error", f"engine error listing olly's images: {_short(exc)}")
        return [{"Id": i.get("Id"), "RepoTags": i.get("RepoTags") or [], "Config": {"Labels": i.get("Labels") or {}}}
                for i in listed if isinstance(i, dict)]

    def tag(self, image_id: str, repository: str, tag: str) -> None:
        try:
            if self._http is not None:
                self._http.call("POST", self._image_url(image_id, "tag"), {"repo": repository, "tag": tag, "force": "1"})
            else:
                self.api.tag(image_id, repository, tag, force=True)
        except Exception as exc:
            raise OllyError("engine-error", f"cannot tag {image_id} as {repository}:{tag}: {_short(exc)}")

    def discard(self, image_id: str) -> None:
        """Remove an image whose build was discarded (its inputs changed mid-build). Best effort."""
        self._remove(image_id, force=True, noprune=False)  # unreferenced is untidy, not wrong: nothing points to it

    def untag(self, ref: str) -> None:
        """Drop one tag (never the image: it keeps its other tags). Best effort."""
        self._remove(ref, force=False, noprune=True)  # a leftover tag is untidy, not wrong

    def _remove(self, ref: str, force: bool, noprune: bool) -> None:
        try:
            if self._http is not None:
                self._http.call("DELETE", self._image_url(ref), {"force": str(int(force)), "noprune": str(int(noprune))})
            else:
                self.api.remove_image(ref, force=force, noprune=noprune)
        except Exception:
            pass

    def _image_url(self, ref: str, action: str = "") -> str:
        """``/v<version>/images/<ref>[/<action>]``, as ``image_path`` quotes references."""
        return image_path(self.version, ref).removesuffix("/json") + (f"/{action}" if action else "")

    def post_stream(self, path: str, params: dict[str, str], body: Iterable[bytes],
                    headers: dict[str, str]) -> Iterator[dict[str, Any]]:
        """POST ``path`` (``/build``) with ``body`` streamed, and the engine's JSON stream back,
        read for as long as the engine works: over the unix socket, else through the SDK."""
        if self._http is not None:
            return self._http.request("POST", f"/v{self.version}{path}", params, body, headers, timeout=None).json_items()
        client = self._client()
        response = client._post(client._url(path), params=params, data=body, headers=headers, stream=True, timeout=None)
        client._raise_for_status(response)
        return client._stream_helper(response, decode=True)  # type: ignore[no-any-return]

    def has_network(self, name: str) -> bool | None:
        """Does the engine have network ``name``? None when it would not say (an error)."""
        try:
            if self._http is not None:
                self._http.get_json(f"/v{self.version}/networks/{quote(name, safe='')}")
            else:
                self.api.inspect_network(name)
            return True
        except Exception as exc:
            return False if _status_of(exc) == 404 else None

    def push(self, repository: str, tag: str, registry_name: str) -> str | None:
        """Push ``repository:tag`` (credentials from the user's docker config); return the
        manifest digest the engine reports, or None if it reports none (an engine's word is
        no proof anyway: callers read the pushed tag back from the registry)."""
        digest: str | None = None
        self._docker()  # before credentials imports the SDK in its own way
        auth = credentials.image_auth_config(repository, registry_name)  # the SDK then runs no helper itself
        try:
            for item in self._push_stream(repository, tag, auth):
                failpoints.hit("pushing")  # the registry upload is under way
                if "error" in item:
                    raise OllyError("push-failed", f"push of {repository}:{tag} to registry {registry_name!r} failed: {_short(Exception(item['error']))}")
                digest = _pushed_digest(item) or digest
        except OllyError:
            raise
        except Exception as exc:
            raise OllyError("push-failed", f"push of {repository}:{tag} to registry {registry_name!r} failed: {_short(exc)}")
        return digest

    def _push_stream(self, repository: str, tag: str, auth: dict[str, str]) -> Iterator[dict[str, Any]]:
        client = self._client()
        if self.kind == PODMAN and _loopback(repository):
            # Podman verifies TLS even on loopback (Docker never does there); tlsVerify=false lets it
            # fall back to http as Docker would. Elsewhere registries.conf decides, as insecure-registries does.
            add_params(client, "/push", {"tlsVerify": "false"})
        return client.push(repository, tag=tag, stream=True, decode=True, auth_config=auth)

    def _pull_stream(self, reference: str, auth: dict[str, str]) -> Iterator[dict[str, Any]]:
        client = self._client()
        if self.kind != PODMAN:
            return client.pull(reference, stream=True, decode=True, auth_config=auth)
        # Podman's compat pull has no tlsVerify: its own endpoint does (same stream shape: stream/error).
        params = {"reference": reference, **({"tlsVerify": "false"} if _loopback(reference) else {})}
        url = f"{client.base_url}/v{_libpod_version(self._info)}/libpod/images/pull"
        response = client._post(url, params=params, headers={"X-Registry-Auth": _encode_auth(auth)},
                                stream=True, timeout=None)
        client._raise_for_status(response)
        return client._stream_helper(response, decode=True)

    def _has(self, ref: str) -> bool:
        try:
            return self.inspect(ref) is not None
        except OllyError:  # e.g. a reference the engine finds malformed: its build will say
            return False

    def _podman_build_params(self, req: BuildRequest) -> dict[str, str]:
        """What Podman's /build needs, beyond Docker's parameters, to build as dockerd does."""
        params = _podman_network_params(req.network)
        # Podman applies the context's .dockerignore again, with its own matcher, to the context
        # olly already filtered (dockerd only drops the Dockerfile and .dockerignore if excluded).
        # Given `excludes` it reads no .dockerignore: drop exactly what dockerd drops.
        if req.dropped is not None:
            params["excludes"] = json.dumps([_literal_pattern(path) for path in req.dropped] or ["!*"])  # !*: none
        pulls = [ref for ref in _base_images(req.dockerfile, req.args) if req.pull or not self._has(ref)]
        if pulls and all("/" in ref and _loopback(ref) for ref in pulls):
            # As for push and pull: Docker pulls bases from loopback registries over http. Podman's
            # tlsVerify holds for the whole build, so never when it also pulls from elsewhere.
            params["tlsVerify"] = "false"
        return params

    def pull(self, reference: str, registry_name: str) -> str:
        """Pull ``reference`` (``repo@sha256:…`` or ``repo:tag``) and return the local image id."""
        self._docker()  # before credentials imports the SDK in its own way
        auth = credentials.image_auth_config(reference, registry_name)  # the SDK then runs no helper itself
        try:
            for item in self._pull_stream(reference, auth):
                if "error" in item:
                    raise OllyError("pull-failed", f"pull of {reference} from registry {registry_name!r} failed: {_short(Exception(item['error']))}")
        except OllyError:
            raise
        except Exception as exc:
            raise OllyError("pull-failed", f"pull of {reference} from registry {registry_name!r} failed: {_short(exc)}")
        image = self.inspect(reference)
        if image is None:
            raise OllyError("pull-failed", f"pulled {reference} but the engine does not show it")
        return str(image["Id"])

    def build(self, req: BuildRequest) -> str:
        """Build and return the image id; raise BuildFailed with the engine's error."""
        if req.builder == "buildkit":
            from olly import buildkitbuild

            return buildkitbuild.build(self, req)
        req.log_path.parent.mkdir(parents=True, exist_ok=True)
        image_id: str | None = None
        tail: list[str] = []
        steps: list[str] = []
        # Line-buffered: `tail -f` on the log follows the build live.
        with open(req.log_path, "w", encoding="utf-8", errors="replace", buffering=1) as log:
            try:
                headers = build_headers(req.dockerfile)
                params = classic_build_params(req, self.endpoint)
                if self.kind == PODMAN:
                    params.update(self._podman_build_params(req))
                for item in self.post_stream("/build", params, req.context, headers):
                    if "stream" in item:
                        text = scrub(item["stream"])  # a RUN step may print a secret build arg
                        text = _PODMAN_STEP.sub(r"Step \1 : ", text)  # one log format whatever the engine
                        log.write(text)
                        for line in text.splitlines():
                            if line.strip():
                                tail = (tail + [line])[-20:]
                                if req.on_line is not None:
                                    req.on_line(line)  # progress: the live view, --progress json
                                if line.startswith("Step "):
                                    steps.append(line)
                                    failpoints.hit("building")  # the engine is mid-build
                    if "aux" in item and isinstance(item["aux"], dict) and "ID" in item["aux"]:
                        image_id = item["aux"]["ID"]
                    if "error" in item:
                        error = scrub(str(item["error"]).strip())
                        log.write(f"ERROR: {error}\n")
                        raise BuildFailed(_explain(error, steps, req), tail + [error])
            except BuildFailed:
                raise
            except OllyError:
                raise
            except Exception as exc:
                raise engine_failure(exc, log, tail, _podman_refusal(exc) if self.kind == PODMAN else None)
        if image_id is None:
            raise BuildFailed("the engine reported no image id", tail)
        return image_id


def build_args(req: BuildRequest, endpoint: str) -> dict[str, str]:
    """The build args a /build request sends, either builder: the target's own, over the docker
    config's proxies for ``endpoint`` (``HTTP_PROXY``, ...), as `docker build` adds them."""
    return {**credentials.config_proxy_args(endpoint), **req.args}


def classic_build_params(req: BuildRequest, endpoint: str) -> dict[str, str]:
    """/build query parameters for a classic build: what ``docker build`` sends, with the
    proxies of the user's docker config for ``endpoint`` as build args (as the docker CLI and
    docker-py add them; predefined args, outside the layer cache and the image's history)."""
    params = {"q": "0", "rm": "1", "forcerm": "1", "dockerfile": req.dockerfile_name,
              "buildargs": json.dumps(build_args(req, endpoint)), "labels": json.dumps(req.labels),
              "nocache": str(int(req.no_cache)), "pull": str(int(req.pull))}
    for name, value in (("target", req.target), ("platform", req.platform), ("networkmode", req.network)):
        if value:
            params[name] = value
    return params


def _status_of(exc: BaseException) -> int | None:
    """The HTTP status of an engine's error answer: olly's (EngineHTTPError) or the SDK's."""
    return getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)


def _podman_refusal(exc: BaseException) -> str | None:
    """Podman answers some refusals of a build context with a bare HTTP 500 (the reason is only
    in its service log): say what it most likely was instead of quoting the request URL."""
    if _status_of(exc) != 500 or getattr(exc, "explanation", None):
        return None
    return ("Podman refused the build context (HTTP 500 without a reason; its service log has it). "
            "Podman cannot unpack a context holding a symlink that leaves it (e.g. l -> ../x): "
            "exclude such links in .dockerignore")


def _literal_pattern(path: str) -> str:
    """``path`` as a .dockerignore pattern that matches only itself."""
    escaped = re.sub(r"([*?\[\\])", r"\\\1", path)
    return "\\" + escaped if escaped.startswith("!") else escaped


def _base_images(dockerfile: bytes, args: dict[str, str]) -> list[str]:
    """The external images a build's FROM lines name (not stages, not scratch)."""
    from olly import dockerfile as parser

    try:
        return [image.reference for image in parser.external_images(parser.parse(dockerfile), args, set())]
    except Exception:  # a Dockerfile olly cannot read: the engine will say what is wrong
        return []


def _podman_network_params(network: str | None) -> dict[str, str]:
    """The build network as Podman's /build takes it (as podman-remote sends it): buildah's
    policy number and a namespace option. Podman ignores Docker's ``networkmode`` names: a
    "none" build would get the host network."""
    params: dict[str, str] = {}
    if network == "none":
        params["networkmode"] = "1"  # buildah NetworkDisabled: loopback only
    elif network == "host":
        params.update(networkmode="2", nsoptions=json.dumps([{"Name": "network", "Host": True}]))
    elif network in ("bridge", "default"):  # Docker's default network: a private one (Podman's default is host)
        params.update(networkmode="2", nsoptions=json.dumps([{"Name": "network", "Host": False, "Path": ""}]))
    elif network:  # a Podman network by name
        params.update(networkmode="2", nsoptions=json.dumps([{"Name": "network", "Path": network}]))
    return params


def add_params(client: Any, path_suffix: str, extra: dict[str, str]) -> None:
    """Send ``extra`` query parameters with this docker-py client's requests to ``…<path_suffix>``
    (its ``build`` and ``push`` cannot pass parameters only Podman knows)."""
    post = client._post

    def _post(url: str, **kwargs: Any) -> Any:
        if url.endswith(path_suffix):
            kwargs["params"] = {**(kwargs.get("params") or {}), **extra}
        return post(url, **kwargs)

    client._post = _post


def build_headers(dockerfile: bytes) -> dict[str, str]:
    """The headers of a ``/build`` request (either builder): the context's type, and credentials
    only for the registries of the Dockerfile's FROM images, resolved with olly's time limit
    (docker-py would run every credential helper in the config, without one)."""
    auth = _base_image_auth(dockerfile)
    return {"Content-Type": "application/x-tar", **({"X-Registry-Config": _encode_auth(auth)} if auth else {})}


def _base_image_auth(dockerfile: bytes) -> dict[str, dict[str, str]]:
    """Credentials per registry host of the Dockerfile's literal FROM images (``${ARG}``
    images are olly's own dependencies, already local)."""
    out: dict[str, dict[str, str]] = {}
    for line in dockerfile.decode("utf-8", "replace").splitlines():
        match = _FROM.match(line)
        image = match.group(1) if match else ""
        if not image or "$" in image or image.lower() == "scratch":
            continue
        host = registry_host(image)
        config = credentials.auth_config(host) if host else {}
        if config:
            out[config.get("serveraddress", host)] = config
    return out


def registry_host(image: str) -> str | None:
    """The registry ``image`` is pulled from, as Docker resolves it: the first path component
    if it looks like a host (a dot, a port, or ``localhost``), else Docker Hub (``docker.io``).
    None for a name no registry can serve (a stage name gets Docker Hub: harmless)."""
    first, slash, _ = image.split("@", 1)[0].partition("/")
    if not slash or not ("." in first or ":" in first or first == "localhost"):
        return "docker.io"
    if first.startswith("-") or first.endswith("-"):
        return None
    return "docker.io" if first == "index.docker.io" else first


def _encode_auth(auth: dict[str, Any]) -> str:
    """An auth header value as the engine reads it: the JSON, base64url (what docker-py sends)."""
    return base64.urlsafe_b64encode(json.dumps(auth).encode("ascii")).decode("ascii")


def _explain(error: str, steps: list[str], req: BuildRequest) -> str:
    """Turn a base-image pull failure into one line naming the image and Dockerfile line."""
    first = error.splitlines()[0]
    run = _PODMAN_RUN_FAILED.match(first)
    if run:
        return f"The command '{run.group(1)}' returned a non-zero code: {run.group(2)}"
    if not steps or not _STEP_FROM.match(steps[-1]):
        return first
    if not any(marker in error.lower() for marker in _PULL_ERRORS):
        return first
    from_index = sum(1 for s in steps if _STEP_FROM.match(s)) - 1
    line_no, image = _from_line(req.dockerfile, from_index)
    where = f"{req.dockerfile_display}:{line_no}" if line_no else req.dockerfile_display
    return f"base image {image} cannot be pulled ({where}): {first}"


def _from_line(dockerfile: bytes, index: int) -> tuple[int | None, str]:
    found = 0
    for number, line in enumerate(dockerfile.decode("utf-8", "replace").splitlines(), start=1):
        match = _FROM.match(line)
        if match:
            if found == index:
                return number, match.group(1)
            found += 1
    return None, "?"


def engine_failure(exc: BaseException, log: Any, tail: list[str], short: str | None = None) -> BuildFailed:
    """The engine failed mid-build (not the build): logged, and worded in one line (``short``
    if given). docker's HTTP errors quote the request URL, buildargs (secrets) included."""
    log.write(f"ERROR: {scrub(str(exc))}\n")
    short = short or scrub(_short(exc))
    return BuildFailed(f"engine error during build: {short}", tail + [short])


def _short(exc: BaseException) -> str:
    """One readable line: the engine's own explanation, or the OS-level cause of a
    connection failure, instead of a chain of wrapped exception reprs."""
    explanation = getattr(exc, "explanation", None)
    if explanation:
        text = str(explanation)
    else:
        root = _os_cause(exc, set())
        text = root.strerror if root is not None and root.strerror else str(exc)
    lines = text.strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


def _os_cause(exc: BaseException, seen: set[int]) -> OSError | None:
    if id(exc) in seen:
        return None
    seen.add(id(exc))
    if isinstance(exc, OSError) and exc.strerror:
        return exc
    nested = [a for a in exc.args if isinstance(a, BaseException)] + [c for c in (exc.__cause__, exc.__context__) if c]
    for inner in nested:
        found = _os_cause(inner, seen)
        if found is not None:
            return found
    return None
