"""Exactly what ``docker build`` (classic builder, CLI 28.x) sends after ``.dockerignore``.

Docker's rules, not gitignore's; all patterns are anchored at the context root.

* Reading (CLI ``ignorefile.ReadAll``): a UTF-8 BOM is dropped from line 1; a line that
  starts with ``#`` is a comment (checked *before* trimming); lines are trimmed of Go
  whitespace; blank lines are skipped; a leading ``!`` makes an exception (whitespace after
  it is trimmed); patterns are cleaned like Go's ``filepath.Clean`` and a leading ``/`` is
  dropped. Cleaning happens again before the ``!`` check, so ``./!x`` is the exception ``!x``.
* Matching (``moby/patternmatcher``): syntax is checked like Go ``filepath.Match``, then the
  pattern becomes an exact, prefix (``x**``), suffix (leading ``**``: plain *HasSuffix*, so
  ``**.md`` matches ``a/b.md``) or Go-regexp matcher. ``*``/``?`` never match ``/``, ``**``
  spans directories, ``\\`` passes the next character to the regexp (``\\d`` is a digit
  class) and, because of a bug in Docker's escaping, ``{`` ``}`` ``|`` are regexp syntax.
  The regexp is compiled when the pattern is first evaluated: one that does not compile
  (``![z-a]``) fails only if reached (``*`` then ``![z-a]``), see :class:`Pattern`.
* Walking (``archive.TarWithOptions``): later lines win, evaluated with the parent
  directory's per-pattern results (``MatchesUsingParentResults``): a pattern that matched
  a directory stays matched below it, one that was skipped there is only tried on the path
  itself (so ``a/b`` + ``!a`` keeps ``a/b`` excluded). An excluded directory is walked only if
  an exception *textually* starts with ``<dir>/`` (``!*/keep`` never reaches ``dir/keep``);
  it is not sent itself but exists at COPY time as the parent of what is re-included.
  Sockets cannot be sent. Symlinks are never followed.
"""

from __future__ import annotations

import operator
import os
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from olly.errors import OllyError

# Go's unicode.IsSpace (strings.TrimSpace); Python's str.strip() also strips \x1c-\x1f.
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000" + "".join(map(chr, range(0x2000, 0x200B)))
_R = list[tuple[int, int]]  # inclusive code point ranges
_CLASSES: dict[str, _R] = {  # POSIX [:name:] classes (ASCII, as in Go)
    "alnum": [(48, 57), (65, 90), (97, 122)], "alpha": [(65, 90), (97, 122)], "ascii": [(0, 127)],
    "blank": [(9, 9), (32, 32)], "cntrl": [(0, 31), (127, 127)], "digit": [(48, 57)],
    "graph": [(33, 126)], "lower": [(97, 122)], "print": [(32, 126)], "upper": [(65, 90)],
    "punct": [(33, 47), (58, 64), (91, 96), (123, 126)], "space": [(9, 13), (32, 32)],
    "word": [(48, 57), (65, 90), (95, 95), (97, 122)], "xdigit": [(48, 57), (65, 70), (97, 102)],
}
_PERL = {"d": _CLASSES["digit"], "w": _CLASSES["word"], "s": [(9, 10), (12, 13), (32, 32)]}
_CTRL = {"a": 7, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11}
_ASSERT = {"b": r"\b", "B": r"\B", "A": r"\A", "z": r"\Z"}
_NUMERIC = re.compile(r"0[0-7]{0,2}|[1-7][0-7]{1,2}|x\{([0-9a-fA-F]+)\}|x([0-9a-fA-F]{2})")
_REPEAT = re.compile(r"\{(0|[1-9][0-9]*)(?:(,)(0|[1-9][0-9]*)?)?\}")


class _Bad(Exception):
    """A pattern Docker rejects (or, rarely, one olly cannot translate faithfully)."""


def _complement(ranges: _R) -> _R:
    out, nxt = [], 0
    for lo, hi in sorted(ranges):
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = max(nxt, hi + 1)
    return out + [(nxt, 0x10FFFF)] if nxt <= 0x10FFFF else out


