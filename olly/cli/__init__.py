"""The command line: parses options, calls one core function, prints, exits.

Only this package imports click. OllyError becomes one line on stderr and its
documented exit code; a traceback is shown only with --debug.
"""

from __future__ import annotations

import atexit
import gc as _gc  # `gc` is the name of a command below
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click

from olly.errors import EXIT_ENVIRONMENT, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_TARGET_FAILED, EXIT_USAGE, OllyError
from olly.scrub import scrub

if TYPE_CHECKING:
    from olly.plan import TargetPlan


class _Lazy:
    """A module imported on first use: `olly --help` and completion need none of the core
    (pydantic, the docker SDK, sqlite-utils), only the command that runs does."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        import importlib

        return getattr(importlib.import_module(self._name), attr)


api: Any = _Lazy("olly.api")
report: Any = _Lazy("olly.report")


def find_workspace(start: Path) -> Path:
    from olly.config import find_workspace as find

    return find(start)


def structured(line: str) -> dict[str, Any]:
    from olly.manifest import structured as convert

    return convert(line)


def _echo(text: str = "", err: bool = False) -> None:
    """click.echo that survives a closed pipe (`olly make | head`): olly keeps working,
    it just stops printing to the reader that went away."""
    stream = sys.stderr if err else sys.stdout
    try:
        click.echo(scrub(text), err=err)  # no secret build arg reaches the terminal or JSON
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


def _stop_helpers() -> None:
    """A walk helper no plan claimed (the command failed before planning) ends with it."""
    walkhelper = sys.modules.get("olly.walkhelper")
    if walkhelper is not None:
        walkhelper.stop()


def _prefetch_engine(directory: str | None = None) -> None:
    """Ask the engine what it is now, on a thread: it answers while olly's modules load; and
    start the walk helper (olly.walkhelper) for the workspace, if its cache holds walks."""
    from olly import walkhelper, watchsync
    from olly.enginehttp import prefetch_version

    prefetch_version()
    watched = watchsync.early(directory)  # before the helper starts: every walk of this command comes after it
    walkhelper.start(directory, watched=watched is not None and len(watched.changes) < WATCHED_CHANGES)


WATCHED_CHANGES = 1000  # changed paths a watcher may report for a plan to go without the walk helper


class _State:
    def __init__(self, debug: bool, directory: str | None) -> None:
        self.debug = debug
        self.directory = directory

    def root(self) -> Path:
        if self.directory and not Path(self.directory).is_dir():
            raise OllyError("usage", f"-C {self.directory}: no such directory")
        return find_workspace(Path(self.directory or os.getcwd()))


def _print_traceback() -> None:
    import traceback  # --debug only: 1.3 ms (linecache, tokenize) every run would pay otherwise

    traceback.print_exc()


def _run(ctx: click.Context, fn: Callable[[], int | None]) -> None:
    state: _State = ctx.obj
    try:
        code = fn() or 0
    except OllyError as exc:
        if state.debug:
            _print_traceback()
        _echo(f"olly: error: {exc.line()}", err=True)
        if _wants_json(ctx):  # a tool reading stdout gets the failure in its own format too
            _emit_json({"schema": JSON_SCHEMA, "error": {"reason": exc.reason, "message": exc.line(),
                                                         "exit_code": exc.exit_code}})
        code = exc.exit_code
    except Exception as exc:  # a bug, not a user error: say so, keep the traceback for --debug
        if state.debug:
            _print_traceback()
        _echo(f"olly: internal error: {type(exc).__name__}: {exc} (run with --debug for a traceback)", err=True)
        code = EXIT_INTERNAL
    except KeyboardInterrupt:
        _stop_helpers()
        _echo("olly: interrupted; nothing half-done was recorded", err=True)
        sys.stdout.flush()
        sys.stderr.flush()
        # Build threads may be blocked streaming to the engine; do not wait for them.
        # Every cache write is a committed transaction, so exiting here is safe.
        os._exit(EXIT_INTERRUPTED)
    _stop_helpers()
    ctx.exit(code)


JSON_SCHEMA = 1  # of every --json document (docs/json.md); bumped when a shape changes incompatibly


def _wants_json(ctx: click.Context) -> bool:
    params = ctx.params
    return bool(params.get("as_json")) or params.get("fmt") == "json" or params.get("progress_mode") == "json"


def _duration(text: str) -> float:
    """``90s``, ``30m``, ``1h`` or plain seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        return float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)
    except ValueError:
        raise OllyError("usage", f"--wait {text!r}: expected a duration like 90s, 30m or 1h") from None


