"""Which paths of the build context an image can depend on, read from its Dockerfile.

An image depends on the context only through what its Dockerfile copies: ``COPY``/``ADD``
sources (without ``--from``), ``RUN --mount=type=bind`` sources (default ``.``: everything),
and the ONBUILD triggers of the images its stages start from. :func:`analyze` finds those
sources for the stages the chosen target reaches (through ``FROM <stage>``, ``COPY --from``
and ``RUN --mount=…,from=``), substituting ``ARG``/``ENV`` values as Docker does: build args
from BUILD.toml (and the platform args olly passes), ARG defaults, ENV, per stage.

What it cannot prove makes the whole context an input, with the reason (``whole``): a
Dockerfile that does not parse, an unknown instruction or flag, a source or base whose
variables olly cannot resolve, an ONBUILD trigger in a base (a stage of the file, an olly
dependency's Dockerfile, or an image whose config the engine holds). A base image the
engine does not hold cannot be checked: it is taken to have no triggers, and the result
says so (``notes``); the next plan, once the engine has pulled it, checks it.

Stages the target does not reach cannot change its image, but the classic builder still
runs every stage up to the target: their sources are sent (so the build does not fail) but
not keyed (``Source.keyed`` False). Stages after the target are never run.

Patterns are read as a superset of both builders: ``**`` may span directories (BuildKit),
``--exclude`` is not subtracted, ``..`` is clamped at the context root. Pure: no I/O except
through ``probe``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Callable, Mapping, NamedTuple

from olly import dockerfile as d
from olly.dockerfile import BLOCKED, Dockerfile, Instruction, arguments, expand

# A base image reference -> its ONBUILD triggers ([] none), or None when it cannot be checked.
Probe = Callable[[str], "list[str] | None"]

KNOWN = {"FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
         "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}
FLAGS = {  # the flags each instruction may carry (BuildKit's; the classic builder knows fewer and fails on the rest)
    "FROM": {"platform"},
    "COPY": {"from", "chown", "chmod", "link", "parents", "exclude"},
    "ADD": {"chown", "chmod", "link", "checksum", "keep-git-dir", "exclude", "unpack"},
    "RUN": {"mount", "network", "security"},
    "HEALTHCHECK": {"interval", "timeout", "start-period", "start-interval", "retries"},
}
_REMOTE = re.compile(r"^https?://")  # ADD downloads these: the network, not the context


class Source(NamedTuple):  # not a frozen dataclass: ~0.5 ms less at every start
    path: str  # context-relative, cleaned; "" is the whole context
    glob: bool  # a COPY wildcard (Go filepath.Match per segment; ``**`` may span segments)
    line: int  # the Dockerfile line of the instruction
    keyed: bool = True  # False: sent for a stage the classic builder runs but the target does not use


@dataclass
class Reach:
    sources: list[Source] = field(default_factory=list)
    whole: str | None = None  # why the whole context is keyed; None: only what ``sources`` reach
    notes: list[str] = field(default_factory=list)

    @property
    def everything(self) -> list[int]:
        """Lines whose (keyed) source is the whole context: ``COPY . .``, a bind mount of ``.``."""
        return [s.line for s in self.sources if s.keyed and not s.path and not s.glob]


class _Whole(Exception):
    """The whole file is unreadable to olly (e.g. an unknown instruction)."""


class _Env(dict):
    """Variables of a stage: a name olly has no value for is unknown (BLOCKED), never "":
    the base image's ENV or the builder's defaults could set it."""

    def get(self, key: object, default: object = None) -> object:
        return super().get(key, BLOCKED)


@dataclass
class _Stage:
    index: int
    line: int
    name: str | None
    base: str  # "scratch" | "stage" | "image" (an external one or an olly dependency) | "unknown"
    ref: str  # the expanded FROM reference
    parent: int | None = None  # base stage index
    env: dict[str, object] = field(default_factory=dict)  # ENV (inherited from a base stage)
    args: dict[str, object] = field(default_factory=dict)  # ARGs declared in this stage
    uses: set[int] = field(default_factory=set)  # stages it copies or mounts from
    refs: list[str] = field(default_factory=list)  # --from / from= values, resolved once all stages are read
    any_stage: bool = False  # an unresolved --from: it may use any stage
    sources: list[tuple[str, bool, int]] = field(default_factory=list)
    whole: str | None = None  # the first thing in it olly cannot read
    onbuild: int | None = None  # line of its first ONBUILD

    def variables(self) -> _Env:
        return _Env({**self.args, **self.env})  # ENV wins over ARG, as in Docker

    def give_up(self, reason: str) -> None:
        self.whole = self.whole or reason


def analyze(data: bytes, *, target: str | None, args: Mapping[str, str], blocked: set[str],
            deps: Mapping[str, tuple[str, bytes]], probe: Probe) -> Reach:
    """The context paths an image built from ``data`` can depend on. ``args``: the build args
    the engine gets (BUILD.toml's, the platform args, each dependency's image reference);
    ``blocked``: names whose values olly must not use (secrets); ``deps``: dependency image
    reference -> (label, its Dockerfile) for ``FROM ${DEP}``; ``probe``: ONBUILD of an image."""
    try:
        df = d.parse(data)
        stages = _read(df, args, blocked)
    except d.DockerfileError as exc:
        return Reach(whole=f"the Dockerfile does not parse (line {exc.line}: {exc.message})")
    except _Whole as exc:
        return Reach(whole=str(exc))
    if not stages:
        return Reach(whole="the Dockerfile has no FROM")
    chosen = _target(stages, target)
    if chosen is None:
        return Reach(whole=f"the Dockerfile has no stage named {target!r}")
    reached = _reachable(stages, chosen)
    out = Reach()
    for s in stages:
        keyed = s.index in reached
        if not keyed and s.index > chosen:
            continue  # after the target and unused: no builder runs it
        # Not keyed: the classic builder runs it (each stage up to the target) but the target
        # does not use it, so it is sent (the build must not fail) and cannot change the image.
        problem = s.whole or _onbuild(s, stages, deps, probe, out.notes if keyed else [])
        if problem and keyed:
            return Reach(whole=problem, notes=out.notes)
        if problem:
            out.sources.append(Source("", False, s.line, keyed=False))
            continue
        out.sources += [Source(path, glob, line, keyed) for path, glob, line in s.sources]
    out.sources.sort(key=lambda src: (src.line, not src.keyed))
    return out


def _read(df: Dockerfile, args: Mapping[str, str], blocked: set[str]) -> list[_Stage]:
    syntax = df.directives.get("syntax", "docker/dockerfile")
    if not re.match(r"^(docker\.io/)?docker/dockerfile(:|@|$)", syntax):
        raise _Whole(f"# syntax={syntax} names another frontend, whose rules olly does not know")
    meta = d.arg_env(df, args, blocked)  # what FROM lines see
    stages: list[_Stage] = []
    for inst in df.instructions:
        if inst.keyword not in KNOWN:
            raise _Whole(f"unknown instruction {inst.keyword} (line {inst.line})")
        for doc in inst.heredocs:
            # Unterminated, BuildKit refuses it; a keyword as terminator could read as an
            # instruction to a parser without heredocs (the classic builder's).
            if not doc.terminated or doc.name.upper() in KNOWN:
                raise _Whole(f"heredoc <<{doc.name} cannot be read safely (line {inst.line})")
        if inst.keyword == "FROM":
            stages.append(_from(inst, stages, meta, df.escape))
        elif not stages:
            if inst.keyword != "ARG":
                raise _Whole(f"{inst.keyword} before the first FROM (line {inst.line})")
        else:
            _instruction(stages[-1], inst, args, blocked, meta, df.escape)
    for stage in stages:  # BuildKit resolves --from names across the whole file
        for value in stage.refs:
            named = [s.index for s in stages if s.name == value.lower()]
            if named:
                stage.uses.add(named[0])
            elif value.isdigit() and int(value) < len(stages):
                stage.uses.add(int(value))
    return stages


def _from(inst: Instruction, stages: list[_Stage], meta: Mapping[str, object], escape: str) -> _Stage:
    a = arguments(inst)
    words = list(a.words)
    name = words[2].lower() if len(words) == 3 and words[1].lower() == "as" else None
    stage = _Stage(len(stages), inst.line, name, "unknown", words[0] if words else "")
    unknown = [f for f, _ in a.flags if f not in FLAGS["FROM"]]
    if unknown or len(words) not in (1, 3):
        stage.give_up(f"FROM cannot be read (line {inst.line})")
        return stage
    ref = expand(words[0], meta, escape)
    if ref is None:
        stage.give_up(f"FROM {words[0]} cannot be resolved (line {inst.line})")
        stage.any_stage = True  # it could name any earlier stage
        return stage
    stage.ref = ref
    earlier = [s for s in stages if s.name == ref.lower()]
    if ref.lower() == "scratch":
        stage.base = "scratch"
    elif earlier:
        stage.base, stage.parent, stage.env = "stage", earlier[0].index, dict(earlier[0].env)
    else:
        stage.base = "image"  # or an olly dependency: told apart by _onbuild
    return stage


def _instruction(stage: _Stage, inst: Instruction, args: Mapping[str, str], blocked: set[str],
                 meta: Mapping[str, object], escape: str) -> None:
    kw = inst.keyword
    if kw == "ARG":
        _arg(stage, inst, args, blocked, meta, escape)
    elif kw == "ENV":
        _env(stage, inst, escape)
    elif kw == "ONBUILD":
        stage.onbuild = stage.onbuild or inst.line
    elif kw in FLAGS:
        a = arguments(inst)
        unknown = [f for f, _ in a.flags if f not in FLAGS[kw]]
        if unknown:
            stage.give_up(f"unknown flag --{unknown[0]} on {kw} (line {inst.line})")
        elif kw in ("COPY", "ADD"):
            _copy(stage, inst, a, escape)
        elif kw == "RUN":
            for flag, value in a.flags:
                if flag == "mount":
                    _mount(stage, inst, value or "", escape)


def _arg(stage: _Stage, inst: Instruction, args: Mapping[str, str], blocked: set[str],
         meta: Mapping[str, object], escape: str) -> None:
    """``ARG NAME[=default]``: the build arg if given, else the default (expanded now), else
    the global ARG's value; otherwise unset (unknown to olly)."""
    for word in d._quoted_words(inst.args, escape):
        name, eq, default = word.partition("=")
        if name in blocked:
            stage.args[name] = BLOCKED
        elif name in args:
            stage.args[name] = args[name]
        elif eq:
            value = expand(default, stage.variables(), escape)
            stage.args[name] = BLOCKED if value is None else value
        elif isinstance(meta.get(name), str):
            stage.args[name] = meta[name]
        else:
            stage.args.pop(name, None)