def _render(ranges: _R) -> str:
    """Python class body. Go reads invalid UTF-8 as U+FFFD; Python names keep those bytes
    as surrogate escapes U+DC80..U+DCFF, so covering U+FFFD covers them too."""
    if any(lo <= 0xFFFD <= hi for lo, hi in ranges):
        ranges = ranges + [(0xDC80, 0xDCFF)]
    return "".join(f"\\U{lo:08x}" + (f"-\\U{hi:08x}" if hi > lo else "") for lo, hi in ranges)


def _go_clean(p: str) -> str:
    """Go ``filepath.Clean`` for '/'-separated paths."""
    rooted, parts = p.startswith("/"), []
    for seg in p.split("/"):
        if seg == ".." and parts and parts[-1] != "..":
            parts.pop()
        elif seg not in ("", ".") and not (seg == ".." and rooted):
            parts.append(seg)
    return ("/" if rooted else "") + "/".join(parts) or "."


def _scan_chunk(p: str) -> tuple[bool, str, str]:
    """Go's filepath scanChunk: (leading star?, chunk up to the next unbracketed '*', rest)."""
    rest = p.lstrip("*")
    i, inrange = 0, False
    while i < len(rest) and (rest[i] != "*" or inrange):
        inrange = rest[i] == "[" or inrange and rest[i] != "]"
        i += 2 if rest[i] == "\\" and i + 1 < len(rest) else 1
    return len(rest) < len(p), rest[:i], rest[i:]


def _check_chunk(chunk: str) -> bool:
    """Parse a chunk like Go's matchChunk (raise _Bad when malformed); True if the chunk
    is a single element matching "."."""
    def member(i: int) -> tuple[str, int]:  # Go's getEsc
        if i >= len(chunk) or chunk[i] in "-]":
            raise _Bad("bad character class")
        i += chunk[i] == "\\"
        if i + 1 >= len(chunk) or 0xDC80 <= ord(chunk[i]) <= 0xDCFF:  # or invalid UTF-8
            raise _Bad("bad character class")
        return chunk[i], i + 1

    i, elements, dot = 0, 0, False
    while i < len(chunk):
        c, i = chunk[i], i + 1
        if c == "[":
            negated = chunk[i:i + 1] == "^"
            i, hit, nrange = i + negated, False, 0
            while not (chunk[i:i + 1] == "]" and nrange):
                lo, i = member(i)
                hi, i = member(i + 1) if chunk[i] == "-" else (lo, i)
                hit, nrange = hit or lo <= "." <= hi, nrange + 1
            i, dot = i + 1, hit != negated
        elif c == "\\":
            if i == len(chunk):
                raise _Bad("trailing backslash")
            i, dot = i + 1, chunk[i] == "."
        else:
            dot = c in ".?"
        elements += 1
    return elements == 1 and dot


def _check_glob(p: str) -> None:
    """Raise _Bad where ``filepath.Match(p, ".")`` (Go <= 1.24) reports ErrBadPattern: it
    parses the first chunk, and the second one only if the first matched "."."""
    star, chunk, rest = _scan_chunk(p)
    if chunk and _check_chunk(chunk) and rest:
        _check_chunk(_scan_chunk(rest)[1])


def _escape(go: str, i: int, in_class: bool) -> tuple[_R | str, int]:
    """Go regexp escape whose letter is at go[i]: its ranges, or an assertion."""
    c = go[i:i + 1]
    if c and c.lower() in _PERL:
        return (_complement(_PERL[c.lower()]) if c.isupper() else _PERL[c]), i + 1
    if c and c < "\x80" and not c.isalnum():
        return [(ord(c), ord(c))], i + 1
    if c and c in _CTRL:
        return [(_CTRL[c], _CTRL[c])], i + 1
    if c and c in _ASSERT and not in_class:
        return _ASSERT[c], i + 1
    if c and (m := _NUMERIC.match(go, i)):
        v = int(m.group(1) or m.group(2), 16) if c == "x" else int(m.group(0), 8)
        if v <= 0x10FFFF:
            return [(v, v)], m.end()
    raise _Bad(f"escape \\{c} is not supported by olly" if c in ("p", "P", "Q") else f"invalid escape \\{c}")


