"""Unit tests for olly.dockerignore (no Docker needed).

Expected values were checked against the real Docker CLI 28.x classic builder; the
conformance suite in test_dockerignore_docker.py re-checks many of them live.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from olly.dockerignore import DockerIgnore
from olly.errors import OllyError


def excl(text: str, *paths: str) -> dict[str, bool]:
    ignore = DockerIgnore.parse(text)
    return {p: ignore.excluded(p) for p in paths}


def tree(root: Path, *specs: str) -> Path:
    """Create files ("a/b"), directories ("a/") and symlinks ("l -> target") under root."""
    for spec in specs:
        name, _, target = spec.partition(" -> ")
        path = root / name.rstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        if target:
            path.symlink_to(target)
        elif spec.endswith("/"):
            path.mkdir(exist_ok=True)
        else:
            path.write_text(name)
    return root


def walked(root: Path, text: str | None = None, **kw) -> list[str]:
    if text is not None:
        (root / ".dockerignore").write_text(text)
    return [rel for rel, _ in DockerIgnore.load(root).walk(root, **kw)]


# --- reading the file -------------------------------------------------------------------


def test_empty_file_and_comments_give_no_patterns() -> None:
    assert DockerIgnore.parse("").patterns == []
    assert DockerIgnore.parse("\n\n   \n\t\r\n# a comment\n#*\n").patterns == []


def test_comment_only_when_hash_is_the_first_character() -> None:
    ignore = DockerIgnore.parse(" #a\nfoo # not a comment\n")
    assert [p.text for p in ignore.patterns] == ["#a", "foo # not a comment"]
    assert excl(" #a", "#a", " #a") == {"#a": True, " #a": False}


def test_whitespace_crlf_and_bom() -> None:
    ignore = DockerIgnore.parse("\ufeffa  \r\n\tb\t\r\n\ufeffc\n")
    assert [p.text for p in ignore.patterns] == ["a", "b", "\ufeffc"]  # BOM only on line 1
    assert DockerIgnore.parse("\ufeff#x\n").patterns == []


def test_go_whitespace_not_python_whitespace() -> None:
    ignore = DockerIgnore.parse("a\u00a0\n\u2003b\nc\x1c\n")
    assert [p.text for p in ignore.patterns] == ["a", "b", "c\x1c"]


def test_exceptions_are_trimmed_and_cleaned() -> None:
    ignore = DockerIgnore.parse("!  d \n! /e/\n!./f/../g\n!!h\n")
    assert [(p.exclusion, p.text) for p in ignore.patterns] == [
        (True, "d"), (True, "e"), (True, "g"), (True, "!h")]


def test_leading_slash_dot_and_dotdot_are_cleaned() -> None:
    ignore = DockerIgnore.parse("/foo\n./bar\nbaz/../qux\n//a//b/\n/\n../up\n")
    assert [p.text for p in ignore.patterns] == ["foo", "bar", "qux", "a/b", "/", "../up"]
    assert excl("/foo", "foo", "sub/foo") == {"foo": True, "sub/foo": False}


def test_cleaning_happens_before_the_bang_check() -> None:
    ignore = DockerIgnore.parse("./!foo\n")  # Docker reads this as the exception "!foo"
    assert [(p.exclusion, p.text) for p in ignore.patterns] == [(True, "foo")]


@pytest.mark.parametrize("text, line", [
    ("[z-", 1), ("ok\n# c\n[z-\n", 3), ("!", 1), ("a\n  !  \n", 2), ("!/", 1), ("c\\ ", 1),
    ("[]a]", 1), ("[-a]", 1), ("[a-]", 1), ("[a", 1), ("[^]", 1), ("a\\y*", 1), ("[z-a]*", 1),
    ("\\é*", 1), ("[[:nope:]]", 1), ("a{1001}?", 1), ("*{2}", 1), ("caf[\udce9]", 1),
])
def test_invalid_patterns_raise_with_line(tmp_path: Path, text: str, line: int) -> None:
    (tmp_path / "a").write_text("a")  # an entry: the first pattern is evaluated on it
    with pytest.raises(OllyError) as info:
        list(DockerIgnore.parse(text, source="ctx/.dockerignore").walk(tmp_path))
    assert info.value.reason == "dockerignore-invalid"
    assert info.value.location == f"ctx/.dockerignore:{line}"
    assert info.value.line().startswith(f"ctx/.dockerignore:{line}: invalid pattern")


def test_valid_odd_patterns_do_not_raise() -> None:
    for text in ("a]", "[\\]]", "[a-c]", "[^a]", "[!x]", "\\[", "a^b", "[[:alpha:]]", "\\x41?", "*.{js,ts}"):
        DockerIgnore.parse(text)


def test_syntax_check_is_partial_like_go_filepath_match() -> None:
    # Docker validates with filepath.Match(p, "."), which (Go <= 1.24) only parses the first
    # "*"-separated chunk, and the second one if the first matched ".". The rest is left to
    # Docker's regexp: "a*\\" becomes ^a[^/]*\\$ (a literal "$", no end anchor).
    assert excl("a*\\", "a$", "ab$c", "ab", "b$") == {"a$": True, "ab$c": True, "ab": False, "b$": False}
    assert excl("a*[]]", "a]", "ab]", "a") == {"a]": True, "ab]": True, "a": False}
    assert excl("{2}x?", "xa", "x") == {"xa": True, "x": False}  # Go repeats the ^ anchor
    for text in (".*[]]", "?*\\", "ab\\", "**[a-]"):
        with pytest.raises(OllyError):
            DockerIgnore.parse(text)
    with pytest.raises(OllyError):  # passes the syntax check; its regexp fails when evaluated
        DockerIgnore.parse("a*[z-").excluded("a")


def test_a_pattern_that_does_not_compile_fails_only_where_docker_evaluates_it(tmp_path: Path) -> None:
    """Docker compiles a pattern's regexp when it first evaluates it (issue #13). An exception
    is evaluated only once something is excluded; an exclusion only while nothing is."""
    (tmp_path / "a").write_text("a")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("x")
    every = [".dockerignore", "a", "d", "d/x"]

    def walk(text: str) -> list[str] | str:
        (tmp_path / ".dockerignore").write_text(text)
        try:
            return [rel for rel, _ in DockerIgnore.load(tmp_path).walk(tmp_path)]
        except OllyError as exc:
            assert exc.reason == "dockerignore-invalid"
            return exc.line()

    assert walk("![z-a]\n") == every  # nothing excluded: never evaluated, never compiled
    assert walk("zz\n![z-a]*\n") == every  # zz matches nothing
    assert walk("**/zz\n![z-a]\n") == every
    assert walk("a/b\n!a/[z-a]\n") == every  # a/b matches nothing
    assert walk("*\n![z-a]\n").endswith(".dockerignore:2: invalid pattern '![z-a]': invalid character class range")
    assert ".dockerignore:2: invalid pattern" in walk("a\n![z-a]\n")
    # Docker's context check skips the excluded d, so it passes; its tar walk then descends
    # into d for the exception, evaluates [z-a] at d/x, logs an error and sends a context
    # cut short there. olly refuses instead of planning that build.
    assert walk("*\n!d/x\n[z-a]\n").endswith("(Docker evaluates it at d/x and would build from a context cut short there)")


def test_load_missing_file_means_no_patterns(tmp_path: Path) -> None:
    assert DockerIgnore.load(tmp_path).patterns == []


def test_load_reports_the_file_path_and_survives_invalid_utf8(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_bytes(b"caf\xe9\n[z-\n")
    with pytest.raises(OllyError) as info:
        DockerIgnore.load(tmp_path)
    assert info.value.location == f"{tmp_path / '.dockerignore'}:2"
    (tmp_path / ".dockerignore").write_bytes(b"caf\xe9\n")
    assert DockerIgnore.load(tmp_path).excluded("caf\udce9")


# --- matching ---------------------------------------------------------------------------


def test_patterns_are_anchored_at_the_root() -> None:
    assert excl("*.md", "a.md", "sub/b.md") == {"a.md": True, "sub/b.md": False}
    assert excl("foo", "foo", "a/foo") == {"foo": True, "a/foo": False}
    assert excl("*/tmp", "tmp", "a/tmp", "a/b/tmp") == {"tmp": False, "a/tmp": True, "a/b/tmp": False}


def test_star_and_question_mark_never_match_slash() -> None:
    assert excl("a*b", "ab", "axxb", "a/b") == {"ab": True, "axxb": True, "a/b": False}
    assert excl("?.txt", "a.txt", "ab.txt", "/.txt") == {"a.txt": True, "ab.txt": False, "/.txt": False}


def test_double_star() -> None:
    assert excl("**/*.log", "x.log", "a/y.log", "a/b/z.log", "a/keep") == {
        "x.log": True, "a/y.log": True, "a/b/z.log": True, "a/keep": False}
    assert excl("a/**/b", "a/b", "a/x/b", "a/x/y/b/c", "a/bb") == {
        "a/b": True, "a/x/b": True, "a/x/y/b/c": True, "a/bb": False}
    assert excl("**/node_modules", "node_modules/x", "a/b/node_modules") == {
        "node_modules/x": True, "a/b/node_modules": True}


def test_double_star_fast_paths_are_plain_string_tests() -> None:
    # "**.md" is a suffix test (any depth); "build**" a prefix test.
    assert excl("**.md", "x.md", "a/b.md", "a/c.txt") == {"x.md": True, "a/b.md": True, "a/c.txt": False}
    assert excl("build**", "build/x", "buildx", "rebuild") == {"build/x": True, "buildx": True, "rebuild": False}


def test_directory_pattern_excludes_everything_below() -> None:
    for text in ("docs", "docs/", "/docs"):
        assert excl(text, "docs", "docs/a", "docs/sub/b", "docsx", "sub/docs") == {
            "docs": True, "docs/a": True, "docs/sub/b": True, "docsx": False, "sub/docs": False}


def test_character_classes_and_escapes() -> None:
    assert excl("[a-c][0-9].txt", "a1.txt", "d1.txt") == {"a1.txt": True, "d1.txt": False}
    assert excl("[!x]y", "!y", "xy", "zy") == {"!y": True, "xy": True, "zy": False}  # no [!..] negation
    assert excl("[^a]?", "a1", "b1") == {"a1": False, "b1": True}
    assert excl("\\*\nfoo\\?", "*", "x", "foo?", "fooa") == {"*": True, "x": False, "foo?": True, "fooa": False}


def test_go_regexp_quirks() -> None:
    assert excl("a\\d", "a1", "ab", "a\\d") == {"a1": True, "ab": False, "a\\d": False}
    assert excl("[[:digit:]]*", "1x", "x1") == {"1x": True, "x1": False}
    assert excl("[*]", "[]", "[^]", "*") == {"[]": True, "[^]": True, "*": False}
    # Docker fails to escape { } | : they act as regexp syntax once the pattern has a wildcard.
    assert excl("a{2}?", "aa1", "a{2}1") == {"aa1": True, "a{2}1": False}
    assert excl("a|b?", "a1", "axyz", "b1") == {"a1": True, "axyz": True, "b1": True}
    assert excl("*.{js,ts}", "a.js", "a.{js,ts}") == {"a.js": False, "a.{js,ts}": True}
    assert excl("a+b?\na.c*", "a+b1", "aab1", "a.c1", "abc1") == {
        "a+b1": True, "aab1": False, "a.c1": True, "abc1": False}
    assert excl("a|b\n", "a|b", "a") == {"a|b": True, "a": False}  # no wildcard: exact text


def test_question_mark_matches_one_character_of_non_utf8_names() -> None:
    assert excl("caf?", "caf\udce9", "café", "cafe", "cafxx") == {
        "caf\udce9": True, "café": True, "cafe": True, "cafxx": False}


def test_later_lines_win() -> None:
    text = "*.txt\n!a.txt\n!b.txt\nb.txt\n"
    assert excl(text, "a.txt", "b.txt", "c.txt") == {"a.txt": False, "b.txt": True, "c.txt": True}
    assert excl("!a.txt\n*.txt", "a.txt") == {"a.txt": True}


def test_exception_on_parent_after_child_exclusion_does_not_win() -> None:
    # Docker evaluates "!a" on "a" only if something was excluded there (it was not), and
    # below "a" it is only tried on the path itself: "a/b" stays excluded.
    assert excl("a/b\n!a", "a", "a/b", "a/c") == {"a": False, "a/b": True, "a/c": False}


def test_exceptions_inside_excluded_directories() -> None:
    assert excl("dir\n!dir/keep", "dir", "dir/keep", "dir/keep/x", "dir/drop") == {
        "dir": True, "dir/keep": False, "dir/keep/x": False, "dir/drop": True}
    assert excl("dir\n!dir/sub\ndir/sub/drop", "dir/sub/keep", "dir/sub/drop", "dir/a") == {
        "dir/sub/keep": False, "dir/sub/drop": True, "dir/a": True}
    # the directory is walked only if an exception textually starts with "dir/"
    assert excl("dir\n!*/keep", "dir/keep", "x/keep") == {"dir/keep": True, "x/keep": False}
    assert excl("logs\n!**/important.log", "logs/important.log", "a/important.log") == {
        "logs/important.log": True, "a/important.log": False}


def test_exclude_everything() -> None:
    for text in ("*", "**", "**/", "*\n**/*"):
        assert all(excl(text, "a", "d/b", ".hidden", "Dockerfile", ".dockerignore").values())
    assert excl(".\n./", "a", ".") == {"a": False, ".": False}  # "." matches nothing


# --- walking ----------------------------------------------------------------------------


def test_walk_without_dockerignore_lists_everything_sorted(tmp_path: Path) -> None:
    tree(tmp_path, "b", "a/z", "a/y/", "a.txt", ".hidden", "Dockerfile")
    assert walked(tmp_path) == [".hidden", "Dockerfile", "a", "a/y", "a/z", "a.txt", "b"]


def test_walk_excludes_build_files_when_patterns_match(tmp_path: Path) -> None:
    tree(tmp_path, "x", "Dockerfile")
    assert walked(tmp_path, ".dockerignore\nDockerfile\n") == ["x"]
    assert walked(tmp_path, "x\n") == [".dockerignore", "Dockerfile"]
    assert walked(tmp_path, "*\n") == []
    assert walked(tmp_path, "**\n") == []


def test_walk_lists_implied_parents_of_reincluded_entries(tmp_path: Path) -> None:
    tree(tmp_path, "dir/keep", "dir/drop", "dir/sub/x", "deep/a/b/c/keep", "deep/a/b/other", "empty/")
    assert walked(tmp_path, "dir\ndeep\nempty\n!dir/keep\n!deep/a/b/c\n.dockerignore\n") == [
        "deep", "deep/a", "deep/a/b", "deep/a/b/c", "deep/a/b/c/keep", "dir", "dir/keep"]


def test_walk_does_not_show_walked_dirs_without_survivors(tmp_path: Path) -> None:
    tree(tmp_path, "dir/a", "dir/sub/b")
    assert walked(tmp_path, "dir\n!dir/nothing\n.dockerignore\n") == []


def test_walk_keeps_empty_directories(tmp_path: Path) -> None:
    tree(tmp_path, "empty_kept/", "empty_excluded/", "nested/empty/", "nested/x/")
    assert walked(tmp_path, "empty_excluded\nnested/x\n.dockerignore\n") == [
        "empty_kept", "nested", "nested/empty"]


def test_walk_never_follows_symlinks_and_skips_sockets(tmp_path: Path) -> None:
    tree(tmp_path, "d/x", "x.lnk -> nowhere", "linkdir -> d", "keep -> d/x")
    os.mkfifo(tmp_path / "fifo")
    os.mknod(tmp_path / "sock", stat.S_IFSOCK | 0o600)  # Docker cannot send sockets
    (tmp_path / ".dockerignore").write_text("*.lnk\n")
    entries = dict(DockerIgnore.load(tmp_path).walk(tmp_path))
    assert sorted(entries) == [".dockerignore", "d", "d/x", "fifo", "keep", "linkdir"]
    assert stat.S_ISLNK(entries["linkdir"].st_mode) and stat.S_ISFIFO(entries["fifo"].st_mode)
    assert entries["d/x"].st_size == (tmp_path / "d/x").stat().st_size


def test_walk_handles_non_utf8_names(tmp_path: Path) -> None:
    for raw in (b"caf\xe9", b"ok", b"t\xff"):
        (tmp_path / os.fsdecode(raw)).write_bytes(raw)
    assert walked(tmp_path, "caf?\n.dockerignore\n") == ["ok", "t\udcff"]


def test_walk_dockerfile_in_excluded_dir_leaves_its_parents(tmp_path: Path) -> None:
    tree(tmp_path, "sub/a", "sub/deep/b", "sub/deep/Dockerfile", "other")
    (tmp_path / ".dockerignore").write_text("sub\n")
    ignore = DockerIgnore.load(tmp_path)
    assert [r for r, _ in ignore.walk(tmp_path)] == [".dockerignore", "other"]
    assert [r for r, _ in ignore.walk(tmp_path, dockerfile="sub/deep/Dockerfile")] == [
        ".dockerignore", "other", "sub", "sub/deep"]
    assert [r for r, _ in ignore.walk(tmp_path, dockerfile="Dockerfile")] == [".dockerignore", "other"]
    assert [r for r, _ in ignore.walk(tmp_path, dockerfile="other")] == [".dockerignore", "other"]


def test_excluded_agrees_with_walk(tmp_path: Path) -> None:
    tree(tmp_path, "a/b/c", "a/b/d", "a/e", "x.log", "l/important.log", "l/y.log", "k/important.log")
    text = "a\n!a/b\na/b/c\n**/*.log\n!**/important.log\nl\n"
    ignore = DockerIgnore.parse(text)
    listed = set(walked(tmp_path, text))
    for dirpath, dirs, files in os.walk(tmp_path):
        for name in dirs + files:
            rel = os.path.relpath(os.path.join(dirpath, name), tmp_path)
            implied = any(p.startswith(rel + "/") for p in listed)
            assert (rel in listed) == (not ignore.excluded(rel) or implied), rel


def test_walk_is_fast_on_a_large_tree(tmp_path: Path) -> None:
    for d in range(100):
        sub = tmp_path / f"pkg{d}" / "src" / "mod"
        sub.mkdir(parents=True)
        for f in range(50):
            (sub / f"f{f}.{'log' if f % 5 == 0 else 'py'}").touch()
    text = "**/*.log\n!pkg1*/src/mod/f5.log\n*/build\n.git\nnode_modules\n**/__pycache__\n*.tmp\n"
    ignore = DockerIgnore.parse(text)
    start = time.perf_counter()
    entries = list(ignore.walk(tmp_path))
    elapsed = time.perf_counter() - start
    assert len(entries) == 100 * 3 + 100 * 40 + 11  # pkg1, pkg10..pkg19 keep f5.log
    assert elapsed < 2.0, f"walk of {len(entries)} entries took {elapsed:.2f}s"
