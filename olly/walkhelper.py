"""The second core for a plan's walks: a helper process fingerprinting remembered contexts.

Walking a context is system calls and a Python loop (about 0.3 s for 100,000 entries on one
core here), so a plan of remembered contexts (olly.walkmemo) has a helper walk some of them:

- **Started early.** ``olly plan`` and ``olly make`` start it as soon as they know the workspace,
  before olly's modules load, when the cache database is big enough to hold walks worth it
  (``MIN_DB_BYTES``). It is plain ``python -I -S``: nothing shared with olly's process, no fork.
- **From the other end.** It reads the remembered contexts from the cache (table ``walk_memo``,
  in the order the last plan took them) and fingerprints them from the last to the first, while
  the plan takes them from the first: the two meet in the middle.
- **Never waited for.** The plan takes a helper's answer only if it is already there, and only
  for the very walk it would make itself (same ``.dockerignore`` bytes, same in-memory files);
  otherwise it walks that context itself and tells the helper to skip it. A helper that is slow,
  fails or answers nonsense costs the plan nothing but its own walks.
- **Never stale.** Each answer says when its walk began; ``olly plan`` takes none that began
  before the command did, ``olly make`` none that began before it held the workspace lock (after
  any wait for another olly: an edit made meanwhile is walked by the plan itself). A helper
  serves one command: the CLI stops any helper no plan claimed when the command ends.

Answers are marshalled ``(key, fingerprint, .dockerignore bytes, in-memory files)`` tuples, each
after its 8-byte length; the plan writes the keys to skip, one per line.
"""

from __future__ import annotations

import marshal
import os
import select
import sys
import time
from pathlib import Path
from typing import IO, Any

MIN_DB_BYTES = 1 << 20  # below this, the remembered walks are too small for a process to pay
BUILD_FILE = "BUILD.toml"  # as olly.config: a different answer here only forgoes the helper
Answer = tuple[str, bytes | None, tuple[str, ...]]

_RUNNING: dict[str, Helper] = {}


def start(directory: str | None = None) -> None:
    """Start the helper for the workspace around ``directory`` (default: the current one) if
    its cache may hold walks worth it. For the CLI: nothing here may fail a command."""
    try:
        here = Path(directory or os.getcwd()).resolve()
        root = next((d for d in (here, *here.parents) if (d / BUILD_FILE).is_file()), None)
        if root is None:
            return
        stop(root)  # one left by an earlier command in this process: never reused
        if os.stat(root / ".cache" / "olly.db").st_size >= MIN_DB_BYTES:
            _RUNNING[str(root)] = Helper(root)
    except (OSError, ValueError):
        pass


def claim(root: Path) -> Helper | None:
    """The helper started for ``root`` (the plan takes it over), or None."""
    return _RUNNING.pop(str(root.resolve()), None)


def fresh_from_now(root: Path) -> None:
    """Answers for ``root`` must come from walks begun from now on (``olly make`` holds the
    workspace lock now, perhaps after waiting for it: files may have changed meanwhile)."""
    helper = _RUNNING.get(str(root.resolve()))
    if helper is not None:
        helper.since_ns = time.time_ns()


def stop(root: Path | None = None) -> None:
    """Stop the helper of ``root`` (default: every one) that no plan claimed."""
    for key in [str(root.resolve())] if root is not None else list(_RUNNING):
        helper = _RUNNING.pop(key, None)
        if helper is not None:
            helper.close()


