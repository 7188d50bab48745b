""""Not an input" checked against Docker itself, not against olly (issue #9).

For each Dockerfile construct, a small workspace (context = its root) is built by the engine
from the WHOLE context, with both builders: the classic one by the real CLI
(``DOCKER_BUILDKIT=0 docker build --no-cache``), and the engine's BuildKit through its API
(``POST /build?version=2``, the context tarred by docker-py, whose .dockerignore reading is
not olly's; there is no buildx here for the CLI). Then every file
olly's reader calls unreachable is edited (content and executable bit), and new files are
added where the reader says nothing reaches: built again, the image must hold exactly the
same layers (every tar header and byte; only the mtimes of directories the daemon creates
during the build differ between any two builds, and are left out). As a check that the
comparison can see a change, an edit to one file the reader calls reachable must change the
image. Finally the image built from olly's own reduced tar (what ``olly make`` sends) must
hold the same files as the CLI's whole-context image (olly's tar normalises mtimes).

Fallback cases go the other way: there the reader keys the whole context because Docker's
image really depends on a file no COPY names (an ONBUILD trigger), shown by the same build.

``RUN --mount`` (bind, ``from=``, cache ``from=``), ``COPY --chmod`` and ``**`` are built by
BuildKit only (the classic builder refuses the first two). This engine's BuildKit (dockerd
20.10's) refuses heredocs, ``COPY --parents``/``--exclude``/``--link``, as the classic builder
does: no image here can depend on a file through them (checked below); tests/test_reach.py
checks olly's reader on them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from docker.utils.build import exclude_paths

from olly import api
from olly.tarstream import TarStream
from support import engine_under_test

pytestmark = pytest.mark.docker

SKIP = {"BUILD.toml"}  # the workspace file itself: unreachable, but edited by nobody here


@dataclass(frozen=True)
class Case:
    name: str
    files: tuple[str, ...]  # "a/b" file, "d/" dir, "l -> t" symlink, "tar:x.tar" a tar holding inner.txt
    dockerfile: str  # at <context>/Dockerfile
    reachable: str  # one file the reader must key: editing it must change the image
    ignore: str | None = None
    args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    whole: str | None = None  # the reader must fall back with this reason (prefix)
    builders: tuple[str, ...] = ("classic", "buildkit")

    def __str__(self) -> str:
        return self.name


BB = "FROM scratch\nCOPY busybox /bin/busybox\n"  # a static busybox: RUN needs a program


def cp(src: str, dst: str) -> str:
    """A RUN copying a mount into the image, keeping mtimes (a plain cp stamps the build time)."""
    return f'["/bin/busybox", "cp", "-rp", "{src}", "{dst}"]'


MONO = ("src/cart/main.go", "src/cart/util/x.go", "src/pay/main.go", "pb/demo.proto", "docs/guide.md", "README.md")
C = Case
CASES = [
    C("literal_dirs", MONO, "FROM scratch\nCOPY ./src/cart/ ./\nCOPY ./pb/ ./pb/\n", "src/cart/util/x.go"),
    C("literal_files_several_sources", ("a.txt", "b.txt", "c.txt", "d/e.txt"),
      "FROM scratch\nCOPY a.txt /d/e.txt /dst/\n", "d/e.txt"),
    C("json_form", ("sp ace/x.txt", "sp ace/y.txt", "z.txt"), 'FROM scratch\nCOPY ["sp ace/x.txt", "/dst/"]\n',
      "sp ace/x.txt"),
    C("glob_files_one_level", ("src/a.go", "src/b.go", "src/sub/c.go", "src/README.md", "other.go"),
      "FROM scratch\nCOPY src/*.go /dst/\n", "src/b.go"),
    C("glob_matching_directories", ("pkg-a/x.txt", "pkg-a/deep/y.txt", "pkg-b/z.txt", "pkgc/w.txt", "pkg-a.txt"),
      "FROM scratch\nCOPY pkg-? /dst/\n", "pkg-a/deep/y.txt"),
    C("glob_class_and_question_mark", ("a1.txt", "b2.txt", "c3.txt", "a12.txt", "sub/a1.txt"),
      "FROM scratch\nCOPY [ab]?.txt /dst/\n", "b2.txt"),
    C("add_local_file_and_archive", ("tar:pkg.tar", "b.txt", "c.txt"), "FROM scratch\nADD pkg.tar /x/\nADD b.txt /y\n",
      "b.txt"),  # (bytes appended to a tar after its end are not extracted)
    C("copy_from_a_stage", ("src/a.go", "src/b.go", "tests/t.go", "docs/x.md"),
      "FROM scratch AS build\nCOPY src /src\nFROM scratch\nCOPY --from=build /src/a.go /app/\n", "src/a.go"),
    C("unused_stage_before_the_target", ("app/a.go", "docs/x.md", "docs/y.md", "other.txt"),
      "FROM scratch AS docs\nCOPY docs /docs\nFROM scratch\nCOPY app /app\n", "app/a.go"),
    C("stage_after_the_target", ("app/a.go", "later/x.txt", "other.txt"),
      "FROM scratch AS app\nCOPY app /app\nFROM scratch AS later\nCOPY later /later\n", "app/a.go", target="app"),
    C("from_a_stage_chain", ("base/b.txt", "app/a.go", "other.txt"),
      "FROM scratch AS base\nCOPY base /base\nFROM base AS mid\nFROM mid\nCOPY app /app\n", "base/b.txt"),
    C("arg_and_env_substitution", MONO,
      "FROM scratch\nARG SVC=cart\nENV DIR=src/$SVC\nCOPY ${DIR}/ /app/\nCOPY \"pb/demo.proto\" /pb/\n", "src/pay/main.go",
      args={"SVC": "pay"}),
    C("escape_directive_and_continuations", ("a/x.txt", "b/y.txt", "c/z.txt"),
      "# escape=`\nFROM scratch\nCOPY a `\n# a comment inside\n\n   b /dst/\n", "b/y.txt"),
    C("symlinked_directory_on_a_source_path", ("real/f", "real/g", "lnk -> real", "other.txt"),
      "FROM scratch\nCOPY lnk/f /f\n", "real/f"),
    C("glob_matching_a_symlink", ("real/f", "real/g", "lnk -> real", "other.txt", "zzz/q"),
      "FROM scratch\nCOPY l* /d/\n", "real/g"),
    C("symlink_inside_a_copied_directory", ("app/a.go", "app/l -> ../data/x.txt", "data/x.txt", "data/y.txt"),
      "FROM scratch\nCOPY app /app\n", "app/a.go"),  # copied as a link: what it points to is not
    C("dockerignore_applies_first", ("src/a.go", "src/a.tmp", "src/keep.tmp", "skip/k.txt", "skip/x.txt", "o.txt"),
      "FROM scratch\nCOPY src /src\nCOPY skip /skip\n", "skip/k.txt", ignore="**/*.tmp\n!src/keep.tmp\nskip\n!skip/k.txt\n"),
    C("copy_everything", ("a.txt", "d/b.txt", "x.md", "d/y.md"), "FROM scratch\nCOPY . /all/\n", "d/b.txt",
      ignore="*.md\n"),  # only what .dockerignore excludes is unreachable
    C("onbuild_in_a_stage", ("app/a.go", "other.txt"),
      "FROM scratch AS base\nONBUILD COPY . /ctx/\nFROM base\nCOPY app /app\n", "other.txt",
      whole="ONBUILD in stage base (line 2)"),
    # BuildKit only: RUN --mount reads the context (or a stage) without copying it.
    C("run_mount_bind", ("busybox", "a/x.txt", "a/y/z.txt", "other/o.txt", "o.txt"),
      f"{BB}RUN --mount=type=bind,source=a,target=/a {cp('/a', '/out')}\n", "a/y/z.txt", builders=("buildkit",)),
    C("run_mount_default_source_is_everything", ("busybox", "a/x.txt", "skip.md"),
      f"{BB}RUN --mount=target=/ctx {cp('/ctx/a', '/out')}\n", "a/x.txt", ignore="*.md\n", builders=("buildkit",)),
    C("run_mount_from_a_stage", ("busybox", "s/x.txt", "other.txt"),
      f"FROM scratch AS s\nCOPY s /s\n{BB}RUN --mount=type=bind,from=s,source=/s,target=/m {cp('/m', '/out')}\n", "s/x.txt",
      builders=("buildkit",)),
    C("run_mount_cache_from_a_stage", ("busybox", "s/x.txt", "other.txt"),
      f"FROM scratch AS s\nCOPY s /s\n{BB}RUN --mount=type=cache,from=s,source=/s,target=/m {cp('/m', '/out')}\n",
      "s/x.txt", builders=("buildkit",)),
    C("copy_chmod", ("a/x.txt", "b/y.txt"), "FROM scratch\nCOPY --chmod=755 a /d/\n", "a/x.txt", builders=("buildkit",)),
    C("doublestar", ("t.txt", "a/b.txt", "a/x/c.txt", "a/c.md", "b/x/d.txt"), "FROM scratch\nCOPY a/**/*.txt /d/\n",
      "a/x/c.txt"),  # olly: ** spans any depth (a superset); these builders: one segment
]


def make_tree(root: Path, case: Case) -> None:
    for spec in case.files:
        name, _, target = spec.partition(" -> ")
        kind, _, tarname = name.partition(":")
        path = root / (tarname if kind == "tar" else name)
        path.parent.mkdir(parents=True, exist_ok=True)
        if target:
            path.symlink_to(target)
        elif kind == "tar":
            with tarfile.open(path, "w") as tar:
                info = tarfile.TarInfo("inner.txt")
                info.size = 5
                tar.addfile(info, io.BytesIO(b"inner"))
        elif name == "busybox":
            shutil.copyfile(BUSYBOX, path)
            path.chmod(0o755)
            # BuildKit shares a layer between concurrent builds of the same content, whatever
            # its mtime: give every case's copy the same one.
            os.utime(path, (946684800, 946684800))
        elif name.endswith("/"):
            path.mkdir(exist_ok=True)
        else:
            path.write_text(f"{case.name}: {name}\n")  # unique: BuildKit shares equal layers across builds
    (root / "Dockerfile").write_text(case.dockerfile)
    # olly's own .cache/ (made by `olly inputs`) is never sent by olly; keep the CLI from sending it.
    (root / ".dockerignore").write_text(".cache\n" + (case.ignore or ""))
    args = "".join(f'{k} = "{v}", ' for k, v in case.args.items()).rstrip(", ")
    (root / "BUILD.toml").write_text('[images.img]\nrepository = "t/img"\ncontext = "."\n'
                                     + (f'target = "{case.target}"\n' if case.target else "")
                                     + (f"args = {{ {args} }}\n" if args else ""))


BUSYBOX = "/bin/busybox"
IMAGES: list[str] = []


def docker(*args: str, stdin: bytes | None = None, cwd: Path | None = None) -> bytes:
    done = subprocess.run(["docker", *args], cwd=cwd, input=stdin, capture_output=True, timeout=300,
                          env=dict(os.environ, DOCKER_BUILDKIT="0"))
    if done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {done.stderr.decode(errors='replace')}")
    return done.stdout


def build(root: Path, case: Case, builder: str, tar: bytes | None = None, dockerfile: str = "Dockerfile") -> str:
    """An image of ``root`` (the whole context) or of ``tar`` (olly's), with no layer cache."""
    if builder == "buildkit":
        return buildkit(root, case, tar, dockerfile)
    flags = ["--no-cache", "-q", "-f", dockerfile]
    flags += ["--target", case.target] if case.target else []
    for k, v in case.args.items():
        flags += ["--build-arg", f"{k}={v}"]
    image = docker("build", *flags, "-" if tar is not None else ".", stdin=tar, cwd=root).decode().strip()
    IMAGES.append(image)
    return image


def buildkit(root: Path, case: Case, tar: bytes | None, dockerfile: str) -> str:
    """The engine's BuildKit through its API; the whole context tarred by docker-py."""
    if tar is None:
        patterns = [line for line in (root / ".dockerignore").read_text().splitlines() if line]
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as out:
            for rel in sorted(exclude_paths(str(root), patterns)):
                out.add(root / rel, arcname=rel, recursive=False)
        tar = buf.getvalue()
    api = docker_api()
    params = {"version": "2", "nocache": "1", "networkmode": "none", "dockerfile": dockerfile,
              "buildargs": json.dumps(case.args)} | ({"target": case.target} if case.target else {})
    response = api._post(api._url("/build"), params=params, data=tar, headers={"Content-Type": "application/x-tar"},
                         stream=True)
    image, errors = None, []
    for line in response.iter_lines():
        item = json.loads(line)
        if item.get("id") == "moby.image.id":
            image = item["aux"]["ID"]
        errors += [item["error"]] if "error" in item else []
    assert image and not errors, f"BuildKit: {errors}"
    IMAGES.append(image)
    return image


def docker_api():  # noqa: ANN201
    import docker as sdk

    return sdk.APIClient(version="auto", timeout=300)


def layers(image: str, mtimes: bool = True) -> list[tuple]:
    """Every tar header and content hash of every layer, in order (directory mtimes left out:
    the daemon stamps the directories it creates with the build time)."""
    out = []
    saved_tar = docker("save", image.removeprefix("sha256:"))  # Podman reads "sha256:<hex>" as a name
    with tarfile.open(fileobj=io.BytesIO(saved_tar)) as saved:
        manifest = json.load(saved.extractfile("manifest.json"))  # type: ignore[arg-type]
        for n, name in enumerate(manifest[0]["Layers"]):
            with tarfile.open(fileobj=io.BytesIO(saved.extractfile(name).read())) as layer:  # type: ignore[union-attr]
                for m in layer:
                    data = layer.extractfile(m).read() if m.isfile() else b""  # type: ignore[union-attr]
                    body = hashlib.sha256(data).hexdigest() if m.isfile() else ""
                    out.append((n, m.name, m.type, m.mode, m.uid, m.gid, m.linkname, body,
                                m.mtime if mtimes and not m.isdir() else 0))
    return out


def keyed_paths(root: Path) -> tuple[set[str], str | None]:
    tp = api.inputs(root, "img")
    return {row[0] for row in tp.manifest["files"]}, tp.manifest["reach"]["whole"]


def unreached(root: Path, keyed: set[str]) -> list[str]:
    """Every file and symlink of the context the key does not cover."""
    out = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not (dirpath == str(root) and d in (".cache", "dist"))]  # olly's own
        for name in dirs + files:
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            is_entry = name in files or os.path.islink(Path(dirpath) / name)
            if is_entry and rel not in keyed and rel not in SKIP and name not in ("Dockerfile", ".dockerignore"):
                out.append(rel)
    return sorted(out)


