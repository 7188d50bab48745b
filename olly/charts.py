"""Helm charts: file set after .helmignore, digest pinning, reproducible packaging,
the push/pull endpoint check, and the OCI artifact Helm pushes.

Everything here is a pure function of the chart's files, the image pins and the
stamped version, so the same inputs give byte-identical ``.tgz`` and manifests.
"""

from __future__ import annotations

import copy
import functools
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from olly import keys, memo
from olly.config import ChartTarget, Registry, in_own_dir
from olly.errors import OllyError
from olly.hashing import FileHasher, hash_bytes
from olly.helmignore import HelmIgnore
from olly.lazy import lazy
from olly.versions import chart_version, content_version, drop_dirty, names_release

tarfile: Any = lazy("tarfile")  # packaging and reading back a package only: a cached chart needs neither

if TYPE_CHECKING:  # ruamel is imported only when a YAML file must really be read (0.1 s)
    from ruamel.yaml import YAML
    from ruamel.yaml.nodes import Node

CONFIG_MEDIA_TYPE = "application/vnd.cncf.helm.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
PACKAGE_MTIME = 946684800  # 2000-01-01T00:00:00Z, as for image contexts
_CHART_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*$")  # no '/', no '..'
_SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
MAX_ALIAS_EXPANSION = 100_000  # nodes YAML aliases may add to a chart file when expanded
UTF8_BOM = b"\xef\xbb\xbf"
PINNED_KEYS = ("repository", "tag")  # what olly sets in each declared values path


class Pin(NamedTuple):  # not a frozen dataclass: ~0.5 ms less at every start
    """What one values path receives: ``repository`` and ``tag`` (``olly-…@sha256:…`` when pinned)."""

    repository: str
    tag: str
    pinned: bool


@dataclass
class ChartSource:
    label: str
    dir: str  # workspace-relative
    name: str
    base_version: str
    app_version: str
    files: list[tuple[str, Path, str]]  # (chart-relative path, file to read, content hash)


def _yaml() -> YAML:
    from ruamel.yaml import YAML

    y = YAML()  # round-trip: keeps comments and key order
    y.preserve_quotes = True
    y.width = 4096  # never re-wrap long lines
    return y


