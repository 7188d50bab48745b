"""Conformance of olly.dockerignore with the real Docker CLI (classic builder).

Every case builds a tiny context with ``DOCKER_BUILDKIT=0 docker build`` and a
``FROM scratch / COPY . /ctx`` Dockerfile, exports the resulting filesystem and compares
the entries under ``ctx/`` with ``DockerIgnore.load(ctx).walk(ctx)``. All builds run once,
concurrently, in a module fixture; each case is then its own test.
"""

from __future__ import annotations

import io
import os
import random
import stat
import subprocess
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from olly.dockerignore import DockerIgnore
from olly.errors import OllyError

pytestmark = pytest.mark.docker

DOCKERFILE = "FROM scratch\nCOPY . /ctx\n"


@dataclass(frozen=True)
class Case:
    name: str
    files: tuple[str, ...]  # "a/b" file, "a/" dir, "l -> t" symlink, "fifo:p", "socket:s"
    ignore: str | bytes | None
    dockerfile: str = "Dockerfile"  # where the Dockerfile lives (passed with -f if not default)
    error_line: int | None = None  # docker must refuse; olly raises for this line
    # Daemons before 23.0 re-match Dockerfile/.dockerignore with their own, older matcher
    # (regexp-only, escaping just "." and "$") before deleting them; newer daemons use the
    # CLI's matcher, which is what olly models. These list the known legacy differences.
    legacy_extra: tuple[str, ...] = ()
    legacy_missing: tuple[str, ...] = ()
    # Docker builds, but from a context cut short where its tar walk met a pattern that does
    # not compile (it logs the error); olly refuses, naming this entry.
    cut_short_at: str | None = None

    def __str__(self) -> str:
        return self.name


