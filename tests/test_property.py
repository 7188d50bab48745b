"""Never stale, never needlessly rebuilt: a property test against an independent model.

Random sequences of edits (content, chmod, add, delete, rename, symlinks, empty dirs,
.dockerignore, Dockerfile, build arg, extra input files, touch, ignored files, a file
outside every context, chart files, version, passing time) are applied to the fixture
workspace tests/data/prop. Edits that need an existing file pick one that exists. One image,
``mono``, is built from the workspace root by a multi-stage Dockerfile that copies only some
paths (a directory through a build arg, a wildcard), so every edit also lands inside or
outside its COPY sources, glob-matched or not, in stages its target reaches or not; the
model learns what it reaches from the Dockerfile's meaning written out here (MONO_*), never
from olly's reader. After each,
`olly make` runs (on the in-memory FakeEngine: decisions, not engine speed, are under
test) and every target's outcome is compared with a ground truth computed here,
independently of olly: a target must build iff the inputs Docker would see for it
(its context after .dockerignore, Dockerfile, .dockerignore, args, and its
dependencies' inputs) were never built before.

What this test cannot produce: a racily-clean file (same size, same mtime AND ctime tick
right after hashing) needs control of ctime; tests/test_hashing.py covers it with a
controlled clock. The default run is short; test_every_edit_kind_takes_effect checks
that every kind of edit really changed the workspace in it. The long profile runs
1,000+ edits:
    OLLY_PROPERTY_EXAMPLES=80 OLLY_PROPERTY_STEPS=25 python -m pytest tests/test_property.py
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

import olly.hashing
from fakes import FakeEngine
from olly import api

DATA = Path(__file__).parent / "data" / "prop"
IMAGES = {"base": [], "mid": ["base"], "app": ["mid"], "solo": [], "mono": []}
DIRS = ["base", "mid", "app", "solo"]  # each image's directory: where edits land
DOCKERFILES = {"base": "base/Dockerfile", "mid": "mid/Dockerfile", "app": "dockerfiles/app.Dockerfile",
               "solo": "solo/Dockerfile", "mono": "mono.Dockerfile"}
# What mono.Dockerfile's target stage copies, by hand: ARG SVC (BUILD.toml: "mid") in
# `COPY ${SVC}/sub/ /mono/sub/` and the wildcard `COPY s*/*.txt /mono/glob/` (Go's Match: one
# path segment per `*`). Its stage "early" copies base/ (the classic builder runs it, the
# target does not use it); "later" copies app/ (after the target: never run).
MONO_DIR, MONO_GLOB = "mid/sub", ("s*", "*.txt")
CHART_IMAGES = ["app", "solo"]
RELS = ["a.txt", "b.log", "keep.log", "secret.txt", "x.bak", "sub/c.txt", "sub/d.bak", "tmp/e.txt",
        "deep/x/y.txt"]
IGNORE_LINES = ["*.log", "tmp", "secret.txt", "**/*.bak", "!keep.log", ".dockerignore", "Dockerfile", "# note"]
EXAMPLES = int(os.environ.get("OLLY_PROPERTY_EXAMPLES", "10"))
STEPS = int(os.environ.get("OLLY_PROPERTY_STEPS", "20"))


# -- the independent model ----------------------------------------------------------


def model_excluded(rel: str, lines: list[str]) -> bool:
    """Docker's rules for the restricted pattern vocabulary above, written from the docs:
    anchored at the root, a match on a parent directory excludes the children, the last
    matching line wins, `!` re-includes."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for line in lines:
        if not line or line.startswith("#"):
            continue
        negate, pat = line.startswith("!"), line.lstrip("!")
        if pat == "**/*.bak":
            hit = any(p.endswith(".bak") for p in prefixes)
        else:
            hit = any(fnmatch.fnmatchcase(p, pat) and "/" not in p for p in prefixes[:1]) or any(
                p == pat for p in prefixes)
        if hit:
            excluded = not negate
    return excluded