class _AliasBomb(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line, self.message = line, message


def _check_aliases(root: Node | None) -> None:
    """Refuse a document whose aliases expand past :data:`MAX_ALIAS_EXPANSION` nodes, or
    that contains itself ("billion laughs"): anything that turns it into plain data (our
    JSON config blob, Helm, ArgoCD) would exhaust memory. Checked on the composed node
    graph, where an alias is the very node it names, with sizes memoised per node, so
    nothing is expanded. (The loaded document cannot be used: ruamel turns some
    recursive aliases into None.)"""
    if root is None:
        return
    from ruamel.yaml.nodes import MappingNode, SequenceNode

    size: dict[int, int] = {}  # id(node) -> expanded size; only finished nodes
    on_path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        children = _children(node, MappingNode, SequenceNode)
        if done:
            on_path.discard(id(node))
            size[id(node)] = total = 1 + sum(size[id(c)] for c in children)
            if total - len(size) > MAX_ALIAS_EXPANSION:  # beyond the file's own nodes: added by aliases
                raise _AliasBomb(node.start_mark.line, f"aliases expand this node to {total:,} nodes "
                                 f"(the limit is {MAX_ALIAS_EXPANSION:,} beyond the file's own): refusing a YAML alias bomb")
            continue
        if id(node) in size:
            continue
        on_path.add(id(node))
        stack.append((node, True))
        for child in children:
            if id(child) in on_path:
                anchor = f" *{child.anchor}" if getattr(child, "anchor", None) else ""
                raise _AliasBomb(node.start_mark.line, f"recursive alias{anchor}: a node contains itself, "
                                 "which cannot be expanded")
            if id(child) not in size:
                stack.append((child, False))


def _children(node: Node, mapping: type, sequence: type) -> list[Node]:
    if isinstance(node, mapping):
        return [n for pair in node.value for n in pair]
    if isinstance(node, sequence):
        return list(node.value)
    return []


@functools.cache
def _checked_constructor() -> type:
    """Round-trip constructor that checks the composed document before building it."""
    from ruamel.yaml.constructor import RoundTripConstructor

    class _CheckedConstructor(RoundTripConstructor):  # type: ignore[misc]
        def construct_document(self, node: Any) -> Any:
            _check_aliases(node)
            return super().construct_document(node)

    return _CheckedConstructor


def strip_bom(data: bytes) -> bytes:
    """A file's bytes as Helm's loader keeps them: it drops a leading UTF-8 BOM from every
    file of a chart (``bytes.TrimPrefix(data, utf8bom)`` in pkg/chart/loader, for a
    directory and for an archive alike), so ``helm package`` writes them without it."""
    return data[len(UTF8_BOM):] if data.startswith(UTF8_BOM) else data


def _load_yaml(data: bytes, display: str) -> Any:
    from ruamel.yaml.error import YAMLError

    y = _yaml()
    y.Constructor = _checked_constructor()
    try:
        return y.load(data.decode("utf-8"))
    except _AliasBomb as exc:
        raise OllyError("chart-invalid", exc.message, location=f"{display}:{exc.line + 1}")
    except (YAMLError, UnicodeDecodeError) as exc:
        raise OllyError("chart-invalid", f"{display}: invalid YAML: {str(exc).splitlines()[0]}")
    except RecursionError:  # ruamel composes recursively: nesting thousands of levels deep
        raise OllyError("chart-invalid", f"{display}: invalid YAML: nested too deeply")


def _dump_yaml(doc: Any) -> bytes:
    out = io.StringIO()
    _yaml().dump(doc, out)
    return out.getvalue().encode("utf-8")


def load_chart(root: Path, target: ChartTarget, hasher: FileHasher) -> ChartSource:
    """The chart's files as ``helm package`` would take them, hashed."""
    chart_dir = root / target.path
    ignore = HelmIgnore.load(chart_dir, display=f"{target.path}/.helmignore")
    hasher.preload(target.path)
    files = []
    for rel, real in ignore.walk(chart_dir):
        ws_rel = real.resolve().relative_to(root.resolve()).as_posix()
        if in_own_dir(ws_rel):
            continue  # a chart at the workspace root must not package olly's own .cache/ and dist/
        files.append((rel, real, hasher.hash(ws_rel, real.stat())))
    digests = {rel: digest for rel, _, digest in files}
    for required in ("Chart.yaml", "values.yaml"):
        if required not in digests:
            raise OllyError("chart-invalid", f"{target.path}: {required} is missing or excluded by .helmignore")
    # Checking the two YAML files is a pure function of their bytes (named by their digests)
    # and the values paths: a check that passed before is not redone (a 5 MB values.yaml
    # takes seconds to parse). See olly.memo.
    key = memo.key_of("chart", digests["values.yaml"], digests["Chart.yaml"], "\0".join(sorted(target.images)),
                      memo.source_of(__file__), _ruamel_version())
    cache_dir = root / ".cache"
    meta = memo.lookup(cache_dir, "charts", key)
    if not (isinstance(meta, list) and len(meta) == 3 and all(isinstance(m, str) for m in meta)):
        values, chart = (chart_dir / "values.yaml").read_bytes(), (chart_dir / "Chart.yaml").read_bytes()
        meta = _check_chart(values, chart, target)
        if hash_bytes(values) == digests["values.yaml"] and hash_bytes(chart) == digests["Chart.yaml"]:
            memo.remember(cache_dir, "charts", key, meta)  # else edited meanwhile: checked, not remembered
    return ChartSource(target.label, target.path, meta[0], meta[1], meta[2], files)


def _ruamel_version() -> bytes:
    """Which ruamel parses the files (part of the check's key), read without importing it."""
    from importlib.util import find_spec

    try:
        spec = find_spec("ruamel.yaml")
    except (ImportError, ValueError):
        return b""
    return memo.source_of(spec.origin) if spec is not None and spec.origin else b""


def _check_chart(values_yaml: bytes, chart_yaml: bytes, target: ChartTarget) -> list[str]:
    """Parse and check values.yaml and Chart.yaml: [name, version, appVersion ("" if none)]."""
    values = _load_yaml(strip_bom(values_yaml), f"{target.path}/values.yaml")
    for path in target.images:
        _values_node(values, path, f"{target.path}/values.yaml")  # caught at plan time, not after the builds
    meta = _load_yaml(strip_bom(chart_yaml), f"{target.path}/Chart.yaml")
    if not isinstance(meta, dict) or not meta.get("name") or not meta.get("version"):
        raise OllyError("chart-invalid", f"{target.path}/Chart.yaml: needs name and version")
    if not _CHART_NAME.match(str(meta["name"])):
        raise OllyError("chart-invalid", f"{target.path}/Chart.yaml: invalid chart name {meta['name']!r} (letters, digits, '-', '_', '.')")
    if not _SEMVER.match(str(meta["version"])):
        raise OllyError("chart-invalid", f"{target.path}/Chart.yaml: version {meta['version']!r} is not SemVer (X.Y.Z)")
    annotations = meta.get("annotations")
    if annotations is not None and not (isinstance(annotations, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items())):
        # Helm reads annotations as map[string]string and refuses the chart otherwise.
        raise OllyError("chart-invalid", f"{target.path}/Chart.yaml: annotations must map strings to strings "
                        "(quote numbers and booleans)")
    app_version = meta.get("appVersion")
    return [str(meta["name"]), str(meta["version"]), "" if app_version is None else str(app_version)]


def make_pins(images: dict[str, str], refs: dict[str, tuple[str, str, str | None]],
              registry: Registry | None) -> dict[str, Pin]:
    """Pins for a chart's values paths from its images' (repository, content tag, digest)."""
    pins = {}
    for values_path, label in images.items():
        repository, tag, digest = refs[label]
        repo = registry.pull_ref(repository) if registry else repository
        pins[values_path] = Pin(repo, f"{tag}@{digest}" if digest else tag, bool(digest))
    return pins


def stamp(src: ChartSource, pins: dict[str, Pin], version: str | None) -> tuple[str, str]:
    """(chart version, appVersion) a package is stamped with.

    Without a version: the chart's own. A release (``v2.1.8``): ``2.1.8``. Anything else
    (``git describe`` output, branch names) is no promise of content, so the chart version
    also names the content: ``0.1.1-v2.1.8-3-gabc123.<8 hex>``, the hex from a key of the
    files, pins and the version without that suffix. Equal versions then mean equal bytes,
    and git's ``-dirty`` is dropped: a chart an edit did not touch keeps its version."""
    if version is None:
        return src.base_version, src.app_version
    if names_release(version):
        return chart_version(src.base_version, version), version
    app_version = drop_dirty(version)
    base = chart_version(src.base_version, app_version)
    content = keys.compute_key(_record(src, pins, base, app_version, kind="chart-content"))
    return content_version(base, content), app_version


def chart_key(src: ChartSource, pins: dict[str, Pin], version: str, app_version: str) -> str:
    """Key of a packaged chart: its files, the pinned image references, the stamped version."""
    return keys.compute_key(_record(src, pins, version, app_version, kind="chart"))


def _record(src: ChartSource, pins: dict[str, Pin], version: str, app_version: str, kind: str) -> dict[str, Any]:
    return {
        "schema": keys.KEY_SCHEMA,
        "kind": kind,
        "files": [[rel, digest] for rel, _, digest in src.files],
        "images": {path: [p.repository, p.tag] for path, p in pins.items()},
        "version": version,
        "app_version": app_version,
    }


def _values_node(values: Any, path: str, display: str) -> dict[str, Any]:
    """The image block at a dotted values path: a mapping holding ``repository`` and ``tag``.
    Anything else is an error, never a silent no-op: a block with only ``pullPolicy`` would
    get keys its templates never read, and the chart would deploy the old image."""
    node, line = values, None
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise OllyError("chart-invalid", f"values path {path!r} does not exist (declared in BUILD.toml charts images)",
                            location=_at(display, line))
        line = _key_line(node, part)
        node = node[part]
    problem = _block_problem(node)
    if problem:
        raise OllyError("chart-invalid", f"values path {path!r} (declared in BUILD.toml charts images) must be a "
                        f"mapping holding repository and tag for olly to pin; {problem}", location=_at(display, line))
    return node


def _block_problem(node: Any) -> str:
    """Why ``node`` is not an image block olly can pin ("" if it is one)."""
    if not isinstance(node, dict):
        return f"it is {'a list' if isinstance(node, list) else 'a single value'}"
    missing = [k for k in PINNED_KEYS if k not in node]
    if missing:
        return f"it has no {' and no '.join(missing)} (it has: {', '.join(map(str, node)) or 'nothing'})"
    nested = [k for k in PINNED_KEYS if isinstance(node[k], (dict, list))]
    return f"its {' and '.join(nested)} must be plain values, not mappings or lists" if nested else ""


def _key_line(node: Any, key: str) -> int | None:
    """1-based line of ``key`` in a round-trip loaded mapping, if known."""
    try:
        return int(node.lc.key(key)[0]) + 1
    except (AttributeError, KeyError, TypeError, IndexError):
        return None


def _at(display: str, line: int | None) -> str:
    return f"{display}:{line}" if line else display


def _set_pins(values: Any, pins: dict[str, Pin], display: str) -> None:
    for path, pin in sorted(pins.items()):
        node = _values_node(values, path, display)
        node["repository"] = pin.repository
        node["tag"] = pin.tag


def package(src: ChartSource, pins: dict[str, Pin], version: str, app_version: str) -> tuple[bytes, dict[str, Any]]:
    """The ``.tgz`` bytes (laid out as ``helm package`` does) and the stamped Chart.yaml as a dict."""
    members: dict[str, bytes] = {}
    meta: dict[str, Any] = {}
    for rel, real, digest in src.files:
        try:
            data = real.read_bytes()
        except OSError as exc:
            raise OllyError("input-changed", f"{src.dir}/{rel} changed during the run ({exc.strerror}); nothing recorded, run again")
        if hash_bytes(data) != digest:  # the package must be exactly what the key describes
            raise OllyError("input-changed", f"{src.dir}/{rel} changed during the run; nothing recorded, run again")
        data = strip_bom(data)
        if rel == "Chart.yaml":
            doc = _load_yaml(data, f"{src.dir}/Chart.yaml")
            doc["version"] = version
            if app_version:  # as `helm package`: no --app-version, no appVersion added
                doc["appVersion"] = app_version
            data = _dump_yaml(doc)
            meta = json.loads(json.dumps(doc))  # plain data, no ruamel types
        elif rel == "values.yaml":
            doc = _load_yaml(data, f"{src.dir}/values.yaml")
            _set_pins(doc, pins, f"{src.dir}/values.yaml")
            data = _dump_yaml(doc)
        members[f"{src.name}/{rel}"] = data
    return _tgz(members), meta


def _tgz(members: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(members[name]), 0o644, PACKAGE_MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(members[name]))
    import gzip  # only when a chart is packaged, not on a run that proves it unchanged

    out = io.BytesIO()
    # No file name and mtime 0 in the gzip header: the bytes depend on content only.
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def read_members(tgz: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def read_chart_meta(tgz: bytes, name: str) -> dict[str, Any]:
    """The stamped Chart.yaml of a package, as plain data (for the OCI config blob)."""
    data = read_members(tgz).get(f"{name}/Chart.yaml")
    if data is None:
        raise OllyError("chart-invalid", f"package of {name} has no {name}/Chart.yaml")
    return json.loads(json.dumps(_load_yaml(data, f"{name}/Chart.yaml")))


def check_endpoints(tgz: bytes, registry: Registry, display: str) -> None:
    """Refuse a package that points pods at the push-only endpoint of ``registry``."""
    if not registry.split_endpoints:
        return
    pull_host = registry.pull.split("/", 1)[0]
    needle = registry.host if registry.host.lower() != pull_host.lower() else registry.push + "/"
    # On name boundaries and case-insensitive: `registry.local` must not match inside
    # `docker-registry.local`, and `Registry.Local` is the same host.
    tail = "" if needle.endswith("/") else r"(?![A-Za-z0-9-])"
    pattern = re.compile(r"(?<![A-Za-z0-9.-])" + re.escape(needle) + tail, re.IGNORECASE)
    pull_pattern = re.compile(re.escape(registry.pull + "/"), re.IGNORECASE)
    for name, data in _all_members(tgz):
        text = pull_pattern.sub("", data.decode("utf-8", "replace"))
        if pattern.search(text):
            raise OllyError(
                "push-endpoint-in-chart",
                f"{display}: {name} references {registry.host}, the push endpoint of registry {registry.name!r}; "
                f"pods pull from {registry.pull} (the push endpoint is for the build machine only, the cluster cannot resolve it)",
            )


def _all_members(tgz: bytes, prefix: str = "") -> list[tuple[str, bytes]]:
    """Every file of a package, descending into vendored subchart packages (charts/*.tgz)."""
    out = []
    for name, data in read_members(tgz).items():
        if name.endswith(".tgz") and data[:2] == b"\x1f\x8b":
            try:
                out += _all_members(data, f"{prefix}{name}!")
                continue
            except (tarfile.TarError, OSError, EOFError):
                pass  # not a package after all: scan it as bytes
        out.append((prefix + name, data))
    return out


def values_document(pins: dict[str, Pin], overlay: Any = None, display: str = "values") -> bytes:
    """A values file (``helm -f``, ArgoCD): the registry's overlay (see :func:`load_overlay`),
    if any, with the pinned image blocks merged in. Never part of the package: the package
    is the same for every registry except for its pins."""
    doc: Any = copy.deepcopy(overlay) if overlay else {}
    for path, pin in sorted(pins.items()):
        node = doc
        for part in path.split("."):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise OllyError("chart-invalid", f"{display} sets {part!r} of values path {path!r} to a value; "
                                "olly pins an image block there")
        for k in PINNED_KEYS:
            if k in node:
                raise OllyError("chart-invalid", f"{display} sets {path}.{k}, which olly pins")
        node["repository"], node["tag"] = pin.repository, pin.tag
    return _dump_yaml(doc)


def load_overlay(root: Path, registry: Registry | None) -> Any:
    """A registry's values for every chart's values file: ``values_file`` (comments kept),
    then the dotted ``values`` paths, creating mappings on the way. None without any."""
    if registry is None or not (registry.values or registry.values_file):
        return None
    doc: Any = {}
    if registry.values_file:
        display = registry.values_file
        try:
            data = (root / registry.values_file).read_bytes()
        except OSError as exc:
            raise OllyError("config-missing-file", f"cannot read {display} (registry {registry.name!r} "
                            f"values_file): {exc.strerror}")
        doc = _load_yaml(strip_bom(data), display)
        if doc is None:
            doc = {}
        if not isinstance(doc, dict):
            raise OllyError("chart-invalid", f"{display}: a values file is a mapping at the top, not a {type(doc).__name__}")
    for path, value in registry.values:
        node = doc
        for part in path.split(".")[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise OllyError("chart-invalid", f"registry {registry.name!r} values path {path!r}: "
                                f"{registry.values_file or 'values'} sets {part!r} to a value, not a mapping")
        node[path.rsplit(".", 1)[-1]] = value
    return doc


def check_overlay(overlay: Any, image_paths: list[str], registry: Registry) -> None:
    """At plan time: the overlay must leave the image blocks to olly (see values_document)."""
    if overlay:
        values_document({p: Pin("", "", False) for p in image_paths}, overlay,
                        f"registry {registry.name!r} values" + (f" ({registry.values_file})" if registry.values_file else ""))


def oci_artifact(tgz: bytes, meta: dict[str, Any]) -> tuple[bytes, bytes]:
    """Helm's OCI config blob and manifest for a chart, without wall-clock annotations."""
    config = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": sha256(tgz), "size": len(tgz)}],
        "annotations": oci_annotations(meta),
    }
    return config, json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


_OCI = "org.opencontainers.image."


def oci_annotations(meta: dict[str, Any]) -> dict[str, str]:
    """The manifest annotations ``helm push`` sets (pkg/registry generateOCIAnnotations),
    except ``created``: Helm stamps the wall clock there, which would make every push of the
    same chart a new manifest. The chart's own ``annotations`` are copied over them, but
    never over title and version."""
    out: dict[str, str] = {}

    def add(name: str, value: Any) -> None:
        if isinstance(value, str) and value.strip():  # Helm: only non-blank values
            out[_OCI + name] = value

    add("description", meta.get("description"))
    add("title", meta.get("name"))
    add("version", meta.get("version"))
    add("url", meta.get("home"))
    sources = meta.get("sources")
    if isinstance(sources, list) and sources:
        add("source", sources[0])
    maintainers = meta.get("maintainers")
    if isinstance(maintainers, list) and maintainers:
        add("authors", ", ".join(_maintainer(m) for m in maintainers))
    annotations = meta.get("annotations")
    for key, value in (annotations.items() if isinstance(annotations, dict) else []):
        if key not in (_OCI + "title", _OCI + "version") and isinstance(value, str):
            out[key] = value
    return out


def _maintainer(m: Any) -> str:
    """``name (email)`` as Helm writes each maintainer (either part may be missing)."""
    m = m if isinstance(m, dict) else {}
    name, email = str(m.get("name") or ""), str(m.get("email") or "")
    return name + (f" ({email})" if email else "")


def chart_manifest(src: ChartSource, pins: dict[str, Pin], version: str, app_version: str,
                   registry: Registry | None) -> dict[str, Any]:
    """What a package was made from, kept per chart for ``olly why``: its files, pins and
    stamped version (the inputs of its key), and the registry it was packaged for."""
    return {
        "schema": keys.KEY_SCHEMA, "kind": "chart", "key": chart_key(src, pins, version, app_version),
        "files": [[rel, digest] for rel, _, digest in src.files],
        "pins": {path: f"{p.repository}:{p.tag}" for path, p in sorted(pins.items())},
        "version": version, "app_version": app_version, "registry": registry.name if registry else "",
    }


def sha256(data: bytes) -> str:
    import hashlib  # a registry digest: only when pinning to or pushing a registry

    return "sha256:" + hashlib.sha256(data).hexdigest()