C = Case
CASES = [
    C("no_dockerignore", ("a", "d/b", "d/e/", ".hidden", "empty/"), None),
    C("empty_dockerignore", ("a", "d/b"), ""),
    C("only_comments_and_blanks", ("a", "#x"), "# comment\n\n   \n\t\n#a\n"),
    C("hash_after_space_is_a_pattern", ("#a", " #a", "b"), " #a\n"),
    C("hash_inside_pattern", ("foo#bar", "foo"), "foo#bar\n"),
    C("toplevel_glob_is_anchored", ("a.md", "sub/b.md", "c.txt"), "*.md\n"),
    C("doublestar_logs", ("x.log", "a/y.log", "a/b/z.log", "a/keep.txt"), "**/*.log\n"),
    C("doublestar_reinclude", ("x.log", "important.log", "a/important.log", "a/b/important.log",
                               "a/other.log"), "**/*.log\n!**/important.log\n"),
    C("star_slash_tmp", ("tmp/x", "a/tmp/x", "a/b/tmp/x", "a/tmpfile"), "*/tmp\n"),
    C("docs_no_slash", ("docs/a", "docs/sub/b", "docsx", "sub/docs/c"), "docs\n"),
    C("docs_trailing_slash", ("docs/a", "docs/sub/b", "docsx", "sub/docs/c"), "docs/\n"),
    C("question_mark", ("a.txt", "ab.txt", "d/a.txt", "d/x"), "?.txt\n?/x\n"),
    # filepath.Match has no [!...] negation: '!' is a literal class member.
    C("character_classes", ("a1.txt", "c9.txt", "d1.txt", "!y", "xy", "zy"), "[a-c][0-9].txt\n[!x]y\n"),
    C("negated_class", ("a1", "b1", "c/d", "ab"), "[^a]?\n"),
    C("backslash_escapes", ("*", "x", "foo?", "fooa", "[b]", "b"), "\\*\nfoo\\?\n\\[b\\]\n"),
    C("dir_with_reincluded_file", ("dir/keep", "dir/drop", "dir/sub/x"), "dir\n!dir/keep\n"),
    C("nested_reinclude_and_reexclude", ("dir/a", "dir/sub/keep", "dir/sub/drop", "dir/sub/deep/x"),
      "dir\n!dir/sub\ndir/sub/drop\n"),
    C("reexclude_below_reinclude", ("a/b/c", "a/b/d", "a/e"), "a\n!a/b\na/b/c\n"),
    # Surprise: an excluded dir is only walked if an exception *textually* starts with
    # "<dir>/": "!*/keep" never re-includes dir/keep.
    C("glob_exception_cannot_reach_into_dir", ("dir/keep", "dir/x", "keep"), "dir\n!*/keep\n"),
    C("doublestar_exception_cannot_reach_into_dir", ("logs/important.log", "logs/x.log", "important.log",
                                                     "a/important.log", "a/x.log"),
      "logs\n**/*.log\n!**/important.log\n"),
    # Surprise: "later lines win" fails here. Docker's walk remembers that the parent "a"
    # did not need "!a" evaluated (nothing was excluded yet), so "a/b" is never re-included.
    C("exception_on_parent_after_child_exclusion", ("a/b", "a/c"), "a/b\n!a\n"),
    C("dir_with_doublestar_exception", ("dir/a", "dir/sub/b", "other"), "dir\n!dir/**\n"),
    C("reinclude_dir_then_exclude_inside", ("src/a.c", "src/b.tmp", "src/sub/c.tmp", "other"),
      "*\n!src\nsrc/**/*.tmp\n"),
    C("exclude_everything_star", ("a", "d/b", ".hidden"), "*\n"),
    C("exclude_everything_doublestar", ("a", "d/b", ".hidden"), "**\n"),
    C("everything_but", ("a", "keep/x", "keep/y/z", "d/keep"), "*\n!keep\n"),
    C("leading_slash_dot_and_dotdot", ("foo", "bar", "baz/x", "qux", "sub/foo"), "/foo\n./bar\nbaz/../qux\n"),
    C("whitespace_crlf_and_bang_spacing", ("a", "b", "c", "d", "e"), "a  \r\n\tb\t\r\n*\r\n!  d \r\n! e\n"),
    C("utf8_bom_only_on_first_line", ("a", "b"), b"\xef\xbb\xbfa\n\xef\xbb\xbfb\n"),
    C("bom_comment", ("#a", "b"), b"\xef\xbb\xbf#a\nb\n"),
    # Go trims Unicode spaces (NBSP, EM SPACE) but not \x1c, unlike Python's str.strip().
    C("go_whitespace_rules", ("a", "b", "c\x1c", "c"), "a\u00a0\n\u2003b\nc\x1c\n"),
    C("build_files_excluded", ("x",), ".dockerignore\nDockerfile\n"),
    C("build_files_excluded_by_star", ("x", "d/y"), "*\n!d\n"),
    # Surprise: a Dockerfile in an excluded directory is forced into the tar by the CLI
    # and deleted by the daemon, leaving its (otherwise excluded) parent dirs behind.
    C("dockerfile_in_excluded_subdir", ("sub/a", "sub/deep/b", "other"), "sub\n", dockerfile="sub/deep/Dockerfile"),
    C("dockerfile_elsewhere_not_excluded", ("a", "build/x"), "a\n", dockerfile="build/Dockerfile"),
    C("dot_files", (".git/HEAD", ".git/objects/x", ".env", ".envrc", ".github/w.yml", "a/.env"), ".git\n.env*\n"),
    C("deep_paths", ("a/b/c/d/e/f/g", "a/b/c/d/e/f/h", "a/b/c/x", "a/b/y"), "a/b/c/d/e\n!a/b/c/d/e/f/g\na/b/y\n"),
    # patternmatcher's "suffix" fast path: "**.md" is HasSuffix(".md"), at any depth.
    C("doublestar_suffix_fast_path", ("x.md", "a/b.md", "a/c.txt", ".md"), "**.md\n"),
    C("prefix_fast_path", ("build/x", "buildx", "builder/y", "rebuild"), "build**\n"),
    C("middle_doublestar", ("a/b", "a/x/b", "a/x/y/b/c", "a/bb", "b"), "a/**/b\n"),
    C("doublestar_dirname", ("node_modules/x", "a/node_modules/y", "a/b/node_modules/z/w", "a/c"),
      "**/node_modules\n"),
    C("empty_dirs", ("empty_kept/", "empty_excluded/", "nested/empty/", "nested/x/"), "empty_excluded\nnested/x\n"),
    C("symlinks_and_special_files", ("d/x", "x.lnk -> nowhere", "linkdir -> d", "keep -> d/x", "fifo:fifo", "socket:sock"),
      "*.lnk\n"),
    C("dot_pattern_matches_nothing", ("a", "d/b"), ".\n./\n"),
    # Cleaning happens before the '!' check: "./!foo" becomes the exception "!foo".
    C("cleaned_bang", ("!foo", "foo", "bar"), "*\n./!foo\n"),
    C("double_bang", ("!foo", "foo"), "*\n!!foo\n"),
    C("later_line_wins", ("a.txt", "b.txt", "c.txt"), "*.txt\n!a.txt\n!b.txt\nb.txt\n"),
    C("reincluded_dir_keeps_subtree", ("a/bx", "a/by/z", "a/by/w/v", "a/c"), "a\n!a/b*\n"),
    C("regexp_metachars_are_literal", ("a+b", "aab", "(x)", "x", "{y}", "$z", "a.c", "abc", "a^b"),
      "a+b\n(x)\n{y}\n$z\na.c\na^b\n"),
    C("regexp_metachars_with_glob", ("a+b1", "aab1", "a.c1", "abc1", "a^bc"), "a+b?\na.c*\na^b?\n"),
    # Go regexps: "\d" is a digit class, "[[:digit:]]" a POSIX class.
    C("regexp_escape_class", ("a1", "ab", "a\\d"), "a\\d\n"),
    C("posix_class", ("1x", "x1", "22"), "[[:digit:]]*\n"),
    C("star_inside_class", ("[]", "[^]", "a", "*"), "[*]\n"),
    C("non_utf8_names", ("caf\udce9", "cafe", "café", "cafxx", "t\udcff/x"), "caf?\nt?\n"),
    # Docker's escape bitmap drops { } | : once a pattern has a wildcard they are regexp syntax.
    C("unescaped_regexp_braces", ("a.js", "a.{js,ts}", "aa1", "a{2}1", "B1", "x{42}1"), "*.{js,ts}\na{2}?\n\\x{42}?\n"),
    # Surprise: "a|b?" is the Go regexp ^a|b[^/]$ - every name starting with "a" goes.
    C("unescaped_regexp_pipe", ("a1", "axyz", "b1", "bxy", "c"), "a|b?\n"),
    C("pipe_without_wildcard_is_literal", ("a|b", "a", "b"), "a|b\n"),
    C("custom_dockerfile_name_excluded", ("a", "Dockerfile"), "Dockerfile*\n", dockerfile="Dockerfile.prod"),
    # Surprise (legacy daemon): the CLI excludes Dockerfile ("**file" is a suffix test) and
    # forces it into the tar; the old daemon re-checks with the regexp ^(.*/)?file$, which
    # does not match "Dockerfile", so the Dockerfile survives.
    C("legacy_daemon_doublestar_suffix", ("xfile", "a/bfile", "c.txt"), "**file\n", legacy_extra=("Dockerfile",)),
    # Surprise (legacy daemon): "|" is an exact name for the CLI, but the old daemon's regexp
    # ^|$ matches anything, so it deletes Dockerfile and .dockerignore.
    C("legacy_daemon_pipe", ("a", "|"), "|\n", legacy_missing=("Dockerfile", ".dockerignore")),
    # Surprise: Go's filepath.Match (<= 1.24) only checks the first "*"-separated chunk (and
    # the second if the first matched "."), so "a*\\" passes; Docker's regexp is then
    # ^a[^/]*\\$ : a literal "$" and no end anchor.
    C("unchecked_trailing_backslash", ("a$", "ab$c", "ab", "b$"), "a*\\\n"),
    C("unchecked_bad_class", ("a]", "ab]", "a"), "a*[]]\n"),
    C("error_checked_second_chunk", ("a",), ".*[]]\n", error_line=1),
    C("error_trailing_backslash_single_chunk", ("a",), "ab\\\n", error_line=1),
    C("error_bad_class", ("a",), "ok\n[z-\n", error_line=2),
    C("error_bare_bang", ("a",), "a\n  !  \n", error_line=2),
    C("error_regexp", ("a",), "a\\y*\n", error_line=1),
    C("error_trailing_backslash_after_trim", ("a",), "c\\ \n", error_line=1),
    C("error_reversed_range", ("a",), "#\n[z-a]*\n", error_line=2),
    # Docker compiles a pattern's regexp only when it first evaluates it (issue #13): an
    # exception is evaluated once something is excluded, an exclusion while nothing is.
    C("unusable_exception_never_evaluated", ("a", "d/x"), "![z-a]\n"),
    C("unusable_pattern_after_no_match", ("a", "d/x"), "zz\n![z-a]*\n"),
    C("unusable_exception_inside_unmatched_dir", ("a", "d/x"), "a/b\n!a/[z-a]\n"),
    C("error_unusable_exception_after_star", ("a",), "*\n![z-a]\n", error_line=2),
    C("error_unusable_exception_after_match", ("a", "b"), "a\n![z-a]\n", error_line=2),
    C("error_unusable_in_reincluded_dir", ("a", "d/x"), "*\n!d\n[z-a]\n", error_line=3),
    C("unusable_only_in_the_tar_walk", ("a", "d/x", "d/y"), "*\n!d/x\n[z-a]\n", cut_short_at="d/x"),
]