def edit_unreached(root: Path, keyed: set[str]) -> list[str]:
    """Edit every unreached file; add a new file wherever the reader says nothing reaches it."""
    edited = []
    for rel in unreached(root, keyed):
        path = root / rel
        if path.is_symlink():
            continue
        with open(path, "a") as fh:
            fh.write("edited\n")
        path.chmod(0o755)
        edited.append(rel)
    folders = {"."} | {str(Path(rel).parent) for rel in edited}
    for folder in sorted(folders):
        new = root / folder / "zz-new-file.txt"
        new.write_text("new\n")
        now, _ = keyed_paths(root)
        if new.relative_to(root).as_posix() in now:
            new.unlink()  # a source reaches it there: not an unreachable edit
        else:
            edited.append(new.relative_to(root).as_posix())
    return edited


def olly_tar(root: Path) -> tuple[bytes, str]:
    tp = api.inputs(root, "img")
    assert tp.context is not None
    return b"".join(TarStream(root, tp.context)), tp.context.dockerfile_name


def run_case(base: Path, case: Case, builder: str) -> dict:
    root = base / f"{case.name}@{builder}"
    root.mkdir()
    make_tree(root, case)
    keyed, whole = keyed_paths(root)
    before = layers(build(root, case, builder))
    result = {"keyed": keyed, "whole": whole, "edited": edit_unreached(root, keyed)}
    after = layers(build(root, case, builder))
    result["unreached_edit_changed"] = [row for row in after if row not in before] if after != before else []
    tar, name = olly_tar(root)
    olly = layers(build(root, case, builder, tar, name), mtimes=False)
    result["olly_same_files"] = olly == layers(build(root, case, builder), mtimes=False)
    with open(root / case.reachable, "a") as fh:
        fh.write("edited too\n")
    result["reachable_edit_changed"] = layers(build(root, case, builder)) != before
    return result