def context_snapshot(root: Path, ctx: str) -> list[tuple[str, str, bool, bytes]]:
    base = root / ctx
    ignore_file = base / ".dockerignore"
    lines = [l.strip() for l in ignore_file.read_text().splitlines()] if ignore_file.exists() else []
    out = []
    for dirpath, dirnames, filenames in os.walk(base):
        if ctx == "." and Path(dirpath) == base:  # olly's own dirs: never a context's (a watcher's socket is there)
            dirnames[:] = [d for d in dirnames if d not in (".cache", "dist")]
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(base).as_posix()
            if model_excluded(rel, lines):
                continue
            if path.is_symlink():  # sent as a link: its target text, never what it points to
                out.append((rel, "l", False, os.readlink(path).encode()))
            elif path.is_dir():
                out.append((rel, "d", False, b""))
            else:
                out.append((rel, "f", bool(path.stat().st_mode & 0o111), path.read_bytes()))
    return sorted(out)


def mono_reaches(rel: str) -> str:
    """The model's reading of mono.Dockerfile: which COPY of its target reaches ``rel``."""
    parts = rel.split("/")
    if rel == MONO_DIR or rel.startswith(MONO_DIR + "/"):
        return "copied dir"
    if len(parts) == 2 and all(fnmatch.fnmatchcase(p, g) for p, g in zip(parts, MONO_GLOB)):
        return "glob match"  # (a matched directory would copy its subtree: none is ever created)
    if parts[0] in ("solo", "shared"):
        return "glob miss"
    return {"base": "stage run, unused", "app": "stage never run"}.get(parts[0], "no source")


def mono_snapshot(root: Path) -> list[tuple[str, str, bool, bytes]]:
    """What mono's key must cover: every entry its target's sources reach (no .dockerignore
    at the root; olly's own .cache/ and dist/ are never part of a context)."""
    return [row for row in context_snapshot(root, ".") if not row[0].startswith((".cache", "dist"))
            and mono_reaches(row[0]) in ("copied dir", "glob match")]


def mono_image(root: Path) -> list[tuple[str, str, bool, bytes]]:
    """What mono's image holds under /mono: mid/sub's contents under sub/, each wildcard
    match under glob/ by its name."""
    rows = mono_snapshot(root)
    out = [("sub", "d", False, b""), ("glob", "d", False, b"")]
    out += [("sub/" + r[0][len(MONO_DIR) + 1:], *r[1:]) for r in rows if r[0].startswith(MONO_DIR + "/")]
    out += [("glob/" + r[0].split("/")[1], *r[1:]) for r in rows if mono_reaches(r[0]) == "glob match"]
    return sorted(out)


def shared_inputs(root: Path) -> list[tuple[str, bytes]]:
    """solo's `inputs = ["shared/*.txt"]`: every such file, dotfiles included."""
    return sorted((p.name, p.read_bytes()) for p in (root / "shared").iterdir()
                  if p.is_file() and fnmatch.fnmatchcase(p.name, "*.txt"))


