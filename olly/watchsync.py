"""A plan's side of the workspace watcher (olly.watch): start, stop, ask it what changed.

A plan *syncs* with the watcher before it walks anything (the CLI does it first thing, before
the walk helper starts: olly.walkhelper). The answer names the watcher's epoch and a sequence
number, the *token*, and every path that changed under that epoch with the number of its
last change. A remembered walk saved with a mark (olly.walkmemo: the token of the plan that
verified it) is still exact if the watcher is in the same epoch and no path in or above its
context changed after the mark: the plan then takes it without a single ``lstat``.

Nothing here may fail a command: no watcher, a dead one, a slow one or a foreign answer all
mean no sync, and the plan walks as it does without a watcher. Standard library only.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from olly import walkhelper

PROTOCOL = 1  # as olly.watch.PROTOCOL (not imported: the CLI loads this before olly's modules)
DIR = Path(".cache") / "watch"
SOCKET_MAX = 107  # bytes in a unix socket path (sun_path) on Linux
START_TIMEOUT = 60.0  # seconds for a new watcher to watch the tree and answer
IDLE_DEFAULT = 8 * 3600.0
LOG_MAX = 1 << 20  # a watcher log past this size is started afresh by the next start
SYNC_WAIT = 3.0  # seconds a plan waits for the watcher's answer (its cookie may take up to 2 s), then walks without it

_EARLY: dict[str, Sync | None] = {}  # root -> the sync the CLI made before the plan


class Sync:
    """One answer of the watcher: what changed, and the token a plan marks its walks with."""

    def __init__(self, epoch: str, seq: int, floor: int, changes: dict[str, int], root: str = "") -> None:
        self.epoch, self.seq, self.floor, self.changes = epoch, seq, floor, changes
        self.root = root  # the workspace's real path, as the watcher watches it
        self.token = f"{epoch}:{seq}"
        self.late = False  # made by the plan itself, after the walk helper started
        self._under: dict[str, int] | None = None

    def clean(self, ctx_dir: str, token: str) -> bool:
        """Whether nothing in ``ctx_dir`` (workspace-relative, "." for the root), nor the
        directory itself or any above it, changed since ``token`` (a mark of an earlier sync)."""
        epoch, _, number = token.partition(":")
        try:
            seq = int(number)
        except ValueError:
            return False
        if epoch != self.epoch or not self.floor <= seq <= self.seq:
            return False  # another watcher, or changes since then were dropped
        d = "" if ctx_dir == "." else ctx_dir
        if self._under is None:
            self._under = _latest_under(self.changes)
        if self._under.get(d, 0) > seq:
            return False
        while d:  # a parent renamed, replaced, deleted: the context is elsewhere now
            d = d.rpartition("/")[0]
            if self.changes.get(d, 0) > seq:
                return False
        return True


def _latest_under(changes: dict[str, int]) -> dict[str, int]:
    """Directory -> the latest change at it or anywhere under it ("" is the root)."""
    under: dict[str, int] = {}
    for path, seq in changes.items():
        while True:
            if under.get(path, 0) < seq:
                under[path] = seq
            if not path:
                break
            path = path.rpartition("/")[0]
    return under


def socket_path(root: Path) -> str:
    return os.fspath(root / DIR / "sock")


def request(root: Path, op: str, timeout: float = 3.0) -> dict[str, Any] | None:
    """The watcher's answer to ``op``, or None if none answers."""
    path = socket_path(root)
    if len(os.fsencode(path)) > SOCKET_MAX or not os.path.exists(path):
        return None
    import socket  # only where a watcher's socket is: every command loads this module

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(json.dumps({"op": op}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                data += chunk
        reply = json.loads(data)
    except (OSError, ValueError):
        return None
    return reply if isinstance(reply, dict) else None


def sync(root: Path) -> Sync | None:
    """Sync with the watcher of ``root``: None if none runs or it cannot vouch for anything,
    or if OLLY_WATCH=0 (plan as if no watcher ran; e.g. to rule it out)."""
    if os.environ.get("OLLY_WATCH") == "0":
        return None
    reply = request(root, "sync", timeout=SYNC_WAIT)
    if reply is None or reply.get("protocol") != PROTOCOL or reply.get("root") != os.fspath(root.resolve()):
        return None
    epoch, seq, floor, changes = (reply.get(k) for k in ("epoch", "seq", "floor", "changes"))
    if not (isinstance(epoch, str) and isinstance(seq, int) and isinstance(floor, int) and isinstance(changes, dict)
            and all(isinstance(k, str) and isinstance(v, int) for k, v in changes.items())):
        return None
    return Sync(epoch, seq, floor, changes, reply["root"])


def early(directory: str | None = None) -> Sync | None:
    """For the CLI, first thing: sync with the workspace's watcher, if one runs (kept for the
    plan: ``take``). Nothing here may fail a command."""
    try:
        root = walkhelper.find_root(directory)
        if root is None or not os.path.exists(socket_path(root)):
            return None
        found = _EARLY[os.fspath(root)] = sync(root)
        return found
    except (OSError, ValueError):
        return None


def take(root: Path) -> Sync | None:
    """The plan's sync: the CLI's early one, else one made now (``late``: after the walk
    helper started, so the helper's walks begun before it must not be taken)."""
    key = os.fspath(root.resolve())
    if key in _EARLY:
        return _EARLY.pop(key)
    if not os.path.exists(socket_path(root)):
        return None
    found = sync(root)
    if found is not None:
        found.late = True
    return found


def forget(root: Path) -> None:
    """Drop the CLI's early sync of ``root``: ``olly make`` plans what it sees under the
    workspace lock, after any wait for another olly, so its plan syncs again (``take``)."""
    _EARLY.pop(os.fspath(root.resolve()), None)


def status(root: Path) -> dict[str, Any] | None:
    """The running watcher's own account (pid, watches, epoch, ...), or None."""
    reply = request(root, "status")
    return reply if reply is not None and reply.get("protocol") == PROTOCOL else None


def start(root: Path, idle: float = IDLE_DEFAULT) -> dict[str, Any]:
    """Start the watcher of ``root`` unless one runs; its status once it answers (``already``:
    it was running). OllyError ``watch-failed`` (with the watcher's log) if it does not come up."""
    import subprocess

    from olly.errors import OllyError

    found = status(root)
    if found is not None:
        return {**found, "already": True}
    if not sys.platform.startswith("linux"):
        raise OllyError("watch-failed", "the watcher needs Linux (inotify)")
    if len(os.fsencode(socket_path(root))) > SOCKET_MAX:
        raise OllyError("watch-failed", f"the workspace path is too long for the watcher's unix socket "
                        f"({len(os.fsencode(socket_path(root)))} bytes, at most {SOCKET_MAX}): {socket_path(root)}")
    home = root / DIR
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise OllyError("watch-failed", f"cannot make {home}: {exc.strerror}") from None
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.fspath(Path(__file__).resolve().parent.parent),
                                         *filter(None, [env.get("PYTHONPATH")])])
    try:
        fresh = (home / "log").stat().st_size > LOG_MAX
    except FileNotFoundError:
        fresh = False
    with open(home / "log", "wb" if fresh else "ab") as log, open(os.devnull, "rb") as null:
        # Its working directory is "/": one in the workspace would pin it (no event when it goes).
        proc = subprocess.Popen([sys.executable, "-m", "olly.watch", os.fspath(root.resolve()), str(idle)],
                                cwd="/", env=env, stdin=null, stdout=log, stderr=log, close_fds=True,
                                start_new_session=True)  # outlives this command and its terminal
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        found = status(root)
        if found is not None:
            return {**found, "already": False}
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    raise OllyError("watch-failed", f"the watcher did not start ({home / 'log'}): {log_tail(root)}")


def stop(root: Path, timeout: float = 10.0) -> dict[str, Any] | None:
    """Stop the watcher of ``root``; its last status, or None if none ran."""
    found = request(root, "stop")
    if found is None:
        return None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not _lock_free(root):  # it holds the lock until it exits
        time.sleep(0.02)
    return found


def _lock_free(root: Path) -> bool:
    import fcntl

    try:
        fd = os.open(root / DIR / "lock", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # releases the lock if it was taken


def log_tail(root: Path, lines: int = 5) -> str:
    try:
        text = (root / DIR / "log").read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"
