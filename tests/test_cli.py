"""The CLI: output shapes, one-line errors, exit codes (no engine needed but for one `docker` test)."""

from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from olly.cli import cli

REPO = Path(__file__).resolve().parent.parent
NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/olly-test.sock"}


def olly(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "olly", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **NO_ENGINE}, timeout=120)


def test_plan_on_repo_without_engine(tmp_path: Path) -> None:
    proc = olly("plan")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(re.match(r"build   apps/ollyscale +ollyscale/ollyscale:olly-", l) for l in lines)  # aligned columns
    assert any(l.startswith("package charts/ollyscale") for l in lines)
    assert "engine not reachable" in lines[-1]


def test_plan_json() -> None:
    proc = olly("plan", "--json", "charts/ollyscale-demos")
    data = json.loads(proc.stdout)
    assert [t["label"] for t in data["targets"]] == ["apps/demo", "charts/ollyscale-demos"]
    assert data["targets"][0]["action"] == "build" and len(data["targets"][0]["key"]) == 32
    assert data["targets"][1]["depends_on"] == ["apps/demo"]


def test_inputs_lists_files_and_key() -> None:
    proc = olly("inputs", "apps/ollyscale")
    assert proc.returncode == 0
    assert "main.py" in proc.stdout and "tests/test_smoke.py" not in proc.stdout  # excluded by .dockerignore
    data = json.loads(olly("inputs", "--json", "apps/ollyscale").stdout)
    assert data["key"] in proc.stdout


def test_graph_formats() -> None:
    assert "digraph olly" in olly("graph", "--format", "dot").stdout
    assert olly("graph", "--format", "mermaid").stdout.startswith("graph LR")
    assert "charts/ollyscale-demos  <- apps/demo" in olly("graph").stdout


def test_unknown_target_suggests_and_exits_2() -> None:
    proc = olly("plan", "apps/olyscale")
    assert proc.returncode == 2
    assert proc.stderr.startswith("olly: error: unknown target 'apps/olyscale'; did you mean apps/ollyscale,")


