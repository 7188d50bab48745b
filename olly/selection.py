"""The part of a build context that a Dockerfile's sources reach (see ``olly.reach``).

:class:`Tree` is the context as ``COPY`` sees it: what the Docker CLI sends after
``.dockerignore`` (the walk of ``olly.dockerignore``, with its parent-result rules), plus the
Dockerfile and ``.dockerignore`` as olly read them and the parents an excluded Dockerfile
leaves behind. It is walked only below the directories a source can reach, so a file no
source reaches is never hashed, and a large context outside them is not even listed.

:func:`select` follows the builders: a source directory copies its whole subtree; a wildcard
is matched like Go's ``filepath.Match`` against every context-relative path (``*``, ``?`` and
classes per segment; ``**`` may span segments, as in BuildKit: a superset of both), and a
matched directory copies its subtree; symlinks met on a source path, or matched, are
followed inside the context (Docker's FollowSymlinkInScope: an absolute target starts at
the context root, ``..`` stops there) and sent as links, so both the link and what it
resolves to are selected. Links inside a copied directory are copied as links, not followed.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple

from olly.config import in_own_dir
from olly.dockerignore import DockerIgnore
from olly.errors import OllyError
from olly.reach import Source

MAX_LINKS = 255  # Go's symlink evaluation gives up after as many
_Info = tuple[bool, ...] | None  # a directory's per-pattern .dockerignore results, for its children


class Unreadable(Exception):
    """A source olly cannot follow as Docker would (e.g. a symlink loop): key the whole context."""


class Node(NamedTuple):  # not a frozen dataclass: ~0.5 ms less at every start
    kind: str  # "f", "d" or "l"
    st: os.stat_result | None = None  # None for the entries olly holds in memory
    link: str = ""  # a symlink's target
    implied: bool = False  # an excluded directory that exists only as the parent of what is sent
    special: bool = False  # the Dockerfile or .dockerignore, from the bytes olly read


@dataclass
class Selected:
    nodes: dict[str, Node] = field(default_factory=dict)  # every entry to send
    lines: dict[str, set[int]] = field(default_factory=dict)  # keyed entries -> the lines reaching them
    carried: set[str] = field(default_factory=set)  # sent only for stages the target does not use


class Tree:
    def __init__(self, base: Path, ignore: DockerIgnore, *, shown: str, skip_own: bool,
                 specials: dict[str, Node | None], ghosts: set[str]) -> None:
        """``specials``: the Dockerfile / .dockerignore paths -> their node if COPY sees them
        (None: sent only to be removed by the daemon); ``ghosts``: parents left behind."""
        self.base, self.ignore, self.shown, self.skip_own = str(base), ignore, shown, skip_own
        self.specials, self.ghosts = specials, ghosts
        self._info: dict[str, _Info] = {"": None}  # per-pattern results of directories, for their children
        self._nodes: dict[str, Node | None] = {"": Node("d")}
        self._extras: dict[str, set[str]] = {}  # folder -> names of specials and ghosts in it
        for path in (*specials, *ghosts):
            folder, _, name = path.rpartition("/")
            self._extras.setdefault(folder, set()).add(name)

    def _classify(self, rel: str, st: os.stat_result, parent: _Info) -> tuple[Node | None, _Info]:
        """The node of an entry found on disk, given its parent's match results (Docker's
        walk: MatchesUsingParentResults), and the results for its children."""
        mode = st.st_mode
        if stat.S_ISSOCK(mode) or (self.skip_own and "/" not in rel and in_own_dir(rel)):
            return None, None  # sockets cannot be sent; olly's own dirs never are
        excluded, info = self.ignore._match(rel, parent) if self.ignore.patterns else (False, None)
        if excluded and rel in self.ghosts:
            return Node("d", st), info  # the daemon creates it when it unpacks the excluded Dockerfile
        if excluded:
            walked = stat.S_ISDIR(mode) and self.ignore._descend(rel)
            return (Node("d", st, implied=True) if walked else None), info
        if stat.S_ISLNK(mode):
            return Node("l", st, os.readlink(os.path.join(self.base, rel))), info
        return Node("d" if stat.S_ISDIR(mode) else "f", st), info

    def node(self, rel: str) -> Node | None:
        """The entry at ``rel`` (no symlink followed on the way), or None if COPY cannot see it."""
        if rel in self._nodes:
            return self._nodes[rel]
        folder = posixpath.dirname(rel)
        parent = self.node(folder)
        found: Node | None = None
        if rel in self.specials:
            found = self.specials[rel]
        elif parent is not None and parent.kind == "d":
            try:
                st = os.lstat(os.path.join(self.base, rel))
            except (FileNotFoundError, NotADirectoryError):
                st = None
            except OSError as exc:
                raise OllyError("unreadable-file", f"{self.shown}{rel}: cannot stat: {exc.strerror or exc}") from None
            if st is not None:
                found, self._info[rel] = self._classify(rel, st, self._info[folder])
        self._nodes[rel] = found
        return found

    def subtree(self, rel: str, depth: int | None = None) -> Iterator[tuple[str, Node]]:
        """``rel`` and what lies below it, ``depth`` levels at most, as Docker's walk finds it
        (children are classified from their parent's results, as Docker's walk does)."""
        top = self.node(rel)
        if top is None:
            return
        if rel:
            yield rel, top
        if top.kind != "d" or depth == 0:
            return
        todo = [(rel, self._info.get(rel), depth)]
        while todo:
            folder, info, left = todo.pop()
            prefix = folder + "/" if folder else ""
            for name, st in self._listing(folder):
                child = prefix + name
                if child in self.specials:
                    node, below = self.specials[child], None
                elif st is None:
                    node, below = None, None
                else:
                    node, below = self._classify(child, st, info)
                if node is None:
                    continue
                yield child, node
                if node.kind == "d" and (left is None or left > 1):
                    todo.append((child, below, None if left is None else left - 1))

    def _listing(self, folder: str) -> list[tuple[str, os.stat_result | None]]:
        """Names in ``folder`` (sorted) with their lstat, the specials and ghosts in it included."""
        found: dict[str, os.stat_result | None] = dict.fromkeys(self._extras.get(folder, ()))
        try:
            with os.scandir(os.path.join(self.base, folder) if folder else self.base) as it:
                for entry in it:
                    try:
                        found[entry.name] = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    except OSError as exc:  # e.g. ENAMETOOLONG beyond PATH_MAX, EACCES
                        raise OllyError("unreadable-file", f"{self.shown}{folder + '/' if folder else ''}{entry.name}: "
                                        f"cannot stat: {exc.strerror or exc}") from None
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as exc:
            raise OllyError("io-error", f"cannot read directory {self.shown}{folder}: {exc.strerror}") from None
        return sorted(found.items(), reverse=True)

    def resolve(self, path: str) -> tuple[str | None, list[str]]:
        """Follow ``path`` as COPY does (symlinks inside the context): (the real path or None
        if nothing is there, the symlinks passed on the way)."""
        parts, cur, links = path.split("/") if path else [], "", []
        while parts:
            part = parts.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                cur = posixpath.dirname(cur)
                continue
            nxt = f"{cur}/{part}" if cur else part
            node = self.node(nxt)
            if node is None or (parts and node.kind == "f"):
                return None, links
            if node.kind == "l":
                links.append(nxt)
                if len(links) > MAX_LINKS:
                    raise Unreadable(f"too many symlinks resolving {path}")
                cur = "" if node.link.startswith("/") else cur
                parts = node.link.split("/") + parts
                continue
            cur = nxt
        return cur, links


def select(tree: Tree, sources: list[Source]) -> Selected:
    """Every entry the sources reach, with the lines reaching each keyed one."""
    out = Selected()
    for src in sources:
        roots = _glob_roots(tree, src) if src.glob else [src.path]
        for root in roots:
            real, links = tree.resolve(root)
            for path in links:
                _add(out, path, tree.node(path), src)
            if real is not None:
                for path, node in tree.subtree(real):
                    _add(out, path, node, src)
    for path in list(out.nodes):
        _add_parents(out, path)
    out.carried -= out.lines.keys()
    return out


def _add(out: Selected, path: str, node: Node | None, src: Source) -> None:
    if node is None or node.implied:
        return  # an implied parent exists only if something below it is sent: added as a parent
    out.nodes[path] = node
    if src.keyed:
        out.lines.setdefault(path, set()).add(src.line)
    else:
        out.carried.add(path)


def _add_parents(out: Selected, path: str) -> None:
    """The parent directories of a selected entry are sent too (COPY must find the path),
    keyed when the entry is: they carry no line of their own."""
    keyed = path in out.lines
    parent = path.rpartition("/")[0]
    while parent:
        if parent in (out.lines if keyed else out.nodes):
            return  # done already: by this loop for a sibling, or as a selected entry of its own
        out.nodes.setdefault(parent, Node("d"))
        if keyed:
            out.lines[parent] = set()
        else:
            out.carried.add(parent)
        parent = parent.rpartition("/")[0]


def _glob_roots(tree: Tree, src: Source) -> list[str]:
    """Every path of the tree the wildcard matches (symlinks not followed while walking)."""
    regex, deep = glob_regex(src.path)
    segments = src.path.split("/")
    fixed = []
    for seg in segments:
        if any(c in seg for c in "*?[\\"):
            break
        fixed.append(seg)
    prefix = "/".join(fixed)
    depth = None if deep else len(segments) - len(fixed)
    return [rel for rel, _ in tree.subtree(prefix, depth) if regex.fullmatch(rel)]


def glob_regex(pattern: str) -> tuple[re.Pattern[str], bool]:
    """Go's ``filepath.Match`` as a regexp over a whole path, and whether it can match across
    ``/`` (``**``, a negated class, or ``/`` in a class: then every depth is walked). A
    malformed pattern (Docker: no match, or an error) raises Unreadable."""
    out, deep, i = "", False, 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            stars = len(pattern[i:]) - len(pattern[i:].lstrip("*"))
            i += stars
            if stars > 1 and pattern.startswith("/", i) and (i == stars or pattern[i - stars - 1] == "/"):
                out, i = out + "(?:.*/)?", i + 1  # a/**/b also matches a/b (BuildKit)
            else:
                out += ".*" if stars > 1 else "[^/]*"
            deep = deep or stars > 1
        elif ch == "?":
            out, i = out + "[^/]", i + 1
        elif ch == "[":
            body, i, crosses = _class(pattern, i + 1)
            out, deep = out + body, deep or crosses
        elif ch == "\\":
            if i + 1 >= len(pattern):
                raise Unreadable(f"pattern {pattern!r} ends in a backslash")
            out, i = out + re.escape(pattern[i + 1]), i + 2
        else:
            out, i = out + re.escape(ch), i + 1
    return re.compile(out, re.DOTALL), deep


def _class(pattern: str, i: int) -> tuple[str, int, bool]:
    """A ``[...]`` class from just after ``[``: (regexp, index after ``]``, may match ``/``)."""
    negated = pattern.startswith("^", i)
    i += negated
    ranges: list[tuple[int, int]] = []
    while True:
        if i >= len(pattern):
            raise Unreadable(f"pattern {pattern!r} has an unterminated class")
        if pattern[i] == "]" and ranges:
            break
        lo, i = _class_char(pattern, i)
        hi = lo
        if pattern.startswith("-", i):
            hi, i = _class_char(pattern, i + 1)
        ranges.append((lo, hi))
    body = "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in ranges if lo <= hi) or "\\U0010ffff-\\U0010ffff"
    crosses = negated or any(lo <= ord("/") <= hi for lo, hi in ranges)
    return f"[{'^' if negated else ''}{body}]", i + 1, crosses


def _class_char(pattern: str, i: int) -> tuple[int, int]:
    """Go's getEsc: one class member, ``\\`` escaping; a bare ``-`` or ``]`` is malformed."""
    if i >= len(pattern) or pattern[i] in "-]":
        raise Unreadable(f"pattern {pattern!r} has a malformed class")
    if pattern[i] == "\\":
        i += 1
        if i >= len(pattern):
            raise Unreadable(f"pattern {pattern!r} has a malformed class")
    return ord(pattern[i]), i + 1