def image_truth(root: Path, image: str, args: dict[str, str]) -> str:
    if image == "mono":
        parts = [repr(mono_snapshot(root)), repr((root / DOCKERFILES[image]).read_bytes()), repr([("SVC", "mid")])]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()
    ctx = image
    ignore = root / ctx / ".dockerignore"
    parts = [
        repr(context_snapshot(root, ctx)),
        repr((root / DOCKERFILES[image]).read_bytes()),
        repr(ignore.read_bytes() if ignore.exists() else None),
        repr(sorted(args.items()) if image == "solo" else []),
        repr(shared_inputs(root) if image == "solo" else []),
        *[image_truth(root, dep, args) for dep in IMAGES[image]],
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def chart_truth(root: Path, args: dict[str, str], version: str) -> str:
    files = sorted((p.relative_to(root / "chart").as_posix(), p.read_bytes())
                   for p in (root / "chart").rglob("*") if p.is_file())
    images = [image_truth(root, i, args) for i in CHART_IMAGES]
    return hashlib.sha256(repr((files, images, version)).encode()).hexdigest()


def image_snapshot(client, ref: str, prefix: str) -> list[tuple[str, str, bool, bytes]]:  # noqa: ANN001
    """What ``COPY . /<prefix>/`` put into the image, in context_snapshot's shape."""
    import io
    import tarfile

    container = client.containers.create(ref, command="/nonexistent")
    try:
        data = b"".join(container.export())
    finally:
        container.remove()
    out = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            if not m.name.startswith(prefix + "/"):
                continue
            rel = m.name[len(prefix) + 1:]
            if m.issym():
                out.append((rel, "l", False, m.linkname.encode()))
            elif m.isdir():
                out.append((rel, "d", False, b""))
            else:
                out.append((rel, "f", bool(m.mode & 0o111), tar.extractfile(m).read()))  # type: ignore[union-attr]
    return sorted(out)


EFFECTS: dict[str, int] = {}  # edit kind -> how often it changed the workspace


# -- the state machine --------------------------------------------------------------


class Edits(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="olly-prop-"))
        self.root = self.tmp / "prop"
        shutil.copytree(DATA, self.root)
        self.engine = self.make_engine()
        self.args = {"GREETING": "g0"}
        self.version = "v1.0.0"
        self.built = self.built_so_far()
        # A fake clock: "tick" lets time pass so the stat cache is trusted (and tested);
        # every edit stamps a fresh mtime from it, as a real edit after that time would.
        self.clock = time.time_ns() + 10 * 10**9
        self.real_time_ns = olly.hashing.time.time_ns
        olly.hashing.time.time_ns = lambda: self.clock
        self.steps = 0
        self.check()

    def make_engine(self):  # noqa: ANN201 (FakeEngine or olly.engine.Engine)
        return FakeEngine()

    def built_so_far(self) -> dict[str, set[str]]:
        """Inputs already built per target: none for a fresh FakeEngine."""
        return {t: set() for t in [*IMAGES, "chart"]}

    def teardown(self) -> None:
        if hasattr(self, "real_time_ns"):
            olly.hashing.time.time_ns = self.real_time_ns
        if hasattr(self, "tmp"):
            shutil.rmtree(self.tmp, ignore_errors=True)

    def stamp(self, path: Path) -> None:
        self.clock += 1_000_000  # 1 ms per edit: distinct mtimes, as real edits have
        os.utime(path, ns=(self.clock, self.clock), follow_symlinks=False)

    def ignore_lines(self, image: str) -> list[str]:
        p = self.root / image / ".dockerignore"
        return [line.strip() for line in p.read_text().splitlines()] if p.exists() else []

    def path(self, image: str, rel: str) -> Path:
        return self.root / image / rel

    def files(self, image: str) -> list[str]:
        base = self.root / image
        return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file() and not p.is_symlink())

    def took_effect(self, kind: str, image: str = "", rel: str = "") -> None:
        EFFECTS[kind] = EFFECTS.get(kind, 0) + 1
        if image:  # where the edit lands for mono's Dockerfile
            where = f"mono: {mono_reaches(f'{image}/{rel}')}"
            EFFECTS[where] = EFFECTS.get(where, 0) + 1

    # -- edits ---------------------------------------------------------------------

    @rule(image=st.sampled_from(DIRS), rel=st.sampled_from(RELS), content=st.sampled_from(["1", "2", "22"]))
    def write(self, image: str, rel: str, content: str) -> None:
        p = self.path(image, rel)
        if p.is_dir() or p.is_symlink():
            return
        p.parent.mkdir(parents=True, exist_ok=True)
        if not p.exists() or p.read_text() != content:
            self.took_effect("write", image, rel)
        p.write_text(content)
        self.stamp(p)

    @rule(image=st.sampled_from(DIRS), data=st.data())
    def chmod(self, image: str, data: st.DataObject) -> None:
        files = self.files(image)
        if files:
            rel = data.draw(st.sampled_from(files))
            p = self.path(image, rel)
            exe = not (p.stat().st_mode & 0o111)  # always flip the executable bit
            p.chmod(0o755 if exe else 0o644)
            self.took_effect("chmod", image, rel)

    @rule(image=st.sampled_from(DIRS), data=st.data())
    def delete(self, image: str, data: st.DataObject) -> None:
        files = [f for f in self.files(image) if f not in ("Dockerfile",)]
        if files:
            rel = data.draw(st.sampled_from(files))
            self.path(image, rel).unlink()
            self.took_effect("delete", image, rel)

    @rule(image=st.sampled_from(DIRS), data=st.data(), dst=st.sampled_from(RELS))
    def rename(self, image: str, data: st.DataObject, dst: str) -> None:
        files = [f for f in self.files(image) if f not in ("Dockerfile",)]
        b = self.path(image, dst)
        if files and not b.is_dir() and not b.is_symlink():
            a = self.path(image, data.draw(st.sampled_from(files)))
            if a != b:
                b.parent.mkdir(parents=True, exist_ok=True)
                a.rename(b)  # over an existing file too
                self.took_effect("rename", image, dst)

    @rule(image=st.sampled_from(DIRS), points_to=st.sampled_from(["a.txt", "missing", "../outside", "sub"]))
    def symlink(self, image: str, points_to: str) -> None:
        p = self.path(image, "link")
        if p.is_symlink() and os.readlink(p) == points_to:
            return
        if p.is_symlink() or p.exists():
            p.unlink()
        p.symlink_to(points_to)
        self.took_effect("symlink")

    @rule(image=st.sampled_from(DIRS), rel=st.sampled_from(["emptydir", "sub/emptydir"]))
    def mkdir(self, image: str, rel: str) -> None:
        p = self.path(image, rel)
        if not p.exists() and not p.parent.is_symlink():
            p.mkdir(parents=True)
            self.took_effect("mkdir", image, rel)

    @rule(image=st.sampled_from(DIRS), lines=st.lists(st.sampled_from(IGNORE_LINES), max_size=4))
    def dockerignore(self, image: str, lines: list[str]) -> None:
        p = self.path(image, ".dockerignore")
        text = "".join(line + "\n" for line in lines)
        if not p.exists() or p.read_text() != text:
            self.took_effect("dockerignore")
        p.write_text(text)
        self.stamp(p)

    @rule(image=st.sampled_from(list(IMAGES)))
    def edit_dockerfile(self, image: str) -> None:
        p = self.root / DOCKERFILES[image]
        p.write_text(p.read_text() + f"# edit {self.steps}\n")
        self.stamp(p)
        self.took_effect("dockerfile")

    @rule(value=st.sampled_from(["g0", "g1", "g2"]))
    def build_arg(self, value: str) -> None:
        if value == self.args["GREETING"]:
            return
        build = self.root / "BUILD.toml"
        build.write_text(build.read_text().replace(f'GREETING = "{self.args["GREETING"]}"', f'GREETING = "{value}"'))
        self.args["GREETING"] = value
        self.took_effect("build_arg")

    @rule(name=st.sampled_from(["one.txt", "two.txt", ".hidden.txt", "skip.md"]), content=st.sampled_from(["a", "b", None]))
    def shared_input(self, name: str, content: str | None) -> None:
        p = self.root / "shared" / name
        if content is None:
            if p.exists() and name != "one.txt":  # keep one match: an empty glob is a config error
                p.unlink()
                self.took_effect("input")
            return
        if not p.exists() or p.read_text() != content:
            self.took_effect("input", "shared", name)
        p.write_text(content)
        self.stamp(p)

    @rule(image=st.sampled_from(DIRS), data=st.data())
    def touch(self, image: str, data: st.DataObject) -> None:
        files = self.files(image)
        if files:
            rel = data.draw(st.sampled_from(files))
            self.stamp(self.path(image, rel))
            self.took_effect("touch", image, rel)

    @rule(content=st.sampled_from(["a", "b"]))
    def outside(self, content: str) -> None:
        p = self.root / "docs" / "notes.md"
        if p.read_text() != content:
            self.took_effect("outside")
        p.write_text(content)
        self.stamp(p)

    @rule(name=st.sampled_from(["templates/cm.yaml", "values.yaml"]), content=st.sampled_from(["x", "y"]))
    def chart(self, name: str, content: str) -> None:
        p = self.root / "chart" / name
        text = p.read_text()
        marker = "# olly-prop:"
        new = text.split(marker)[0] + f"{marker} {content}\n"
        if new != text:
            self.took_effect("chart")
        p.write_text(new)
        self.stamp(p)

    @rule(version=st.sampled_from(["v1.0.0", "v1.1.0"]))
    def change_version(self, version: str) -> None:
        if version != self.version:
            self.version = version
            self.took_effect("version")

    @rule()
    def tick(self) -> None:
        self.clock += 3 * 10**9
        self.took_effect("tick")

    # -- the property --------------------------------------------------------------

    @invariant()
    def check(self) -> None:
        if not hasattr(self, "root"):
            return
        self.steps += 1
        result = api.make(self.root, [], engine=self.engine, version=self.version, jobs=2)
        outcomes = {o.label: o for o in result.outcomes}
        self.outcomes = outcomes
        truths = {i: image_truth(self.root, i, self.args) for i in IMAGES}
        truths["chart"] = chart_truth(self.root, self.args, self.version)
        for label, truth in truths.items():
            o = outcomes[label]
            must_build = truth not in self.built[label]
            assert o.status in ("built", "cached"), (label, o.status, o.reason)
            if must_build:
                assert o.status == "built", f"STALE: {label} inputs changed but olly said {o.status} ({o.reason})"
            else:
                assert o.status == "cached", f"NEEDLESS: {label} rebuilt although its inputs were built before ({o.reason})"
            self.built[label].add(truth)


