"""Exactly the files ``helm package`` (Helm v3) takes from a chart directory.

Rules (``pkg/ignore``): lines are trimmed of Go whitespace; blanks and ``#`` lines are
skipped; ``**`` anywhere, or a raw rule Go's ``filepath.Match`` rejects, is an error. A
leading ``!`` negates, a trailing ``/`` means directories only; the rest is matched (Go
``filepath.Match``) against the path minus one leading ``/`` if the rule starts with ``/``,
the whole chart-relative path if it contains ``/``, else the basename. ``templates/.?*`` is
always appended. No BOM is stripped; only the root ``.helmignore`` counts, and it is
packaged itself unless a rule ignores it.

``!`` is not gitignore's re-include. Rules are tried in order and the first decision wins:
a positive rule that matches ignores; ``!p`` ignores everything it does NOT match (``!p/``
also every non-directory) and lets what it matches fall through to later rules. So
``!Chart.yaml`` alone keeps only ``Chart.yaml``, and ``*.txt`` + ``!keep.txt`` keeps nothing.

Walk (``LoadDir`` + ``internal/sympath.Walk``): ignored directories are not entered;
symlinks are resolved before the rules run (which see the target's type), so a dangling
link fails even when ignored, as in Helm. A non-ignored non-regular file is an error, as
in Helm. olly also rejects a non-ignored link resolving outside the chart, and a link back
to a directory being walked (a loop Helm would recurse into).
"""

from __future__ import annotations

from typing import NamedTuple

import os
import re
import stat
from pathlib import Path

from olly.errors import OllyError

# Go's unicode.IsSpace (what strings.TrimSpace trims); str.strip() would also trim \x1c-\x1f.
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000" + "".join(map(chr, range(0x2000, 0x200B)))
_DEFAULT_RULE = "templates/.?*"


class _BadPattern(Exception):
    """Go's filepath.ErrBadPattern."""


def _class_char(pat: str, i: int) -> tuple[str, int]:
    """Go's getEsc: one (possibly escaped) class character at ``pat[i]``, and the next index."""
    if i >= len(pat) or pat[i] in "-]":
        raise _BadPattern
    if pat[i] == "\\":
        i += 1
        if i >= len(pat):
            raise _BadPattern
    if "\udc80" <= pat[i] <= "\udcff":  # an undecodable byte (surrogateescape): Go's RuneError
        raise _BadPattern
    if i + 1 >= len(pat):  # the class never closes
        raise _BadPattern
    return pat[i], i + 1


def _cp(c: str) -> str:
    return f"\\U{ord(c):08x}"


def go_match_regex(pat: str) -> re.Pattern[str]:
    """Compile a Go ``filepath.Match`` pattern (Unix) to an equivalent Python regex.

    ``*`` is ``[^/]*``, ``?`` is ``[^/]``, ``[...]``/``[^...]`` is one character *including*
    ``/``, ``\\`` escapes. Go does not backtrack into an earlier star: a star followed by more
    pattern takes the leftmost place where its chunk matches; atomic groups reproduce that.
    Raises ``_BadPattern`` exactly where Go's Match reports ErrBadPattern.
    """
    chunks: list[tuple[bool, list[str]]] = [(False, [])]
    i = 0
    while i < len(pat):
        c = pat[i]
        if c == "*":
            if chunks[-1][1] or not chunks[-1][0]:
                chunks.append((True, []))
            i += 1
            continue
        atoms = chunks[-1][1]
        if c == "?":
            atoms.append("[^/]")
            i += 1
        elif c == "\\":
            if i + 1 >= len(pat):
                raise _BadPattern
            atoms.append(re.escape(pat[i + 1]))
            i += 2
        elif c == "[":
            i += 1
            negated = i < len(pat) and pat[i] == "^"
            i += negated
            ranges: list[str] = []
            nrange = 0
            while not (i < len(pat) and pat[i] == "]" and nrange > 0):
                lo, i = _class_char(pat, i)
                hi = lo
                if pat[i] == "-":
                    hi, i = _class_char(pat, i + 1)
                if lo <= hi:  # Go accepts an empty range like [z-a]; it just never matches
                    ranges.append(_cp(lo) if lo == hi else f"{_cp(lo)}-{_cp(hi)}")
                nrange += 1
            i += 1
            if ranges:
                atoms.append(f"[{'^' if negated else ''}{''.join(ranges)}]")
            else:
                atoms.append("(?s:.)" if negated else "(?!)")
        else:
            atoms.append(re.escape(c))
            i += 1
    parts = []
    for n, (star, atoms) in enumerate(chunks):
        body = "".join(atoms)
        if not star:
            parts.append(body)
        elif not atoms:  # trailing star: the rest, without a '/'
            parts.append("[^/]*")
        elif n == len(chunks) - 1:  # last chunk: must end the name
            parts.append(f"[^/]*?{body}")
        else:
            parts.append(f"(?>[^/]*?{body})")
    return re.compile("".join(parts))


