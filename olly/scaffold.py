"""`olly init`: a first, commented BUILD.toml guessed from the repository's files.

One image per Dockerfile (label = its directory; ``Dockerfile.x`` or ``x.Dockerfile`` adds
``/x``), its repository guessed as ``<workspace>/<directory name>``; ``depends_on`` from
``FROM`` lines that name a sibling (``FROM ${BASE}`` where ``BASE`` is the build arg olly
passes for a sibling labelled ``.../base``, or ``FROM <a sibling's repository>``). One chart
per Chart.yaml (not the vendored subcharts under another chart), its image blocks found in
values.yaml (mappings holding ``repository`` and ``tag``) and matched to images by
repository name. Guesses are said to be guesses in the file's comments: it is a start,
meant to be read and edited. An existing BUILD.toml is never overwritten.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from olly import dockerfile
from olly.config import BUILD_FILE, dep_arg_name
from olly.errors import OllyError
from olly.graph import find_cycle

SKIP_DIRS = {".cache", "dist", "node_modules", "__pycache__", "venv"}  # and every hidden directory
IGNORED = (".cache/", "dist/")  # olly's own state and outputs
_DOCKERFILE = re.compile(r"^(?:Dockerfile(?:\.(?P<suffix>[^/]+))?|(?P<prefix>[^/]+)\.[Dd]ockerfile)$")
_VAR = re.compile(r"^\$\{?([A-Za-z_][A-Za-z0-9_]*)")
_BAD_LABEL = re.compile(r"[\\\x00-\x1f\x7f-\x9f]")


@dataclass
class ImageGuess:
    label: str
    context: str
    dockerfile: str
    repository: str
    depends_on: list[str] = field(default_factory=list)
    bases: list[str] = field(default_factory=list)  # FROM images that are not siblings
    notes: list[str] = field(default_factory=list)
    froms: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (image as written, global ARG defaults)


@dataclass
class ChartGuess:
    label: str
    path: str
    images: dict[str, str] = field(default_factory=dict)  # values path -> image label
    unmatched: dict[str, str] = field(default_factory=dict)  # values path -> repository in values.yaml
    notes: list[str] = field(default_factory=list)


@dataclass
class Scaffold:
    path: Path
    images: list[ImageGuess]
    charts: list[ChartGuess]
    gitignore: str  # created | appended | unchanged


def write(root: Path) -> Scaffold:
    root = root.resolve()
    if not root.is_dir():
        raise OllyError("usage", f"{root}: no such directory")
    file = root / BUILD_FILE
    if file.exists():
        raise OllyError("build-file-exists", f"{file} already exists: olly init never overwrites it "
                        "(edit it, or move it away to start over)")
    images = find_images(root)
    charts = find_charts(root, images)
    if not images and not charts:
        raise OllyError("nothing-to-declare", f"no Dockerfile and no Chart.yaml under {root}: nothing to declare")
    text = render(workspace_name(root), images, charts)
    try:
        with open(file, "x", encoding="utf-8") as f:  # "x": a file created meanwhile is never replaced
            f.write(text)
    except FileExistsError:
        raise OllyError("build-file-exists", f"{file} already exists: olly init never overwrites it") from None
    except OSError as exc:
        raise OllyError("io-error", f"cannot write {file}: {exc.strerror}") from None
    return Scaffold(file, images, charts, ensure_gitignore(root))


def slug(text: str) -> str:
    """A repository path component: lowercase letters and digits, single separators."""
    out = re.sub(r"[^a-z0-9._-]+", "-", text.lower())
    out = re.sub(r"[._-]{2,}", "-", out).strip("._-")
    return out or "app"


def workspace_name(root: Path) -> str:
    return slug(root.name)


def _walk(root: Path) -> list[tuple[str, list[str]]]:
    """(directory relative to root, its file names), sorted, skipping hidden and build dirs."""
    out = []
    for here, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS)
        rel = Path(here).relative_to(root).as_posix()
        if not _BAD_LABEL.search(rel):
            out.append((rel, sorted(files)))
    return sorted(out)


# -- images --------------------------------------------------------------------------


def find_images(root: Path) -> list[ImageGuess]:
    images: list[ImageGuess] = []
    labels: set[str] = set()
    repos: set[str] = set()
    for rel, files in _walk(root):
        for name in files:
            match = _DOCKERFILE.match(name)
            if not match:
                continue
            named = match.group("suffix") or match.group("prefix")  # Dockerfile.x, x.Dockerfile
            if named:
                label = slug(named) if rel == "." else f"{rel}/{slug(named)}"
            else:
                label = rel if rel != "." else workspace_name(root)
            label = _unique(label, labels)
            repository = _unique(f"{workspace_name(root)}/{slug(label.rsplit('/', 1)[-1])}", repos)
            path = name if rel == "." else f"{rel}/{name}"
            image = ImageGuess(label, rel, path, repository)
            image.froms = _froms(root / path, image)
            images.append(image)
    _link_siblings(images)
    return images


def _unique(name: str, taken: set[str]) -> str:
    out, n = name, 2
    while out in taken:
        out, n = f"{name}-{n}", n + 1
    taken.add(out)
    return out


def _froms(path: Path, image: ImageGuess) -> list[tuple[str, dict[str, str]]]:
    try:
        df = dockerfile.parse(path.read_bytes())
    except (OSError, dockerfile.DockerfileError) as exc:
        image.notes.append(f"could not read {image.dockerfile}: {exc}")
        return []
    defaults = {a.name: (a.default or "").strip("\"'") for a in dockerfile.global_args(df)}
    stages: set[str] = set()
    out = []
    for stage in dockerfile.stages(df):
        if stage.image.lower() not in stages:  # FROM <an earlier stage> is not an image
            out.append((stage.image, defaults))
        if stage.stage:
            stages.add(stage.stage)
    return out


def _link_siblings(images: list[ImageGuess]) -> None:
    """depends_on from FROM lines naming a sibling; other FROM images are bases."""
    by_arg = {dep_arg_name(i.label): i for i in images}
    for image in images:
        for written, defaults in image.froms:
            var = _VAR.match(written)
            sibling = by_arg.get(var.group(1)) if var else None
            if var and sibling is None and var.group(1) in defaults:
                sibling = _by_repository(images, defaults[var.group(1)])
                if sibling is not None and sibling is not image:
                    image.notes.append(f"FROM {written}: olly passes {sibling.label}'s image as build arg "
                                       f"{dep_arg_name(sibling.label)}; rename ARG {var.group(1)} to it")
            elif not var:
                sibling = _by_repository(images, written)
                if sibling is not None and sibling is not image:
                    arg = dep_arg_name(sibling.label)
                    image.notes.append(f"FROM {written} names {sibling.label}'s repository: write ARG {arg} and "
                                       f"FROM ${{{arg}}} to build on exactly the image olly built")
            if sibling is not None and sibling is not image and _acyclic(images, image, sibling.label):
                if sibling.label not in image.depends_on:
                    image.depends_on.append(sibling.label)
            elif sibling is None and written.lower() != "scratch":
                image.bases.append(written)


def _by_repository(images: list[ImageGuess], reference: str) -> ImageGuess | None:
    name = _strip_tag(reference)
    for image in images:
        if name == image.repository or name.endswith("/" + image.repository):
            return image
    return None


def _strip_tag(reference: str) -> str:
    name = reference.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]


def _acyclic(images: list[ImageGuess], image: ImageGuess, dep: str) -> bool:
    deps = {i.label: list(i.depends_on) for i in images}
    deps[image.label].append(dep)
    return find_cycle(deps) is None


# -- charts --------------------------------------------------------------------------


def find_charts(root: Path, images: list[ImageGuess]) -> list[ChartGuess]:
    found: list[ChartGuess] = []
    labels = {i.label for i in images}
    for rel, files in _walk(root):
        if "Chart.yaml" not in files or any(_inside(rel, c.path) for c in found):
            continue  # a chart's own charts/ directory holds its vendored subcharts
        label = _unique(rel if rel != "." else workspace_name(root), labels)
        chart = ChartGuess(label, rel)
        _values_blocks(root / rel / "values.yaml", chart, images)
        found.append(chart)
    return found


def _inside(rel: str, parent: str) -> bool:
    return parent == "." or rel.startswith(parent + "/")


def _values_blocks(path: Path, chart: ChartGuess, images: list[ImageGuess]) -> None:
    if not path.is_file():
        return
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        chart.notes.append(f"values.yaml not read ({type(exc).__name__}): declare its image blocks by hand")
        return
    for vpath, repository in image_blocks(values):
        image = _by_repository(images, repository) or _by_name(images, repository)
        if image is not None:
            chart.images[vpath] = image.label
        else:
            chart.unmatched[vpath] = repository


def image_blocks(values: Any, prefix: str = "", depth: int = 0) -> list[tuple[str, str]]:
    """(dotted values path, repository) of every mapping holding ``repository`` and ``tag``."""
    if not isinstance(values, dict) or depth > 20:
        return []
    out = []
    for key, node in values.items():
        if not isinstance(key, str) or "." in key or not isinstance(node, dict):
            continue  # olly's values paths are dotted mapping keys
        path = f"{prefix}{key}"
        if "repository" in node and "tag" in node and isinstance(node["repository"], str):
            out.append((path, node["repository"]))
        else:
            out += image_blocks(node, path + ".", depth + 1)
    return out


def _by_name(images: list[ImageGuess], repository: str) -> ImageGuess | None:
    """The one image whose repository (or label) ends in the same name, if exactly one does."""
    last = _strip_tag(repository).rsplit("/", 1)[-1]
    same = [i for i in images if i.repository.rsplit("/", 1)[-1] == last] or \
           [i for i in images if slug(i.label.rsplit("/", 1)[-1]) == last]
    return same[0] if len(same) == 1 else None


# -- the file ------------------------------------------------------------------------


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # JSON string escapes are TOML's too


HEADER = """\
# BUILD.toml: the olly workspace file, written by `olly init` from this repository's files.
# Everything below is a guess to read and edit: check each repository name especially.
# `olly plan` shows what would build; `olly make` builds it. Reference: olly's README.

