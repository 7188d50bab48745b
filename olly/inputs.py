"""The files an ``inputs`` glob matches, with their stat, in one walk.

``olly.config.expand_inputs`` defines the matches (pathlib's glob: ``**`` never descends
through a symlinked directory, dotfiles match, a trailing ``**`` means every file below, a
symlink to a file counts if it stays in the workspace; olly's own ``.cache/`` and ``dist/``
never match). It builds a Path per match and resolves each one; for 10^5 matches that is
most of a plan. :func:`expand` gives the same result for the common shape — literal
directories then ``**`` (``shared/**``, ``**``) — walking with ``os.scandir`` and resolving
only symlinks. Anything else, and every error (no match, a link leaving the workspace), is
left to ``expand_inputs`` so its result and messages stay the reference.
"""

from __future__ import annotations

import os
import posixpath
import stat
from pathlib import Path

from olly.config import expand_inputs, in_own_dir

Match = tuple[str, os.stat_result]  # workspace-relative path, stat (symlinks followed)
# A walked file's DirEntry (stat on demand: checking a glob needs none) or a link's stat.
_Found = tuple[str, os.DirEntry[str] | os.stat_result]


# The walk check() made while BUILD.toml loaded, for the plan of the same run to use once:
# one snapshot of which files match (their stats are taken when the plan asks: DirEntry
# stats on demand), instead of walking 10^5 files twice within a second.
_walked: dict[tuple[str, str], list[_Found]] = {}


def expand(root: Path, pattern: str) -> list[Match]:
    """``expand_inputs(root, pattern)`` with each match's ``stat``. Raises ValueError as it does."""
    found = _walked.pop((os.fspath(root), pattern), None) or _fast(root, pattern)
    if found is None:
        return [(rel, os.stat(os.path.join(root, rel))) for rel in expand_inputs(root, pattern)]
    return sorted((rel, _stat(st)) for rel, st in found)


def check(root: Path, pattern: str) -> None:
    """Raise the ValueError ``expand_inputs(root, pattern)`` would, without building its
    result: BUILD.toml's validation only needs to know the glob is sound."""
    found = _fast(root, pattern)
    if found is None:
        expand_inputs(root, pattern)
    else:
        _walked[(os.fspath(root), pattern)] = found


def _stat(st: os.DirEntry[str] | os.stat_result) -> os.stat_result:
    # A walked entry is a regular file, not a link: its lstat is its stat.
    return st if isinstance(st, os.stat_result) else st.stat(follow_symlinks=False)


def walked_dir(pattern: str) -> str | None:
    """The directory a pattern of the fast shape walks ("" = the workspace), else None."""
    parts = _literal_dirs(pattern)
    return None if parts is None else "/".join(parts)


def _literal_dirs(pattern: str) -> list[str] | None:
    """The directories before a trailing ``**`` (``[]`` for ``**``), or None if the pattern
    has another shape."""
    norm = posixpath.normpath(pattern)
    if norm == "**":
        return []
    if not norm.endswith("/**") or norm.startswith("/"):
        return None
    parts = norm[:-3].split("/")
    if any(p in ("", ".", "..") or any(c in p for c in "*?[") for p in parts):
        return None
    return parts


def _fast(root: Path, pattern: str) -> list[_Found] | None:
    parts = _literal_dirs(pattern)
    if parts is None:
        return None
    base = os.fspath(root)
    start = os.path.join(base, *parts)
    # The walk below resolves nothing: valid only if neither the workspace root nor the
    # literal directories go through a symlink (then every non-link match is inside).
    if os.path.realpath(start) != os.path.normpath(start) or not os.path.isdir(start):
        return None
    found: list[_Found] = []
    todo = ["/".join(parts)]
    while todo:
        rel_dir = todo.pop()
        if not _list(base, rel_dir, found, todo):
            return None  # a link out of the workspace: expand_inputs words the error
    return found or None  # no match: expand_inputs words that error too


def _list(base: str, rel_dir: str, found: list[_Found], todo: list[str]) -> bool:
    """Add the files of one directory to ``found`` and its real subdirectories to ``todo``;
    False if a symlink in it resolves outside the workspace."""
    prefix = rel_dir + "/" if rel_dir else ""
    # Below the top, an entry is in olly's own dirs exactly when its directory is.
    own = in_own_dir if not rel_dir else (lambda rel, own_dir=in_own_dir(rel_dir): own_dir)
    try:
        with os.scandir(os.path.join(base, rel_dir)) as it:
            entries = list(it)
    except PermissionError:
        return True  # pathlib's glob skips an unreadable directory
    for entry in entries:
        rel = prefix + entry.name
        if entry.is_symlink():
            if not _link(base, rel, found):
                return False
        elif entry.is_dir(follow_symlinks=False):
            if not own(rel):  # nothing below olly's own dirs matches
                todo.append(rel)
        elif entry.is_file(follow_symlinks=False) and not own(rel):
            found.append((rel, entry))
    return True


def _link(base: str, rel: str, found: list[_Found]) -> bool:
    """A symlink matches when it resolves to a file (never walked into as a directory)."""
    if in_own_dir(rel):
        return True
    path = os.path.join(base, rel)
    try:
        st = os.stat(path)
    except OSError:
        return True  # dangling: not a file
    if not stat.S_ISREG(st.st_mode):
        return True
    real = os.path.realpath(path)
    if os.path.commonpath([real, base]) != base:
        return False
    found.append((rel, st))
    return True