def _env(stage: _Stage, inst: Instruction, escape: str) -> None:
    """``ENV a=1 b=$a`` (every value expanded with the variables before this line) or the
    legacy ``ENV name value with blanks``."""
    words = d._quoted_words(inst.args, escape)
    if not words:
        return
    before = stage.variables()
    if "=" not in words[0]:
        parts = re.split(r"[\t\v\f\r ]+", inst.args.strip(), maxsplit=1)
        pairs = [(parts[0], parts[1] if len(parts) > 1 else "")]
    else:
        pairs = [(w.partition("=")[0], w.partition("=")[2]) for w in words]
    for name, raw in pairs:
        value = expand(raw, before, escape)
        stage.env[name] = BLOCKED if value is None else value


def _stage_ref(stage: _Stage, raw: str, escape: str) -> None:
    """``--from=`` / ``from=``: a stage (by name or index) it uses, or an image. BuildKit
    expands variables there; unresolved, it may be any stage."""
    value = expand(raw, stage.variables(), escape) if "$" in raw else raw
    if value is None:
        stage.any_stage = True
    else:
        stage.refs.append(value)


def _copy(stage: _Stage, inst: Instruction, a: d.Arguments, escape: str) -> None:
    kw, flags = inst.keyword, dict(a.flags)
    if len(a.words) < 2:
        stage.give_up(f"{kw} without a source and a destination (line {inst.line})")
        return
    if "from" in flags:
        _stage_ref(stage, flags["from"] or "", escape)
        return
    inline = {h.name for h in inst.heredocs}
    for word in a.words[:-1]:
        here = d.HEREDOC_WORD.match(word)
        if here and re.sub(r"[\\'\"]", "", here.group(3)) in inline:
            continue  # the heredoc's body: no file of the context
        value = expand(word, stage.variables(), escape)
        if value is None:
            stage.give_up(f"{kw} source {word} cannot be resolved (line {inst.line})")
            continue
        if kw == "ADD" and _REMOTE.match(value):
            continue  # a download: the network, which no key covers (like RUN)
        if "parents" in flags:
            value = value.replace("/./", "/")  # the --parents pivot only shapes the destination
        glob = contains_wildcards(value)
        stage.sources.append((clean(value), glob, inst.line))