def _class_char(go: str, i: int) -> tuple[int, int]:
    if go[i] != "\\":
        return ord(go[i]), i + 1
    r, i = _escape(go, i + 1, True)
    if isinstance(r, str) or r[0][0] != r[0][1] or len(r) != 1:
        raise _Bad("invalid character class range")
    return r[0][0], i


def _translate(go: str) -> str:
    """Turn the Go regexp Docker builds into a Python regexp with the same matches."""
    out, i = [], 0
    while i < len(go):
        c = go[i]
        if c == "\\":
            r, i = _escape(go, i + 1, False)
            out.append(r if isinstance(r, str) else f"[{_render(r)}]")
            continue
        if c != "[":
            m = _REPEAT.match(go, i) if c == "{" else None
            if m and (int(m[1]) > 1000 or m[3] and not int(m[1]) <= int(m[3]) <= 1000):
                raise _Bad("invalid repeat count")
            if m and out and out[-1] in ("^", r"\Z", *_ASSERT.values()):
                out[-1] = f"(?:{out[-1]})"  # Go may repeat an assertion, Python only a group
            lit = {"$": r"\Z", "{": r"\{", "}": r"\}", "\ufffd": f"[{_render([(0xFFFD, 0xFFFD)])}]"}.get(c, c)
            out.append(m[0] if m else lit)
            i = m.end() if m else i + 1
            continue
        neg = go[i + 1:i + 2] == "^"
        i, items, first = i + 1 + neg, [], True
        while first or i >= len(go) or go[i] != "]":
            if i >= len(go):
                raise _Bad("missing ] in regexp")
            first, end = False, go.find(":]", i + 2)
            if go.startswith("[:", i) and end >= 0:  # POSIX [:name:] / [:^name:]
                name = go[i + 2:end]
                if name.lstrip("^") not in _CLASSES:
                    raise _Bad(f"invalid character class [:{name}:]")
                r = _CLASSES[name.lstrip("^")]
                items, i = items + (_complement(r) if name[0] == "^" else r), end + 2
            elif go[i] == "\\" and go[i + 1:i + 2].lower() in _PERL:
                r, i = _escape(go, i + 1, True)
                items += r
            else:
                lo, i = _class_char(go, i)
                hi = lo
                if go[i:i + 1] == "-" and go[i + 1:i + 2] not in ("", "]"):
                    hi, i = _class_char(go, i + 1)
                    if hi < lo:
                        raise _Bad("invalid character class range")
                items.append((lo, hi))
        out.append(("[^" if neg else "[") + _render(items) + "]")
        i += 1
    return "".join(out)


def _docker_regexp(text: str) -> tuple[str, str]:
    """Docker's Pattern.compile: the match kind and the Go regexp it would build."""
    kind, out, n, it = "exact", [], len(text), 0
    i = 1 if text.startswith("\ufeff") else 0  # Go's text/scanner skips a leading BOM
    while i < n:
        ch, i = text[i], i + 1
        if ch == "*" and text[i:i + 1] == "*":
            i += 2 if text[i + 1:i + 2] == "/" else 1
            if i < n or kind != "exact":
                out.append("(.*/)?" if i < n else ".*")
            kind = "suffix" if it == 0 else "regexp" if i < n or kind != "exact" else "prefix"
        elif ch in "*?[]" or ch == "\\" and i < n:
            out.append({"*": "[^/]*", "?": "[^/]"}.get(ch, ch))
            if ch == "\\":
                out.append(text[i])
                i += 1
            kind = "regexp"
        else:  # Docker escapes only . + ( ) $ (its bitmap drops { } |)
            out.append("\\" + ch if ch in ".+()$" else ch)
        it += 1
    return kind, re.sub("[\udc80-\udcff]", "\ufffd", "^" + "".join(out) + "$")  # bad UTF-8: U+FFFD


