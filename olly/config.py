"""BUILD.toml: parsing, validation and the resolved workspace model.

Parsed with tomllib, validated against the schema in olly.configschema (pydantic, strict,
unknown keys rejected; the result cached by olly.speccache), then checked against the
filesystem on every load. Every error is an OllyError located as ``BUILD.toml:<line>``
with the key path, e.g. ``images."apps/demo".dockerfile: file not found: ...``.
"""

from __future__ import annotations

import errno
import os
import posixpath
import re
import stat
import tomllib
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

from olly import speccache
from olly.errors import OllyError

BUILD_FILE = "BUILD.toml"
MAX_BUILD_FILE_BYTES = 1 << 20  # a workspace file larger than this is a mistake
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_REPOSITORY = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_PLATFORM = re.compile(r"^[a-z0-9]+/[a-z0-9_]+(?:/[a-z0-9]+)?$")
_ARG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A registry name is a directory name under dist/charts/; starting with a letter or digit, it
# can never be UNPUBLISHED_DIR, where charts packaged without a registry go.
_REGISTRY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
UNPUBLISHED_DIR = "_unpublished"
_ENDPOINT = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]{1,5})?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
# Docker refuses a reference whose name (registry host, path prefix and repository) is longer.
MAX_REFERENCE_NAME = 255


# Targets and registries are NamedTuples (immutable, compared by value), not frozen dataclasses:
# a frozen dataclass costs 0.6-1.2 ms to define, at every start of every command.


class ImageTarget(NamedTuple):
    label: str
    repository: str
    context: str  # workspace-relative, posix
    dockerfile: str  # workspace-relative, posix
    args: dict[str, str]
    target: str | None
    inputs: list[str]
    depends_on: list[str]
    platforms: tuple[str, ...]  # () = the registry's, else the engine's own platform
    network: str | None
    secrets: tuple[str, ...] | list[str] = ()  # build args read from the environment
    builder: str | None = None  # auto | buildkit | classic; None: the workspace's (olly.buildkit.choose)
    kind: str = "image"


class ChartTarget(NamedTuple):
    label: str
    path: str
    images: dict[str, str]  # values path -> image label
    kind: str = "chart"

    @property
    def depends_on(self) -> list[str]:
        return sorted(set(self.images.values()))


Target = ImageTarget | ChartTarget


class Registry(NamedTuple):
    """A named registry: where olly pushes, and where pods pull the same images from."""

    name: str
    push: str  # host[:port][/path], e.g. registry.ollyscale.test:49443
    pull: str  # what chart values reference; equals push unless set
    insecure: bool
    charts: str  # repository path of charts under the endpoint, e.g. ollyscale/charts
    platforms: tuple[str, ...] = ()  # what images are built for when pushed here (() = native)
    # Overlay of every chart's values file for this registry (not of the package): the
    # workspace-relative YAML file first, then the dotted paths, in the order written.
    values: tuple[tuple[str, str | int | float | bool], ...] = ()
    values_file: str | None = None

    @property
    def host(self) -> str:
        return self.push.split("/", 1)[0]

    @property
    def prefix(self) -> str:
        return self.push.split("/", 1)[1] if "/" in self.push else ""

    @property
    def split_endpoints(self) -> bool:
        return self.push != self.pull

    def push_repository(self, repository: str) -> str:
        """Repository path under the push host (what the registry API calls ``name``)."""
        return f"{self.prefix}/{repository}" if self.prefix else repository

    def push_ref(self, repository: str) -> str:
        return f"{self.push}/{repository}"

    def pull_ref(self, repository: str) -> str:
        return f"{self.pull}/{repository}"


@dataclass
class Workspace:
    root: Path
    name: str
    network: str | None
    source: str | None = None
    targets: dict[str, Target] = field(default_factory=dict)
    registries: dict[str, Registry] = field(default_factory=dict)
    build_file: Path | None = None
    engines: dict[str, str] = field(default_factory=dict)  # platform -> endpoint; others: DOCKER_HOST
    builder: str | None = None  # [workspace] builder
    builder_override: str | None = None  # olly make --builder: beats every image's own (set by olly.api)

    def registry(self, name: str) -> Registry:
        if name in self.registries:
            return self.registries[name]
        from olly.graph import suggest

        known = ", ".join(sorted(self.registries)) or "none declared in BUILD.toml"
        raise OllyError("unknown-registry", f"unknown registry {name!r} (known: {known}){suggest(name, list(self.registries))}")

    @property
    def cache_dir(self) -> Path:
        return self.root / ".cache"