[workspace]
name = {name}
# Recorded as org.opencontainers.image.source on every image.
# source = "https://github.com/you/{name_raw}"
# Network for RUN steps (pip install, npm ci, go build need egress).
# network = "host"

# Registries: where `olly make --registry NAME --push` pushes images and charts.
# [registries.local]
# push = "localhost:5000"
# insecure = true            # plain http
# charts = "{name_raw}/charts"
#
# [registries.ghcr]
# push = "ghcr.io/you"
# platforms = ["linux/amd64", "linux/arm64"]
"""


def render(name: str, images: list[ImageGuess], charts: list[ChartGuess]) -> str:
    parts = [HEADER.format(name=_q(name), name_raw=name)]
    parts += [_render_image(i) for i in images]
    parts += [_render_chart(c) for c in charts]
    return "\n".join(parts)


def _render_image(i: ImageGuess) -> str:
    lines = [f"# {i.dockerfile}" + (f" (FROM {', '.join(i.bases)})" if i.bases else "")]
    lines += [f"# NOTE: {note}" for note in i.notes]
    lines += [f"[images.{_q(i.label)}]", f"repository = {_q(i.repository)}  # a guess: the name you push under"]
    if i.context != i.label:
        lines.append(f"context = {_q(i.context)}")
    if i.dockerfile != f"{i.context}/Dockerfile" and not (i.context == "." and i.dockerfile == "Dockerfile"):
        lines.append(f"dockerfile = {_q(i.dockerfile)}")
    if i.depends_on:
        args = ", ".join(f"{dep_arg_name(d)}" for d in i.depends_on)
        lines.append(f"depends_on = [{', '.join(map(_q, i.depends_on))}]  # passed as build arg(s) {args}")
    return "\n".join(lines) + "\n"


def _render_chart(c: ChartGuess) -> str:
    lines = [f"# {c.path}/Chart.yaml"] + [f"# NOTE: {note}" for note in c.notes]
    lines.append(f"[charts.{_q(c.label)}]")
    if c.path != c.label:
        lines.append(f"path = {_q(c.path)}")
    if c.images:
        lines.append("# values path of an image block = the image olly pins there by digest")
        lines.append("[charts." + _q(c.label) + ".images]")
        lines += [f"{_q(p)} = {_q(label)}" for p, label in sorted(c.images.items())]
    for p, repository in sorted(c.unmatched.items()):
        lines.append(f"# {_q(p)} = \"<image label>\"  # values.yaml: {repository}; not built here? (no image matched)")
    return "\n".join(lines) + "\n"


def ensure_gitignore(root: Path) -> str:
    """Ignore olly's own directories: create .gitignore, or append what it lacks (once)."""
    path = root / ".gitignore"
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else None
        have = {line.strip().strip("/") for line in (text or "").splitlines()}
        missing = [entry for entry in IGNORED if entry.strip("/") not in have]
        if not missing:
            return "unchanged"
        block = "# olly's cache and outputs\n" + "".join(f"{entry}\n" for entry in missing)
        sep = "" if not text or text.endswith("\n") else "\n"
        with open(path, "a", encoding="utf-8") as f:
            f.write(sep + ("\n" if text else "") + block)
    except OSError as exc:
        raise OllyError("io-error", f"cannot update {path}: {exc.strerror}") from None
    return "created" if text is None else "appended"
