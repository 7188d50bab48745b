"""``olly watch start|stop|status``: the workspace watcher (olly.watch, olly.watchsync)."""

from __future__ import annotations

import click

from olly.cli import JSON_SCHEMA, _echo, _emit_json, _run, cli


@cli.group(short_help="A watcher that spares a plan the walk of unchanged contexts (Linux).")
def watch() -> None:
    """A process that watches the workspace (inotify) so that a plan takes the remembered walk
    of every context where nothing changed, without a single stat of its files."""


@watch.command("start", short_help="Start the workspace's watcher (if none runs).")
@click.option("--idle", type=click.FloatRange(min=1), default=8.0, show_default=True, metavar="HOURS",
              help="End after this many hours without a command asking it.")
@click.pass_context
def watch_start(ctx: click.Context, idle: float) -> None:
    def run() -> None:
        from olly import watchsync

        found = watchsync.start(ctx.obj.root(), idle * 3600)
        verb = "already watching" if found["already"] else "watching"
        _echo(f"olly: {verb} {found['root']} ({found['watches']} directories), pid {found['pid']}", err=True)

    _run(ctx, run)


@watch.command("stop", short_help="Stop the workspace's watcher.")
@click.pass_context
def watch_stop(ctx: click.Context) -> None:
    def run() -> None:
        from olly import watchsync

        found = watchsync.stop(ctx.obj.root())
        _echo("olly: no watcher runs for this workspace" if found is None else f"olly: stopped the watcher (pid {found['pid']})",
              err=True)

    _run(ctx, run)


@watch.command("status", short_help="Whether a watcher runs, and what it sees.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document.")
@click.pass_context
def watch_status(ctx: click.Context, as_json: bool) -> None:
    def run() -> None:
        from olly import watchsync

        found = watchsync.status(ctx.obj.root())
        if as_json:
            _emit_json({"schema": JSON_SCHEMA, "running": found is not None,
                        **{k: (found or {}).get(k) for k in ("root", "pid", "watches", "epoch", "seq", "changes")}})
        elif found is None:
            _echo("no watcher runs for this workspace (olly watch start)")
        else:
            _echo(f"watching {found['root']}: pid {found['pid']}, {found['watches']} directories, "
                  f"{found['changes']} changed paths recorded, epoch {found['epoch']}")

    _run(ctx, run)