def _random_cases(count: int, seed: int = 20240611) -> list[Case]:
    """Deterministic random mixes of tricky patterns over a shared pool of paths."""
    rng = random.Random(seed)
    paths = ["a/b/c/keep", "a/b/x.log", "a/important.log", "a/b/c/d/important.log", "a/tmp/t", "b/tmp",
             "b/k.md", "docs/keep.md", "docs/api/x.md", "logs/important.log", "logs/y.log", "src/m.c",
             "src/sub/n.tmp", "src/n.tmp", "x.log", "README.md", ".git/HEAD", "c/d/e/f", "keep", "abc",
             "a1", "b/", "empty/", "e/x/"]
    patterns = ["*.log", "**/*.log", "!**/important.log", "a", "!a/b", "a/b/c", "*/tmp", "docs/",
                "!docs/keep*", "*", "!src", "src/**/*.tmp", "[ab]*", "?", "!*.md", "**/c", "b/**",
                "logs", "!logs/important.log", ".git", "!a", "a/**/keep", "**.md", "*/*/x*", "!a/b/c/d",
                "**/d", "!**", "e", "!e/x", "?1", "!?bc"]
    return [C(f"random_{i}", tuple(rng.sample(paths, 14)), "\n".join(rng.sample(patterns, rng.randint(2, 7))) + "\n")
            for i in range(count)]


