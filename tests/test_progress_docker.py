"""What a person sees while a real build runs: the live view in a terminal (a pty), plain
lines with heartbeats in CI logs, JSON events for tools; run history; --force."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import copy_workspace

pytestmark = pytest.mark.docker

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")
SLOW = 'RUN ["/bin/busybox", "sh", "-c", "/bin/busybox sleep 5"]\n'


@pytest.fixture
def ws(tmp_path: Path, docker_client, busybox: Path, unique_prefix: str) -> Path:
    root = copy_workspace("busy", tmp_path, busybox, unique_prefix)
    df = root / "solo" / "Dockerfile"
    # Unique per test: the engine's layer cache would otherwise skip the sleep on a second run.
    df.write_text(df.read_text() + SLOW.replace("sleep 5", f"sleep 5 # {unique_prefix}"))
    return root


def olly_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_ACTIONS", "NO_COLOR")}
    return env | extra


def test_live_view_in_a_terminal_shows_the_running_step(ws: Path) -> None:
    pid, fd = pty.fork()
    if pid == 0:  # the child: olly in a real terminal
        os.execve(sys.executable, [sys.executable, "-m", "olly", "-C", str(ws), "make", "solo"],
                  olly_env(TERM="xterm-256color", COLUMNS="120", LINES="40"))
    screen, seen_running, deadline = b"", "", time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break  # the child closed the terminal: it is done
        if not chunk:
            break
        screen += chunk
        text = ANSI.sub("", screen.decode("utf-8", "replace"))
        found = re.findall(r"running solo\s+\d+s\s+\[\d+/\d+\] RUN [^\n]*sleep 5", text)
        seen_running = seen_running or (found[0] if found else "")
    _, status = os.waitpid(pid, 0)
    text = ANSI.sub("", screen.decode("utf-8", "replace"))
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert seen_running, text  # one live line: label, elapsed, current step
    assert "1 running" in text and "built   solo" in text and "1 built, 0 cached" in text


def test_plain_lines_with_heartbeats_for_ci_logs(ws: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "olly", "-C", str(ws), "make", "solo"], capture_output=True,
                          text=True, env=olly_env(OLLY_HEARTBEAT_S="1", CI="true"), timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "started solo"
    beats = [line for line in lines if line.startswith("solo still building (")]
    assert beats and re.match(r"solo still building \(\d+s, step \d+/\d+\)$", beats[0]), lines
    assert any(line.startswith("built   solo") for line in lines)


def test_json_progress_events_parse_and_history_records_runs(ws: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "olly", "-C", str(ws), "make", "solo", "--progress", "json"],
                          capture_output=True, text=True, env=olly_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "finished" and "step" in kinds
    assert any(e["event"] == "step" and "sleep 5" in e["text"] for e in events)
    # --force rebuilds a known key (a RUN step may fetch something olly cannot see).
    again = subprocess.run([sys.executable, "-m", "olly", "-C", str(ws), "make", "solo", "--force", "solo", "-q"],
                           capture_output=True, text=True, env=olly_env(), timeout=300)
    assert again.returncode == 0 and "1 built" in again.stdout, again.stdout + again.stderr
    log = subprocess.run([sys.executable, "-m", "olly", "-C", str(ws), "log", "--json"], capture_output=True, text=True)
    runs = json.loads(log.stdout)["runs"]
    assert [r["counts"] for r in runs] == [{"built": 1}, {"built": 1}]
    assert "--force solo" in runs[0]["command"]
    # The first run's log was kept, not overwritten.
    assert (ws / ".cache" / "logs" / "old" / "solo.1.log").read_text().count("sleep 5") >= 1
    stats = json.loads(subprocess.run([sys.executable, "-m", "olly", "-C", str(ws), "stats", "--json"],
                                      capture_output=True, text=True).stdout)
    assert stats["runs"] == 2 and stats["targets"][0]["target"] == "solo" and stats["targets"][0]["built"] == 2