def _compile(text: str) -> Callable[[str], object]:
    """A matcher for one cleaned pattern, with Docker's exact/prefix/suffix fast paths."""
    kind, go = _docker_regexp(text)
    if kind == "exact":
        return text.__eq__
    if kind == "prefix":
        return lambda path, prefix=text[:-2]: path.startswith(prefix)
    if kind == "suffix":
        suffix = text[2:]
        return lambda path: path.endswith(suffix) or (suffix[:1] == "/" and path == suffix[1:])
    try:  # Go's MatchString searches: with '|' (or a trailing "\$") the anchors are partial
        return re.compile(_translate(go), re.ASCII).search
    except re.error as exc:
        raise _Bad(f"regexp: {exc}") from None


class _Unusable(Exception):
    """A pattern whose regexp does not compile was evaluated (Docker: ErrBadPattern)."""

    def __init__(self, pattern: Pattern) -> None:
        super().__init__(pattern.error)
        self.pattern = pattern


class Pattern:
    """One pattern as Docker holds it: cleaned ``text`` (without ``!``) and its source line.

    Docker compiles a pattern's regexp the first time it must evaluate it (patternmatcher's
    lazy ``compile``), so one that does not compile fails the build only when it is reached:
    ``![z-a]`` alone never is (nothing is excluded yet), after ``*`` it is at once. Such a
    pattern keeps its ``error`` and raises _Unusable when evaluated."""

    __slots__ = ("text", "exclusion", "line", "match", "raw", "error")

    def __init__(self, text: str, exclusion: bool, line: int, raw: str = "") -> None:
        self.text, self.exclusion, self.line, self.raw, self.error = text, exclusion, line, raw, ""
        try:
            self.match: Callable[[str], object] = _compile(text)
        except _Bad as exc:
            self.error, self.match = str(exc), self._unusable

    def _unusable(self, path: str) -> object:
        raise _Unusable(self)

    def __repr__(self) -> str:
        return f"Pattern({'!' * self.exclusion + self.text!r}, line={self.line})"


_Info = tuple[bool, ...]  # per-pattern "matched" results of a directory, for its children


