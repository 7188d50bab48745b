"""Docker credentials for a registry host, read as the docker CLI reads them, with
credential helpers run under a deadline.

Why not ``docker.auth``: docker-py runs ``docker-credential-<name>`` helpers without a
timeout. A helper waiting on a locked keychain, a GUI prompt or a dead agent then hangs
olly silently, with the workspace lock held. Here each helper gets
``OLLY_CREDENTIAL_HELPER_TIMEOUT`` seconds (default 30) and every failure is one
``registry-denied`` line naming the helper, with secrets masked.

Lookup, as docker does it: the config is ``$DOCKER_CONFIG/config.json`` (default
``~/.docker/config.json``; missing = anonymous). ``credHelpers[host]``, else ``credsStore``,
names a helper; its answer wins. A helper that says "credentials not found" (or answers
an empty username and secret) means: use the ``auths`` entry for the host if it holds
credentials (``auth`` = base64 ``user:password``, ``username``/``password``,
``identitytoken``), else anonymous. Docker Hub's names (docker.io, index.docker.io,
registry-1.docker.io) are all looked up as ``https://index.docker.io/v1/``.

Every secret read here is registered with :mod:`olly.scrub`, so no output of this
process shows it, in any encoding.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from olly import scrub
from olly.errors import OllyError

DEFAULT_HELPER_TIMEOUT = 30.0
TIMEOUT_ENV = "OLLY_CREDENTIAL_HELPER_TIMEOUT"
INDEX_URL = "https://index.docker.io/v1/"  # what docker calls Docker Hub in config.json and helpers
DOCKER_HUB = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
TOKEN_USERNAME = "<token>"  # a helper's way of saying "Secret is an identity token"
# Shorter values are not masked: masking "v" would garble every message and protects nothing.
MIN_SECRET = 4

# Secrets in shapes we can recognise without knowing them: an Authorization header's value,
# and `password=…` / `"secret": "…"` fields (e.g. a helper or registry echoing its input).
# A value needs a digit, capital or +/=% (base64, JWT): "basic authentication" is prose.
_AUTH_VALUE = re.compile(r"\b((?i:basic|bearer))(\s+|%20|\+)(?=[\w.~+/=%-]*[0-9A-Z+/=%])[\w.~+/=%-]{4,}")
_SECRET_FIELD = re.compile(r'(?i)(\b(?:password|passwd|secret|access_token|refresh_token|identitytoken|token)'
                           r'"?\s*[:=]\s*)("[^"]*"|[^\s,;&}"]+)')


@dataclass(frozen=True)
class Credentials:
    """What the user's docker config holds for one host (all empty = anonymous)."""

    username: str = ""
    password: str = ""
    identitytoken: str = ""  # an OAuth2 refresh token (`docker login` to some registries)

    def __bool__(self) -> bool:
        return bool(self.password or self.identitytoken)

    def secrets(self) -> list[str]:
        """The values to mask; ``user:password`` too, whose base64 is a Basic header."""
        pair = f"{self.username}:{self.password}" if self.password else ""
        return [v for v in (self.password, self.identitytoken, pair) if len(v) >= MIN_SECRET]


def config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return Path(base) / "config.json"


def helper_timeout() -> float:
    """Seconds a credential helper may take: ``OLLY_CREDENTIAL_HELPER_TIMEOUT`` or 30."""
    return seconds_from_env(TIMEOUT_ENV, DEFAULT_HELPER_TIMEOUT)


