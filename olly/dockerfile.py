"""Reading Dockerfiles: bytes in, instructions out, then a FROM/ARG view. Pure: no I/O.

The reader follows Docker's own parser (moby/buildkit ``frontend/dockerfile/parser``), so
olly sees the instructions the engine will see:

- parser directives (``# escape=``, ``# syntax=``, ``# check=``) count only at the top,
  before any other comment, blank line or instruction; ``escape`` is ``\\`` or a backtick;
- a line ending in the escape character (then only blanks) continues on the next line,
  joined without the newline; comment lines and empty lines inside a continuation are
  skipped; a comment is a line whose first non-blank character is ``#``;
- keywords are case-insensitive; a UTF-8 byte order mark at the start is ignored.

Each :class:`Instruction` keeps where its text came from (``spans``), so a word of it can be
rewritten in the original bytes without touching anything else (:func:`rewrite`): olly sends
``FROM python:3.14-slim@sha256:…`` for ``FROM python:3.14-slim`` and nothing else changes,
line numbers included. The FROM/ARG view (:func:`stages`, :func:`global_args`,
:func:`external_images`) is what ``olly.baselock`` needs; :func:`arguments` splits an
instruction into its ``--flags`` and words (JSON or shell form) for ``olly.reach``.

Heredocs (BuildKit's ``RUN <<EOF`` / ``COPY <<EOF /x``) are read as BuildKit's parser reads
them: after a RUN, COPY or ADD line (not in JSON form) holding a ``<<WORD`` word, the
following lines up to one equal to ``WORD`` (``<<-``: leading tabs ignored) are its body, not
instructions. The classic builder has no heredocs; it fails on such a file.
"""

from __future__ import annotations

import json
import re
from typing import Mapping, NamedTuple

_DIRECTIVE = re.compile(r"^#[ \t]*([a-zA-Z][a-zA-Z0-9]*)[ \t]*=[ \t]*(.+?)[ \t]*$")
_KNOWN_DIRECTIVES = {"escape", "syntax", "check"}
_WORD = re.compile(r"[^\t\v\f\r ]+")  # Docker splits FROM arguments at these blanks only
_NAME_CHAR = re.compile(r"[A-Za-z0-9_]")
BOM = "\ufeff"