CASES += _random_cases(16)


def make_tree(root: Path, case: Case) -> None:
    root.mkdir(parents=True)
    for spec in case.files:
        kind, _, name = spec.rpartition(":") if spec.startswith(("fifo:", "socket:")) else ("", "", spec)
        name, _, target = name.partition(" -> ")
        path = os.path.join(os.fsencode(root), os.fsencode(name.rstrip("/")))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if target:
            os.symlink(target, path)
        elif name.endswith("/"):
            os.makedirs(path, exist_ok=True)
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "socket":  # a socket node without binding (no path length limit)
            os.mknod(path, stat.S_IFSOCK | 0o600)
        else:
            with open(path, "wb") as fh:
                fh.write(path)
    df = root / case.dockerfile
    df.parent.mkdir(parents=True, exist_ok=True)
    df.write_text(DOCKERFILE)
    if case.ignore is not None:
        data = case.ignore if isinstance(case.ignore, bytes) else case.ignore.encode("utf-8", "surrogateescape")
        (root / ".dockerignore").write_bytes(data)


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, DOCKER_BUILDKIT="0")
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, timeout=120)


def docker_context(root: Path, dockerfile: str) -> set[str] | str:
    """Entries COPY . /ctx sees, or the CLI's error text when the build fails."""
    flags = () if dockerfile == "Dockerfile" else ("-f", dockerfile)
    built = _run("docker", "build", "--no-cache", "-q", *flags, ".", cwd=root)
    if built.returncode != 0:
        return built.stderr.decode(errors="replace")
    image = built.stdout.decode().strip()
    try:
        cid = _run("docker", "create", image, "/x").stdout.decode().strip()
        try:
            exported = _run("docker", "export", cid).stdout
        finally:
            _run("docker", "rm", "-f", cid)
    finally:
        _run("docker", "rmi", "-f", image)
    names = set()
    with tarfile.open(fileobj=io.BytesIO(exported), encoding="utf-8", errors="surrogateescape") as tar:
        for member in tar:
            name = member.name.rstrip("/")
            if name.startswith("ctx/"):
                names.add(name[len("ctx/"):])
    return names