def _go_base(path: str) -> str:
    """Go's filepath.Base (Unix)."""
    if path == "":
        return "."
    path = path.rstrip("/")
    return path.rsplit("/", 1)[-1] if path else "/"


class _Rule(NamedTuple):  # not a frozen dataclass: ~0.5 ms less at every start
    raw: str
    negate: bool
    must_dir: bool
    scope: str  # "path" (anchored or containing '/') or "base"
    regex: re.Pattern[str] | None  # None: Go fails to compile it at match time -> never matches

    def matches(self, path: str) -> bool:
        if self.regex is None:
            return False
        return self.regex.fullmatch(path if self.scope == "path" else _go_base(path)) is not None


def _parse_rule(rule: str) -> _Rule | None:
    """``parseRule``: None for blanks/comments; raises ``_BadPattern``/``ValueError``."""
    rule = rule.strip(_GO_SPACE)
    if not rule or rule.startswith("#"):
        return None
    if "**" in rule:
        raise ValueError("double-star (**) syntax is not supported")
    go_match_regex(rule)  # Helm validates the raw rule, '!' and '/' included
    raw, negate, must_dir = rule, rule.startswith("!"), False
    if negate:
        rule = rule[1:]
    if rule.endswith("/"):
        must_dir, rule = True, rule[:-1]
    if rule.startswith("/"):
        # Helm strips the '/' inside its matcher closure, mutating the captured rule on every
        # call, so "//x" degrades to "x" after the first evaluation; olly strips exactly once.
        scope, rule = "path", rule[1:]
    else:
        scope = "path" if "/" in rule else "base"
    try:
        regex: re.Pattern[str] | None = go_match_regex(rule)
    except _BadPattern:  # e.g. "x\/" -> "x\": Helm logs and treats it as a non-match
        regex = None
    return _Rule(raw, negate, must_dir, scope, regex)