def dep_arg_name(label: str) -> str:
    """Build-arg name that carries a dependency's image reference (apps/python-base -> PYTHON_BASE)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", label.rsplit("/", 1)[-1]).upper()


def config_error(ws: Workspace, keypath: tuple[Any, ...], message: str, reason: str) -> OllyError:
    """An error about a BUILD.toml setting found after loading (e.g. while planning), located
    like the loader's own: ``BUILD.toml:<line>: <key path>: <message>``."""
    file = ws.build_file or ws.root / BUILD_FILE
    try:
        text = file.read_text(encoding="utf-8")
    except OSError:
        text = ""
    line = locate_line(text, keypath)
    display = _display_path(file)
    return OllyError(reason, f"{format_key_path(keypath)}: {message}", location=f"{display}:{line}" if line else display)


def find_workspace(start: Path) -> Path:
    """The nearest directory at or above ``start`` holding a BUILD.toml."""
    here = start.resolve()
    for cand in (here, *here.parents):
        if (cand / BUILD_FILE).is_file():
            return cand
    raise OllyError("no-workspace", f"no {BUILD_FILE} found in {here} or any parent directory (use -C DIR)")


def format_key_path(parts: tuple[Any, ...]) -> str:
    """TOML-style dotted key; control characters escaped so a message stays one line."""
    out = []
    for part in parts:
        text = str(part)
        if _BARE_KEY.match(text):
            out.append(text)
        else:
            escaped = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text.replace("\\", "\\\\"))
            out.append('"' + escaped.replace('"', '\\"') + '"')
    return ".".join(out)


def _line_paths(text: str) -> list[tuple[int, tuple[str, ...]]]:
    """For each header or ``key =`` line, the key path it defines (best effort)."""
    found: list[tuple[int, tuple[str, ...]]] = []
    table: tuple[str, ...] = ()
    # TOML ends lines at \n only; str.splitlines would also split at U+0085, U+2028, ...
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if line.startswith("["):
            table = _parse_path(line, header=True) or table
            found.append((number, table))
        elif "=" in line and not line.startswith("#"):
            key = _parse_path(line.split("=", 1)[0].strip())
            if key:
                found.append((number, table + key))
    return found


def _parse_path(text: str, header: bool = False) -> tuple[str, ...]:
    try:
        data = tomllib.loads(text if header else f"{text} = 0")
    except tomllib.TOMLDecodeError:
        return ()
    path: list[str] = []
    while isinstance(data, dict) and len(data) == 1:
        key = next(iter(data))
        path.append(key)
        data = data[key]
    return tuple(path)


def locate_line(text: str, keypath: tuple[Any, ...]) -> int | None:
    """The line that best defines ``keypath`` (longest matching prefix wins)."""
    want = tuple(str(p) for p in keypath)
    best, best_len = None, 0
    for number, path in _line_paths(text):
        # A line defines a prefix of the key path (its table or key), or lies under it.
        n = min(len(path), len(want))
        if n > best_len and want[:n] == path[:n]:
            best, best_len = number, n
    return best