@pytest.fixture(scope="module")
def legacy_daemon(docker_client) -> bool:
    return int(docker_client.version()["Version"].split(".")[0]) < 23


@pytest.fixture(scope="module")
def docker_results(docker_client, tmp_path_factory) -> dict[str, tuple[Path, set[str] | str]]:
    base = tmp_path_factory.mktemp("dockerignore-conformance")

    def one(case: Case) -> tuple[Path, set[str] | str]:
        root = base / case.name
        make_tree(root, case)
        return root, docker_context(root, case.dockerfile)

    with ThreadPoolExecutor(max_workers=6) as pool:
        return dict(zip((c.name for c in CASES), pool.map(one, CASES)))


@pytest.mark.parametrize("case", [c for c in CASES if c.error_line is None and c.cut_short_at is None], ids=str)
def test_context_matches_docker(case: Case, docker_results, legacy_daemon: bool) -> None:
    root, docker = docker_results[case.name]
    assert not isinstance(docker, str), f"docker build failed: {docker}"
    ignore = DockerIgnore.load(root)
    olly = {rel for rel, _ in ignore.walk(root, dockerfile=case.dockerfile)}
    if legacy_daemon:
        assert not set(case.legacy_extra) & olly and set(case.legacy_missing) <= olly
        olly = olly - set(case.legacy_missing) | set(case.legacy_extra)
    assert olly == docker


@pytest.mark.parametrize("case", [c for c in CASES if c.error_line is not None], ids=str)
def test_invalid_patterns_rejected_like_docker(case: Case, docker_results) -> None:
    root, docker = docker_results[case.name]
    assert isinstance(docker, str) and "error checking context" in docker, docker
    with pytest.raises(OllyError) as info:  # at load, or (a regexp that does not compile) when evaluated
        list(DockerIgnore.load(root).walk(root, dockerfile=case.dockerfile))
    assert info.value.reason == "dockerignore-invalid"
    assert info.value.location == f"{root / '.dockerignore'}:{case.error_line}"


@pytest.mark.parametrize("case", [c for c in CASES if c.cut_short_at is not None], ids=str)
def test_context_docker_would_cut_short_is_refused(case: Case, docker_results) -> None:
    root, docker = docker_results[case.name]
    assert not isinstance(docker, str), f"docker build failed: {docker}"
    assert case.cut_short_at not in docker  # Docker built from what it had sent before
    with pytest.raises(OllyError) as info:
        list(DockerIgnore.load(root).walk(root, dockerfile=case.dockerfile))
    assert info.value.reason == "dockerignore-invalid"
    assert f"evaluates it at {case.cut_short_at}" in info.value.message
