"""Precise inputs (issue #9): a file no COPY, ADD or RUN --mount can reach is not an input.

Three layers: the Dockerfile reader (olly.reach.analyze), the context selection on real
trees (olly.selection), and whole workspaces (tests/data/mono: one Dockerfile per service,
all built from the repository root) through plan, make, `olly inputs` and `olly why`.
tests/test_reach_docker.py checks "not an input" against the real Docker CLI.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from fakes import FakeEngine
from olly import api, basecheck, reach
from olly.dockerignore import DockerIgnore
from olly.hashing import FileHasher
from olly.reach import Reach, Source, analyze
from olly.selection import Tree, Unreadable, glob_regex, select

DATA = Path(__file__).parent / "data" / "mono"


def read(text: str, *, target: str | None = None, args: dict[str, str] | None = None, blocked: set[str] = frozenset(),
         deps: dict | None = None, probe=lambda ref: None) -> Reach:  # noqa: ANN001
    return analyze(text.encode(), target=target, args=args or {}, blocked=set(blocked), deps=deps or {}, probe=probe)


def keyed(r: Reach) -> list[tuple[str, bool, int]]:
    assert r.whole is None, r.whole
    return [(s.path, s.glob, s.line) for s in r.sources if s.keyed]


def carried(r: Reach) -> list[tuple[str, int]]:
    return [(s.path, s.line) for s in r.sources if not s.keyed]


# -- the reader ---------------------------------------------------------------------


def test_copy_and_add_in_shell_and_json_form() -> None:
    r = read('FROM scratch\nCOPY a.txt ./b/ /dst/\nCOPY ["c d.txt", "/e", "/dst/"]\n'
             "COPY --chown=1:1 --chmod=644 --link f /f\nADD https://example.com/x.tgz /x\n"
             "ADD --checksum=sha256:00 g.tar /g\nADD git@github.com:o/r.git /r\n")
    assert keyed(r) == [("a.txt", False, 2), ("b", False, 2), ("c d.txt", False, 3), ("e", False, 3), ("f", False, 4),
                        ("g.tar", False, 6), ("git@github.com:o/r.git", False, 7)]  # a URL is the network


def test_sources_are_cleaned_and_clamped_at_the_context_root() -> None:
    r = read("FROM scratch\nCOPY ./a/../b/./c/ /x/\nCOPY ../up /x\nCOPY . ./ /x/\nCOPY / /y/\n")
    assert keyed(r) == [("b/c", False, 2), ("up", False, 3), ("", False, 4), ("", False, 4), ("", False, 5)]


def test_copy_from_a_stage_or_an_image_reads_no_context() -> None:
    r = read("FROM scratch AS build\nCOPY src /src\nFROM scratch AS unused\nCOPY unused /u\nFROM scratch\n"
             "COPY --from=build /src /app\nCOPY --from=alpine:3 /etc/hosts /h\nCOPY --from=0 /src /again\n")
    assert keyed(r) == [("src", False, 2)]
    assert carried(r) == [("unused", 4)]  # the classic builder runs it: sent, never keyed


def test_wildcards_and_the_parents_and_exclude_flags() -> None:
    r = read("FROM scratch\nCOPY *.go src/[ab]?.txt plain /x/\nCOPY --parents ./x/./y/*.txt /d/\n"
             "COPY --exclude=*.md docs /d\n")
    assert keyed(r) == [("*.go", True, 2), ("src/[ab]?.txt", True, 2), ("plain", False, 2), ("x/y/*.txt", True, 3),
                        ("docs", False, 4)]  # --exclude is not subtracted: a superset, never less


def test_heredoc_bodies_are_not_instructions() -> None:
    r = read("FROM scratch\nCOPY <<EOF /x\nCOPY secret /\nEOF\nRUN <<-A cat\n\tRUN nothing\n\tA\n"
             'COPY <<"B" real /r/\nFROM nope\nB\n')
    assert keyed(r) == [("real", False, 8)]


def test_the_parser_reads_heredocs_flags_and_json_as_docker_does() -> None:
    from olly.dockerfile import arguments, extract_flags, parse, stages

    df = parse(b"FROM a AS one\nRUN <<EOF\nFROM b\nEOF\nCOPY --chown=\"a b\" --link \\\n  x y\nFROM c\n")
    assert [(i.keyword, i.line, i.end_line) for i in df.instructions] == [("FROM", 1, 1), ("RUN", 2, 4), ("COPY", 5, 6),
                                                                        ("FROM", 7, 7)]
    assert df.instructions[1].heredocs[0].content == "FROM b\n"
    assert [s.image for s in stages(df)] == ["a", "c"]  # olly.lock pins no FROM of a heredoc body
    a = arguments(df.instructions[2])
    assert (a.flags, a.words, a.json) == ((("chown", "a b"), ("link", None)), ("x", "y"), False)
    assert extract_flags("--a=1 -- --b x") == (["--a=1"], " --b x")  # a bare -- ends the flags
    assert extract_flags(' --m="type=bind,src=a b" rest') == (["--m=type=bind,src=a b"], "rest")
    assert arguments(parse(b'COPY ["a", "b c", "/d"]\n').instructions[0]).words == ("a", "b c", "/d")
    assert arguments(parse(b'COPY ["a", 1]\n').instructions[0]).words == ('["a",', "1]")  # not a string array


def test_unsafe_heredocs_fall_back() -> None:
    assert "cannot be read safely" in (read("FROM scratch\nRUN <<EOF\nx\n").whole or "")
    assert "cannot be read safely" in (read("FROM scratch\nRUN <<COPY\nx\nCOPY\n").whole or "")


def test_continuations_and_the_escape_directive() -> None:
    r = read("# escape=`\nFROM scratch\nCOPY a `\n  # a comment inside\n   b /dst/\nCOPY c\\d /e\n")
    assert keyed(r) == [("a", False, 3), ("b", False, 3), ("c\\d", False, 6)]  # \ is no escape here


def test_arg_and_env_substitution_per_stage() -> None:
    text = ('ARG G=global\nFROM scratch\nARG G\nARG D=def\nARG B=default\nENV E=env-$D\nARG E=ignored\n'
            'ENV L some value\nCOPY $G/ ${D}/ $B/ $E/ "$L" /x/\nFROM scratch\nARG G\nCOPY ${G}-2 /y\n')
    r = read(text, args={"B": "from-build", "G2": "unused"}, target=None)
    assert keyed(r) == [("global-2", False, 12)]  # ARGs do not cross stages: declared again
    assert carried(r) == [("global", 9), ("def", 9), ("from-build", 9), ("env-def", 9), ("some value", 9)]
    # Undeclared here: "" for Docker unless the base image's ENV or the builder sets it. olly
    # does not guess, even with a default.
    assert read("FROM scratch\nCOPY ${G:-none} /y\n").whole == "COPY source ${G:-none} cannot be resolved (line 2)"


def test_platform_args_reach_copy_sources_through_the_analyzer() -> None:
    run = reach.analyzer(target=None, args={}, secrets=set(), platform="linux/arm64", deps={}, pins={})
    r = run(b"FROM scratch\nARG TARGETARCH\nCOPY bin/app-${TARGETARCH} /app\n")
    assert keyed(r) == [("bin/app-arm64", False, 3)]


@pytest.mark.parametrize("text, why", [
    ("FROM scratch\nCOPY $NOPE /x\n", "COPY source $NOPE cannot be resolved (line 2)"),
    ("FROM scratch\nARG X\nCOPY $X/a /x\n", "COPY source $X/a cannot be resolved (line 3)"),
    ("FROM scratch\nARG TOKEN\nCOPY $TOKEN /x\n", "COPY source $TOKEN cannot be resolved (line 3)"),
    ("FROM python:${V}\nCOPY a /x\n", "FROM python:${V} cannot be resolved (line 1)"),
    ("FROM scratch\nRUN --mount=source=$S,target=/s true\n", "RUN --mount source $S cannot be resolved (line 2)"),
    ("FROM scratch\nFOO bar\n", "unknown instruction FOO (line 2)"),
    ("FROM scratch\nCOPY --bogus a /x\n", "unknown flag --bogus on COPY (line 2)"),
    ("FROM scratch\nRUN --mount=type=weird,target=/x true\n", "RUN --mount type 'weird' is unknown (line 2)"),
    ("# escape=x\nFROM scratch\n", "the Dockerfile does not parse (line 1: invalid escape token 'x'"),
    ("COPY a /x\nFROM scratch\n", "COPY before the first FROM (line 1)"),
    ("# syntax=example.com/frontend\nFROM scratch\n", "# syntax=example.com/frontend names another frontend"),
    ("FROM scratch AS base\nONBUILD COPY . /\nFROM base\n", "ONBUILD in stage base (line 2)"),
])
def test_what_olly_cannot_prove_keys_the_whole_context(text: str, why: str) -> None:
    r = read(text, blocked={"TOKEN"})
    assert r.whole is not None and r.whole.startswith(why), r.whole


def test_no_such_target_keys_the_whole_context() -> None:
    assert read("FROM scratch AS a\nCOPY a /\n", target="b").whole == "the Dockerfile has no stage named 'b'"


def test_onbuild_in_the_target_stage_itself_does_not_run() -> None:
    assert keyed(read("FROM scratch\nONBUILD COPY . /\nCOPY a /a\n")) == [("a", False, 3)]


def test_onbuild_in_a_dependency_or_a_base_image() -> None:
    text = "ARG BASE\nFROM ${BASE}\nCOPY a /a\n"
    deps = {"t/base:olly-1": ("apps/base", b"FROM scratch\nONBUILD COPY . /\n")}
    assert read(text, args={"BASE": "t/base:olly-1"}, deps=deps).whole == "ONBUILD in apps/base"
    plain = {"t/base:olly-1": ("apps/base", b"FROM scratch\nCOPY x /\n")}
    assert keyed(read(text, args={"BASE": "t/base:olly-1"}, deps=plain)) == [("a", False, 3)]
    text = "FROM python:3.14-slim\nCOPY a /a\n"
    assert read(text, probe=lambda ref: ["COPY . /app"]).whole == "ONBUILD in python:3.14-slim"
    assert keyed(read(text, probe=lambda ref: [])) == [("a", False, 2)]
    unknown = read(text, probe=lambda ref: None)
    assert keyed(unknown) == [("a", False, 2)]
    assert unknown.notes == ["ONBUILD triggers of python:3.14-slim not checked: the engine does not hold it"]


def test_only_stages_the_target_reaches_are_keyed() -> None:
    text = ("FROM scratch AS a\nCOPY a /\nFROM scratch AS b\nCOPY b /\nFROM a AS c\nCOPY --from=b /b /\nCOPY c /\n"
            "FROM scratch AS d\nCOPY d /\n")
    assert keyed(read(text, target="c")) == [("a", False, 2), ("b", False, 4), ("c", False, 7)]
    assert carried(read(text, target="c")) == []  # d comes after the target: never run
    assert keyed(read(text, target="A")) == [("a", False, 2)]  # stage names match case-insensitively
    assert keyed(read(text)) == [("d", False, 9)]
    assert carried(read(text)) == [("a", 2), ("b", 4), ("c", 7)]


def test_copy_from_a_stage_defined_later_counts() -> None:
    text = "FROM scratch AS final\nCOPY --from=late /x /x\nFROM scratch AS late\nCOPY late /x\n"
    assert keyed(read(text, target="final")) == [("late", False, 4)]  # BuildKit resolves it: a superset


def test_an_unresolved_from_flag_may_use_any_stage() -> None:
    text = "FROM scratch AS a\nCOPY a /\nFROM scratch\nARG S\nCOPY --from=$S /a /b\nCOPY --from=${T:-a} /a /c\n"
    assert keyed(read(text)) == [("a", False, 2)]


def test_a_problem_in_a_stage_the_target_does_not_use_only_sends_everything() -> None:
    r = read("FROM scratch AS tools\nCOPY $UNKNOWN /x\nFROM scratch\nCOPY app /app\n")
    assert keyed(r) == [("app", False, 4)]
    assert carried(r) == [("", 1)]


def test_run_mounts() -> None:
    r = read("FROM scratch AS s\nCOPY s /\nFROM scratch\nRUN --mount=type=bind,source=src,target=/src make\n"
             "RUN --mount=type=cache,target=/root/.cache,from=s,source=/x true\n"
             "RUN --mount=type=secret,id=x --mount=type=tmpfs,target=/t --network=none true\n"
             'RUN --mount="type=bind,src=a b,target=/ab" true\nRUN --mount=target=/all true\n')
    assert keyed(r) == [("s", False, 2), ("src", False, 4), ("a b", False, 7), ("", False, 8)]


# -- selecting entries ------------------------------------------------------------------


def tree(root: Path, ignore: str = "", **kw) -> Tree:  # noqa: ANN003
    return Tree(root, DockerIgnore.parse(ignore), shown="", skip_own=False, specials=kw.get("specials", {}),
                ghosts=kw.get("ghosts", set()))


def make(root: Path, *specs: str) -> Path:
    """``a/b`` file, ``a/`` dir, ``l -> t`` symlink."""
    for spec in specs:
        name, _, target = spec.partition(" -> ")
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if target:
            path.symlink_to(target)
        elif name.endswith("/"):
            path.mkdir(exist_ok=True)
        else:
            path.write_text(name)
    return root


def chosen(t: Tree, *sources: str | tuple[str, int]) -> dict[str, list[int]]:
    srcs = [Source(s, reach.contains_wildcards(s), 1) if isinstance(s, str) else Source(s[0], False, s[1], False)
            for s in sources]
    sel = select(t, srcs)
    return {p: sorted(sel.lines.get(p, [])) if p not in sel.carried else ["carried"] for p in sorted(sel.nodes)}


def test_the_tree_walks_exactly_as_docker_sends() -> None:
    """Against the walk proven on the real CLI (tests/test_dockerignore_docker.py), for every
    case of that conformance suite, from the root and from every directory."""
    from test_dockerignore_docker import CASES, make_tree

    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            if case.error_line is not None:
                continue
            root = Path(tmp) / case.name
            make_tree(root, case)
            ignore = DockerIgnore.load(root)
            if any(getattr(p, "error", "") for p in ignore.patterns):
                continue  # scan keys the whole context when a pattern does not compile
            docker = {rel for rel, _ in ignore.walk(root)}
            t = Tree(root, ignore, shown="", skip_own=False, specials={}, ghosts=set())
            assert {rel for rel, _ in t.subtree("")} == docker, case.name
            for d in {rel for rel, st in ignore.walk(root) if os.path.isdir(root / rel) and not os.path.islink(root / rel)}:
                below = {rel for rel in docker if rel == d or rel.startswith(d + "/")}
                assert {rel for rel, _ in t.subtree(d)} == below, (case.name, d)


@pytest.mark.parametrize("pattern, matches", [
    ("*.go", {"a.go", "b.go", "dir.go"}),
    ("*/*.go", {"sub/c.go"}),
    ("**/*.go", {"a.go", "b.go", "dir.go", "sub/c.go", "sub/deep/d.go"}),  # BuildKit's **: a superset
    ("[ab].go", {"a.go", "b.go"}),
    ("[^a].go", {"b.go"}),
    ("?.go", {"a.go", "b.go"}),
    ("s?b/*", {"sub/c.go", "sub/deep"}),
    ("sub/deep", {"sub/deep"}),
])
def test_glob_matches_like_go_filepath_match(tmp_path: Path, pattern: str, matches: set[str]) -> None:
    make(tmp_path, "a.go", "b.go", "sub/c.go", "sub/deep/d.go", "x.txt", "dir.go/inner.txt")
    regex, _ = glob_regex(pattern)
    t = tree(tmp_path)
    found = {rel for rel, _ in t.subtree("") if regex.fullmatch(rel)}
    assert found == matches


def test_a_matched_directory_copies_its_subtree_and_parents_come_along(tmp_path: Path) -> None:
    make(tmp_path, "a.go", "dir.go/inner.txt", "sub/c.go", "sub/deep/d.go", "x.txt")
    assert chosen(tree(tmp_path), "*.go", "sub/deep") == {
        "a.go": [1], "dir.go": [1], "dir.go/inner.txt": [1], "sub": [], "sub/deep": [1], "sub/deep/d.go": [1]}


def test_malformed_patterns_fall_back() -> None:
    for bad in ("a[", "a[]", "a[-z]", "a\\"):
        with pytest.raises(Unreadable):
            glob_regex(bad)


def test_symlinks_on_a_source_path_are_followed_inside_the_context(tmp_path: Path) -> None:
    make(tmp_path, "real/f", "real/g", "lnk -> real", "abs -> /real", "out -> ../../outside", "loop1 -> loop2",
         "loop2 -> loop1", "other.txt")
    t = tree(tmp_path)
    assert chosen(t, "lnk/f") == {"lnk": [1], "real": [], "real/f": [1]}
    assert chosen(t, "lnk") == {"lnk": [1], "real": [1], "real/f": [1], "real/g": [1]}
    assert chosen(t, "abs/g") == {"abs": [1], "real": [], "real/g": [1]}
    assert chosen(t, "l?k") == {"lnk": [1], "real": [1], "real/f": [1], "real/g": [1]}
    assert chosen(t, "out") == {"out": [1]}  # ../../outside is clamped to the context root: nothing there
    assert chosen(t, "lnk/*") == {}  # a wildcard walk does not go through links
    with pytest.raises(Unreadable):
        chosen(t, "loop1")


def test_dockerignore_applies_first(tmp_path: Path) -> None:
    make(tmp_path, "src/a.go", "src/a.tmp", "skip/keep.txt", "skip/drop.txt")
    t = tree(tmp_path, "**/*.tmp\nskip\n!skip/keep.txt\n")
    assert chosen(t, "src", "skip") == {"src": [1], "src/a.go": [1], "skip": [], "skip/keep.txt": [1]}
    assert chosen(t, "s*") == {"src": [1], "src/a.go": [1], "skip": [], "skip/keep.txt": [1]}
    assert chosen(t, "src/a.tmp") == {}


def test_carried_entries_are_sent_not_keyed(tmp_path: Path) -> None:
    make(tmp_path, "app/main.go", "docs/r.md", "app/docs.md")
    assert chosen(tree(tmp_path), "app", ("docs", 2)) == {
        "app": [1], "app/docs.md": [1], "app/main.go": [1], "docs": ["carried"], "docs/r.md": ["carried"]}


def test_unreachable_files_are_never_listed_or_hashed(tmp_path: Path) -> None:
    make(tmp_path, "app/a.go", *[f"big/{i}/f{j}" for i in range(20) for j in range(20)])
    ws = mono_like(tmp_path / "ws", "FROM scratch\nCOPY app /app\n")
    for i in range(20):
        shutil.copytree(tmp_path / "big", ws / "big" / str(i), dirs_exist_ok=True)
    listed = []
    real = Tree._listing

    def spy(self: Tree, folder: str) -> list[str]:
        listed.append(folder)
        return real(self, folder)

    Tree._listing = spy  # type: ignore[method-assign]
    try:
        tp = api.inputs(ws, "img")
    finally:
        Tree._listing = real  # type: ignore[method-assign]
    assert [row[0] for row in tp.manifest["files"]] == ["app", "app/a.go"]
    assert not any(f.startswith("big") for f in listed), listed
    hasher = FileHasher(ws, {})
    from olly.context import scan

    scan(ws, tp.target, hasher, reach.analyzer(target=None, args={}, secrets=set(), platform="linux/amd64",
                                                deps={}, pins={}))
    assert hasher.files_read == 1


def mono_like(root: Path, dockerfile: str, files: tuple[str, ...] = ("app/a.go",), extra: str = "") -> Path:
    root.mkdir(parents=True)
    make(root, *files)
    (root / "Dockerfile").write_text(dockerfile)
    (root / "BUILD.toml").write_text(f'[images.img]\nrepository = "t/img"\ncontext = "."\nplatform = "linux/amd64"\n{extra}')
    return root


# -- whole workspaces: plan, make, inputs, why ------------------------------------------


@pytest.fixture
def mono(tmp_path: Path) -> Path:
    root = tmp_path / "mono"
    shutil.copytree(DATA, root)
    return root


def built(root: Path, engine: FakeEngine) -> set[str]:
    return {o.label for o in api.make(root, [], engine=engine).outcomes if o.status == "built"}


@pytest.mark.parametrize("edit, rebuilt", [
    ("src/cart/main.go", {"cart", "web"}),  # one service's directory: that image (and web's COPY . .)
    ("pb/demo.proto", {"cart", "checkout", "pay", "web"}),  # a shared directory: exactly those copying it
    ("src/pay/README.md", {"web"}),  # not *.go; copied only by a stage pay's target does not use
    ("src/pay/notes.tmp", set()),  # .dockerignored
    ("docs/guide.md", set()),
    ("README.md", {"web"}),
    ("src/checkout/Dockerfile", {"checkout", "web"}),
    ("BUILD.toml", {"web"}),
])
def test_an_edit_rebuilds_exactly_the_images_that_copy_it(mono: Path, edit: str, rebuilt: set[str]) -> None:
    engine = FakeEngine()
    assert built(mono, engine) == {"cart", "checkout", "pay", "web"}
    with open(mono / edit, "a") as fh:
        fh.write("# edited\n")
    assert built(mono, engine) == rebuilt


def test_new_files_count_only_where_a_source_reaches(mono: Path) -> None:
    engine = FakeEngine()
    built(mono, engine)
    (mono / "src" / "pay" / "b.go").write_text("package main\n")
    (mono / "src" / "pay" / "sub").mkdir()
    (mono / "src" / "pay" / "sub" / "c.go").write_text("package sub\n")  # */*.go is one level only
    assert built(mono, engine) == {"pay", "web"}


def test_only_reachable_entries_are_sent(mono: Path) -> None:
    engine = FakeEngine()
    outcomes = {o.label: o for o in api.make(mono, [], engine=engine).outcomes}
    sent = lambda label: sorted(engine.received[outcomes[label].image_id])  # noqa: E731
    assert sent("cart") == [".dockerignore", "pb", "pb/demo.proto", "src", "src/cart", "src/cart/Dockerfile",
                            "src/cart/main.go"]
    assert sent("pay") == [".dockerignore", "pb", "pb/demo.proto", "src", "src/pay", "src/pay/Dockerfile",
                           "src/pay/README.md", "src/pay/a.go"]  # README.md: for the docs stage the builder runs
    assert "docs/guide.md" not in sent("web") and "README.md" in sent("web")


def test_inputs_show_the_line_reaching_each_path(mono: Path) -> None:
    from olly.cli import _input_lines

    lines = _input_lines(api.inputs(mono, "pay"))
    assert "reach    only what src/pay/Dockerfile copies (each path below: the line that reaches it)" in lines
    assert any(line.endswith(" src/pay/a.go  <- line 6") for line in lines), lines
    assert any(line.endswith(" pb/demo.proto  <- line 7") for line in lines), lines
    assert any(line.endswith(" src  <- parent") for line in lines), lines
    assert not any("README.md" in line for line in lines if not line.startswith("sent"))
    assert any(line.startswith("sent     1 more entry, not keyed") for line in lines), lines
    m = api.inputs(mono, "pay").manifest
    assert m["reach"] == {"dockerfile": "src/pay/Dockerfile", "whole": None, "everything": [], "notes": []}
    assert dict(zip([r[0] for r in m["files"]], m["via"]))["src/pay/a.go"] == [6]


def test_why_names_the_line(mono: Path) -> None:
    api.make(mono, [], engine=FakeEngine())
    (mono / "pb" / "demo.proto").write_text("changed\n")
    (mono / "pb" / "more.proto").write_text("new\n")
    assert api.why(mono, "pay")["changes"] == ["~ file pb/demo.proto (content; via src/pay/Dockerfile:7)",
                                               "+ file pb/more.proto (via src/pay/Dockerfile:7)"]


def test_copy_everything_is_still_the_whole_context(mono: Path) -> None:
    from olly.cli import _input_lines

    tp = api.inputs(mono, "web")
    files = {row[0] for row in tp.manifest["files"]}
    assert {"BUILD.toml", "README.md", "src/pay/README.md", "pb/demo.proto", ".dockerignore"} <= files
    assert "docs" not in files and "src/pay/notes.tmp" not in files
    assert tp.manifest["reach"]["everything"] == [2] and "via" not in tp.manifest
    assert "reach    whole context: src/web/Dockerfile line 2 copies it" in _input_lines(tp)
    assert any(line.endswith(" README.md") for line in _input_lines(tp))  # no per-path line: all are line 2


def test_an_onbuild_base_falls_back_and_inputs_say_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from olly.cli import _input_lines

    ws = mono_like(tmp_path / "ws", "FROM python:3.14-slim\nCOPY app /app\n", ("app/a.go", "other.txt"))
    monkeypatch.setattr(basecheck, "inspect_base", lambda ref: {"Config": {"OnBuild": ["COPY . /app"]}})
    tp = api.inputs(ws, "img")
    assert "reach    whole context: ONBUILD in python:3.14-slim" in _input_lines(tp)
    assert "other.txt" in {row[0] for row in tp.manifest["files"]} and "via" not in tp.manifest
    monkeypatch.setattr(basecheck, "inspect_base", lambda ref: {"Config": {"OnBuild": None}})
    assert "other.txt" not in {row[0] for row in api.inputs(ws, "img").manifest["files"]}
    monkeypatch.setattr(basecheck, "inspect_base", lambda ref: None)
    lines = _input_lines(api.inputs(ws, "img"))
    assert "note     ONBUILD triggers of python:3.14-slim not checked: the engine does not hold it" in lines


def test_a_locked_base_is_checked_by_its_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = mono_like(tmp_path / "ws", "FROM python:3.14-slim\nCOPY app /app\n")
    digest = "sha256:" + "1" * 64
    (ws / "olly.lock").write_text(f'version = 1\n[base."python:3.14-slim"]\nkind = "manifest"\ndigest = "{digest}"\n')
    asked = []
    monkeypatch.setattr(basecheck, "inspect_base", lambda ref: asked.append(ref))
    api.inputs(ws, "img")
    assert asked == [f"python:3.14-slim@{digest}"]


@pytest.mark.parametrize("dockerfile, why", [
    ("FROM scratch\nCOPY $NOPE /x\n", "COPY source $NOPE cannot be resolved (line 2)"),
    ("FROM scratch\nFOO x\n", "unknown instruction FOO (line 2)"),
    ("FROM scratch\nCOPY --nope app /x\n", "unknown flag --nope on COPY (line 2)"),
    ("# escape=?\nFROM scratch\n", "the Dockerfile does not parse"),
    ("FROM scratch\nCOPY loop /x\n", "too many symlinks resolving loop"),
])
def test_each_fallback_keys_and_sends_the_whole_context(tmp_path: Path, dockerfile: str, why: str) -> None:
    ws = mono_like(tmp_path / "ws", dockerfile, ("app/a.go", "other.txt", "loop -> loop"))
    tp = api.inputs(ws, "img")
    assert tp.manifest["reach"]["whole"].startswith(why)
    assert {"app", "app/a.go", "other.txt", "loop", "Dockerfile", "BUILD.toml"} <= {r[0] for r in tp.manifest["files"]}
    assert not tp.context.carried


def test_a_dockerignore_pattern_that_does_not_compile_keys_the_whole_context(tmp_path: Path) -> None:
    ws = mono_like(tmp_path / "ws", "FROM scratch\nCOPY app /app\n", ("app/a.go", "other.txt"))
    (ws / ".dockerignore").write_text("zz\n![z-a]*\n")  # Docker evaluates it lazily: olly does not select
    tp = api.inputs(ws, "img")
    assert tp.manifest["reach"]["whole"] == ".dockerignore holds a pattern that does not compile"
    assert "other.txt" in {r[0] for r in tp.manifest["files"]}


def test_a_locked_dockerfile_is_sent_pinned_even_when_nothing_copies_it(tmp_path: Path) -> None:
    ws = mono_like(tmp_path / "ws", "FROM python:3.14-slim\nCOPY app /app\n")
    digest = "sha256:" + "2" * 64
    (ws / "olly.lock").write_text(f'version = 1\n[base."python:3.14-slim"]\nkind = "manifest"\ndigest = "{digest}"\n')
    engine = FakeEngine()
    (o,) = api.make(ws, [], engine=engine).outcomes
    assert engine.received[o.image_id]["Dockerfile"] == f"FROM python:3.14-slim@{digest}\nCOPY app /app\n".encode()
    assert "Dockerfile" not in {r[0] for r in api.inputs(ws, "img").manifest["files"]}  # keyed as bytes only


def test_a_symlinked_dockerfile_sends_what_it_points_to(tmp_path: Path) -> None:
    ws = mono_like(tmp_path / "ws", "FROM scratch\nCOPY app /app\n")
    os.rename(ws / "Dockerfile", ws / "real.Dockerfile")
    (ws / "Dockerfile").symlink_to("real.Dockerfile")
    engine = FakeEngine()
    (o,) = api.make(ws, [], engine=engine).outcomes
    assert sorted(engine.received[o.image_id]) == ["Dockerfile", "app", "app/a.go", "real.Dockerfile"]
    (ws / "real.Dockerfile").write_text("FROM scratch\nCOPY app /app2\n")
    assert built(ws, engine) == {"img"}


def test_an_excluded_symlinked_dockerfile_still_sends_what_it_points_to(tmp_path: Path) -> None:
    ws = mono_like(tmp_path / "ws", "FROM scratch\nCOPY app /app\n")
    os.rename(ws / "Dockerfile", ws / "real.Dockerfile")
    (ws / "Dockerfile").symlink_to("real.Dockerfile")
    (ws / ".dockerignore").write_text("Dockerfile\n")  # the daemon reads it, then deletes it
    engine = FakeEngine()
    (o,) = api.make(ws, [], engine=engine).outcomes
    assert sorted(engine.received[o.image_id]) == [".dockerignore", "Dockerfile", "app", "app/a.go", "real.Dockerfile"]


def test_an_excluded_dockerfile_and_its_parents(tmp_path: Path) -> None:
    """The CLI forces an excluded Dockerfile into the tar and the daemon deletes it, leaving
    its parent directories: COPY sees them, so a source reaching them keys them."""
    ws = mono_like(tmp_path / "ws", "", ("app/a.go", "build/other"), extra='dockerfile = "build/x/Dockerfile"\n')
    (ws / "build" / "x").mkdir()
    (ws / "build" / "x" / "Dockerfile").write_text("FROM scratch\nCOPY b* /b/\n")
    (ws / ".dockerignore").write_text("build\n")
    engine = FakeEngine()
    (o,) = api.make(ws, [], engine=engine).outcomes
    assert [r[0] for r in o_manifest(ws)] == ["build", "build/x"]
    assert sorted(engine.received[o.image_id]) == [".dockerignore", "build", "build/x", "build/x/Dockerfile"]


def o_manifest(ws: Path) -> list[list]:
    return api.inputs(ws, "img").manifest["files"]