class DockerfileError(ValueError):
    """A Dockerfile the engine would refuse to parse at all (e.g. a bad ``# escape=``)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


# The records below are NamedTuples (immutable, compared by value), not frozen dataclasses:
# a frozen dataclass costs ~0.5 ms to define, at every start of olly (these eight: ~4 ms of
# a 120 ms no-op run). Never compare one with a plain tuple.
class Span(NamedTuple):
    """``text[start:start + length]`` of an instruction is ``source[offset:offset + length]``."""

    start: int
    offset: int
    length: int


class Instruction(NamedTuple):
    keyword: str  # upper case, e.g. "FROM"
    text: str  # the logical line: continuations joined, comment lines dropped, leading blanks stripped
    line: int  # 1-based line of its first character
    end_line: int  # 1-based line where it ends (a heredoc body included)
    spans: tuple[Span, ...]
    heredocs: tuple[Heredoc, ...] = ()

    @property
    def args(self) -> str:
        """Everything after the keyword."""
        parts = self.text.strip().split(None, 1)
        return parts[1] if len(parts) > 1 else ""

    def words(self) -> list[tuple[int, str]]:
        """``(offset in text, word)`` of each blank-separated word after the keyword."""
        found = [(m.start(), m.group()) for m in _WORD.finditer(self.text)]
        return found[1:]


class Heredoc(NamedTuple):
    name: str  # the terminator word, quotes removed
    content: str  # the body, each line ending in "\n"
    terminated: bool  # False: the file ended first (BuildKit refuses that)


class Dockerfile(NamedTuple):
    source: str  # the bytes decoded as UTF-8 with surrogateescape (round-trips every byte)
    instructions: tuple[Instruction, ...]
    escape: str
    directives: dict[str, str]


_PARSED: dict[bytes, Dockerfile] = {}  # recent results: a plan parses each Dockerfile twice (reach, pins)


def parse(data: bytes) -> Dockerfile:
    """Split ``data`` into instructions the way Docker's parser does. The result is shared
    (the same bytes give the same object): it is immutable, never to be changed."""
    known = _PARSED.get(data)
    if known is not None:
        return known
    parsed = _parse(data)
    if len(_PARSED) >= 32:  # a plan asks for one Dockerfile twice in a row: a few suffice
        _PARSED.clear()
    _PARSED[data] = parsed
    return parsed


def _parse(data: bytes) -> Dockerfile:
    source = data.decode("utf-8", "surrogateescape")
    lines = _physical_lines(source)
    escape, directives = _directives(lines)
    continuation = re.compile(re.escape(escape) + r"[ \t]*$")
    out: list[Instruction] = []
    i = 0
    while i < len(lines):
        number, offset, content = lines[i]
        i += 1
        if _is_comment(content):
            continue
        stripped = content.lstrip()
        offset += len(content) - len(stripped)
        piece, done = _trim_continuation(stripped, continuation)
        if done and not piece:
            continue  # a blank line
        spans, text, end = [Span(0, offset, len(piece))], piece, number
        while not done and i < len(lines):
            end, offset, content = lines[i]
            i += 1
            if _is_comment(content) or not content.strip():
                continue  # Docker skips comment and empty lines inside a continuation
            piece, done = _trim_continuation(content, continuation)
            spans.append(Span(len(text), offset, len(piece)))
            text += piece
        keyword = text.strip().split(None, 1)[0].upper() if text.strip() else ""
        heredocs: list[Heredoc] = []
        for name, chomp in _heredoc_words(keyword, text):
            doc, i, end = _read_heredoc(lines, i, name, chomp, end)
            heredocs.append(doc)
        out.append(Instruction(keyword, text, number, end, tuple(spans), tuple(heredocs)))
    return Dockerfile(source, tuple(out), escape, directives)


_HEREDOC_KEYWORDS = {"RUN", "COPY", "ADD"}
HEREDOC_WORD = re.compile(r"^(\d*)<<(-?)([^<]*)$")  # BuildKit's reHeredoc


def _heredoc_words(keyword: str, text: str) -> list[tuple[str, bool]]:
    """``(name, chomp)`` of each ``<<NAME`` word of a RUN/COPY/ADD line, in order (BuildKit:
    words split as by its shell lexer with quotes kept; never in JSON form)."""
    if keyword not in _HEREDOC_KEYWORDS or "<<" not in text:
        return []
    _, rest = extract_flags(text.strip().split(None, 1)[1] if len(text.split()) > 1 else "")
    if _json_list(rest) is not None:
        return []
    out = []
    for word in _raw_words(text):
        match = HEREDOC_WORD.match(word)
        if match and match.group(3):
            name = re.sub(r"[\\'\"]", "", match.group(3))
            if name and not re.search(r"[\t\v\f\r ]", name):
                out.append((name, match.group(2) == "-"))
    return out


def _raw_words(text: str) -> list[str]:
    """Blank-separated words; blanks inside quotes or after a backslash kept, quotes kept."""
    words, word, quote, i = [], "", "", 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and quote != "'" and i + 1 < len(text):
            word, i = word + text[i:i + 2], i + 2
            continue
        if not quote and ch in " \t\v\f\r":
            words, word = words + ([word] if word else []), ""
        else:
            if ch in "'\"" and (not quote or quote == ch):
                quote = "" if quote else ch
            word += ch
        i += 1
    return words + ([word] if word else [])


def _read_heredoc(lines: list[tuple[int, int, str]], i: int, name: str, chomp: bool,
                  end: int) -> tuple[Heredoc, int, int]:
    """The body from physical line ``i`` to the line equal to ``name``: (heredoc, next line, end line)."""
    body = ""
    while i < len(lines):
        number, _, content = lines[i]
        i += 1
        if (content.lstrip("\t") if chomp else content) == name:
            return Heredoc(name, body, True), i, number
        body += content + "\n"
        end = number
    return Heredoc(name, body, False), i, end


def _physical_lines(source: str) -> list[tuple[int, int, str]]:
    """``(line number, offset, content)``: split at ``\\n``, a trailing ``\\r`` dropped (as Go's
    bufio.ScanLines does), a byte order mark at the very start skipped."""
    out = []
    offset = 1 if source.startswith(BOM) else 0
    for number, raw in enumerate(source[offset:].split("\n"), start=1):
        content = raw[:-1] if raw.endswith("\r") else raw
        out.append((number, offset, content))
        offset += len(raw) + 1
    if out and out[-1][2] == "" and source.endswith("\n"):
        out.pop()  # the empty "line" after the final newline
    return out


def _directives(lines: list[tuple[int, int, str]]) -> tuple[str, dict[str, str]]:
    """Parser directives at the top; the first line that is not one ends them."""
    found: dict[str, str] = {}
    for number, _, content in lines:
        match = _DIRECTIVE.match(content.lstrip())
        if not match or match.group(1).lower() not in _KNOWN_DIRECTIVES:
            break
        name, value = match.group(1).lower(), match.group(2)
        if name in found:
            raise DockerfileError(number, f"only one {name} parser directive can be used")
        if name == "escape" and value not in ("\\", "`"):
            raise DockerfileError(number, f"invalid escape token {value!r}: only \\ and ` are allowed")
        found[name] = value
    return found.get("escape", "\\"), found


def _is_comment(content: str) -> bool:
    return content.lstrip().startswith("#")


def _trim_continuation(content: str, continuation: re.Pattern[str]) -> tuple[str, bool]:
    """``(content without the continuation mark, True if the instruction ends here)``."""
    match = continuation.search(content)
    return (content[:match.start()], False) if match else (content, True)


# -- flags and words ---------------------------------------------------------------


def extract_flags(args: str) -> tuple[list[str], str]:
    """Leading ``--flag[=value]`` words (quotes removed, backslash escapes applied) and the
    rest of the line, as BuildKit's ``extractBuilderFlags`` splits every instruction; a bare
    ``--`` ends the flags."""
    flags: list[str] = []
    pos = 0
    while True:
        while pos < len(args) and args[pos].isspace():
            pos += 1
        if not args.startswith("--", pos):
            return flags, args[pos:]
        word, quote, blank_ok = "", "", False
        while pos < len(args) and (quote or not args[pos].isspace()):
            ch = args[pos]
            pos += 1
            if ch == quote:
                quote = ""
            elif not quote and ch in "'\"":
                quote, blank_ok = ch, True
            elif ch == "\\":
                if pos < len(args):
                    word, pos = word + args[pos], pos + 1
            else:
                word += ch
        if word == "--":
            return flags, args[pos:]
        if word or blank_ok:
            flags.append(word)


def _json_list(rest: str) -> list[str] | None:
    """The JSON form's strings (``["a", "b"]``), or None for the shell form."""
    rest = rest.lstrip()
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