def _routes(pairs: tuple[str, ...]) -> dict[str, str]:
    """``linux/arm64=ssh://arm-builder`` pairs."""
    out = {}
    for pair in pairs:
        platform, sep, url = pair.partition("=")
        if not sep:
            raise OllyError("usage", f"--engine {pair!r}: expected PLATFORM=URL, e.g. linux/arm64=ssh://arm-builder")
        out[platform] = url
    return out


def _emit_json(data: Any) -> None:
    """Every --json document is an object carrying ``schema`` (docs/json.md)."""
    if isinstance(data, dict) and "schema" not in data:
        data = {"schema": JSON_SCHEMA, **data}
    _echo(json.dumps(data, indent=2, sort_keys=True))


# -- shell completion (`eval "$(_OLLY_COMPLETE=bash_source olly)"`) ------------------------


def _completion_start(ctx: click.Context) -> Path:
    """Where the workspace is looked for: -C if typed on the line, else the current directory.
    While completing, no command runs (ctx.obj is unset): read -C from the parsed root."""
    directory = ctx.find_root().params.get("directory")
    return Path(directory or os.getcwd())


def _pattern_words(labels: list[str]) -> list[str]:
    """The labels, ``...`` and a ``<dir>/...`` pattern for every directory above a label."""
    dirs = {label.rsplit("/", n)[0] for label in labels for n in range(1, label.count("/") + 1)}
    return sorted(set(labels)) + ["..."] + sorted(f"{d}/..." for d in dirs) if labels else []


def _completer(kinds: tuple[str, ...], patterns: bool) -> Callable[..., list[Any]]:
    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
        from click.shell_completion import CompletionItem

        words = api.completion_words(_completion_start(ctx))
        found = [w for kind in kinds for w in words[kind]]
        return [CompletionItem(w) for w in (_pattern_words(found) if patterns else sorted(found))
                if w.startswith(incomplete)]

    return complete