# On Podman (OLLY_TEST_ENGINE=podman) "classic" is the CLI's build through Podman's compatible
# API (buildah); Podman has no BuildKit, so the BuildKit runs are Docker-only.
RUNS = [(c, b) for c in CASES for b in c.builders if not (engine_under_test() == "podman" and b == "buildkit")]


def run_id(run: tuple[Case, str]) -> str:
    return f"{run[0].name}@{run[1]}"


@pytest.fixture(scope="module")
def results(docker_client, busybox, tmp_path_factory) -> dict[str, dict]:
    base = tmp_path_factory.mktemp("reach-docker")
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            return dict(zip(map(run_id, RUNS), pool.map(lambda run: run_case(base, *run), RUNS)))
    finally:
        for image in set(IMAGES):
            subprocess.run(["docker", "rmi", "-f", image], capture_output=True)


@pytest.mark.parametrize("run", [r for r in RUNS if r[0].whole is None], ids=run_id)
def test_an_unreachable_edit_leaves_the_image_identical(run: tuple[Case, str], results: dict[str, dict]) -> None:
    case, r = run[0], results[run_id(run)]
    assert r["whole"] is None, r["whole"]
    assert case.reachable in r["keyed"]
    assert r["edited"], "nothing unreachable to edit"
    assert not r["unreached_edit_changed"], (f"Docker's image changed after editing {r['edited']}: olly missed an "
                                             f"input; new layer entries: {r['unreached_edit_changed']}")
    assert r["reachable_edit_changed"], "the comparison did not see an edit to a reachable file"
    assert r["olly_same_files"], "the image built from olly's reduced context differs from the whole context's"


