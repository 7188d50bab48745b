"""Progress as data: what a run is doing, as events the CLI renders (live view, plain lines
for CI, JSON for tools). The core never prints.

Build threads emit events through a queue; the scheduler's main thread hands them to the
renderer in order, so a renderer runs on one thread only.
"""

from __future__ import annotations

import queue
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from olly.jobs import Outcome

# Classic builder: "Step 3/7 : RUN pip install ..."; BuildKit vertices: "[3/7] RUN ...".
_CLASSIC_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_BUILDKIT_STEP = re.compile(r"^\[(?:[\w-]+ )?(\d+)/(\d+)\] (.*)$")


@dataclass(frozen=True)
class Event:
    kind: str  # started | step | log | finished | tick
    label: str = ""
    platform: str = ""
    text: str = ""  # step: "[3/7] RUN …"; log: one build-log line
    at: float = field(default_factory=time.time)
    outcome: Outcome | None = None

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"event": self.kind, "label": self.label, "time": round(self.at, 3)}
        if self.platform:
            data["platform"] = self.platform
        if self.kind in ("step", "log"):
            data["text"] = self.text
        if self.outcome is not None:
            o = self.outcome
            data |= {"status": o.status, "reason": o.reason, "duration_s": round(o.duration_s, 3),
                     "ref": o.ref or None, "notes": o.notes}
        return data


def step_of(line: str) -> str | None:
    """``[3/7] RUN pip install …`` for a build-log line that starts a step, else None."""
    for pattern in (_CLASSIC_STEP, _BUILDKIT_STEP):
        match = pattern.match(line.strip())
        if match:
            return f"[{match.group(1)}/{match.group(2)}] {match.group(3)}"
    return None


Emit = Callable[[Event], None]


def ignore(_: Event) -> None:
    pass


class EventQueue:
    """Collects events from any thread; ``drain`` delivers them on the caller's thread."""

    def __init__(self, deliver: Emit) -> None:
        self._queue: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._deliver = deliver

    def put(self, event: Event) -> None:
        self._queue.put(event)

    def drain(self) -> None:
        while True:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                return
            self._deliver(event)


def line_emitter(emit: Emit, label: str, platform: str) -> Callable[[str], None]:
    """What a build calls for each log line: a ``log`` event, and a ``step`` event when the
    line starts a build step."""

    def on_line(line: str) -> None:
        emit(Event("log", label, platform, line))
        step = step_of(line)
        if step is not None:
            emit(Event("step", label, platform, step))

    return on_line