class _Loader:
    def __init__(self, root: Path, file: Path, text: str) -> None:
        self.root, self.file, self.text = root, file, text
        self.display = _display_path(file)
        self._no_links: dict[str, bool] = {}  # rel_path's memo: workspace path -> no symlink on it

    def error(self, keypath: tuple[Any, ...], message: str, reason: str = "config-invalid") -> OllyError:
        line = locate_line(self.text, keypath) if keypath else None
        where = f"{self.display}:{line}" if line else self.display
        prefix = f"{format_key_path(keypath)}: " if keypath else ""
        return OllyError(reason, prefix + message, location=where)

    def rel_path(self, keypath: tuple[Any, ...], value: str, what: str) -> str:
        """Normalise a workspace-relative path, refusing ones that escape the workspace."""
        if not value or value.startswith("/") or _DRIVE.match(value) or "\\" in value:
            raise self.error(keypath, f"{what} must be a workspace-relative path with '/' separators, got {value!r}")
        # C0, DEL and C1 (printable ASCII has none: the common case skips the per-character check)
        if not (value.isascii() and value.isprintable()) and any(unicodedata.category(c) == "Cc" for c in value):
            raise self.error(keypath, f"{what} contains a control character: {value!r}")
        norm = posixpath.normpath(value)
        if norm == ".." or norm.startswith("../"):
            raise self.error(keypath, f"{what} escapes the workspace: {value!r}")
        if in_own_dir(norm):
            raise self.error(keypath, f"{what} lies in olly's own {norm.split('/')[0]}/ directory, which changes on every run: {value!r}")
        if not self._link_free(norm):  # else realpath would only join the (resolved) root and norm
            real = os.path.realpath(self.root / norm)
            if os.path.commonpath([real, str(self.root)]) != str(self.root):
                raise self.error(keypath, f"{what} resolves outside the workspace (through a symlink): {value!r}")
        return norm

    def _link_free(self, norm: str) -> bool:
        """Whether no component of ``root/norm`` is a symlink, as realpath would judge it
        (an lstat that fails counts as no link). Memoised per prefix: 5,000 targets share
        their parent directories, and realpath would lstat each of them for every path."""
        if norm == ".":
            return True
        parts = norm.split("/")
        prefix = ""
        for part in parts:  # a loop, not recursion: a path may be thousands of levels deep
            prefix = prefix + "/" + part if prefix else part
            known = self._no_links.get(prefix)
            if known is None:
                known = self._no_links[prefix] = not _is_link(os.path.join(self.root, prefix))
            if not known:
                return False
        return True

    def exists(self, keypath: tuple[Any, ...], rel: str, test: Any) -> bool:
        """``test`` (Path.is_dir or Path.is_file) of ``rel``, judged as pathlib judges it but
        without a Path per call (three per image: 5,000 images). Like pathlib, a missing
        path is False and any other error (e.g. no search permission) is an error."""
        try:
            st = os.stat(os.path.join(self.root, rel))
        except OSError as exc:
            if exc.errno in _ABSENT:
                return False
            raise self.error(keypath, f"cannot access {rel}: {exc.strerror or exc}")
        return bool(_KIND[test](st.st_mode))

    def label(self, section: str, label: str) -> str:
        # Invisible characters (bidi overrides, zero-width) make two labels look alike, or
        # one look like another, in every message and listing that shows it.
        if not label.isascii() and any(unicodedata.category(c) in ("Cf", "Zl", "Zp") for c in label):
            raise self.error((section, label), f"label contains an invisible format character: {label!r}")
        norm = self.rel_path((section, label), label, "label")
        if norm != label or norm == ".":
            raise self.error((section, label), f"label must be a normalised relative path, e.g. {norm!r}")
        return label


_DRIVE = re.compile(r"[A-Za-z]:")  # a Windows drive, e.g. C:
_ABSENT = (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP)  # pathlib's "does not exist"
_KIND = {Path.is_dir: stat.S_ISDIR, Path.is_file: stat.S_ISREG}