SETTINGS = settings(
    max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.docker
@pytest.mark.builder
def test_property_on_the_real_engine(docker_client, unique_prefix: str) -> None:
    """A short run of the same property with real builds (FROM scratch, no network)."""
    from olly.engine import Engine

    # The engine keeps its images from one example to the next, and olly rightly reuses
    # them (by tag and key label): what was built stays built for the model too.
    built: dict[str, set[str]] = {t: set() for t in [*IMAGES, "chart"]}

    class RealEdits(Edits):
        def make_engine(self) -> Engine:
            build = self.root / "BUILD.toml"
            build.write_text(build.read_text().replace('repository = "prop/', f'repository = "{unique_prefix}/'))
            return Engine()

        def built_so_far(self) -> dict[str, set[str]]:
            built["chart"] = set()  # packages live in each example's own .cache
            return built

        @rule(image=st.sampled_from(DIRS), points_to=st.sampled_from(["missing", "../outside", "gone/x"]))
        def retarget_link(self, image: str, points_to: str) -> None:
            """Weighs link retargeting up on the real engine, where its layer cache can go stale."""
            self.symlink(image, points_to)

        @invariant()
        def images_hold_their_inputs(self) -> None:
            """The key says what an image holds: check it against the engine's own image
            (a layer cache that missed a symlink edit would show here, not in the key)."""
            if not hasattr(self, "outcomes"):
                return
            for image in IMAGES:
                if image == "mono":
                    assert image_snapshot(docker_client, self.outcomes[image].ref, "mono") == mono_image(self.root)
                    continue
                want = [row for row in context_snapshot(self.root, image) if row[0] not in ("Dockerfile", ".dockerignore")
                        or not model_excluded(row[0], self.ignore_lines(image))]
                got = image_snapshot(docker_client, self.outcomes[image].ref, image)
                # A Dockerfile outside the context is sent under a generated name that the
                # CLI (and olly) append to .dockerignore, which COPY then sees: Docker's way.
                got = [(p, t, x, re.sub(rb"\n\.dockerfile\.[0-9a-f]{16}\n$", b"", c) if p == ".dockerignore" else c)
                       for p, t, x, c in got]
                assert got == want, f"{image}: image content differs from its inputs"

    run_state_machine_as_test(RealEdits, settings=settings(
        max_examples=int(os.environ.get("OLLY_PROPERTY_REAL_EXAMPLES", "3")), stateful_step_count=8,
        deadline=None, derandomize=True, phases=[Phase.generate],  # no replay: the engine has state
        suppress_health_check=list(HealthCheck)))


@pytest.mark.skipif(not os.path.exists("/proc/sys/fs/inotify"), reason="the watcher needs inotify")
def test_property_with_a_watcher(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same property with `olly watch` running: every plan syncs with it and takes the
    walks it vouches for without walking them. Still zero stale, zero needless; and it does
    take some (else this would test nothing)."""
    from olly import walkmemo, watchsync

    taken: list[bool] = []
    real = walkmemo.Memo.unchanged

    def counted(self: walkmemo.Memo, *args: object) -> object:
        recalled = real(self, *args)  # type: ignore[arg-type]
        taken.append(recalled is not None)
        return recalled

    monkeypatch.setattr(walkmemo.Memo, "unchanged", counted)

    class Watched(Edits):
        @initialize()
        def setup(self) -> None:
            Edits.setup(self)  # its first make ran without a watcher
            watchsync.start(self.root, idle=600)

        def teardown(self) -> None:
            if hasattr(self, "root"):
                watchsync.stop(self.root)
            Edits.teardown(self)

    run_state_machine_as_test(Watched, settings=SETTINGS)
    assert sum(taken) > len(taken) / 4  # a good share of the walks taken on its word (the rest: edited, or unmarked yet)


def test_every_edit_kind_takes_effect() -> None:
    """Runs the property, then checks that each kind of edit really changed something:
    an edit kind that never fires would make the property vacuous for it."""
    EFFECTS.clear()
    # Hypothesis turns rules off at random per example (swarm testing): with 22 edit kinds,
    # 10 examples can leave one out; 20 reach every kind.
    run_state_machine_as_test(Edits, settings=settings(SETTINGS, max_examples=max(EXAMPLES, 20)))
    kinds = {"write", "chmod", "delete", "rename", "symlink", "mkdir", "dockerignore", "dockerfile",
             "build_arg", "input", "touch", "outside", "chart", "version", "tick"}
    # Edits inside and outside mono's COPY sources: its copied directory, wildcard matches and
    # misses, a stage the builder runs but the target does not use, one it never runs, none.
    kinds |= {f"mono: {where}" for where in ("copied dir", "glob match", "glob miss", "stage run, unused",
                                              "stage never run", "no source")}
    assert kinds <= set(EFFECTS), f"never took effect: {sorted(kinds - set(EFFECTS))}"


def test_model_agrees_with_olly_on_dockerignore(tmp_path: Path) -> None:
    """The model's matcher is independent; check it agrees with olly's on the vocabulary."""
    from itertools import combinations

    from olly.dockerignore import DockerIgnore

    paths = [*RELS, "sub", "tmp", "deep", "deep/x", ".dockerignore", "Dockerfile"]
    for n in range(3):
        for lines in combinations(IGNORE_LINES, n):
            ours = DockerIgnore.parse("\n".join(lines))
            for rel in paths:
                assert ours.excluded(rel) == model_excluded(rel, list(lines)), (lines, rel)