class Arguments(NamedTuple):
    flags: tuple[tuple[str, str | None], ...]  # (name, value); value None for a bare ``--flag``
    words: tuple[str, ...]  # the JSON form's strings, or the blank-separated words
    json: bool


def arguments(inst: Instruction) -> Arguments:
    """An instruction's flags and words as Docker's parser splits them (shell-form words are
    split at blanks only, quotes and ``$`` left for :func:`expand`)."""
    flags, rest = extract_flags(inst.args)
    parsed = [(f[2:].partition("=")[0], f.partition("=")[2] if "=" in f else None) for f in flags]
    listed = _json_list(rest)
    if listed is not None:
        return Arguments(tuple(parsed), tuple(listed), True)
    return Arguments(tuple(parsed), tuple(_WORD.findall(rest)), False)


def rewrite(df: Dockerfile, edits: list[tuple[Instruction, int, int, str]]) -> bytes:
    """The source with each ``(instruction, start, end, new)`` applied: ``text[start:end]`` of
    that instruction becomes ``new``, in place. A word split over continuation lines gets the
    whole new text on its last line and its earlier parts removed, so no line becomes empty
    (Docker would skip an empty continuation line and join the next instruction)."""
    changes: list[tuple[int, int, str]] = []
    for inst, start, end, new in edits:
        parts = [(max(s.start, start), min(s.start + s.length, end), s) for s in inst.spans
                 if s.start < end and start < s.start + s.length]
        for n, (a, b, s) in enumerate(parts):
            text = new if n == len(parts) - 1 else ""
            changes.append((s.offset + a - s.start, s.offset + b - s.start, text))
    out = df.source
    for a, b, text in sorted(changes, reverse=True):
        out = out[:a] + text + out[b:]
    return out.encode("utf-8", "surrogateescape")