@pytest.mark.parametrize("name, ignored", [("copy_everything", "x.md"),
                                           ("run_mount_default_source_is_everything", "skip.md")])
def test_copying_everything_keys_every_entry(name: str, ignored: str, results: dict[str, dict]) -> None:
    found = [r for run, r in results.items() if run.startswith(name + "@")]
    if not found:
        pytest.skip(f"{name} is built by BuildKit only, which this engine lacks")
    keyed = found[0]["keyed"]
    assert {"Dockerfile", ".dockerignore", "BUILD.toml"} <= keyed and ignored not in keyed


@pytest.mark.parametrize("run", [r for r in RUNS if r[0].whole is not None], ids=run_id)
def test_a_fallback_is_needed_where_olly_falls_back(run: tuple[Case, str], results: dict[str, dict]) -> None:
    case, r = run[0], results[run_id(run)]
    assert r["whole"] is not None and r["whole"].startswith(case.whole)
    assert r["edited"] == [], "the whole context is keyed: nothing is unreachable"
    assert r["reachable_edit_changed"], f"Docker's image does depend on {case.reachable}, which no COPY names"
    assert r["olly_same_files"]


def test_onbuild_in_a_base_image_the_engine_holds(docker_client, tmp_path: Path) -> None:
    """A base image with an ONBUILD trigger (read from the engine's copy of its config):
    olly keys the whole context, and Docker's image does depend on a file no COPY names."""
    base = f"olly-test-onbuild-{uuid.uuid4().hex[:8]}:1"
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /\nONBUILD COPY . /ctx/\n")
    docker("build", "-q", "-t", base, ".", cwd=tmp_path / "base")
    try:
        case = C("onbuild_base", ("app/a.go", "other.txt"), f"FROM {base}\nCOPY app /app\n", "other.txt")
        root = tmp_path / "ws"
        root.mkdir()
        make_tree(root, case)
        keyed, whole = keyed_paths(root)
        assert whole == f"ONBUILD in {base}" and "other.txt" in keyed
        before = layers(build(root, case, "classic"))
        (root / "other.txt").write_text("changed\n")
        assert layers(build(root, case, "classic")) != before
    finally:
        docker("rmi", "-f", base)