def test_config_error_one_line_and_debug_traceback(tmp_path: Path) -> None:
    (tmp_path / "BUILD.toml").write_text('[images."a"]\nrepository = "x/a"\n')
    proc = olly("plan", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == 'olly: error: BUILD.toml:1: images.a.context: directory not found: a'
    debug = olly("--debug", "plan", cwd=tmp_path)
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_no_workspace(tmp_path: Path) -> None:
    proc = olly("plan", cwd=tmp_path)
    assert proc.returncode == 2 and "no BUILD.toml found" in proc.stderr


def test_make_without_engine_exits_3() -> None:
    proc = olly("-C", str(REPO / "examples" / "quickstart"), "make")
    assert proc.returncode == 3
    assert "no Docker engine at unix:///nonexistent/olly-test.sock" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_inputs_of_a_chart() -> None:
    proc = olly("inputs", "charts/ollyscale-demos")
    assert proc.returncode == 0, proc.stderr
    assert "image    frontend.image <- apps/demo" in proc.stdout and "templates/" in proc.stdout
    why = olly("why", "charts/ollyscale")  # charts are explained too (issue #13)
    assert why.returncode == 0 and why.stdout.startswith("charts/ollyscale: "), why.stderr


# -- --network beats BUILD.toml (issue #7, item 16) ------------------------------------------

NETWORK_WS = ('[workspace]\nnetwork = "bridge"\n'
              '[images.own]\nrepository = "x/own"\nnetwork = "none"\n'
              '[images.plain]\nrepository = "x/plain"\n')


def _network_ws(root: Path) -> Path:
    for name in ("own", "plain"):
        (root / name).mkdir(parents=True)
        (root / name / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    (root / "BUILD.toml").write_text(NETWORK_WS)
    return root


@pytest.mark.parametrize("flag, expected", [
    ([], {"own": "none", "plain": "bridge"}),  # per-image > workspace
    (["--network", "host"], {"own": "host", "plain": "host"}),  # CLI > per-image > workspace
])
def test_network_flag_overrides_build_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: list[str],
                                           expected: dict[str, str]) -> None:
    from fakes import FakeEngine

    root = _network_ws(tmp_path / "ws")
    engine = FakeEngine()
    seen: dict[str, str | None] = {}
    engine.during_build = lambda req: seen.__setitem__(req.dockerfile_display.split("/")[0], req.network)
    monkeypatch.setattr("olly.api.Engine", lambda: engine)
    result = CliRunner().invoke(cli, ["-C", str(root), "make", *flag])
    assert result.exit_code == 0, result.output
    assert seen == expected


@pytest.mark.docker
@pytest.mark.builder
def test_network_flag_overrides_image_network_in_a_real_build(tmp_path: Path, docker_client, busybox: Path,
                                                              unique_prefix: str) -> None:
    host_nets = sorted(os.listdir("/sys/class/net"))
    if host_nets == ["lo"]:
        pytest.skip("this host has no interface but lo: host and none networks look alike")
    root = tmp_path / "net"
    (root / "n").mkdir(parents=True)
    shutil.copyfile(busybox, root / "n" / "busybox")
    (root / "n" / "busybox").chmod(0o755)
    # A step unique to this test: BuildKit's cache outlives the images (and ignores the network),
    # a cached step prints nothing.
    (root / "n" / "Dockerfile").write_text('FROM scratch\nCOPY busybox /bin/busybox\n'
                                           f'RUN ["/bin/busybox", "sh", "-c", "echo {unique_prefix}; '
                                           'echo nets: $(/bin/busybox ls /sys/class/net)"]\n')
    (root / "BUILD.toml").write_text(f'[images.n]\nrepository = "{unique_prefix}/n"\nnetwork = "none"\n')
    proc = subprocess.run([sys.executable, "-m", "olly", "make", "--network", "host"], cwd=root, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"nets: {' '.join(host_nets)}" in (root / ".cache" / "logs" / "n.log").read_text()


# -- file names that would break line output (issue #7, item 17) -----------------------------

ODD_NAMES = ["a\nb", "tab\there", "esc\x1b[31mred", "bidi\u202etxt.exe", "back\\slash", "cr\rx"]


def _odd_ws(root: Path) -> Path:
    (root / "a").mkdir(parents=True)
    (root / "a" / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    for name in ODD_NAMES:
        (root / "a" / name).write_text("x\n")
    (root / "c" / "templates").mkdir(parents=True)
    (root / "c" / "Chart.yaml").write_text("apiVersion: v2\nname: c\nversion: 0.1.0\n")
    (root / "c" / "values.yaml").write_text("image:\n  repository: x\n  tag: y\n")
    (root / "c" / "templates" / "x\ny.yaml").write_text("x: 1\n")
    (root / "BUILD.toml").write_text('[images.a]\nrepository = "x/a"\n[charts.c]\nimages = { "image" = "a" }\n')
    return root


def test_inputs_escapes_file_names(tmp_path: Path) -> None:
    root = _odd_ws(tmp_path / "ws")
    proc = olly("inputs", "a", cwd=root)
    assert proc.returncode == 0, proc.stderr
    files = [line for line in proc.stdout.splitlines() if line.startswith(("file ", "exec ", "dir  ", "link "))]
    assert len(files) == len(ODD_NAMES) + 1  # one line per file (and the Dockerfile)
    for escaped in ["a\\nb", "tab\\there", "esc\\x1b[31mred", "bidi\\u202etxt.exe", "back\\\\slash", "cr\\rx"]:
        assert any(line.endswith(" " + escaped) for line in files), (escaped, files)
    assert not any(c in proc.stdout for c in "\x1b\u202e\r\t")
    data = json.loads(olly("inputs", "--json", "a", cwd=root).stdout)  # JSON keeps the real names
    assert set(ODD_NAMES) <= {row[0] for row in data["files"]}
    chart = olly("inputs", "c", cwd=root)
    assert chart.returncode == 0, chart.stderr
    assert any(line.endswith(" templates/x\\ny.yaml") for line in chart.stdout.splitlines()), chart.stdout


def test_why_escapes_file_names(tmp_path: Path) -> None:
    from fakes import FakeEngine
    from olly import api

    root = _odd_ws(tmp_path / "ws")
    api.make(root, ["a"], engine=FakeEngine())
    (root / "a" / "new\nfile").write_text("x\n")
    proc = olly("why", "a", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert "  + file new\\nfile" in proc.stdout.splitlines(), proc.stdout


# -- machine-readable output (issue #13) -------------------------------------------------


@pytest.mark.parametrize("args", [("plan", "--json"), ("inputs", "apps/demo", "--json"), ("why", "apps/demo", "--json"),
                                  ("graph", "--format", "json"), ("log", "--json"), ("stats", "--json")])
def test_every_json_document_carries_a_schema(args: tuple[str, ...]) -> None:
    proc = olly(*args)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["schema"] == 1


def test_a_fatal_error_in_json_mode_is_json_on_stdout_too() -> None:
    proc = olly("plan", "web", "--json")
    assert proc.returncode == 2
    assert proc.stderr.startswith("olly: error: unknown target 'web'")
    data = json.loads(proc.stdout)
    assert data["schema"] == 1 and data["error"]["reason"] == "unknown-target" and data["error"]["exit_code"] == 2
    assert "did you mean apps/web" not in data["error"]["message"]  # (no apps/web in this repo)
    plain = olly("plan", "web")
    assert plain.stdout == ""  # without --json, stdout stays empty


def test_why_changes_come_as_structured_objects_too(tmp_path: Path) -> None:
    from fakes import FakeEngine
    from olly import api

    root = tmp_path / "w"
    shutil.copytree(REPO / "tests" / "data" / "busy", root)
    api.make(root, ["solo"], engine=FakeEngine())
    (root / "solo" / "data.txt").write_text("changed\n")
    build = root / "BUILD.toml"
    build.write_text(build.read_text().replace('GREETING = "hello"', 'GREETING = "bye"'))
    data = json.loads(olly("why", "solo", "--json", cwd=root).stdout)
    assert data["changes"] and len(data["details"]) == len(data["changes"])
    by_path = {d["path"]: d for d in data["details"]}
    assert by_path["data.txt"]["change"] == "modified" and by_path["data.txt"]["kind"] == "file"
    assert by_path["GREETING"] | {"text": None} == {"change": "modified", "kind": "arg", "path": "GREETING",
                                                    "old": "'hello'", "new": "'bye'", "detail": None, "text": None}


def test_labels_relative_to_the_current_directory_and_bare_names() -> None:
    inside = olly("plan", ".", cwd=REPO / "apps" / "demo")
    assert inside.returncode == 0, inside.stderr
    assert [line.split()[1] for line in inside.stdout.splitlines()[:-1]] == ["apps/demo"]
    bare = olly("plan", "demo")
    assert bare.returncode == 2 and "did you mean apps/demo?" in bare.stderr
