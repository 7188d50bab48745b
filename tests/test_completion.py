"""Shell completion of commands, target labels, patterns and registry names (click's API),
and `olly --help` showing every command's description whole."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.shell_completion import ShellComplete
from click.testing import CliRunner

from olly.cli import cli

REPO = Path(__file__).resolve().parent.parent


def complete(args: list[str], incomplete: str) -> list[str]:
    return [item.value for item in ShellComplete(cli, {}, "olly", "_OLLY_COMPLETE").get_completions(args, incomplete)]


@pytest.fixture
def in_repo(monkeypatch) -> None:
    monkeypatch.chdir(REPO / "apps")  # the workspace is found upwards, as for every command


def test_commands_complete() -> None:
    assert complete([], "g") == ["gc", "graph"]
    assert {"doctor", "init", "make", "plan"} <= set(complete([], ""))


def test_targets_and_patterns_complete_from_build_toml(in_repo) -> None:
    assert complete(["make"], "apps/o") == ["apps/ollyscale", "apps/ollyscale-ui", "apps/opamp-server"]
    everything = complete(["plan"], "")
    assert {"apps/demo", "charts/ollyscale", "...", "apps/...", "charts/..."} <= set(everything)
    assert complete(["make", "apps/demo"], "ch") == ["charts/ollyscale", "charts/ollyscale-demos", "charts/..."]
    assert complete(["graph"], "apps/.") == ["apps/..."]


def test_one_target_commands_complete_labels_only(in_repo) -> None:
    assert "..." not in complete(["inputs"], "")
    assert "charts/ollyscale" in complete(["inputs"], "charts/")
    assert complete(["why"], "apps/d") == ["apps/demo"]
    assert complete(["make", "--force"], "charts/") == []  # --force rebuilds images


def test_options_complete(in_repo) -> None:
    assert complete(["make", "--registry"], "") == ["ghcr", "local"]
    assert complete(["gc", "--registry"], "l") == ["local"]
    assert complete(["make", "--force"], "apps/de") == ["apps/demo"]


def test_dash_c_names_the_workspace(tmp_path: Path, monkeypatch) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "BUILD.toml").write_text('[images."svc/api"]\nrepository = "x/api"\n[charts.chart]\n')
    monkeypatch.chdir(tmp_path)  # no workspace here: only -C finds one
    assert complete(["plan"], "") == []
    assert complete(["-C", str(ws), "plan"], "") == ["chart", "svc/api", "...", "svc/..."]


def test_a_broken_build_toml_completes_nothing_quietly(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "BUILD.toml").write_text("[images.\n")
    monkeypatch.chdir(tmp_path)
    assert complete(["make"], "") == []


def test_shell_scripts_and_answers_end_to_end(tmp_path: Path) -> None:
    env = {**os.environ, "_OLLY_COMPLETE": "bash_source"}
    script = subprocess.run([sys.executable, "-m", "olly"], env=env, capture_output=True, text=True, timeout=60)
    assert script.returncode == 0 and "_olly_completion" in script.stdout
    for shell in ("zsh", "fish"):
        env["_OLLY_COMPLETE"] = f"{shell}_source"
        assert subprocess.run([sys.executable, "-m", "olly"], env=env, capture_output=True, text=True,
                              timeout=60).returncode == 0
    env.update({"_OLLY_COMPLETE": "bash_complete", "COMP_WORDS": "olly why apps/opa", "COMP_CWORD": "2"})
    answer = subprocess.run([sys.executable, "-m", "olly"], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert answer.stdout.split() == ["plain,apps/opamp-server"]


def test_help_shows_every_description_whole() -> None:
    for group, prefix in ((cli, []), (cli.commands["cache"], ["cache"])):
        out = CliRunner().invoke(cli, [*prefix, "--help"], terminal_width=80).output
        listing = out.split("Commands:\n", 1)[1].splitlines()
        assert len(listing) == len(group.commands)  # one line each
        for line in listing:
            name, text = line.split(None, 1)
            command = group.commands[name]
            assert not text.endswith("..."), line
            assert text == (command.short_help or (command.help or "").split("\n")[0]), line