def _mount(stage: _Stage, inst: Instruction, spec: str, escape: str) -> None:
    """``RUN --mount=type=bind,source=x,target=/y`` reads ``x`` of the context (default ``.``);
    ``from=`` (bind or cache) reads a stage or an image instead."""
    fields = dict((f.partition("=")[0].lower(), f.partition("=")[2]) for f in _csv(spec))
    kind = fields.get("type", "bind")
    if kind not in ("bind", "cache", "secret", "ssh", "tmpfs"):
        stage.give_up(f"RUN --mount type {kind!r} is unknown (line {inst.line})")
    elif "from" in fields and kind in ("bind", "cache"):
        _stage_ref(stage, fields["from"], escape)
    elif kind == "bind":
        raw = fields.get("source", fields.get("src", "."))
        value = expand(raw, stage.variables(), escape) if "$" in raw else raw
        if value is None:
            stage.give_up(f"RUN --mount source {raw} cannot be resolved (line {inst.line})")
        else:
            stage.sources.append((clean(value), False, inst.line))


def _csv(spec: str) -> list[str]:
    """Comma-separated fields, double quotes grouping (Go's encoding/csv, as BuildKit reads them)."""
    out, field, quoted = [], "", False
    for ch in spec:
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            out, field = out + [field], ""
        else:
            field += ch
    return [f.strip() for f in out + [field] if f.strip()]