# -- the FROM / ARG view ------------------------------------------------------------


class From(NamedTuple):
    """One ``FROM [--platform=P] image [AS name]``."""

    instruction: Instruction
    image: str  # as written (may hold $VARS and quotes)
    image_start: int  # offset of ``image`` in the instruction's text
    stage: str | None  # the ``AS`` name, lower-cased (Docker matches stage names case-insensitively)
    platform: str | None  # the --platform flag as written

    @property
    def line(self) -> int:
        return self.instruction.line


class Arg(NamedTuple):
    line: int
    name: str
    default: str | None  # as written (unexpanded, quotes kept), None for ``ARG NAME``


def stages(df: Dockerfile) -> list[From]:
    """Every FROM, in order (malformed ones, without an image, are left to the engine)."""
    out = []
    for inst in df.instructions:
        if inst.keyword != "FROM":
            continue
        words = inst.words()
        flags: dict[str, str] = {}
        while words and words[0][1].startswith("--"):
            _, flag = words.pop(0)
            if flag == "--":
                break
            name, _, value = flag[2:].partition("=")
            flags[name.lower()] = value
        if not words:
            continue
        start, image = words[0]
        stage = words[2][1].lower() if len(words) == 3 and words[1][1].lower() == "as" else None
        out.append(From(inst, image, start, stage, flags.get("platform")))
    return out


def global_args(df: Dockerfile) -> list[Arg]:
    """The ARGs before the first FROM: the only ones a FROM line can use."""
    out = []
    for inst in df.instructions:
        if inst.keyword == "FROM":
            break
        if inst.keyword == "ARG":
            for word in _quoted_words(inst.args, df.escape):
                name, eq, default = word.partition("=")
                out.append(Arg(inst.line, name, default if eq else None))
    return out


def _quoted_words(text: str, escape: str) -> list[str]:
    """Blank-separated words, blanks inside quotes or after the escape character kept
    (Docker's parseWords for ARG/ENV): quotes and escapes stay in the word."""
    words, word, quote, i = [], "", "", 0
    while i < len(text):
        ch = text[i]
        if not quote and ch in " \t":
            if word:
                words.append(word)
            word, i = "", i + 1
            continue
        if ch == escape and i + 1 < len(text) and quote != "'":
            word, i = word + text[i:i + 2], i + 2
            continue
        if ch in "'\"" and (not quote or quote == ch):
            quote = "" if quote else ch
        word, i = word + ch, i + 1
    return words + ([word] if word else [])


# A variable that may not be resolved by olly: the whole word is then unresolved.
BLOCKED = object()


def expand(word: str, env: Mapping[str, object], escape: str = "\\") -> str | None:
    """``word`` after Docker's shell-word processing (quotes, escapes, ``$VAR``, ``${VAR}``,
    ``${VAR:-x}``, ``${VAR:+x}``, ``${VAR-x}``, ``${VAR+x}``), or None when it cannot be known
    here: a variable that is unset (Docker would substitute ""; olly does not guess), a
    ``BLOCKED`` variable, or syntax olly does not model. ``env`` maps a name to its value,
    ``None`` (declared without a value) or ``BLOCKED``."""
    try:
        text, rest = _Expander(word, env, escape).run(stop="")
    except _Unresolved:
        return None
    return text if not rest else None


class _Unresolved(Exception):
    pass


