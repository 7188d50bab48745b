"""Progress events and their renderers, without an engine (real builds: test_progress_docker.py)."""

from __future__ import annotations

import json

from olly.cli import progress as render
from olly.jobs import Outcome
from olly.progress import Event, line_emitter, step_of


def test_steps_are_read_from_both_builders() -> None:
    assert step_of("Step 3/7 : RUN pip install x") == "[3/7] RUN pip install x"
    assert step_of("[build 2/5] COPY . /app") == "[2/5] COPY . /app"
    assert step_of(" ---> Using cache") is None


def test_a_log_line_that_starts_a_step_gives_a_step_event() -> None:
    seen: list[Event] = []
    on_line = line_emitter(seen.append, "apps/x", "linux/arm64")
    on_line("Step 2/3 : RUN sleep 5")
    on_line(" ---> Running in abc")
    assert [(e.kind, e.text) for e in seen] == [("log", "Step 2/3 : RUN sleep 5"), ("step", "[2/3] RUN sleep 5"),
                                               ("log", " ---> Running in abc")]
    assert all(e.platform == "linux/arm64" for e in seen)


def test_plain_heartbeat_names_the_step_and_elapsed_time(monkeypatch) -> None:
    monkeypatch.setenv("OLLY_HEARTBEAT_S", "30")
    out: list[str] = []
    r = render.renderer("plain", out.append, verbose=False)
    r(Event("started", "apps/webui", at=100.0))
    r(Event("step", "apps/webui", text="[5/9] RUN npm ci", at=101.0))
    r(Event("tick", at=120.0))  # 19 s silent: no heartbeat yet
    r(Event("tick", at=251.0))
    assert out == ["started apps/webui", "apps/webui still building (2m31s, step 5/9)"]
    r(Event("tick", at=260.0))  # the heartbeat itself restarts the silence
    assert len(out) == 2


def test_github_actions_groups_logs_and_annotates_failures(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    log = tmp_path / "x.log"
    log.write_text("Step 1/1 : RUN false\nboom\n")
    out: list[str] = []
    r = render.renderer("plain", out.append, verbose=False)
    r(Event("finished", "apps/x", outcome=Outcome("apps/x", "failed", "RUN false: exit 1\nmore", log=str(log),
                                                  tail=["boom"])))
    text = "\n".join(out)
    assert "::group::apps/x build log\nStep 1/1 : RUN false\nboom\n::endgroup::" in text
    assert "::error title=olly: apps/x failed::RUN false: exit 1%0Amore" in text


def test_json_events_are_one_object_per_line() -> None:
    out: list[str] = []
    r = render.renderer("json", out.append, verbose=False)
    r(Event("started", "a", at=1.0))
    r(Event("log", "a", text="noise"))  # only with -v
    r(Event("step", "a", text="[1/2] COPY . /"))
    r(Event("finished", "a", outcome=Outcome("a", "built", "no previous build", duration_s=1.5)))
    events = [json.loads(line) for line in out]
    assert [e["event"] for e in events] == ["started", "step", "finished"]
    assert events[2]["status"] == "built" and events[2]["duration_s"] == 1.5


def test_quiet_prints_failures_only() -> None:
    out: list[str] = []
    r = render.renderer("quiet", out.append, verbose=False)
    r(Event("finished", "a", outcome=Outcome("a", "cached", "up to date")))
    r(Event("finished", "b", outcome=Outcome("b", "failed", "boom")))
    assert len(out) == 1 and out[0].startswith("failed  b")