def contains_wildcards(path: str) -> bool:
    """Docker's containsWildcards: ``*``, ``?`` or ``[`` not escaped by a backslash."""
    i = 0
    while i < len(path):
        if path[i] == "\\":
            i += 2
            continue
        if path[i] in "*?[":
            return True
        i += 1
    return False


def clean(path: str) -> str:
    """A source path as the builders resolve it in the context: ``/`` and ``./`` prefixes
    dropped, ``.`` and ``..`` resolved with ``..`` clamped at the root (BuildKit; the classic
    builder refuses such a path), no trailing ``/``; ``""`` is the context root."""
    parts: list[str] = []
    for seg in path.split("/"):
        if seg == "..":
            if parts:
                parts.pop()
        elif seg not in ("", "."):
            parts.append(seg)
    return "/".join(parts)


def _target(stages: list[_Stage], target: str | None) -> int | None:
    if not target:
        return len(stages) - 1
    named = [s.index for s in stages if s.name == target.lower()]
    return named[0] if named else None


def _reachable(stages: list[_Stage], chosen: int) -> set[int]:
    seen, todo = set(), [chosen]
    while todo:
        i = todo.pop()
        if i in seen:
            continue
        seen.add(i)
        s = stages[i]
        todo += list(s.uses) + ([s.parent] if s.parent is not None else [])
        if s.any_stage:
            todo += [t.index for t in stages if t.index != i]
    return seen


def _onbuild(s: _Stage, stages: list[_Stage], deps: Mapping[str, tuple[str, bytes]], probe: Probe,
             notes: list[str]) -> str | None:
    """Why ``s`` may run ONBUILD triggers olly cannot see, or None."""
    if s.base == "stage" and s.parent is not None and stages[s.parent].onbuild:
        parent = stages[s.parent]
        return f"ONBUILD in stage {parent.name} (line {parent.onbuild})"
    if s.base != "image":
        return None
    if s.ref in deps:
        label, data = deps[s.ref]
        return f"ONBUILD in {label}" if _has_onbuild(data) else None
    triggers = probe(s.ref)
    if triggers is None:
        notes.append(f"ONBUILD triggers of {s.ref} not checked: the engine does not hold it")
        return None
    return f"ONBUILD in {s.ref}" if triggers else None


@functools.lru_cache(maxsize=256)
def _has_onbuild(data: bytes) -> bool:
    """Whether a dependency's Dockerfile has an ONBUILD (or does not parse: then assume one).
    Remembered by content: with thousands of images on a few bases, each base is parsed once."""
    try:
        return any(i.keyword == "ONBUILD" for i in d.parse(data).instructions)
    except d.DockerfileError:
        return True


# -- wiring: what compute_inputs hands the analysis ---------------------------------------


def analyzer(*, target: str | None, args: Mapping[str, str], secrets: set[str], platform: str,
             deps: Mapping[str, tuple[str, str, bytes]], pins: Mapping[str, str],
             engine: object = None) -> Callable[[bytes], Reach]:
    """``analyze`` for one target: ``deps`` maps each dependency's build-arg name to (its image
    reference, its label, its Dockerfile); the platform args olly passes are added. Base
    images are checked for ONBUILD in ``engine`` (the one building this platform), else in
    the local engine (olly.basecheck)."""
    from olly import basecheck
    from olly.jobs import platform_args  # what the classic builder receives for TARGETARCH & co

    def run(data: bytes) -> Reach:
        values = {**platform_args(data, platform), **args, **{name: ref for name, (ref, _, _) in deps.items()}}
        by_ref = {ref: (label, df) for ref, label, df in deps.values()}
        return analyze(data, target=target, args=values, blocked=set(secrets), deps=by_ref,
                       probe=basecheck.probe_for(pins, engine))

    return run


def manifest_fields(result: Reach | None, via: Mapping[str, list[int]] | None, files: list[list[object]],
                    dockerfile: str) -> dict[str, object]:
    """What ``olly inputs`` and ``olly why`` show about the selection (never keyed): ``reach``
    (the Dockerfile; why the whole context is keyed if olly cannot prove less; the lines that
    copy all of it, ``COPY . .``; notes) and, when only part of the context is keyed, ``via``,
    parallel to ``files``: the Dockerfile lines reaching each row ([] for a parent directory)."""
    if result is None:
        return {}
    info = {"dockerfile": dockerfile, "whole": result.whole, "everything": [], "notes": list(result.notes)}
    if result.whole is None:
        info["everything"] = result.everything  # every entry is reached by these lines: no `via`
    out: dict[str, object] = {"reach": info}
    if via is not None:
        out["via"] = [via.get(str(row[0]), []) for row in files]
    return out