_complete_patterns = _completer(("images", "charts"), patterns=True)  # make, plan, graph, gc
_complete_targets = _completer(("images", "charts"), patterns=False)  # why, inputs: one target
_complete_images = _completer(("images",), patterns=False)  # make --force (rebuilds images)
_complete_registries = _completer(("registries",), patterns=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.option("-C", "--workspace", "directory", metavar="DIR", help="Workspace directory (default: nearest BUILD.toml upwards).")
@click.version_option(package_name="olly")
@click.pass_context
def cli(ctx: click.Context, debug: bool, directory: str | None) -> None:
    """olly: never build what did not change, never miss what did."""
    ctx.obj = _State(debug, directory)


@cli.command(short_help="Build TARGETS and what they need; skip what is up to date.")
@click.argument("targets", nargs=-1, shell_complete=_complete_patterns)
@click.option("-j", "--jobs", type=click.IntRange(min=1), help="Parallel builds (default: twice the CPU count, at least 4).")
@click.option("-k", "--keep-going", is_flag=True, help="Continue with independent targets after a failure.")
@click.option("--network", help="Network for RUN steps (e.g. host, none); overrides BUILD.toml.")
@click.option("--builder", type=click.Choice(["auto", "buildkit", "classic"]),
              help="Builder for every image; overrides BUILD.toml (default: auto, BuildKit where the engine has it). Keyed.")
@click.option("--registry", metavar="NAME", shell_complete=_complete_registries,
              help="Registry from BUILD.toml: remote cache, chart pins (no push without --push).")
@click.option("--push", is_flag=True, help="Push images and charts to --registry.")
@click.option("--version", "version", metavar="VERSION", help="Release version (default: git describe --tags --always --dirty).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON document.")
@click.option("--progress", "progress_mode", type=click.Choice(["auto", "tty", "plain", "json"]), default="auto",
              show_default=True, help="Live view (tty), lines for CI logs (plain), or one JSON event per line.")
@click.option("-q", "--quiet", is_flag=True, help="Print only failures and the summary.")
@click.option("-v", "--verbose", is_flag=True, help="Stream the build logs.")
@click.option("--force", "force", multiple=True, metavar="TARGET", shell_complete=_complete_images,
              help="Rebuild TARGET even if its key is known (repeatable; for RUN steps that fetch unpinned things).")
@click.option("--pull", is_flag=True, help="Ask the engine to refresh base images while building.")
@click.option("--shard", metavar="I/N", help="Build only shard I of N (needs --registry and --push; see README Scaling out).")
@click.option("--shard-plan", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="FILE",
              help="Take the shard assignment from `olly plan --shards N --json` output.")
@click.option("--engine", "engine_routes", multiple=True, metavar="PLATFORM=URL",
              help="Build PLATFORM on the engine at URL (tcp://, ssh://, unix://); beats BUILD.toml [engines].")
@click.option("--wait", "wait", default="30m", show_default=True, metavar="DURATION",
              help="With --shard: how long to wait for another shard's image (e.g. 90s, 30m, 1h).")
@click.pass_context
def make(ctx: click.Context, targets: tuple[str, ...], jobs: int | None, keep_going: bool, network: str | None,
         registry: str | None, push: bool, version: str | None, as_json: bool, progress_mode: str, quiet: bool,
         verbose: bool, force: tuple[str, ...], pull: bool, shard: str | None, shard_plan: Path | None,
         engine_routes: tuple[str, ...], wait: str, builder: str | None) -> None:
    """Build TARGETS (default: all) and what they need, skipping what is up to date."""
    _prefetch_engine(ctx.obj.directory)
    from olly.cli import progress

    mode = "silent" if as_json else progress.choose(progress_mode, quiet)
    render = progress.renderer(mode, _echo, verbose)

    def run() -> int:
        say = lambda msg: _echo(f"olly: {msg}", err=True)  # noqa: E731
        try:
            result = api.make(ctx.obj.root(), list(targets), jobs=jobs, keep_going=keep_going, network=network,
                              registry=registry, push=push, version=version, say=say, on_event=render,
                              force=list(force), pull=pull, command=" ".join(["olly", *sys.argv[1:]]),
                              shard=shard, shard_plan=shard_plan, wait_s=_duration(wait),
                              engines=_routes(engine_routes), builder=builder)
        finally:
            render.close()
        if as_json:
            _emit_json(report.outcomes_json(result.outcomes, result.elapsed_s))
        elif mode != "json":
            _echo(report.summary_line(result.outcomes, result.elapsed_s))
        return report.exit_code(result.outcomes)

    _run(ctx, run)


@cli.command("log")
@click.option("-n", "limit", type=click.IntRange(min=1), default=10, show_default=True, help="How many runs.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def log_cmd(ctx: click.Context, limit: int, as_json: bool) -> None:
    """Recent `olly make` runs: when, the command, what they built."""

    def run() -> None:
        runs = api.runs(ctx.obj.root(), limit)
        if as_json:
            _emit_json({"runs": [r.__dict__ for r in runs]})
            return
        for r in runs:
            counts = ", ".join(f"{n} {s}" for s, n in sorted(r.counts.items()))
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started))
            _echo(f"#{r.id:<4} {when}  {r.ended - r.started:6.1f}s  exit {r.exit_code}  {counts or 'no targets'}  {r.command}")
        if not runs:
            _echo("no runs recorded yet in this workspace")

    _run(ctx, run)