@pytest.mark.parametrize("dockerfile", [
    "FROM scratch\nCOPY <<EOF /x\nhello\nEOF\n",
    "FROM scratch\nCOPY --parents ./a/./b.txt /d/\n",
    "FROM scratch\nCOPY --exclude=*.md a /d/\n",
    "FROM scratch\nCOPY --link a /d/\n",
], ids=["heredoc", "parents", "exclude", "link"])
@pytest.mark.parametrize("builder", ["classic", "buildkit"])
def test_forms_this_engine_cannot_build(docker_client, tmp_path: Path, dockerfile: str, builder: str) -> None:
    """Neither builder of this engine takes them, so no image here depends on any file
    through them; olly reads them as a newer BuildKit does (tests/test_reach.py)."""
    case = C("x", ("a/b.txt",), dockerfile, "a/b.txt")
    make_tree(tmp_path, case)
    with pytest.raises(AssertionError):
        build(tmp_path, case, builder)


@pytest.mark.parametrize("dockerfile", ["FROM scratch\nCOPY --chmod=755 a /d/\n",
                                        "FROM scratch\nRUN --mount=type=bind,source=a,target=/a true\n"])
def test_buildkit_forms_fail_on_the_classic_builder(docker_client, tmp_path: Path, dockerfile: str) -> None:
    case = C("x", ("a/b.txt",), dockerfile, "a/b.txt")
    make_tree(tmp_path, case)
    with pytest.raises(AssertionError):
        build(tmp_path, case, "classic")
