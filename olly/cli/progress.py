"""Renders a run's progress events (olly.progress) for a terminal, CI logs or tools.

- ``tty``: a live view (rich, imported only once something builds): one line per running
  target with its elapsed time and current step, finished targets scrolling above, a footer
  with counts. Redrawn a few times a second.
- ``plain``: lines for CI logs: ``started`` per target, a heartbeat for a build silent for
  ``OLLY_HEARTBEAT_S`` seconds (default 30), the result lines. On GitHub Actions each build
  log is folded into a group and failures become ``::error`` annotations.
- ``json``: one JSON object per event and line (started, step, finished; log with -v).
- ``quiet``: failures only (and the summary the command prints).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

from olly import report
from olly.progress import Event
from olly.scrub import scrub

Echo = Callable[[str], None]
_STEP_NO = re.compile(r"^\[(\d+/\d+)\]")


def elapsed(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def choose(mode: str, quiet: bool) -> str:
    if quiet:
        return "quiet"
    if mode != "auto":
        return mode
    tty = sys.stdout.isatty() and os.environ.get("TERM", "") != "dumb" and not os.environ.get("CI")
    return "tty" if tty else "plain"


def renderer(mode: str, echo: Echo, verbose: bool) -> Renderer:
    classes = {"tty": TtyRenderer, "plain": PlainRenderer, "json": JsonRenderer, "quiet": QuietRenderer,
               "silent": SilentRenderer}
    return classes[mode](echo, verbose)


class Renderer:
    def __init__(self, echo: Echo, verbose: bool) -> None:
        self.echo, self.verbose = echo, verbose
        self.running: dict[str, dict[str, Any]] = {}
        self.width = 0  # of the label column, from the planned targets

    def on_planned(self, e: Event) -> None:
        self.width = max((len(label) for label in e.text.split("\n")), default=0)

    def __call__(self, event: Event) -> None:
        handler = getattr(self, f"on_{event.kind}", None)
        if handler is not None:
            handler(event)

    def on_started(self, e: Event) -> None:
        self.running[e.label] = {"since": e.at, "step": "", "platform": "", "quiet_since": e.at}

    def on_step(self, e: Event) -> None:
        if e.label in self.running:
            self.running[e.label]["step"], self.running[e.label]["platform"] = e.text, e.platform

    def on_finished(self, e: Event) -> None:
        self.running.pop(e.label, None)
        assert e.outcome is not None
        self.result(e.outcome)

    def result(self, o: Any) -> None:
        self.echo(report.outcome_line(o, self.width))
        if o.status == "failed" and o.tail:
            self.echo("\n".join(report.failure_details(o)))

    def close(self) -> None:
        pass


class QuietRenderer(Renderer):
    def result(self, o: Any) -> None:
        if o.status == "failed":
            super().result(o)


class SilentRenderer(Renderer):
    """``make --json``: stdout carries one JSON document and nothing else."""

    def result(self, o: Any) -> None:
        pass


class JsonRenderer(Renderer):
    def __call__(self, event: Event) -> None:
        if event.kind in ("started", "step", "finished") or (event.kind == "log" and self.verbose):
            self.echo(json.dumps(event.as_json(), sort_keys=True))


class PlainRenderer(Renderer):
    def __init__(self, echo: Echo, verbose: bool) -> None:
        super().__init__(echo, verbose)
        self.heartbeat = float(os.environ.get("OLLY_HEARTBEAT_S", "30"))
        self.github = os.environ.get("GITHUB_ACTIONS") == "true"

    def on_started(self, e: Event) -> None:
        super().on_started(e)
        self.echo(f"{'started':<7} {e.label}")  # not padded: nothing follows the label

    def on_step(self, e: Event) -> None:
        super().on_step(e)
        if e.label in self.running:
            self.running[e.label]["quiet_since"] = e.at

    def on_log(self, e: Event) -> None:
        if e.label in self.running:
            self.running[e.label]["quiet_since"] = e.at
        if self.verbose:
            self.echo(f"{e.label} | {e.text}")

    def on_tick(self, e: Event) -> None:
        for label, state in self.running.items():
            if e.at - state["quiet_since"] >= self.heartbeat:
                step = _STEP_NO.match(state["step"])
                where = (f", {state['platform']}" if state["platform"] else "") + (f", step {step.group(1)}" if step else "")
                self.echo(f"{label} still building ({elapsed(e.at - state['since'])}{where})")
                state["quiet_since"] = e.at

    def result(self, o: Any) -> None:
        if self.github and o.log and o.status in ("built", "failed"):
            self._group(o)
        super().result(o)
        if self.github and o.status == "failed":
            self.echo(f"::error title=olly: {o.label} failed::{_annotation(o.reason)}")

    def _group(self, o: Any) -> None:
        try:
            text = scrub(Path(o.log).read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return
        self.echo(f"::group::{o.label} build log")
        self.echo(text.rstrip("\n"))
        self.echo("::endgroup::")


def _annotation(text: str) -> str:
    """GitHub's workflow-command escaping for a message."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


class TtyRenderer(Renderer):
    """The live view. rich is imported when the first target starts: a no-op run never pays."""

    def __init__(self, echo: Echo, verbose: bool) -> None:
        super().__init__(echo, verbose)
        self.live: Any = None
        self.counts = {"built": 0, "cached": 0, "failed": 0, "skipped": 0}

    def _ensure_live(self) -> None:
        if self.live is None:
            from rich.console import Console
            from rich.live import Live

            console = Console(highlight=False)
            self.live = Live(console=console, refresh_per_second=8, transient=True,
                             get_renderable=self._render, redirect_stdout=False, redirect_stderr=False)
            self.live.start()

    def on_started(self, e: Event) -> None:
        super().on_started(e)
        self._ensure_live()

    def on_log(self, e: Event) -> None:
        if self.verbose and self.live is not None:
            self.live.console.print(f"[dim]{_esc(e.label)} |[/dim] {_esc(scrub(e.text))}")

    def result(self, o: Any) -> None:
        self.counts[o.status] = self.counts.get(o.status, 0) + 1
        if self.live is None:
            super().result(o)
            return
        colour = {"built": "green", "cached": "blue", "failed": "red", "skipped": "yellow"}.get(o.status, "")
        line = report.outcome_line(o, self.width)
        self.live.console.print(f"[{colour}]{_esc(line[:7])}[/{colour}]{_esc(scrub(line[7:]))}")
        if o.status == "failed" and o.tail:
            self.live.console.print(_esc(scrub("\n".join(report.failure_details(o)))))

    def _render(self) -> Any:
        from rich.console import Group
        from rich.text import Text

        now = time.time()
        width = max((len(label) for label in self.running), default=0)
        lines = [Text.assemble(("running ", "yellow"), f"{label:<{width}}  {elapsed(now - s['since']):>6}  ",
                               (f"{s['platform']} " if s["platform"] else "", "cyan"), (s["step"] or "starting", "dim"),
                               no_wrap=True, overflow="ellipsis")
                 for label, s in self.running.items()]
        c = self.counts
        lines.append(Text(f"{len(self.running)} running · {c['built']} built · {c['cached']} cached · "
                          f"{c['failed']} failed", style="bold"))
        return Group(*lines)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)