@cli.command()
@click.option("--runs", "last", type=click.IntRange(min=1), default=20, show_default=True, help="Over the last N runs.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def stats(ctx: click.Context, last: int, as_json: bool) -> None:
    """Cache hit rates and the slowest targets over recent runs."""

    def run() -> None:
        data = api.stats(ctx.obj.root(), last)
        if as_json:
            _emit_json(data)
            return
        _echo(f"over the last {data['runs']} run(s); results came from: "
              + (", ".join(f"{s} {n}" for s, n in sorted(data["sources"].items())) or "nothing yet"))
        for t in data["targets"]:
            slow = f"slowest build {t['slowest_build_s']:.1f}s, mean {t['mean_build_s']:.1f}s" if t["slowest_build_s"] else "never built"
            _echo(f"{t['target']:<30} hit rate {t['hit_rate'] * 100:5.1f}%  built {t['built']:>3}  cached {t['cached']:>3}  "
                  f"failed {t['failed']:>3}  {slow}")

    _run(ctx, run)


@cli.command()
@click.argument("targets", nargs=-1, shell_complete=_complete_patterns)
@click.option("--registry", metavar="NAME", shell_complete=_complete_registries,
              help="Also check which images that registry already holds.")
@click.option("--version", "version", metavar="VERSION", help="Release version, as for make.")
@click.option("--shards", type=click.IntRange(min=1), metavar="N", help="Also show how `make --shard I/N` splits the images.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.pass_context
def plan(ctx: click.Context, targets: tuple[str, ...], registry: str | None, version: str | None, shards: int | None,
         as_json: bool) -> None:
    """Show what `make` would build and why, without building."""
    _prefetch_engine(ctx.obj.directory)

    def run() -> None:
        the_plan = api.plan(ctx.obj.root(), list(targets), registry=registry, version=version, shards=shards)
        if as_json:
            _emit_json(report.plan_json(the_plan))
        else:
            _echo("\n".join(report.plan_lines(the_plan)))
            for s in (the_plan.shards or {}).get("list", []):
                _echo(f"shard {s['index']}/{the_plan.shards['count']}: builds {', '.join(s['build']) or 'nothing'}"
                      f" (images: {', '.join(s['images']) or 'none'})")

    _run(ctx, run)


@cli.command()
@click.argument("target", shell_complete=_complete_targets)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def why(ctx: click.Context, target: str, as_json: bool) -> None:
    """Which inputs of TARGET changed since its last build."""

    def run() -> None:
        info = api.why(ctx.obj.root(), target)
        if as_json:
            _emit_json({**info, "details": [structured(line) for line in info["changes"]]})
        elif info["current_key_built"]:
            _echo(f"{info['label']}: up to date: these inputs were built before (key {info['key']})")
        elif not info["built_before"]:
            _echo(f"{info['label']}: never built in this workspace's cache (key {info['key']})")
        elif not info["changes"]:
            _echo(f"{info['label']}: inputs unchanged since the last build, but it was not recorded (key {info['key']})")
        else:
            _echo(f"{info['label']}: key {info['previous_key']} -> {info['key']}")
            _echo("\n".join(f"  {escape_line(line)}" for line in info["changes"]))
        if not as_json:
            for note in info.get("notes", []):  # e.g. auto chose classic for this context, and why
                _echo(f"  note: {note}")

    _run(ctx, run)


@cli.command()
@click.argument("target", shell_complete=_complete_targets)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def inputs(ctx: click.Context, target: str, as_json: bool) -> None:
    """The exact files and other inputs that make up TARGET's key."""

    def run() -> None:
        tp = api.inputs(ctx.obj.root(), target)
        if as_json:
            _emit_json(_image_inputs(tp) if tp.kind == "image" else _chart_inputs(tp))
        else:
            lines = _input_lines(tp) if tp.kind == "image" else _chart_lines(tp)
            _echo("\n".join(map(escape_line, lines)))

    _run(ctx, run)


def escape_line(text: str) -> str:
    r"""One output line per input, whatever its file name holds: a backslash is printed as
    ``\\``, control and invisible characters as Python escapes (``\n``, ``\t``, ``\x1b``,
    ``\u202e``), a byte that is not UTF-8 as ``\xNN`` (NN >= 80: such characters are ``\u0080``…)."""
    return "".join(_escape_char(c) for c in text)


_SHORT_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(c: str) -> str:
    if c in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[c]
    if c.isprintable():
        return c
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # a non-UTF-8 byte of a file name (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _image_inputs(tp: TargetPlan) -> dict[str, Any]:
    """The key's manifest (its ``schema`` is the key schema: ``key_schema`` here); a
    multi-platform image: its index key and each platform's whole manifest."""

    def doc(manifest: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in manifest.items() if k != "schema"}
        return {"schema": JSON_SCHEMA, "key_schema": manifest.get("schema"), **out}

    if not tp.variants:
        return doc(tp.manifest)
    return {**doc(tp.manifest), "platforms": {v.platform: doc(v.manifest) for v in tp.variants}}


def _input_lines(tp: TargetPlan) -> list[str]:
    if tp.variants:  # the index key, then each platform's inputs
        lines = [f"target   {tp.label}", f"key      {tp.key} (index of {len(tp.variants)} platforms)", f"tag      {tp.ref}"]
        for v in tp.variants:
            lines += [""] + [f"  {line}" for line in _input_lines(v)[1:]]
        return lines
    m = tp.manifest
    lines = [f"target   {tp.label}", f"key      {tp.key}", f"tag      {tp.ref}",
             f"context  {tp.context.dir if tp.context else '?'}", f"dockerfile {m['dockerfile']}",
             f"platform {m['platform']}"]
    if m.get("builder"):
        lines.append(f"builder  {m['builder']}" + (f" ({m['builder_reason']})" if m.get("builder_reason") else ""))
    if m["target"]:
        lines.append(f"stage    {m['target']}")
    lines += [f"arg      {k}={v}" for k, v in sorted(m["args"].items())]
    lines += [f"dep      {d} {k}" for d, k in sorted(m["deps"].items())]
    lines += [f"base     {ref} {digest}" for ref, digest in sorted(m.get("bases", {}).items())]
    lines += [f"input    {h} {p}" for p, h in m["inputs"]]
    lines += _reach_lines(tp)
    via = m.get("via") or [None] * len(m["files"])
    for (path, kind, exe, digest), reached in zip(m["files"], via):
        mode = {"d": "dir ", "l": "link"}.get(kind, "exec" if exe else "file")
        lines.append(f"{mode}     {digest or '-':32} {path}{_via_suffix(reached)}")
    return lines


def _reach_lines(tp: TargetPlan) -> list[str]:
    """What part of the context the key covers, and why (olly.reach)."""
    info = tp.manifest.get("reach")
    if not info:
        return []
    if info["whole"]:
        lines = [f"reach    whole context: {info['whole']}"]
    elif info.get("everything"):
        many = len(info["everything"]) > 1
        numbers = ", ".join(str(n) for n in info["everything"])
        lines = [f"reach    whole context: {info['dockerfile']} line{'s' * many} {numbers} cop{'y' if many else 'ies'} it"]
    else:
        lines = [f"reach    only what {info['dockerfile']} copies (each path below: the line that reaches it)"]
    lines += [f"note     {note}" for note in info["notes"]]
    builds = {tp.context.dockerfile_name, ".dockerignore"} if tp.context else set()
    carried = [e for e in (tp.context.carried if tp.context else []) if e.path not in builds]
    if carried:
        lines.append(f"sent     {len(carried)} more entr{'ies' if len(carried) > 1 else 'y'}, not keyed: copied only by "
                     "stages the target does not use (the classic builder still runs them)")
    return lines


def _via_suffix(lines: list[int] | None) -> str:
    if lines is None:
        return ""
    if not lines:
        return "  <- parent"
    numbers = [str(n) for n in lines if n]  # 0: what a symlinked Dockerfile points to
    if not numbers:
        return "  <- the Dockerfile or .dockerignore links to it"
    return f"  <- line{'s' if len(numbers) > 1 else ''} {', '.join(numbers)}"


def _chart_inputs(tp: TargetPlan) -> dict[str, Any]:
    assert tp.chart is not None and tp.target is not None
    return {"label": tp.label, "key": tp.key or None, "name": tp.chart.name, "version": tp.chart.base_version,
            "images": dict(tp.target.images),  # type: ignore[union-attr]
            "files": [[rel, digest] for rel, _, digest in tp.chart.files],
            "note": None if tp.key else "key known once its images are: " + "; ".join(tp.reasons)}


def _chart_lines(tp: TargetPlan) -> list[str]:
    data = _chart_inputs(tp)
    lines = [f"target   {tp.label}", f"key      {data['key'] or '(' + data['note'] + ')'}",
             f"chart    {data['name']} {data['version']}"]
    lines += [f"image    {path} <- {label}" for path, label in sorted(data["images"].items())]
    lines += [f"file     {digest:32} {rel}" for rel, digest in data["files"]]
    return lines


@cli.command()
@click.argument("targets", nargs=-1, shell_complete=_complete_patterns)
@click.option("--format", "fmt", type=click.Choice(["text", "dot", "mermaid", "json"]), default="text", show_default=True)
@click.pass_context
def graph(ctx: click.Context, targets: tuple[str, ...], fmt: str) -> None:
    """The target graph (dependencies after `<-`)."""
    _run(ctx, lambda: _echo(api.graph_text(ctx.obj.root(), list(targets), fmt)))


@cli.command()
@click.argument("images", nargs=-1)
@click.option("--update", is_flag=True, help="Re-resolve every base image (or just IMAGES) to its current digest.")
@click.option("--check", is_flag=True, help="Exit 1 if a Dockerfile uses a base missing from olly.lock (for CI).")
@click.pass_context
def lock(ctx: click.Context, images: tuple[str, ...], update: bool, check: bool) -> None:
    """Pin the Dockerfiles' base images by digest in olly.lock."""

    def run() -> int:
        result = api.lock(ctx.obj.root(), update=update, check=check, images=list(images),
                          say=lambda m: _echo(f"olly: {m}", err=True))
        if check:
            _echo("\n".join(result.problems) or f"{result.path.name}: every base image is locked")
            return EXIT_TARGET_FAILED if result.problems else 0
        for c in result.changes:
            detail = {"added": c.new, "kept": c.new, "unchanged": c.new, "removed": "(no Dockerfile uses it)",
                      "updated": f"{c.old} -> {c.new}"}[c.action]
            _echo(f"{c.action:<9} {c.reference}  {detail}")
        _echo(f"{result.path.name}: {sum(c.action != 'removed' for c in result.changes)} base image(s) locked")
        return 0

    _run(ctx, run)


@cli.group(short_help="Move the build cache between machines (for CI).")
def cache() -> None:
    """Move the build cache between machines (e.g. CI runs)."""


@cache.command("export", short_help="Write a snapshot of the cache to FILE.")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def cache_export(ctx: click.Context, file: Path) -> None:
    """Write a snapshot of the cache to FILE (results, manifests, pushes, packages)."""

    def run() -> None:
        counts = api.cache_export(ctx.obj.root(), file, say=lambda m: _echo(f"olly: {m}", err=True))
        _echo(f"exported {counts['results']} build result(s), {counts['pushes']} push record(s), "
                   f"{counts['artifacts']} package record(s) to {file} (package files stay in .cache/charts)")

    _run(ctx, run)


@cache.command("import", short_help="Merge a cache snapshot from FILE (local entries win).")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def cache_import(ctx: click.Context, file: Path) -> None:
    """Merge a cache snapshot from FILE into this workspace's cache (local entries win)."""

    def run() -> None:
        counts = api.cache_import(ctx.obj.root(), file, say=lambda m: _echo(f"olly: {m}", err=True))
        _echo(f"imported {counts['results']} build result(s), {counts['pushes']} push record(s), "
                   f"{counts['artifacts']} package record(s)")

    _run(ctx, run)


@cli.command(short_help="Remove old olly-<hash> images, chart packages and logs.")
@click.option("--keep", type=click.IntRange(min=1), default=3, show_default=True, metavar="N",
              help="The newest builds kept per target and platform; the current one is kept too.")
@click.option("--registry", metavar="NAME", shell_complete=_complete_registries,
              help="Also delete that registry's unreferenced content tags (never a version tag or a pinned digest).")
@click.option("--dry-run", is_flag=True, help="List what would be removed, with sizes; remove nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON document.")
@click.pass_context
def gc(ctx: click.Context, keep: int, registry: str | None, dry_run: bool, as_json: bool) -> None:
    """Remove olly's build results that nothing references any more: the engine's
    `<repository>:olly-<hash>` tags, stored chart packages, old logs and their db rows (with
    --registry, that registry's content tags), keeping every target's current key, its last
    N builds, what kept charts pin and what version tags name."""

    def run() -> int:
        result = api.gc(ctx.obj.root(), keep=keep, registry=registry, dry_run=dry_run,
                        say=lambda m: _echo(f"olly: {m}", err=True))
        if as_json:
            _emit_json({"dry_run": result.dry_run, "keep": result.keep, "kept": result.kept, "notes": result.notes,
                        "items": [i.__dict__ for i in result.items]})
        else:
            for i in result.items:
                _echo(f"{i.status:<14} {i.kind:<17} {i.name}  {_size(i.size)}" + (f"  ({i.detail})" if i.detail else ""))
            for note in result.notes:
                _echo(f"olly: {note}", err=True)
            freed = sum(i.size for i in result.items if i.status in ("removed", "would remove"))
            kept = ", ".join(f"{n} {kind}(s)" for kind, n in sorted(result.kept.items()))
            verb = "would free" if dry_run else "freed"
            _echo(f"{'dry run: ' if dry_run else ''}{len(result.items)} item(s), {verb} about {_size(freed)}; kept {kept}")
        return EXIT_TARGET_FAILED if result.failed else 0

    _run(ctx, run)


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"


@cli.command(short_help="Write a BUILD.toml for this repository's Dockerfiles and charts.")
@click.pass_context
def init(ctx: click.Context) -> None:
    """Write a commented BUILD.toml for the Dockerfiles and charts under the current
    directory (or -C DIR), and add .cache/ and dist/ to .gitignore. Never overwrites a
    BUILD.toml."""

    def run() -> None:
        result = api.init(Path(ctx.obj.directory or os.getcwd()))
        _echo(f"wrote {result.path}: {len(result.images)} image(s), {len(result.charts)} chart(s)")
        for i in result.images:
            deps = f" <- {', '.join(i.depends_on)}" if i.depends_on else ""
            _echo(f"  image {i.label}  {i.repository}{deps}")
        for c in result.charts:
            pins = ", ".join(f"{p} <- {label}" for p, label in sorted(c.images.items())) or "no image block matched"
            _echo(f"  chart {c.label}  {pins}")
        _echo(f".gitignore: {result.gitignore}; check the guesses in BUILD.toml, then run: olly plan")

    _run(ctx, run)


@cli.command(short_help="Check the engine, registries, qemu, lock, cache and git.")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as one JSON document.")
@click.pass_context
def doctor(ctx: click.Context, as_json: bool) -> None:
    """Check what a run will need — engine, each registry of BUILD.toml, qemu for foreign
    platforms, the base-image lock, a writable .cache/, git — and say how to fix each miss.
    Exit 3 if anything is missing."""

    def run() -> int:
        result = api.doctor(Path(ctx.obj.directory or os.getcwd()))
        if as_json:
            _emit_json({"ok": result.ok, "workspace": str(result.root) if result.root else None,
                        "checks": [c.__dict__ for c in result.checks]})
        for c in [] if as_json else result.checks:
            fix = f"  -> fix: {c.fix}" if c.fix and not c.ok else ""
            _echo(f"{'ok' if c.ok else 'MISS':<5} {c.name:<16} {c.detail}{fix}")
        return 0 if result.ok else EXIT_ENVIRONMENT

    _run(ctx, run)


def _ensure_utf8_mode() -> None:
    """File names must decode the same under every locale (keys may not depend on it):
    re-run in Python's UTF-8 mode when the locale's filesystem encoding is not UTF-8."""
    if sys.getfilesystemencoding().lower().replace("-", "") != "utf8" and not os.environ.get("OLLY_NO_REEXEC"):
        os.environ["OLLY_NO_REEXEC"] = "1"
        # orig_argv: the same script or `-m olly` and interpreter flags, exactly as invoked.
        os.execv(sys.executable, [sys.executable, "-X", "utf8", *sys.orig_argv[1:]])


from olly.cli import watch as _watch_commands  # noqa: E402,F401  (olly watch: registers itself on `cli`)


def main(argv: list[str] | None = None) -> None:
    if argv is None:
        _ensure_utf8_mode()
        # Loading olly's modules makes many objects and few cycles: at the default threshold
        # (700) the collector runs over and over for nothing (3-4 ms of a 125 ms `olly plan`).
        _gc.set_threshold(100_000, 50, 100)
        # Exiting, the interpreter garbage-collects every object olly and its libraries made:
        # 0.15-0.3 s after a build (docker SDK, sqlite-utils loaded), measured on 2 cores. Frozen,
        # they are only freed (files still close as their last reference goes), not scanned.
        atexit.register(_gc.freeze)
    try:
        code = cli.main(args=argv, prog_name="olly", standalone_mode=False)
    except click.ClickException as exc:
        # Usage errors in olly's one-line form; `olly <command> --help` shows the options.
        _echo(f"olly: error: {exc.format_message()}", err=True)
        sys.exit(EXIT_USAGE)
    except click.exceptions.Abort:
        _echo("olly: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code if isinstance(code, int) else 0)
