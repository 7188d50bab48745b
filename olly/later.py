"""A call running on a thread while olly does something else, answered when asked for."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable


class Later:
    """``fn(*args)`` running on a thread from now on, e.g. `git describe` (a process olly would
    otherwise wait for before planning) or the engine's ``/version`` (asked while olly's
    modules load). :meth:`get` waits, then returns its value or raises its error, exactly as
    the call would have, in the caller's thread."""

    def __init__(self, fn: Callable[..., Any], *args: Any, name: str = "olly-later") -> None:
        self.asked = time.monotonic()  # when it started: how old its answer is
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, args), name=name, daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            self._value = fn(*args)
        except BaseException as exc:  # re-raised by get(), in the caller's thread
            self._error = exc

    def get(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def settled(value: Any) -> Any:
    """``value``, or what a :class:`Later` gives once it is done."""
    return value.get() if isinstance(value, Later) else value