def _is_link(path: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:  # missing, unreadable parent, ...: realpath keeps such a component as is
        return False


def _display_path(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return rel if not rel.startswith("../../") else str(path)


def load_workspace(root: Path) -> Workspace:
    """Load and fully validate ``<root>/BUILD.toml``."""
    root = root.resolve()
    file = root / BUILD_FILE
    try:
        with open(file, "rb") as f:
            raw = f.read(MAX_BUILD_FILE_BYTES + 1)  # never more: a huge file is refused, not loaded
    except OSError as exc:
        raise OllyError("config-invalid", f"cannot read workspace file: {exc.strerror}", location=_display_path(file))
    loader = _Loader(root, file, "")
    if len(raw) > MAX_BUILD_FILE_BYTES:
        raise OllyError("config-invalid", f"workspace file is over the {MAX_BUILD_FILE_BYTES}-byte limit", location=loader.display)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OllyError("config-invalid", f"not UTF-8 (byte {exc.start})", location=loader.display)
    loader.text = text
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _toml_error(loader.display, exc)
    except RecursionError:
        raise OllyError("config-invalid", "invalid TOML: values nested too deeply", location=loader.display) from None
    return _resolve(loader, _spec_view(_validated(loader, raw, data)))


def _validated(loader: _Loader, raw: bytes, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` checked against the schema (olly.configschema), as plain data; from the spec
    cache when these very bytes passed this very schema before (olly.speccache)."""
    cache_dir = loader.root / ".cache"
    key = speccache.key_for(raw)
    spec = speccache.lookup(cache_dir, key)
    if spec is not None:
        return spec
    from olly import configschema  # pydantic: only when something must really be validated

    try:
        spec = configschema.validate(data)
    except RecursionError:
        raise OllyError("config-invalid", "values nested too deeply", location=loader.display) from None
    except configschema.Invalid as exc:
        raise loader.error(exc.loc, exc.message)
    speccache.store(cache_dir, key, spec)
    return spec


def _spec_view(spec: dict[str, Any]) -> Any:
    """Attribute access to the validated data (``spec.images[label].repository``), as the
    pydantic models gave; maps that are data (args, values, engines) stay dicts."""
    ns = SimpleNamespace
    return ns(workspace=ns(**spec["workspace"]), engines=spec["engines"],
              registries={k: ns(**v) for k, v in spec["registries"].items()},
              images={k: ns(**v) for k, v in spec["images"].items()},
              charts={k: ns(**v) for k, v in spec["charts"].items()})


def _toml_error(display: str, exc: tomllib.TOMLDecodeError) -> OllyError:
    msg = str(exc)
    match = re.search(r"\(at line (\d+), column \d+\)", msg)
    line = match.group(1) if match else None
    msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", msg) or "invalid TOML"
    return OllyError("config-invalid", f"invalid TOML: {msg}", location=f"{display}:{line}" if line else display)


def _resolve(loader: _Loader, spec: Any) -> Workspace:
    ws = Workspace(root=loader.root, name=spec.workspace.name, network=spec.workspace.network,
                   source=spec.workspace.source, build_file=loader.file, builder=spec.workspace.builder)
    if not spec.images and not spec.charts:
        raise loader.error((), "declares no targets: add an [images.\"<path>\"] or [charts.\"<path>\"] table", "config-empty")
    for name, reg in spec.registries.items():
        ws.registries[name] = _resolve_registry(loader, name, reg)
    _check_registry_names(loader, list(ws.registries))
    ws.engines = resolve_engines(spec.engines, lambda platform, msg: loader.error(("engines", platform), msg))
    repos: dict[str, str] = {}
    for label, image in spec.images.items():
        loader.label("images", label)  # first: the label is the default context, checked next
        ws.targets[label] = _resolve_image(loader, label, image)
        if image.repository in repos:
            raise loader.error(("images", label, "repository"), f"repository {image.repository!r} is already used by {repos[image.repository]!r} (their version tags would collide)")
        repos[image.repository] = label
        _check_reference_lengths(loader, ws, label, image.repository)
    for label, chart in spec.charts.items():
        loader.label("charts", label)
        if label in ws.targets:
            raise loader.error(("charts", label), "label is already declared as an image target")
        ws.targets[label] = _resolve_chart(loader, label, chart)
    _check_references(loader, ws)
    return ws


def _resolve_image(loader: _Loader, label: str, spec: Any) -> ImageTarget:
    key = ("images", label)
    if not _REPOSITORY.match(spec.repository):
        raise loader.error(key + ("repository",), f"invalid repository name {spec.repository!r} (lowercase path components, no registry host, no tag)")
    if len(spec.repository) > MAX_REFERENCE_NAME:
        raise loader.error(key + ("repository",), f"repository name is {len(spec.repository)} characters long, "
                                                  f"over the {MAX_REFERENCE_NAME} a reference allows")
    first = spec.repository.split("/", 1)[0]
    if "/" in spec.repository and ("." in first or first == "localhost"):
        raise loader.error(key + ("repository",), f"repository must not name a registry host ({first!r}): registries are chosen at push time")
    context = loader.rel_path(key + ("context",), spec.context or label, "context")
    if not loader.exists(key + ("context",), context, Path.is_dir):
        raise loader.error(key + ("context",), f"directory not found: {context}", "config-missing-file")
    dockerfile = loader.rel_path(key + ("dockerfile",), spec.dockerfile or posixpath.join(context, "Dockerfile"), "dockerfile")
    if not loader.exists(key + ("dockerfile",), dockerfile, Path.is_file):
        raise loader.error(key + ("dockerfile",), f"file not found: {dockerfile}", "config-missing-file")
    if spec.platform is not None and spec.platforms is not None:
        raise loader.error(key + ("platforms",), "set either platform or platforms, not both")
    platforms = _platforms(loader, key, "platform", [spec.platform] if spec.platform is not None else [])
    platforms = platforms or _platforms(loader, key, "platforms", spec.platforms, required=spec.platforms is not None)
    for name in spec.args:
        if not _ARG_NAME.match(name):
            raise loader.error(key + ("args", name), "invalid build-arg name")
    for name in spec.secrets:
        if not _ARG_NAME.match(name):
            raise loader.error(key + ("secrets",), f"invalid build-arg name {name!r}")
        if name in spec.args:
            raise loader.error(key + ("secrets",), f"{name} is both a secret and a plain build arg")
    # olly.inputs walks the common shapes without a Path and a realpath per match, and
    # defers to expand_inputs (the reference) for the rest and every error.
    from olly import inputs  # local import: inputs depends on config

    for i, pattern in enumerate(spec.inputs):
        loader.rel_path(key + ("inputs",), pattern, f"inputs[{i}]")
        try:
            inputs.check(loader.root, pattern)
        except ValueError as exc:
            raise loader.error(key + ("inputs",), str(exc))
    return ImageTarget(
        label=label, repository=spec.repository, context=context, dockerfile=dockerfile,
        args=dict(spec.args), target=spec.target, inputs=list(spec.inputs),
        depends_on=list(spec.depends_on), platforms=platforms, network=spec.network,
        secrets=sorted(set(spec.secrets)), builder=spec.builder,
    )


def _resolve_registry(loader: _Loader, name: str, spec: Any) -> Registry:
    key = ("registries", name)
    for field_name in ("push", "pull"):
        value = getattr(spec, field_name)
        if value is not None and not _ENDPOINT.match(value):
            raise loader.error(key + (field_name,), f"invalid endpoint {value!r}: expected host[:port][/path] without scheme, e.g. ghcr.io/acme")
        port = _port(value)
        if port is not None and not 1 <= port <= 65535:
            raise loader.error(key + (field_name,), f"invalid endpoint {value!r}: port {port} is not in 1-65535")
    if not _REPOSITORY.match(spec.charts):
        raise loader.error(key + ("charts",), f"invalid chart repository path {spec.charts!r}")
    if len(f"{spec.push}/{spec.charts}/c") > MAX_REFERENCE_NAME:  # room for a one-letter chart name
        raise loader.error(key + ("charts",), f"{spec.push}/{spec.charts}/<chart name> would be over the "
                                              f"{MAX_REFERENCE_NAME} characters a reference allows")
    if not _REGISTRY_NAME.match(name):  # after the endpoints: theirs is the more specific error
        raise loader.error(key, f"invalid registry name {name!r}: letters, digits, '-' and '_', starting with a "
                                "letter or digit (it names the directory dist/charts/<registry>/)")
    values_file = None
    if spec.values_file is not None:
        values_file = loader.rel_path(key + ("values_file",), spec.values_file, "values_file")
        if not loader.exists(key + ("values_file",), values_file, Path.is_file):
            raise loader.error(key + ("values_file",), f"file not found: {values_file}", "config-missing-file")
    return Registry(name=name, push=spec.push, pull=spec.pull or spec.push, insecure=spec.insecure, charts=spec.charts,
                    platforms=_platforms(loader, key, "platforms", spec.platforms),
                    values=_overlay_values(loader, key, spec.values), values_file=values_file)


def _overlay_values(loader: _Loader, key: tuple[Any, ...], values: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Dotted values paths, each naming a scalar: none empty, none set twice or inside another.
    Nested tables (``[registries.local.values]`` with ``frontend.env.MODE = "ui"``) are the
    same paths written the TOML way."""
    flat: list[tuple[str, tuple[str, ...], Any]] = []  # (dotted path, TOML key path, value)

    def walk(table: dict[str, Any], prefix: tuple[str, ...]) -> None:
        for name, value in table.items():
            if isinstance(value, dict):
                walk(value, prefix + (name,))
            elif isinstance(value, (str, int, float, bool)):  # bool is an int: listed for the reader
                flat.append((".".join(prefix + (name,)), prefix + (name,), value))
            else:
                raise loader.error(key + ("values", *prefix, name), f"values take a string, number or boolean, "
                                   f"not {type(value).__name__}; put lists in values_file")

    walk(values, ())
    seen: dict[str, tuple[str, ...]] = {}
    for path, where, _ in flat:
        if any(part == "" for part in path.split(".")):
            raise loader.error(key + ("values", *where), f"invalid values path {path!r}: an empty key between dots")
        if path in seen:
            raise loader.error(key + ("values", *where), f"values path {path!r} is set twice")
        seen[path] = where
    for path, where, _ in flat:
        for other in seen:
            if path.startswith(other + "."):
                raise loader.error(key + ("values", *where), f"sets a key inside {other!r}, which is set to a value "
                                   "(a values path holds a mapping or a value, not both)")
    return tuple((path, value) for path, _, value in flat)


def _check_registry_names(loader: _Loader, names: list[str]) -> None:
    """Two names differing only in case share dist/charts/<registry>/ on macOS and Windows."""
    seen: dict[str, str] = {}
    for name in names:
        if name.lower() in seen:
            raise loader.error(("registries", name), f"registry names {seen[name.lower()]!r} and {name!r} differ only "
                                                     "in case: their dist/charts/ directories would be one")
        seen[name.lower()] = name


def _platforms(loader: _Loader, key: tuple[Any, ...], field_name: str, values: list[str] | None,
               required: bool = False) -> tuple[str, ...]:
    """Validated ``os/arch[/variant]`` strings, each once, in the order written."""
    if required and not values:
        raise loader.error(key + (field_name,), "must name at least one platform, e.g. [\"linux/amd64\", \"linux/arm64\"]")
    for value in values or []:
        if not _PLATFORM.match(value):
            raise loader.error(key + (field_name,), f"invalid platform {value!r} (expected os/arch[/variant], e.g. linux/arm64)")
    if len(set(values or [])) != len(values or []):
        raise loader.error(key + (field_name,), "lists a platform twice")
    return tuple(values or [])


_ENGINE_URL = re.compile(r"^(?:unix:///\S+|(?:tcp|ssh)://[^\s/]+(?:/\S*)?)$")


def resolve_engines(routes: dict[str, str], error: Any) -> dict[str, str]:
    """Validated ``platform -> engine endpoint`` routes (BUILD.toml ``[engines]`` or
    ``--engine PLATFORM=URL``); ``error(platform, message)`` makes the located error."""
    for platform, url in routes.items():
        if not _PLATFORM.match(platform):
            raise error(platform, f"invalid platform {platform!r} (expected os/arch[/variant], e.g. linux/arm64)")
        if not _ENGINE_URL.match(url):
            raise error(platform, f"invalid engine endpoint {url!r}: expected unix:///path, tcp://host:port or ssh://[user@]host")
    return dict(routes)


def _port(endpoint: str | None) -> int | None:
    """The port of a valid ``host[:port][/path]`` endpoint, if it names one."""
    host = (endpoint or "").split("/", 1)[0]
    return int(host.rsplit(":", 1)[1]) if ":" in host else None


def _check_reference_lengths(loader: _Loader, ws: Workspace, label: str, repository: str) -> None:
    """Each image is pushed and pulled as ``<endpoint>/<repository>``: refuse now a name the
    engine would refuse at push time, after the build."""
    for reg in ws.registries.values():
        for field_name, endpoint in (("push", reg.push), ("pull", reg.pull)):
            name = f"{endpoint}/{repository}"
            if len(name) > MAX_REFERENCE_NAME:
                raise loader.error(("images", label, "repository"),
                                   f"under registry {reg.name!r} ({field_name} = {endpoint!r}) the image name is "
                                   f"{len(name)} characters long, over the {MAX_REFERENCE_NAME} a reference allows")


def _resolve_chart(loader: _Loader, label: str, spec: Any) -> ChartTarget:
    key = ("charts", label)
    path = loader.rel_path(key + ("path",), spec.path or label, "path")
    if not (loader.root / path / "Chart.yaml").is_file():
        raise loader.error(key + ("path",), f"no Chart.yaml in {path}", "config-missing-file")
    return ChartTarget(label=label, path=path, images=dict(spec.images))


OWN_DIRS = (".cache", "dist")  # olly's state and outputs, at the workspace root: never inputs


def in_own_dir(rel: str) -> bool:
    """Whether a workspace-relative path lies in olly's own ``.cache/`` or ``dist/``."""
    return any(rel == d or rel.startswith(d + "/") for d in OWN_DIRS)


def expand_inputs(root: Path, pattern: str) -> list[str]:
    """Files matched by an ``inputs`` glob (dotfiles included, olly's own dirs excluded).

    Raises ValueError if nothing matches or a match leaves the workspace through a symlink.
    """
    found = []
    # pathlib's `**` never descends through symlinked directories (glob.glob's does: a
    # `self -> .` link would make it loop), and it includes dotfiles. A trailing `**`
    # means "everything below" here, as in glob.glob; pathlib would match directories only.
    norm = posixpath.normpath(pattern)
    for match in root.glob(norm + "/*" if norm == "**" or norm.endswith("/**") else norm):
        rel = posixpath.normpath(match.relative_to(root).as_posix())
        if in_own_dir(rel) or not match.is_file():
            continue
        real = os.path.realpath(root / rel)
        if os.path.commonpath([real, str(root)]) != str(root):
            raise ValueError(f"{pattern!r} matches {rel}, which resolves outside the workspace (through a symlink)")
        found.append(rel)
    if not found:
        raise ValueError(f"{pattern!r} matches no file")
    return sorted(found)


def _check_references(loader: _Loader, ws: Workspace) -> None:
    images = [t for t in ws.targets.values() if isinstance(t, ImageTarget)]
    for t in images:
        seen: dict[str, str] = {}
        for dep in t.depends_on:
            where = ("images", t.label, "depends_on")
            _check_image_ref(loader, ws, where, dep)
            arg = dep_arg_name(dep)
            if arg in seen:
                raise loader.error(where, f"dependencies {seen[arg]!r} and {dep!r} would both pass build arg {arg}")
            if arg in t.args or arg in t.secrets:
                raise loader.error(("images", t.label, "args", arg), f"build arg {arg} is set by dependency {dep!r}")
            seen[arg] = dep
    from olly.graph import find_cycle  # local import: graph depends on config

    cycle = find_cycle({t.label: t.depends_on for t in images})
    if cycle:
        raise loader.error(("images", cycle[0], "depends_on"), "dependency cycle: " + " -> ".join(cycle), "dependency-cycle")
    for t in ws.targets.values():
        if isinstance(t, ChartTarget):
            for vpath, dep in t.images.items():
                _check_image_ref(loader, ws, ("charts", t.label, "images", vpath), dep)
    _check_overlays(loader, ws)


def _check_overlays(loader: _Loader, ws: Workspace) -> None:
    """A registry's values must not replace what olly pins: an image block or its
    repository/tag, in any chart (the overlay applies to every chart's values file)."""
    pinned = {vpath: t.label for t in ws.targets.values() if isinstance(t, ChartTarget) for vpath in t.images}
    for reg in ws.registries.values():
        for path, _ in reg.values:
            for vpath, chart in sorted(pinned.items()):
                if (vpath + ".").startswith(path + ".") or path in (vpath + ".repository", vpath + ".tag"):
                    raise loader.error(("registries", reg.name, "values", path),
                                       f"would override the image block {vpath!r} that olly pins in {chart}")


def _check_image_ref(loader: _Loader, ws: Workspace, where: tuple[Any, ...], label: str) -> None:
    if label in ws.targets and isinstance(ws.targets[label], ImageTarget):
        return
    if label in ws.targets:
        raise loader.error(where, f"{label!r} is a chart, not an image target")
    from olly.graph import suggest  # local import: graph depends on config

    raise loader.error(where, f"unknown image target {label!r}{suggest(label, list(ws.targets))}", "unknown-target")
