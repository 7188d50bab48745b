"""The shipped CI workflows cannot run here: check they parse and that every olly command in
them names a command and options that exist (click parses each one as the CLI would)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
import yaml

from olly.cli import cli

ROOT = Path(__file__).resolve().parent.parent


def olly_commands(text: str) -> list[str]:
    """Every `olly …` command line in a workflow's run/script steps."""
    found = []
    for line in text.splitlines():
        if line.strip().startswith("#"):
            continue
        for part in re.split(r"\bthen\b|;|&&|\belse\b", line):
            match = re.search(r"(?:^|[\s-])(olly\s+[^|>#]*)", part.strip())
            if match and not match.group(1).startswith("olly-"):
                found.append(match.group(1).strip().rstrip(";"))
    return found


def check(command: str, tmp_path: Path) -> None:
    text = re.sub(r"\$\{\{[^}]*\}\}", "1", command)  # GitHub expressions
    text = re.sub(r'"?\$\{?(\w+)\}?/\$\{?(\w+)\}?"?', "1/3", text)  # $I/$N shard specs
    text = re.sub(r"\$\{?SHARDS\}?", "3", text)
    text = re.sub(r"\$\{?\w+\}?", "v1.0.0", text)  # other variables (refs and tags: versions)
    args = shlex.split(text)[1:]
    group: click.Group = cli
    ctx = cli.make_context("olly", [], resilient_parsing=True)
    while args and isinstance(group, click.Group):
        name = args.pop(0)
        sub = group.get_command(ctx, name)
        assert sub is not None, f"{command!r}: no command {name!r}"
        if isinstance(sub, click.Group):
            group = sub
            continue
        with sub.make_context(name, args, parent=ctx) as sub_ctx:  # raises on unknown options/bad values
            assert sub_ctx.params is not None
        return


@pytest.mark.parametrize("path", [".github/workflows/olly.yml"])
def test_github_workflow(path: str, tmp_path: Path, monkeypatch) -> None:
    text = (ROOT / path).read_text()
    doc = yaml.safe_load(text)
    assert {"pr", "plan", "build", "charts"} <= set(doc["jobs"])
    assert doc["jobs"]["build"]["strategy"]["matrix"]["shard"].startswith("${{ fromJSON(needs.plan.outputs.shards)")
    pr_steps = " ".join(str(s.get("run", "")) for s in doc["jobs"]["pr"]["steps"])
    assert "--push" not in pr_steps and "OLLY_SIGNING_KEY" not in str(doc["jobs"]["pr"])  # PRs cannot poison main's cache
    check_all(text, 6, tmp_path, monkeypatch)


def test_gitlab_example(tmp_path: Path, monkeypatch) -> None:
    text = (ROOT / "docs" / "gitlab-ci.md").read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    doc = yaml.safe_load(block)
    assert {"plan", "build", "charts", "mr"} <= set(doc)
    check_all(block, 5, tmp_path, monkeypatch)


def check_all(text: str, at_least: int, tmp_path: Path, monkeypatch) -> None:
    """Every olly command of ``text`` (at least ``at_least``) parses as the CLI takes it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plan.json").write_text("{}")
    commands = olly_commands(text)
    assert len(commands) >= at_least
    for command in commands:
        check(command, tmp_path)


def test_a_wrong_flag_is_caught(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(click.UsageError):
        check("olly make --registry ghcr --shardz 1/3", tmp_path)
    with pytest.raises(AssertionError):
        check("olly build --registry ghcr", tmp_path)


def test_setup_instructions_for_users_and_developers() -> None:
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    assert "pip install .  " in setup and "pip install -e '.[test]'" in setup
    assert "python -m pip install -q -e '.[test]'" in (ROOT / ".ci" / "run").read_text()  # CI: the developer command


def test_default_jobs_leave_room_for_waiting_builds(monkeypatch) -> None:
    import os

    from olly import api

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert api.default_jobs() == 4
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert api.default_jobs() == 16
