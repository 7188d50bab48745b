"""Named crash points, for crash-safety tests only.

``OLLY_FAILPOINT=name`` (or ``name:N`` for the N-th time it is reached; several
separated by commas) makes the process SIGKILL itself at that point, as an OOM
kill or `kill -9` would (not a power cut: the OS still flushes what was written).
Unset (always, outside tests) it costs a dict lookup.
"""

from __future__ import annotations

import os
import signal
import threading

_ARMED: dict[str, int] = {}
for _item in filter(None, os.environ.get("OLLY_FAILPOINT", "").split(",")):
    _name, _, _n = _item.partition(":")
    _ARMED[_name] = int(_n or 1)
_LOCK = threading.Lock()


def hit(name: str) -> None:
    if name not in _ARMED:
        return
    with _LOCK:
        _ARMED[name] -= 1
        if _ARMED[name] <= 0:
            os.kill(os.getpid(), signal.SIGKILL)