class Helper:
    """The plan's handle on a running helper."""

    def __init__(self, root: Path) -> None:
        import subprocess  # only a plan with a helper loads it

        self._answers: dict[str, Answer] = {}
        self._buffer = b""
        self._proc: Any = None
        self.since_ns = time.time_ns()  # answers from walks begun earlier are not taken
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", HELPER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, close_fds=True, bufsize=0)
            path = [str(Path(__file__).resolve().parent.parent), *(p for p in sys.path if p)]  # olly, xxhash
            job = marshal.dumps({"path": path, "root": os.fspath(root)})
            self._proc.stdin.write(len(job).to_bytes(8, "little") + job)
            # From now on the plan never blocks on the helper: a skip that does not fit in the
            # pipe (the helper is busy with one long walk) is dropped; skips only save work.
            os.set_blocking(self._proc.stdin.fileno(), False)
        except (OSError, ValueError):
            self.close()

    def answer(self, key: str) -> Answer | None:
        """The helper's answer for memo key ``key`` if it has arrived (never waits)."""
        self._drain()
        return self._answers.pop(key, None)

    def skip(self, key: str) -> None:
        """The plan walks ``key`` itself: the helper need not. Never waits (see __init__): a
        line cut short by a full pipe only makes the helper walk one context for nothing."""
        try:
            if self._proc is not None:
                os.write(self._proc.stdin.fileno(), b"\n" + key.encode() + b"\n")
        except BlockingIOError:
            pass
        except OSError:  # it has ended: nothing to tell
            self.close()

    def _drain(self) -> None:
        fd = self._proc.stdout.fileno() if self._proc is not None else None
        while fd is not None and select.select([fd], [], [], 0)[0]:
            data = os.read(fd, 1 << 16)
            if not data:
                self.close()
                break
            self._buffer += data
        while len(self._buffer) >= 8:
            size = int.from_bytes(self._buffer[:8], "little")
            if len(self._buffer) < 8 + size:
                break
            raw, self._buffer = self._buffer[8:8 + size], self._buffer[8 + size:]
            try:
                key, began, fp, ignore, specials = marshal.loads(raw)
                if not (isinstance(fp, str) and (ignore is None or isinstance(ignore, bytes))
                        and isinstance(specials, tuple) and isinstance(began, int)):
                    raise ValueError("not an answer")
                if began >= self.since_ns:  # an older walk may have missed an edit: not taken
                    self._answers[str(key)] = (fp, ignore, specials)
            except (ValueError, EOFError, TypeError):
                self.close()  # nonsense: the plan walks everything itself from here
                return

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
            proc.kill()
            proc.wait()


# What the helper runs: read its job (length, then marshal), put olly on its path, serve.
HELPER = """
import marshal, os, sys
def read(n):
    out = b""
    while len(out) < n:
        data = os.read(0, n - len(out))
        if not data:
            raise SystemExit(0)
        out += data
    return out
job = marshal.loads(read(int.from_bytes(read(8), "little")))
sys.path[:0] = job["path"]
from olly.walkhelper import serve
serve(job, sys.stdout.buffer)
"""


def serve(job: dict[str, Any], out: IO[bytes]) -> None:
    """In the helper: fingerprint the remembered contexts, last planned first, skipping those
    the plan walks itself; one answer each (none for a context it cannot fingerprint)."""
    import sqlite3

    from olly.walkmemo import fingerprint_context

    root = Path(job["root"])
    try:
        uri = (root / ".cache" / "olly.db").resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=1)
        rows = conn.execute("SELECT key, ctx_dir, df_rel FROM walk_memo ORDER BY seq DESC").fetchall()
        conn.close()
    except sqlite3.Error:
        return  # nothing remembered (yet): nothing to do
    skip: set[bytes] = set()
    pending = b""
    for key, ctx_dir, df_rel in rows:
        while select.select([0], [], [], 0)[0]:
            data = os.read(0, 1 << 16)
            if not data:
                return  # the plan is done
            *keys, pending = (pending + data).split(b"\n")
            skip.update(keys)
        if key.encode() in skip:
            continue
        ctx = bytes(ctx_dir).decode("utf-8", "surrogateescape")
        df = None if df_rel is None else bytes(df_rel).decode("utf-8", "surrogateescape")
        began = time.time_ns()
        try:
            answer = fingerprint_context(root, ctx, df)
        except Exception:  # the plan walks it and reports what is wrong
            continue
        if answer is not None:
            data = marshal.dumps((key, began, *answer))
            out.write(len(data).to_bytes(8, "little") + data)
            out.flush()