class DockerIgnore:
    """A parsed ``.dockerignore``: which context entries ``docker build`` sends."""

    def __init__(self, patterns: list[Pattern], source: str = ".dockerignore") -> None:
        self.patterns, self.source = patterns, source
        self._reincludes = tuple(p.text + "/" for p in patterns if p.exclusion)
        # Per pattern, the one depth (in path segments) of every path it can match, or 0 when
        # that is not certain: see _fixed_depth. A walk tests such a pattern only at that depth.
        self._depths = tuple(_fixed_depth(p) for p in patterns)

    @classmethod
    def parse(cls, text: str, source: str = ".dockerignore") -> DockerIgnore:
        """Parse ignore-file text; raise OllyError("dockerignore-invalid", location="<source>:<line>")."""
        lines = text.split("\n")  # bufio.ScanLines: split on \n, drop one trailing \r
        patterns = []
        for lineno, line in enumerate(lines[:-1] if lines[-1] == "" else lines, 1):
            line = line[:-1] if line.endswith("\r") else line
            line = line[1:] if lineno == 1 and line.startswith("\ufeff") else line
            if line.startswith("#") or not (raw := line.strip(_GO_SPACE)):
                continue  # comments are recognised before trimming: " #x" is a pattern
            p = raw[1:].strip(_GO_SPACE) if raw[0] == "!" else raw
            if p:
                p = _go_clean(p)
                p = p[1:] if len(p) > 1 and p[0] == "/" else p
            p = _go_clean("!" * (raw[0] == "!") + p)  # patternmatcher.New cleans again
            try:
                if p == "!":
                    raise _Bad('illegal exclusion pattern "!"')
                _check_glob(p[1:] if p[0] == "!" else p)  # patternmatcher.New: checked at once
                patterns.append(Pattern(p[1:] if p[0] == "!" else p, p[0] == "!", lineno, raw))
            except _Bad as exc:
                raise OllyError("dockerignore-invalid", f"invalid pattern {raw!r}: {exc}",
                                location=f"{source}:{lineno}") from None
        return cls(patterns, source)

    def _invalid(self, exc: _Unusable, note: str = "") -> OllyError:
        p = exc.pattern
        return OllyError("dockerignore-invalid", f"invalid pattern {p.raw!r}: {p.error}{note}",
                         location=f"{self.source}:{p.line}")

    @classmethod
    def load(cls, context_dir: Path) -> DockerIgnore:
        """Read ``<context_dir>/.dockerignore``; no file means no patterns."""
        path = Path(context_dir) / ".dockerignore"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return cls([])
        except OSError as exc:
            raise OllyError("io-error", f"cannot read {path}: {exc.strerror}") from None
        return cls.parse(data.decode("utf-8", "surrogateescape"), os.fsdecode(path))

    def _match(self, path: str, parent: _Info | None) -> tuple[bool, _Info]:
        """Docker's MatchesUsingParentResults: (excluded, results for the children)."""
        matched, info = False, []
        for i, pat in enumerate(self.patterns):
            hit = parent[i] if parent else False
            if not hit and pat.exclusion == matched:
                hit = bool(pat.match(path))
                if not hit and parent is None and "/" in path:  # no parent results: try ancestors
                    parts = path.split("/")
                    hit = any(pat.match("/".join(parts[:k])) for k in range(1, len(parts)))
            info.append(hit)
            matched = not pat.exclusion if hit else matched
        return matched, tuple(info)

    def _children(self, depth: int, parent: _Info | None) -> tuple[bool, _Info] | None:
        """What ``_match`` gives every entry ``depth`` segments deep under a directory whose
        results are ``parent``, when no pattern needs testing there (each is inherited, or
        matches only paths of another depth); None if some entry must be tested. The walk's
        fast path: in most directories no pattern can apply, and no entry is matched at all."""
        matched, info = False, []
        for i, pat in enumerate(self.patterns):
            hit = parent[i] if parent else False
            if not hit and pat.exclusion == matched and self._depths[i] in (0, depth):
                return None  # _match would evaluate this pattern on each entry
            info.append(hit)
            matched = not pat.exclusion if hit else matched
        return matched, tuple(info)

    def _descend(self, reldir: str) -> bool:
        """Docker's test whether an excluded directory must still be walked."""
        return any(r.startswith(reldir + "/") for r in self._reincludes)

    def excluded(self, relpath: str) -> bool:
        """True if Docker leaves ``relpath`` ('/'-separated, context-relative) out of the tar.

        Its ancestors are taken to be directories. A directory that is excluded but walked
        counts as excluded even though ``walk`` lists it as an implied parent. Raises
        OllyError if that needs a pattern that does not compile."""
        parts, info, skip = relpath.strip("/").split("/"), None, False
        try:
            for k in range(1, len(parts) + 1):
                skip, info = self._match("/".join(parts[:k]), info)
                if skip and k < len(parts) and not self._descend("/".join(parts[:k])):
                    return True
        except _Unusable as exc:
            raise self._invalid(exc) from None
        return skip and parts not in ([""], ["."])  # the root itself is never excluded

    def _check_context(self, root: Path) -> None:
        """The CLI's ValidateContextDirectory, run only where a pattern does not compile: it
        walks the context in lexical order, not into excluded directories, matching each
        entry on its own (MatchesOrParentMatches, our ``_match`` without parent results), and
        fails the build ("error checking context: syntax error in pattern") on the first
        entry that needs that pattern."""
        frames = [(_scan(root), "")]
        while frames:
            entry = next(frames[-1][0], None)
            if entry is None:
                frames.pop()
                continue
            rel = frames[-1][1] + entry.name
            try:
                skip = self._match(rel, None)[0]
            except _Unusable as exc:
                raise self._invalid(exc) from None
            if not skip and entry.is_dir(follow_symlinks=False):
                frames.append((_scan(entry.path), rel + "/"))

    def walk(self, root: Path, *, dockerfile: str | None = None, shown: str = "") -> Iterator[tuple[str, os.stat_result]]:
        """Yield ``(relpath, lstat)`` for every entry ``COPY . /ctx`` would see, root excluded.

        Depth first, names sorted within a directory (parents before children), implied
        parents of re-included entries included. ``dockerfile`` (context-relative, as for
        ``-f``): the CLI forces an excluded Dockerfile into the tar and the daemon deletes
        it again, which leaves its excluded parent directories behind."""
        ign, drop = self, None
        if any(p.error for p in self.patterns):
            self._check_context(root)
        if dockerfile is not None and self.patterns and self._forced(_go_clean(dockerfile)):
            path = _go_clean(dockerfile)
            ign, drop = DockerIgnore(self.patterns + DockerIgnore.parse("!" + path).patterns, self.source), path
        Same = tuple[bool, _Info] | None  # one _match result for all entries of a directory (fast path)
        frames: list[tuple[Iterator[os.DirEntry[str]], str, _Info | None, Same]] = [
            (_scan(root), "", None, ign._children(1, None))]
        pending: list[tuple[int, str, os.stat_result]] = []  # walked excluded dirs, not yet shown
        is_sock, is_dir_mode = stat.S_ISSOCK, stat.S_ISDIR
        while frames:
            it, prefix, parent, same = frames[-1]
            for entry in it:  # this directory's entries, until one to descend into
                rel = prefix + entry.name
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                except OSError as exc:  # e.g. ENAMETOOLONG beyond PATH_MAX, EACCES
                    raise OllyError("unreadable-file", f"{shown}{rel}: cannot stat: {exc.strerror or exc}") from None
                if is_sock(st.st_mode):  # Go's archive/tar cannot store sockets
                    continue
                try:
                    skip, info = same if same is not None else ign._match(rel, parent)
                except _Unusable as exc:
                    # Past the CLI's check: Docker would log "Error matching", stop the tar here
                    # and build from the entries sent so far. olly refuses to plan that.
                    raise self._invalid(exc, f" (Docker evaluates it at {shown}{rel} and would build from a context "
                                             "cut short there)") from None
                is_dir = is_dir_mode(st.st_mode)
                if skip:
                    if is_dir and ign._descend(rel):
                        pending.append((len(frames), rel, st))
                        frames.append((_scan(entry.path), rel + "/", info, ign._children(rel.count("/") + 2, info)))
                        break  # into it; this directory's iterator resumes after it
                    continue
                if pending:
                    yield from ((prel, pst) for _, prel, pst in pending)
                    pending.clear()
                if rel != drop:
                    yield rel, st
                if is_dir:
                    frames.append((_scan(entry.path), rel + "/", info, ign._children(rel.count("/") + 2, info)))
                    break
            else:  # this directory is done
                frames.pop()
                if pending and pending[-1][0] == len(frames):
                    pending.pop()

    def _forced(self, path: str) -> bool:
        """The CLI forces an excluded Dockerfile into the tar (TrimBuildFilesFromExcludes),
        ignoring errors: a pattern that does not compile counts as no match there."""
        if path.split("/")[0] == "..":
            return False
        try:
            return self._match(path, None)[0]
        except _Unusable:
            return False


# Characters a pattern passes to Go's regexp as regexp syntax (patternmatcher escapes only
# '.' and '$'): with any of them, or '**', a pattern's depth is not simply its segment count.
_REGEXP_SYNTAX = frozenset("+|(){}^[]\\")


def _fixed_depth(p: Pattern) -> int:
    """How many '/'-separated segments every path ``p`` matches has, or 0 if not certain. Docker
    turns '*' into ``[^/]*`` and '?' into ``[^/]`` inside a regexp anchored at both ends, so a
    pattern of plain characters, '*' and '?' matches only paths of its own segment count. A
    pattern that does not compile is never skipped: evaluating it must fail, as in Docker."""
    if p.error or "**" in p.text or not _REGEXP_SYNTAX.isdisjoint(p.text):
        return 0
    return p.text.count("/") + 1


_NAME = operator.attrgetter("name")


def _scan(path: str | Path) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            return iter(sorted(entries, key=_NAME))
    except OSError as exc:
        raise OllyError("io-error", f"cannot read directory {os.fsdecode(path)}: {exc.strerror}") from None