def seconds_from_env(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise OllyError("usage", f"{name} must be a positive number of seconds, not {raw[:40]!r}")
    return value


def resolve(host: str, timeout: float | None = None) -> Credentials:
    """The credentials for registry ``host`` ("host[:port]"); anonymous if there are none.
    Raises a ``registry-denied`` OllyError (message without host) if they cannot be read."""
    path = config_path()
    config = _load(path)
    hub = _canonical(host) == "docker.io"
    server = INDEX_URL if hub else host
    auths = config.get("auths") if isinstance(config.get("auths"), dict) else {}
    helpers = config.get("credHelpers") if isinstance(config.get("credHelpers"), dict) else {}
    name, source = _lookup(helpers, host), "credHelpers"
    if not name:
        name, source = config.get("credsStore"), "credsStore"
    found: Credentials | None = None
    if isinstance(name, str) and name:
        known = [s for entry in auths.values() for s in _entry_secrets(entry)]
        found = _run_helper(name, server, helper_timeout() if timeout is None else timeout,
                            f"{source} in {path}", known)
    if found is None:
        found = _from_auths(_lookup(auths, host), host, path)
    remember(*found.secrets())
    return found


def auth_config(host: str, timeout: float | None = None) -> dict[str, str]:
    """The ``auth_config`` for the docker SDK's push/pull (the engine's X-Registry-Auth).
    Always a dict, ``{}`` = anonymous: given one, the SDK runs no helper of its own."""
    creds = resolve(host, timeout)
    server = INDEX_URL if _canonical(host) == "docker.io" else host
    if creds.identitytoken:
        return {"identitytoken": creds.identitytoken, "serveraddress": server}
    if creds.password:
        return {"username": creds.username, "password": creds.password, "serveraddress": server}
    return {}


def image_auth_config(reference: str, registry_name: str) -> dict[str, str]:
    """:func:`auth_config` for the registry of image ``reference`` (``host/repo:tag``,
    ``host/repo@sha256:…``); errors name the registry. Why the engine needs it: given an
    ``auth_config`` (even ``{}``), docker-py's ``push``/``pull`` skip their own credential
    lookup (``auth.get_config_header``), which runs helpers with no timeout."""
    from docker.auth import resolve_repository_name
    from docker.errors import InvalidRepository
    from docker.utils import parse_repository_tag

    try:
        host, _ = resolve_repository_name(parse_repository_tag(reference)[0])
    except InvalidRepository as exc:
        raise OllyError("engine-error", f"invalid image reference {reference}: {str(exc)[:200]}") from None
    try:
        return auth_config(host)
    except OllyError as exc:
        raise OllyError(exc.reason, f"registry {registry_name!r} ({host}): {exc.message}") from None


def remember(*secrets: str) -> None:
    """Mask these in every output of this process from now on (:mod:`olly.scrub`)."""
    scrub.register(*(s for s in secrets if len(s) >= MIN_SECRET))


def mask(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with ``secrets`` (every encoding :mod:`olly.scrub` knows), every secret
    registered in this process, and Authorization values / secret fields replaced by ``***``."""
    forms = {f for s in secrets if len(s) >= MIN_SECRET for f in scrub.encodings(s)}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, scrub.MASK)
    text = scrub.scrub(text)
    text = _AUTH_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{scrub.MASK}", text)
    return _SECRET_FIELD.sub(lambda m: m.group(1) + scrub.MASK, text)


# -- the config file ---------------------------------------------------------------


_PROXY_ARGS = (("httpProxy", "HTTP_PROXY"), ("httpsProxy", "HTTPS_PROXY"), ("ftpProxy", "FTP_PROXY"),
               ("noProxy", "NO_PROXY"))


def config_proxy_args(endpoint: str) -> dict[str, str]:
    """Build args from the docker config's proxies for the engine at ``endpoint`` (its own
    entry, else ``default``): ``HTTP_PROXY`` and ``http_proxy`` for ``httpProxy``, ... — what
    the docker CLI and docker-py give a build. A config olly cannot read gives none, as
    docker-py gave none (a build that needs no credentials does not fail on it)."""
    try:
        proxies = _load(config_path()).get("proxies")
    except OllyError:
        return {}
    chosen = (proxies.get(endpoint) or proxies.get("default")) if isinstance(proxies, dict) else None
    if not isinstance(chosen, dict):
        return {}
    out: dict[str, str] = {}
    for key, name in _PROXY_ARGS:
        if chosen.get(key):
            out[name] = out[name.lower()] = str(chosen[key])
    return out


def _load(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise _denied(f"cannot read docker config {path}: {getattr(exc, 'strerror', None) or type(exc).__name__}")
    try:
        config = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        # Never the parser's message: it quotes the text around the error, maybe a secret.
        raise _denied(f"docker config {path} is not valid JSON (line {getattr(exc, 'lineno', '?')})")
    if not isinstance(config, dict):
        raise _denied(f"docker config {path} is not a JSON object")
    return config


def _canonical(name: str) -> str:
    """``https://index.docker.io/v1/`` -> ``docker.io``; ``http://h:5000/x`` -> ``h:5000``."""
    name = re.sub(r"^[a-z]+://", "", name.strip(), flags=re.IGNORECASE).split("/", 1)[0].lower()
    return "docker.io" if name in DOCKER_HUB else name


def _lookup(table: dict[str, Any], host: str) -> Any:
    """``table[host]``, else the entry whose key names the same host (keys may be URLs)."""
    if host in table:
        return table[host]
    if _canonical(host) == "docker.io" and INDEX_URL in table:
        return table[INDEX_URL]
    want = _canonical(host)
    return next((value for key, value in table.items() if _canonical(key) == want), None)


def _from_auths(entry: Any, host: str, path: Path) -> Credentials:
    if not isinstance(entry, dict):
        return Credentials()
    user, password = entry.get("username") or "", entry.get("password") or ""
    if isinstance(entry.get("auth"), str) and entry["auth"]:
        try:
            user, sep, password = base64.b64decode(entry["auth"], validate=True).decode("utf-8").partition(":")
        except (binascii.Error, ValueError):
            sep = ""
        if not sep:
            raise _denied(f"the auths entry for {host} in {path} is not base64 'user:password'; "
                          f"run: docker login {host}")
    token = entry.get("identitytoken") or ""
    if not all(isinstance(v, str) for v in (user, password, token)):
        raise _denied(f"the auths entry for {host} in {path} has non-string fields; run: docker login {host}")
    return Credentials(user, password, token)


def _entry_secrets(entry: Any) -> list[str]:
    if not isinstance(entry, dict):
        return []
    found = [entry.get(k) for k in ("auth", "password", "identitytoken")]
    if isinstance(entry.get("auth"), str):
        try:
            found.append(base64.b64decode(entry["auth"]).decode("utf-8", "replace").partition(":")[2])
        except (binascii.Error, ValueError):
            pass
    return [v for v in found if isinstance(v, str) and v]


# -- helpers -----------------------------------------------------------------------


def _run_helper(name: str, server: str, timeout: float, where: str, known: list[str]) -> Credentials | None:
    """Ask ``docker-credential-<name> get`` for ``server``; None = it has nothing for it."""
    program = f"docker-credential-{name}"
    exe = shutil.which(program)
    if exe is None:
        raise _denied(f"credential helper {program} is not installed or not on PATH ({where})")
    try:
        # Its own session: on timeout the whole group goes (a shell script's children too).
        proc = subprocess.Popen([exe, "get"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
    except OSError as exc:
        raise _denied(f"credential helper {program} cannot be run ({where}): {exc.strerror or exc}")
    try:
        out, err = proc.communicate(server.encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise _denied(f"{program} did not answer within {timeout:g}s ({where}; {TIMEOUT_ENV} sets the limit)")
    answer = out.decode("utf-8", "replace")
    try:
        data = json.loads(answer)
    except ValueError:
        data = None
    user = data.get("Username") if isinstance(data, dict) else None
    secret = data.get("Secret") if isinstance(data, dict) else None
    secrets = [*known, *(s for s in (secret,) if isinstance(s, str) and s)]
    if proc.returncode != 0:
        text = (err.decode("utf-8", "replace") + "\n" + answer).strip()
        if "credentials not found" in text.lower():
            return None
        lines = [line for line in mask(text, secrets).splitlines() if line.strip()]
        detail = f": {lines[0][:200]}" if lines else ""
        raise _denied(f"{program} failed for {server} (exit {proc.returncode}){detail}")
    if not isinstance(user, str) or not isinstance(secret, str):
        raise _denied(f"{program} gave no Username/Secret JSON for {server} ({where})")
    if not user and not secret:
        return None  # docker-credential-pass's way of saying "not found"
    if user == TOKEN_USERNAME:
        return Credentials(identitytoken=secret)
    return Credentials(user, secret)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        proc.kill()
    proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def _denied(text: str) -> OllyError:
    return OllyError("registry-denied", " ".join(text.split()))
