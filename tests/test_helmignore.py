"""olly.helmignore against Helm v3's pkg/ignore rules and LoadDir walk (no helm binary)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from olly.errors import OllyError
from olly.helmignore import HelmIgnore, go_match_regex


def chart(tmp_path: Path, files: dict[str, str], helmignore: str | None = None) -> Path:
    root = tmp_path / "chart"
    root.mkdir()
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    if helmignore is not None:
        (root / ".helmignore").write_text(helmignore)
    return root


def names(root: Path) -> list[str]:
    return [rel for rel, _ in HelmIgnore.load(root).walk(root)]


# Helm's own table (pkg/ignore/rules_test.go TestIgnore); is_dir follows its fixtures.
HELM_TABLE = [
    ("helm.txt", "helm.txt", False, True),
    ("helm.*", "helm.txt", False, True),
    ("helm.*", "rudder.txt", False, False),
    ("*.txt", "tiller.txt", False, True),
    ("*.txt", "cargo/a.txt", False, True),
    ("cargo/*.txt", "cargo/a.txt", False, True),
    ("cargo/*.*", "cargo/a.txt", False, True),
    ("cargo/*.txt", "mast/a.txt", False, False),
    ("ru[c-e]?er.txt", "rudder.txt", False, True),
    ("templates/.?*", "templates/.dotfile", False, True),
    (".*", ".", True, False),
    (".*", "./", True, False),
    (".*", ".joonix", False, True),
    (".*", "helm.txt", False, False),
    (".*", "", True, False),
    ("cargo/", "cargo", True, True),
    ("cargo/", "cargo/", True, True),
    ("cargo/", "mast/", True, False),
    ("helm.txt/", "helm.txt", False, False),
    ("!helm.txt", "helm.txt", False, False),
    ("!helm.txt", "tiller.txt", False, True),
    ("!*.txt", "cargo", True, True),
    ("!cargo/", "mast/", True, True),
    ("/a.txt", "a.txt", False, True),
    ("/a.txt", "cargo/a.txt", False, False),
    ("/cargo/a.txt", "cargo/a.txt", False, True),
]


@pytest.mark.parametrize(("rule", "path", "is_dir", "expect"), HELM_TABLE)
def test_helm_rules_table(rule: str, path: str, is_dir: bool, expect: bool) -> None:
    assert HelmIgnore.parse(rule).ignored(path, is_dir) is expect


# The examples of https://helm.sh/docs/chart_template_guide/helm_ignore_file
@pytest.mark.parametrize(("rule", "path", "is_dir", "expect"), [
    (".git", ".git", True, True),
    (".git", "sub/.git", True, True),          # no '/': basename at any depth
    (".git", ".gitignore", False, False),
    ("*.swp", "templates/a.yaml.swp", False, True),
    ("*.txt", "a.txt", False, True),
    ("*.txt", "x/y/z.txt", False, True),
    ("mydir/", "mydir", True, True),
    ("mydir/", "a/mydir", True, True),
    ("mydir/", "mydir", False, False),         # a file named mydir stays
    ("/*.txt", "a.txt", False, True),
    ("/*.txt", "sub/a.txt", False, False),
    ("/foo.txt", "foo.txt", False, True),
    ("/foo.txt", "sub/foo.txt", False, False),
    ("a[b-d].txt", "ac.txt", False, True),
    ("a[b-d].txt", "ae.txt", False, False),
    ("*/temp*", "sub/temp1", False, True),
    ("*/temp*", "temp1", False, False),
    ("*/temp*", "a/b/temp1", False, False),    # '*' never crosses '/'
    ("*/*/temp*", "a/b/temp1", False, True),
    ("temp?", "temp1", False, True),
    ("temp?", "deep/dir/tempX", False, True),
    ("temp?", "temp", False, False),
    ("temp?", "temp12", False, False),
    ("/temp?.txt", "temp1.txt", False, True),
    ("/temp?.txt", "sub/temp1.txt", False, False),
    ("foo # c", "foo", False, False),          # no inline comments: a literal rule
    ("foo # c", "foo # c", False, True),
])
def test_documented_rules(rule: str, path: str, is_dir: bool, expect: bool) -> None:
    assert HelmIgnore.parse(rule).ignored(path, is_dir) is expect


def test_go_match_semantics_not_fnmatch() -> None:
    ig = HelmIgnore.parse
    assert not ig("a*").ignored("a/b", False)              # nor does a basename rule see "a/b"
    assert not ig("x/?").ignored("x/a/", True) and ig("x/?").ignored("x/a", True)
    assert ig("x[/]y").ignored("x/y", False)               # classes DO match '/'
    assert ig("d/x[^a]y").ignored("d/x/y", False)
    assert not ig("x[^a]y").ignored("x/y", False)          # no '/' in the rule: basename "y"
    assert ig("[^a]bc").ignored("xbc", False) and not ig("[^a]bc").ignored("abc", False)
    assert ig("[!a]bc").ignored("!bc", False)              # '!' is a literal, not fnmatch negation
    assert not ig("[!a]bc").ignored("xbc", False)
    assert ig(r"\*.txt").ignored("*.txt", False) and not ig(r"\*.txt").ignored("a.txt", False)
    assert ig(r"[\]]").ignored("]", False)
    assert not ig("[z-a]").ignored("m", False)             # empty range: valid, matches nothing
    # Go never backtracks into an earlier star: '*[^x]' commits to the first char.
    assert go_match_regex("*[^x]*c").fullmatch("ab/c") is None
    assert not ig("x/*[^x]*c").ignored("x/ab/c", False)
    assert ig("x/*[^x]*c").ignored("x/ac", False)


@pytest.mark.parametrize("bad", ["[z-", "[]", "[a-]", "[^]", "a\\", "[a", "!["])
def test_bad_pattern_rejected_with_location(bad: str) -> None:
    with pytest.raises(OllyError) as exc:
        HelmIgnore.parse(f"# ok\n*.txt\n{bad}\n", source="charts/x/.helmignore")
    assert exc.value.reason == "helmignore-invalid"
    assert exc.value.location == "charts/x/.helmignore:3"
    assert "syntax error in pattern" in exc.value.message


@pytest.mark.parametrize("rule", ["**", "foo/**/bar", "!**.txt", "a**"])
def test_double_star_rejected(rule: str) -> None:
    with pytest.raises(OllyError) as exc:
        HelmIgnore.parse(f"\n\n{rule}")
    assert exc.value.reason == "helmignore-invalid"
    assert exc.value.location == ".helmignore:3"
    assert exc.value.message == "double-star (**) syntax is not supported"


def test_load_uses_display_in_location(tmp_path: Path) -> None:
    root = chart(tmp_path, {"Chart.yaml": ""}, "ok\n  foo/**  \n")
    with pytest.raises(OllyError) as exc:
        HelmIgnore.load(root, display="apps/web/chart/.helmignore")
    assert exc.value.location == "apps/web/chart/.helmignore:2"


def test_parsing_trims_and_skips() -> None:
    h = HelmIgnore.parse("# c\r\n\r\n   \t\n  *.txt  \r\n\t#also comment\n/x/\n")
    assert h.rules == ("*.txt", "/x/", "templates/.?*")
    assert h.ignored("a.txt", False)
    assert HelmIgnore.parse("").rules == ("templates/.?*",)


def test_trailing_escaped_slash_never_matches() -> None:
    # 'x\/' passes Helm's raw check, but 'x\' (after the '/' is cut) fails at match time,
    # which Helm logs and treats as a non-match.
    assert not HelmIgnore.parse("x\\/").ignored("x", True)
    assert HelmIgnore.parse("!x\\/").ignored("x", True)


# --- Negation: Helm v3's Rules.Ignore is NOT gitignore's re-include --------------------

def test_negation_ignores_everything_it_does_not_match(tmp_path: Path) -> None:
    files = {"Chart.yaml": "", "values.yaml": "", "README.md": "", "templates/a.yaml": ""}
    root = chart(tmp_path, files, "!Chart.yaml\n")
    # Non-matching paths (the templates dir, values.yaml, .helmignore) are ignored outright.
    assert names(root) == ["Chart.yaml"]


def test_negation_cannot_reinclude_and_two_negations_conflict() -> None:
    h = HelmIgnore.parse("*.txt\n!keep.txt\n")
    assert h.ignored("keep.txt", False)       # the first rule already decided
    assert h.ignored("Chart.yaml", False)     # and '!keep.txt' ignores everything else
    h = HelmIgnore.parse("!Chart.yaml\n!values.yaml\n*\n")
    assert h.ignored("values.yaml", False)    # fails '!Chart.yaml' -> ignored
    assert h.ignored("Chart.yaml", False)     # passes, fails '!values.yaml' -> ignored
    h = HelmIgnore.parse("!*.yaml\n")
    assert not h.ignored("values.yaml", False) and h.ignored("NOTES.txt", False)
    assert h.ignored("templates", True)       # so templates/ is never entered


def test_negated_directory_rule_ignores_every_file(tmp_path: Path) -> None:
    h = HelmIgnore.parse("!templates/\n")
    assert h.ignored("Chart.yaml", False) and h.ignored("templates/a.yaml", False)
    assert not h.ignored("templates", True) and h.ignored("other", True)
    root = chart(tmp_path, {"Chart.yaml": "", "templates/a.yaml": ""}, "!templates/\n")
    assert names(root) == []


# --- The walk ----------------------------------------------------------------------------

def test_walk_nested_defaults_and_helmignore_itself(tmp_path: Path) -> None:
    files = {
        "Chart.yaml": "", "values.yaml": "", "notes.txt": "", "docs/a.txt": "",
        "templates/x.yaml": "", "templates/.hidden.yaml": "", "templates/.dir/y.yaml": "",
        "templates/sub/.z.yaml": "", "templates/sub/deep/t.yaml": "",
        ".git/config": "", "sub/.git/HEAD": "", "build/out.bin": "", "src/build": "",
    }
    root = chart(tmp_path, files, "# comment\n.git\n/*.txt\nbuild/\n")
    got = HelmIgnore.load(root).walk(root)
    assert [rel for rel, _ in got] == [
        ".helmignore", "Chart.yaml", "docs/a.txt", "src/build",
        "templates/sub/.z.yaml", "templates/sub/deep/t.yaml", "templates/x.yaml", "values.yaml",
    ]
    assert all(real == root / rel for rel, real in got)


def test_walk_without_or_with_empty_helmignore(tmp_path: Path) -> None:
    root = chart(tmp_path, {"Chart.yaml": "", "templates/.h": "", "templates/t.yaml": ""})
    assert names(root) == ["Chart.yaml", "templates/t.yaml"]
    (root / ".helmignore").write_text("")
    assert names(root) == [".helmignore", "Chart.yaml", "templates/t.yaml"]
    (root / ".helmignore").write_text(".helmignore\n")
    assert names(root) == ["Chart.yaml", "templates/t.yaml"]


def test_ignored_directory_is_not_entered(tmp_path: Path) -> None:
    # A file under an ignored directory is gone even though no rule names it.
    root = chart(tmp_path, {"Chart.yaml": "", "mydir/keep.yaml": ""}, "mydir/\n")
    assert names(root) == [".helmignore", "Chart.yaml"]


def test_symlink_to_file_inside_is_followed(tmp_path: Path) -> None:
    root = chart(tmp_path, {"Chart.yaml": "", "shared/cm.yaml": "data"})
    (root / "templates").mkdir()
    os.symlink("../shared/cm.yaml", root / "templates" / "cm.yaml")
    got = dict(HelmIgnore.load(root).walk(root))
    assert got["templates/cm.yaml"] == (root / "shared" / "cm.yaml").resolve()
    assert got["templates/cm.yaml"].read_text() == "data"


def test_symlink_to_dir_inside_is_followed_and_rules_see_a_dir(tmp_path: Path) -> None:
    root = chart(tmp_path, {"Chart.yaml": "", "real/a.yaml": "", "real/b.txt": ""}, "*.txt\n")
    os.symlink("real", root / "alias")
    got = dict(HelmIgnore.load(root).walk(root))
    assert sorted(got) == [".helmignore", "Chart.yaml", "alias/a.yaml", "real/a.yaml"]
    assert got["alias/a.yaml"] == (root / "real" / "a.yaml").resolve()
    (root / ".helmignore").write_text("alias/\n")        # dir-only rules apply to the link
    assert names(root) == [".helmignore", "Chart.yaml", "real/a.yaml", "real/b.txt"]


def test_symlink_loop_rejected(tmp_path: Path) -> None:
    root = chart(tmp_path, {"Chart.yaml": "", "sub/a.yaml": ""})
    os.symlink("..", root / "sub" / "up")
    with pytest.raises(OllyError) as exc:
        names(root)
    assert exc.value.reason == "chart-invalid" and "sub/up" in exc.value.message


@pytest.mark.parametrize("target", ["../outside.yaml", "../outdir"])
def test_symlink_escaping_chart_rejected(tmp_path: Path, target: str) -> None:
    (tmp_path / "outside.yaml").write_text("secret")
    (tmp_path / "outdir").mkdir()
    root = chart(tmp_path, {"Chart.yaml": ""})
    os.symlink(target, root / "link")
    with pytest.raises(OllyError) as exc:
        names(root)
    assert exc.value.reason == "chart-invalid"
    assert "link" in exc.value.message and target in exc.value.message
    assert "outside the chart" in exc.value.message
    (root / ".helmignore").write_text("link\n")          # ignored: never read, so fine
    assert names(root) == [".helmignore", "Chart.yaml"]


def test_dangling_symlink_rejected_even_if_ignored(tmp_path: Path) -> None:
    root = chart(tmp_path, {"Chart.yaml": ""})
    os.symlink("missing.yaml", root / "gone.yaml")
    for helmignore in ("", "gone.yaml\n"):               # Helm resolves before the rules
        (root / ".helmignore").write_text(helmignore)
        with pytest.raises(OllyError) as exc:
            names(root)
        assert exc.value.reason == "chart-invalid"
        assert "gone.yaml" in exc.value.message and "missing.yaml" in exc.value.message


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no mkfifo")
def test_fifo_rejected_unless_ignored(tmp_path: Path) -> None:
    root = chart(tmp_path, {"Chart.yaml": ""})
    os.mkfifo(root / "pipe")
    with pytest.raises(OllyError) as exc:
        names(root)
    assert exc.value.reason == "chart-invalid"
    assert exc.value.message == f"cannot load irregular file {root}/pipe as it has file mode type bits set"
    (root / ".helmignore").write_text("pipe\n")
    assert names(root) == [".helmignore", "Chart.yaml"]


def test_missing_chart_dir(tmp_path: Path) -> None:
    with pytest.raises(OllyError) as exc:
        HelmIgnore.parse("").walk(tmp_path / "nope")
    assert exc.value.reason == "chart-invalid"
