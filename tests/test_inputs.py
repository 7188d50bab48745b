"""olly.inputs: the fast walk of an ``inputs`` glob gives exactly what config.expand_inputs gives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from olly import inputs
from olly.config import expand_inputs


def _tree(root: Path) -> None:
    for rel in ("shared/a.txt", "shared/.hidden", "shared/sub/b.txt", "shared/sub/deep/c.txt",
                ".cache/olly.db", "dist/x.tgz", "shared/dist/kept.txt", "top.txt", "other/o.txt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    (root / "shared" / "empty").mkdir()
    os.symlink("a.txt", root / "shared" / "link-to-file")
    os.symlink("sub", root / "shared" / "link-to-dir")  # never walked into
    os.symlink("missing", root / "shared" / "dangling")
    os.symlink("../../other/o.txt", root / "shared" / "sub" / "up-link")
    os.mkfifo(root / "shared" / "fifo")


@pytest.mark.parametrize("pattern", ["shared/**", "**", "./shared/**", "shared/sub/**", "shared/**/*.txt",
                                     "shared/*", "top.txt", "shared/../shared/**", "shared/sub/*/c.txt"])
def test_same_matches_as_expand_inputs(tmp_path: Path, pattern: str) -> None:
    root = tmp_path.resolve()
    _tree(root)
    got = inputs.expand(root, pattern)
    assert [rel for rel, _ in got] == expand_inputs(root, pattern)
    for rel, st in got:  # stat follows symlinks, as hashing an input does
        assert (st.st_ino, st.st_size) == (os.stat(root / rel).st_ino, os.stat(root / rel).st_size)


def test_fast_shape_only(tmp_path: Path) -> None:
    assert inputs.walked_dir("shared/**") == "shared" and inputs.walked_dir("**") == ""
    assert inputs.walked_dir("shared/*") is None and inputs.walked_dir("a*/**") is None
    assert inputs.walked_dir("../x/**") is None


def test_errors_are_expand_inputs_own(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    (root / "shared").mkdir()
    with pytest.raises(ValueError, match="matches no file"):
        inputs.expand(root, "shared/**")
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    os.symlink(outside, root / "shared" / "out")
    (root / "shared" / "in.txt").write_text("y")
    root2 = root  # the link leaves the workspace only if the workspace is below tmp_path
    ws = root2 / "ws"
    (ws / "shared").mkdir(parents=True)
    (ws / "shared" / "in.txt").write_text("y")
    os.symlink(outside, ws / "shared" / "out")
    with pytest.raises(ValueError, match="resolves outside the workspace"):
        inputs.expand(ws, "shared/**")


def test_symlinked_literal_dir_is_left_to_expand_inputs(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    (root / "real").mkdir()
    (root / "real" / "f.txt").write_text("f")
    os.symlink("real", root / "shared")
    assert [rel for rel, _ in inputs.expand(root, "shared/**")] == expand_inputs(root, "shared/**") == ["shared/f.txt"]


@pytest.mark.parametrize("pattern", ["shared/**", "**", "shared/*", "top.txt", "missing/**", "shared/empty/**", "nothing*"])
def test_check_raises_what_expand_inputs_raises(tmp_path: Path, pattern: str) -> None:
    root = tmp_path.resolve()
    _tree(root)
    try:
        expand_inputs(root, pattern)
    except ValueError as exc:
        with pytest.raises(ValueError) as got:
            inputs.check(root, pattern)
        assert str(got.value) == str(exc)
    else:
        inputs.check(root, pattern)