class HelmIgnore:
    """Helm's ``.helmignore`` rules (defaults included) and Helm's chart-directory walk."""

    def __init__(self, rules: list[_Rule]) -> None:
        self._rules = tuple(rules)

    @property
    def rules(self) -> tuple[str, ...]:
        """The raw rules in evaluation order (the default ``templates/.?*`` last)."""
        return tuple(r.raw for r in self._rules)

    @classmethod
    def parse(cls, text: str, source: str = ".helmignore") -> HelmIgnore:
        """Parse ``.helmignore`` text; errors are ``helmignore-invalid`` at ``source:line``."""
        rules = []
        for lineno, line in enumerate(text.split("\n"), 1):
            try:
                rule = _parse_rule(line.removesuffix("\r"))
            except ValueError as exc:
                raise OllyError("helmignore-invalid", str(exc), location=f"{source}:{lineno}") from None
            except _BadPattern:
                msg = f"syntax error in pattern {line.strip(_GO_SPACE)!r}"
                raise OllyError("helmignore-invalid", msg, location=f"{source}:{lineno}") from None
            if rule is not None:
                rules.append(rule)
        default = _parse_rule(_DEFAULT_RULE)
        assert default is not None
        return cls([*rules, default])

    @classmethod
    def load(cls, chart_dir: Path, display: str | None = None) -> HelmIgnore:
        """Rules from ``<chart_dir>/.helmignore`` (if it exists, following a symlink) + defaults."""
        path = Path(chart_dir) / ".helmignore"
        source = display or ".helmignore"
        try:
            text = path.read_bytes().decode("utf-8", "surrogateescape") if path.exists() else ""
        except OSError as exc:
            raise OllyError("io-error", f"{source}: cannot read: {exc.strerror or exc}") from None
        return cls.parse(text, source)

    def ignored(self, relpath: str, is_dir: bool) -> bool:
        """Helm's ``Rules.Ignore`` for a '/'-separated chart-relative path."""
        if relpath in ("", ".", "./"):
            return False
        for rule in self._rules:
            if rule.negate:
                if rule.must_dir and not is_dir:
                    return True
                if not rule.matches(relpath):
                    return True
                continue
            if rule.must_dir and not is_dir:
                continue
            if rule.matches(relpath):
                return True
        return False

    def walk(self, chart_dir: Path) -> list[tuple[str, Path]]:
        """Sorted ``(relpath, path to read)`` of every regular file Helm would package."""
        chart_dir = Path(chart_dir)
        try:
            root_real = Path(os.path.realpath(chart_dir, strict=True))
        except (OSError, RuntimeError):
            raise OllyError("chart-invalid", f"{chart_dir}: chart directory does not exist") from None
        if not root_real.is_dir():
            raise OllyError("chart-invalid", f"{chart_dir}: not a directory")
        out: list[tuple[str, Path]] = []
        try:
            self._walk(chart_dir, root_real, "", root_real, (root_real,), out, str(chart_dir))
        except RecursionError:
            raise OllyError("chart-invalid", f"{chart_dir}: directory tree too deep to package") from None
        return sorted(out)

    def _walk(self, here: Path, here_real: Path, prefix: str, root_real: Path,
              chain: tuple[Path, ...], out: list[tuple[str, Path]], shown: str) -> None:
        try:
            names = sorted(os.listdir(here))
        except OSError as exc:
            raise OllyError("io-error", f"{here}: cannot list directory: {exc.strerror or exc}") from None
        for name in names:
            rel = f"{prefix}/{name}" if prefix else name
            path, real, where, what = here / name, here_real / name, "", f"{shown}/{rel}"
            try:
                st = os.lstat(path)
            except OSError as exc:
                raise OllyError("io-error", f"{path}: {exc.strerror or exc}") from None
            link = stat.S_ISLNK(st.st_mode)
            if link:
                where = os.readlink(path)
                try:
                    real = Path(os.path.realpath(path, strict=True))
                    st = os.stat(real)
                except (OSError, RuntimeError):
                    raise OllyError("chart-invalid", f"{what}: symlink to {where!r} is dangling or unresolvable") from None
                path = real
            is_dir = stat.S_ISDIR(st.st_mode)
            if self.ignored(rel, is_dir):
                continue
            if link and real != root_real and root_real not in real.parents:
                raise OllyError("chart-invalid", f"{what}: symlink to {where!r} resolves to {real}, outside the chart directory")
            if is_dir:
                if real in chain:
                    raise OllyError("chart-invalid", f"{what}: symlink to {where!r} loops back to {real}")
                self._walk(path, real, rel, root_real, (*chain, real), out, shown)
            elif stat.S_ISREG(st.st_mode):
                out.append((rel, path))
            else:
                raise OllyError("chart-invalid", f"cannot load irregular file {what} as it has file mode type bits set")