class _Expander:
    def __init__(self, word: str, env: Mapping[str, object], escape: str) -> None:
        self.s, self.i, self.env, self.escape = word, 0, env, escape

    def run(self, stop: str) -> tuple[str, str]:
        """Expand until ``stop`` (or the end); returns (text, what is left)."""
        out = ""
        while self.i < len(self.s) and self.s[self.i] != stop:
            ch = self.s[self.i]
            self.i += 1
            if ch == self.escape:
                if self.i < len(self.s):
                    out += self.s[self.i]
                    self.i += 1
            elif ch == "'":
                out += self._until("'")
            elif ch == '"':
                out += self._double()
            elif ch == "$":
                out += self._dollar()
            else:
                out += ch
        return out, self.s[self.i:]

    def _until(self, quote: str) -> str:
        end = self.s.find(quote, self.i)
        if end < 0:
            raise _Unresolved
        text, self.i = self.s[self.i:end], end + 1
        return text

    def _double(self) -> str:
        out = ""
        while self.i < len(self.s) and self.s[self.i] != '"':
            ch = self.s[self.i]
            self.i += 1
            if ch == self.escape and self.i < len(self.s) and self.s[self.i] in ('"', "$", self.escape):
                out += self.s[self.i]
                self.i += 1
            elif ch == "$":
                out += self._dollar()
            else:
                out += ch
        if self.i >= len(self.s):
            raise _Unresolved  # unterminated quote: the engine will complain, not olly
        self.i += 1
        return out

    def _dollar(self) -> str:
        if self.i < len(self.s) and self.s[self.i] == "{":
            self.i += 1
            return self._braced()
        name = self._name()
        return self._value(name) if name else "$"

    def _name(self) -> str:
        start = self.i
        while self.i < len(self.s) and _NAME_CHAR.match(self.s[self.i]):
            self.i += 1
        return self.s[start:self.i]

    def _braced(self) -> str:
        name = self._name()
        if not name or self.i >= len(self.s):
            raise _Unresolved
        op = self.s[self.i]
        if op == "}":
            self.i += 1
            return self._value(name)
        if op == ":" and self.s[self.i + 1:self.i + 2] in ("-", "+"):
            op, self.i = self.s[self.i:self.i + 2], self.i + 2
        elif op in "-+":
            self.i += 1
        else:
            raise _Unresolved  # ${VAR?x}, ${VAR#x}, ...: not modelled
        word, _ = self.run(stop="}")
        if self.i >= len(self.s):
            raise _Unresolved
        self.i += 1
        return self._operator(name, op, word)

    def _operator(self, name: str, op: str, word: str) -> str:
        value = self.env.get(name)
        if value is BLOCKED:
            raise _Unresolved
        is_set, non_empty = value is not None, bool(value)
        if op == ":-":
            return str(value) if non_empty else word
        if op == "-":
            return str(value) if is_set else word
        if op == ":+":
            return word if non_empty else ""
        return word if is_set else ""  # "+"

    def _value(self, name: str) -> str:
        value = self.env.get(name)
        if value is None or value is BLOCKED:
            raise _Unresolved
        return str(value)


class ImageRef(NamedTuple):
    """An external image a FROM names, after ARG substitution."""

    stage: From
    reference: str  # e.g. "python:3.14-slim", as the engine will resolve it
    platform: str | None  # the FROM's --platform after substitution (None: none, or unknown)

    @property
    def line(self) -> int:
        return self.stage.line


def arg_env(df: Dockerfile, build_args: Mapping[str, str], blocked: set[str]) -> dict[str, object]:
    """What a FROM line can substitute: the global ARGs, each with its BUILD.toml value or
    else its default (itself expanded with the ARGs before it); ``blocked`` names (olly's own
    dependency and secret args) are ``BLOCKED``."""
    env: dict[str, object] = {}
    for arg in global_args(df):
        if arg.name in blocked:
            env[arg.name] = BLOCKED
        elif arg.name in build_args:
            env[arg.name] = build_args[arg.name]
        elif arg.default is not None:
            env[arg.name] = expand(arg.default, env, df.escape)  # None if it cannot be resolved
        else:
            env.setdefault(arg.name, None)
    return env


def external_images(df: Dockerfile, build_args: Mapping[str, str], blocked: set[str]) -> list[ImageRef]:
    """The images the FROM lines pull: not ``scratch``, not an earlier stage, not a reference
    that uses a ``blocked`` variable or cannot be resolved (still holding ``$``)."""
    env = arg_env(df, build_args, blocked)
    seen_stages: set[str] = set()
    out = []
    for stage in stages(df):
        ref = expand(stage.image, env, df.escape)
        if ref and "$" not in ref and ref.lower() != "scratch" and ref.lower() not in seen_stages:
            platform = expand(stage.platform, env, df.escape) if stage.platform else None
            out.append(ImageRef(stage, ref, platform))
        if stage.stage:
            seen_stages.add(stage.stage)
    return out
