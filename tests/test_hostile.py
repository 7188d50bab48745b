"""Hostile and broken inputs, end to end through the CLI.

Every broken input must give exactly one ``olly: error:`` line on stderr that names
where the problem is (``BUILD.toml:<line>`` or the offending path), a non-zero exit
(2 for config/usage errors, 3 for environment errors), never a traceback, and, for
an invalid BUILD.toml, no ``.cache/olly.db``. No Docker engine is needed: ``plan``,
``inputs`` run with DOCKER_HOST pointing at a socket that does not exist.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent.sock"}
DOCKERFILE = "FROM scratch\nCOPY . /\n"
CHART_YAML = "apiVersion: v2\nname: c\nversion: 0.1.0\n"
VALUES_YAML = "image:\n  repository: x\n  tag: y\n"


# -- helpers ------------------------------------------------------------------


def olly(ws: Path, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
         prefix: list[str] | None = None, **kw) -> subprocess.CompletedProcess[str]:
    """Run ``python -m olly -C ws ARGS`` (default command: ``plan``) from ``ws``'s parent."""
    cmd = [*(prefix or []), sys.executable, "-m", "olly", "-C", str(ws), *(args or ("plan",))]
    full_env = {**os.environ, **NO_ENGINE, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(cmd, cwd=cwd or ws.parent, capture_output=True, text=True, env=full_env,
                          timeout=120, errors="replace", **kw)


def olly_forked(ws: Path, *args: str, cwd: Path | None = None, preexec=None) -> subprocess.CompletedProcess[str]:
    """The same CLI entry point (``olly.cli.main``) in a forked child: a separate process with
    its own exit code, stdout and stderr (pipes), without paying interpreter startup (~0.4 s)
    per case. Used for the large case tables; representative cases also go through ``olly()``."""
    import threading

    import olly.cli  # noqa: F401  (imported before the fork, once)

    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 99
        try:
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            for fd in (out_r, out_w, err_r, err_w):
                os.close(fd)
            sys.stdout = open(1, "w", closefd=False, errors="surrogateescape")
            sys.stderr = open(2, "w", closefd=False, errors="surrogateescape")
            os.chdir(cwd or ws.parent)
            os.environ.update(NO_ENGINE)
            if preexec is not None:
                preexec()
            try:
                sys.modules["olly.cli"].main(["-C", str(ws), *(args or ("plan",))])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    os.close(out_w)
    os.close(err_w)
    chunks: dict[int, bytes] = {}

    def drain(fd: int) -> None:
        with open(fd, "rb") as f:
            chunks[fd] = f.read()

    readers = [threading.Thread(target=drain, args=(fd,)) for fd in (out_r, err_r)]
    for t in readers:
        t.start()
    for t in readers:
        t.join(timeout=120)
    _, status = os.waitpid(pid, 0)
    return subprocess.CompletedProcess(["olly", *args], os.waitstatus_to_exitcode(status),
                                       chunks[out_r].decode(errors="replace"), chunks[err_r].decode(errors="replace"))


def one_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str, where: str | None = None) -> str:
    """Assert the one-clear-line contract; return the line."""
    detail = f"rc={proc.returncode}\nstdout={proc.stdout[-2000:]!r}\nstderr={proc.stderr[-2000:]!r}"
    assert "Traceback" not in proc.stderr + proc.stdout, detail
    assert proc.returncode == code, detail
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, detail
    line = lines[0]
    assert line.startswith("olly: error: "), detail
    assert "internal error" not in line, detail
    if where is not None:
        assert re.search(where, line), f"location {where!r} missing from {line!r}"
    for needle in needles:
        assert needle.lower() in line.lower(), f"{needle!r} missing from {line!r}"
    return line


def no_db(ws: Path) -> None:
    assert not (ws / ".cache" / "olly.db").exists(), "an invalid workspace must not create the cache"


def nothing_recorded(ws: Path) -> None:
    """The cache may exist (opened before the inputs were scanned) but holds no rows."""
    db = ws / ".cache" / "olly.db"
    if not db.exists():
        return
    conn = sqlite3.connect(db)
    try:
        for table in ("stat", "results", "manifests", "pushes", "artifacts"):
            assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0, table
    finally:
        conn.close()


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def workspace(tmp_path: Path, build: str | bytes, images: tuple[str, ...] = ("a",), charts: tuple[str, ...] = ()) -> Path:
    """``tmp_path/ws`` with BUILD.toml = ``build``, a Dockerfile per image dir and a chart per chart dir."""
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    for d in images:
        write(ws / d / "Dockerfile", DOCKERFILE)
    for d in charts:
        write(ws / d / "Chart.yaml", CHART_YAML)
        write(ws / d / "values.yaml", VALUES_YAML)
    write(ws / "BUILD.toml", build)
    return ws


IMAGE_A = '[images.a]\nrepository = "x/a"\n'
NO_LINE = r"error: (\S*/)?BUILD\.toml: "  # located at the file, no line to point at


def test_baseline_workspace_plans(tmp_path: Path) -> None:
    ws = workspace(tmp_path, IMAGE_A + '[charts.c]\nimages = { "image" = "a" }\n', charts=("c",))
    proc = olly(ws)
    assert proc.returncode == 0, proc.stderr
    assert "build   a  x/a:olly-" in proc.stdout and "package c" in proc.stdout
    assert (ws / ".cache" / "olly.db").exists()


# -- group 1: BUILD.toml ------------------------------------------------------

# (id, BUILD.toml text, expected location regex, words the line must contain)
CONFIG_CASES = [
    ("invalid-toml", '[images."a"\nrepository = "x/a"\n', r"BUILD\.toml:1: ", ["invalid TOML"]),
    ("invalid-toml-later-line", IMAGE_A + 'args = { A = "1"\n', r"BUILD\.toml:3: ", ["invalid TOML"]),
    ("unterminated-string", '[images.a]\nrepository = "x/a\n', r"BUILD\.toml:2: ", ["invalid TOML"]),
    ("bom", '\ufeff' + IMAGE_A, r"BUILD\.toml:1: ", ["invalid TOML"]),
    ("nul-in-toml", IMAGE_A + 'x = "\x00"\n', r"BUILD\.toml:3: ", ["invalid TOML"]),
    ("wrong-type-repository", '[images.a]\nrepository = 3\n', r"BUILD\.toml:2: ", ["images.a.repository", "string"]),
    ("wrong-type-args", IMAGE_A + 'args = { A = 1 }\n', r"BUILD\.toml:3: ", ["images.a.args.A", "string"]),
    ("wrong-type-args-list", IMAGE_A + 'args = ["A=1"]\n', r"BUILD\.toml:3: ", ["images.a.args", "dictionary"]),
    ("wrong-type-depends-on", IMAGE_A + 'depends_on = "b"\n', r"BUILD\.toml:3: ", ["images.a.depends_on", "list"]),
    ("wrong-type-secrets", IMAGE_A + 'secrets = "X"\n', r"BUILD\.toml:3: ", ["images.a.secrets", "list"]),
    ("wrong-type-inputs-item", IMAGE_A + 'inputs = [1]\n', r"BUILD\.toml:3: ", ["images.a.inputs", "string"]),
    ("wrong-type-platform", IMAGE_A + 'platform = true\n', r"BUILD\.toml:3: ", ["images.a.platform"]),
    ("wrong-type-image-table", '[images]\na = 3\n', r"BUILD\.toml:2: ", ["images.a"]),
    ("wrong-type-images", 'images = 3\n', r"BUILD\.toml:1: ", ["images"]),
    ("wrong-type-workspace", 'workspace = "w"\n' + IMAGE_A, r"BUILD\.toml:1: ", ["workspace"]),
    ("wrong-type-insecure", '[registries.r]\npush = "r.example"\ninsecure = "yes"\n' + IMAGE_A, r"BUILD\.toml:3: ",
     ["registries.r.insecure", "boolean"]),
    ("wrong-type-chart-images", IMAGE_A + '[charts.c]\nimages = { "image" = 1 }\n', r"BUILD\.toml:4: ",
     ["charts.c.images.image", "string"]),
    ("array-of-tables", '[[images]]\nrepository = "x/a"\n', r"BUILD\.toml:1: ", ["images"]),
    ("unknown-key", IMAGE_A + 'foo = 1\n', r"BUILD\.toml:3: ", ["images.a.foo", "unknown key"]),
    ("unknown-key-dotted", 'images.a.repository = "x/a"\nimages.a.dockerfle = "a/Dockerfile"\n', r"BUILD\.toml:2: ",
     ["images.a.dockerfle", "unknown key"]),
    ("unknown-section", IMAGE_A + '[imagez.b]\nrepository = "x/b"\n', r"BUILD\.toml:3: ", ["imagez", "unknown key"]),
    ("unknown-workspace-key", '[workspace]\nnmae = "w"\n' + IMAGE_A, r"BUILD\.toml:2: ", ["workspace.nmae", "unknown key"]),
    ("missing-repository", '[images.a]\ncontext = "a"\n', r"BUILD\.toml:1: ", ["images.a.repository", "missing"]),
    ("same-table-twice", IMAGE_A + '[images.a]\nrepository = "x/b"\n', r"BUILD\.toml:3: ", ["invalid TOML", "twice"]),
    ("same-key-twice", IMAGE_A + 'repository = "x/b"\n', r"BUILD\.toml:3: ", ["invalid TOML"]),
    ("label-image-and-chart", IMAGE_A + '[charts.a]\n', r"BUILD\.toml:3: ", ["charts.a", "already declared"]),
    ("label-dotdot", '[images."../x"]\nrepository = "x/a"\n', r"BUILD\.toml:1: ", ["escapes the workspace", "../x"]),
    ("label-dotdot-inner", '[images."a/../../x"]\nrepository = "x/a"\n', r"BUILD\.toml:1: ", ["escapes the workspace"]),
    ("label-absolute", '[images."/etc"]\nrepository = "x/a"\n', r"BUILD\.toml:1: ", ["workspace-relative", "/etc"]),
    ("label-backslash", '[images."a\\\\b"]\nrepository = "x/a"\n', r"BUILD\.toml:1: ", ["workspace-relative"]),
    ("label-empty", '[images.""]\nrepository = "x/a"\n', r"BUILD\.toml:1: ", ["workspace-relative"]),
    ("label-dot", '[images."."]\nrepository = "x/a"\ndockerfile = "a/Dockerfile"\n', r"BUILD\.toml:1: ", ["normalised"]),
    ("label-not-normalised", '[images."./a"]\nrepository = "x/a"\n', r"BUILD\.toml:1: ", ["normalised", "'a'"]),
    ("label-too-long", f'[images.{"a" * 300}]\nrepository = "x/a"\n', r"BUILD\.toml:1: ", ["file name too long"]),
    ("context-over-path-max", IMAGE_A + f'context = "{"/".join(["d"] * 3000)}"\n', r"BUILD\.toml:3: ",
     ["images.a.context"]),
    ("label-trailing-slash", '[images."a/"]\nrepository = "x/a"\n', r"BUILD\.toml:1: ", ["normalised"]),
    ("chart-label-dotdot", IMAGE_A + '[charts."../c"]\n', r"BUILD\.toml:3: ", ["charts", "escapes the workspace"]),
    ("context-absolute", IMAGE_A + 'context = "/tmp"\n', r"BUILD\.toml:3: ", ["images.a.context", "/tmp"]),
    ("dockerfile-dotdot", IMAGE_A + 'dockerfile = "../Dockerfile"\n', r"BUILD\.toml:3: ", ["images.a.dockerfile", "escapes"]),
    ("inputs-dotdot", IMAGE_A + 'inputs = ["a/**/../../../etc/passwd"]\n', r"BUILD\.toml:3: ", ["images.a.inputs", "escapes"]),
    ("inputs-absolute", IMAGE_A + 'inputs = ["/etc/passwd"]\n', r"BUILD\.toml:3: ", ["images.a.inputs", "/etc/passwd"]),
    ("missing-dockerfile", '[images.b]\nrepository = "x/b"\ncontext = "a"\ndockerfile = "a/Dockerfile.x"\n',
     r"BUILD\.toml:4: ", ["images.b.dockerfile", "file not found", "a/Dockerfile.x"]),
    ("missing-default-dockerfile", '[images.a]\nrepository = "x/a"\ndockerfile = "a/Nope"\n', r"BUILD\.toml:3: ",
     ["file not found: a/Nope"]),
    ("missing-context", '[images.b]\nrepository = "x/b"\n', r"BUILD\.toml:1: ", ["directory not found: b"]),
    ("dockerfile-is-dir", IMAGE_A + 'dockerfile = "a"\n', r"BUILD\.toml:3: ", ["file not found: a"]),
    ("missing-chart", IMAGE_A + '[charts.c]\n', r"BUILD\.toml:3: ", ["charts.c", "no Chart.yaml in c"]),
    ("unknown-dependency", IMAGE_A + 'depends_on = ["b"]\n', r"BUILD\.toml:3: ", ["images.a.depends_on", "unknown image target 'b'"]),
    ("dependency-typo", IMAGE_A + '[images.b]\nrepository = "x/b"\ncontext = "a"\ndepends_on = ["aa"]\n', r"BUILD\.toml:6: ",
     ["unknown image target 'aa'", "did you mean a"]),
    ("depends-on-chart", IMAGE_A + 'depends_on = ["c"]\n[charts.c]\n', r"BUILD\.toml:3: ", ["'c' is a chart"]),
    ("chart-unknown-image", IMAGE_A + '[charts.c]\nimages = { "image" = "b" }\n', r"BUILD\.toml:4: ",
     ["charts.c.images.image", "unknown image target 'b'"]),
    ("duplicate-repository", IMAGE_A + '[images.b]\nrepository = "x/a"\ncontext = "a"\n', r"BUILD\.toml:4: ",
     ["images.b.repository", "already used"]),
    ("bad-repository", '[images.a]\nrepository = "X/A:latest"\n', r"BUILD\.toml:2: ", ["invalid repository name"]),
    ("registry-host-in-repository", '[images.a]\nrepository = "ghcr.io/x/a"\n', r"BUILD\.toml:2: ", ["registry host"]),
    ("bad-platform", IMAGE_A + 'platform = "linux"\n', r"BUILD\.toml:3: ", ["invalid platform"]),
    ("bad-arg-name", IMAGE_A + 'args = { "1A" = "x" }\n', r"BUILD\.toml:3: ", ["images.a.args", "invalid build-arg name"]),
    ("secret-and-arg", IMAGE_A + 'args = { T = "x" }\nsecrets = ["T"]\n', r"BUILD\.toml:4: ", ["both a secret"]),
    ("bad-endpoint", '[registries.r]\npush = "https://r.example"\n' + IMAGE_A, r"BUILD\.toml:2: ", ["registries.r.push", "invalid endpoint"]),
    ("empty-file", "", NO_LINE, ["declares no targets"]),
    ("comments-only", "# nothing here\n\n", NO_LINE, ["declares no targets"]),
    ("workspace-only", '[workspace]\nname = "w"\n', NO_LINE, ["declares no targets"]),
    ("non-utf8", b'[images.a]\nrepository = "x/\xff\xfe"\n', NO_LINE, ["not UTF-8"]),
    ("latin1-comment", b'# caf\xe9\n' + IMAGE_A.encode(), NO_LINE, ["not UTF-8", "byte 5"]),
]


def _chart_c(ws: Path) -> None:
    write(ws / "c" / "Chart.yaml", CHART_YAML)
    write(ws / "c" / "values.yaml", VALUES_YAML)


def _outside_link(ws: Path) -> None:
    """``ws/link`` -> a directory outside the workspace holding a Dockerfile and a chart."""
    outside = ws.parent / "outside"
    write(outside / "Dockerfile", DOCKERFILE)
    write(outside / "Chart.yaml", CHART_YAML)
    write(outside / "values.yaml", VALUES_YAML)
    (ws / "link").symlink_to(outside)


_SETUPS = {"depends-on-chart": _chart_c, "chart-unknown-image": _chart_c}
_THROUGH_LINK = ["resolves outside the workspace (through a symlink)", "link"]
CONFIG_CASES += [
    (f"symlink-{key}", build, r"BUILD\.toml:\d+: ", _THROUGH_LINK) for key, build in {
        "label": '[images.link]\nrepository = "x/a"\n',
        "context": IMAGE_A + 'context = "link"\n',
        "dockerfile": IMAGE_A + 'dockerfile = "link/Dockerfile"\n',
        "chart-label": IMAGE_A + '[charts.link]\n',
        "chart-path": IMAGE_A + '[charts.c]\npath = "link"\n',
        "inputs": IMAGE_A + 'inputs = ["link/Dockerfile"]\n',
        "inputs-glob": IMAGE_A + 'inputs = ["link/*"]\n',
    }.items()
]
_SETUPS.update({c[0]: _outside_link for c in CONFIG_CASES if c[0].startswith("symlink-")})
CONFIG_CASES += [
    ("cycle", IMAGE_A + 'depends_on = ["b"]\n[images.b]\nrepository = "x/b"\ncontext = "a"\ndepends_on = ["a"]\n',
     "", ["dependency cycle: a -> b -> a"]),
    ("self-dependency", IMAGE_A + 'depends_on = ["a"]\n', "", ["dependency cycle: a -> a"]),
    ("shallow-nesting", IMAGE_A + "args = " + "{a=" * 300 + '"1"' + "}" * 300 + "\n", r"BUILD\.toml:3: ",
     ["images.a.args.a"]),
]

CONFIG_CASES += [
    # Fixed in 9030e49 (found by this file): keep them fixed.
    ("nul-context", IMAGE_A + 'context = "a\\u0000b"\n', r"BUILD\.toml:3: ", ["control character"]),
    ("nul-dockerfile", IMAGE_A + 'dockerfile = "a/Docker\\u0000file"\n', r"BUILD\.toml:3: ", ["control character"]),
    ("nul-inputs", IMAGE_A + 'inputs = ["a/\\u0000"]\n', r"BUILD\.toml:3: ", ["control character"]),
    ("nul-image-label", '[images."a\\u0000"]\nrepository = "x/a"\n', r"BUILD\.toml:1: ", ["control character"]),
    ("nul-chart-label", IMAGE_A + '[charts."c\\u0000"]\n', r"BUILD\.toml:3: ", ["control character"]),
    ("nested-arrays", "x = " + "[" * 600 + "]" * 600 + "\n", NO_LINE, ["nested too deeply"]),
    ("nested-inline-tables", "x = " + "{a=" * 600 + "1" + "}" * 600 + "\n", NO_LINE, ["nested too deeply"]),
    ("nested-args", IMAGE_A + "args = " + "{a=" * 600 + '"1"' + "}" * 600 + "\n", NO_LINE, ["nested too deeply"]),
    ("cycle-located", IMAGE_A + 'depends_on = ["a"]\n', r"BUILD\.toml:3: ", ["images.a.depends_on", "cycle"]),
    ("inputs-no-match", IMAGE_A + 'inputs = ["a/nomatch*"]\n', r"BUILD\.toml:3: ", ["images.a.inputs", "'a/nomatch*' matches no file"]),
    ("inputs-glob-through-symlink", IMAGE_A + 'inputs = ["inp/*"]\n', r"BUILD\.toml:3: ",
     ["images.a.inputs", "inp/host", "outside the workspace"]),
]


def _input_link_outside(ws: Path) -> None:
    write(ws.parent / "secret.txt", "outside the workspace\n")
    write(ws / "inp" / "ok.txt", "ok\n")
    (ws / "inp" / "host").symlink_to(ws.parent / "secret.txt")


_SETUPS["inputs-glob-through-symlink"] = _input_link_outside

# Names the engine or a registry refuses, and labels that print as something else: refused when
# BUILD.toml is loaded, not by the engine at run time (issue #7, item 15).
_LONG_PUSH = "r.example:5000/" + "p" * 200
CONFIG_CASES += [
    ("repository-uppercase", '[images.a]\nrepository = "x/A"\n', r"BUILD\.toml:2: ", ["invalid repository name"]),
    ("repository-double-slash", '[images.a]\nrepository = "x//a"\n', r"BUILD\.toml:2: ", ["invalid repository name"]),
    ("repository-too-long", f'[images.a]\nrepository = "{"a" * 256}"\n', r"BUILD\.toml:2: ",
     ["images.a.repository", "256 characters"]),
    ("repository-too-long-under-registry", f'[registries.r]\npush = "{_LONG_PUSH}"\n' + IMAGE_A.replace("x/a", "x/" + "a" * 40),
     r"BUILD\.toml:4: ", ["images.a.repository", "registry 'r'", "over the 255"]),
    ("endpoint-port-too-big", '[registries.r]\npush = "r.example:65536"\n' + IMAGE_A, r"BUILD\.toml:2: ",
     ["registries.r.push", "port 65536"]),
    ("endpoint-port-five-nines", '[registries.r]\npush = "r.example"\npull = "r.example:99999/p"\n' + IMAGE_A,
     r"BUILD\.toml:3: ", ["registries.r.pull", "port 99999"]),
    ("label-bidi-override", '[images."a\\u202eb"]\nrepository = "x/a"\n', r"BUILD\.toml:1: ",
     ["invisible format character", "a\\u202eb"]),
    ("label-zero-width-space", '[images."a\\u200b"]\nrepository = "x/a"\ncontext = "a"\n', r"BUILD\.toml:1: ",
     ["invisible format character"]),
    ("label-direction-mark", '[images."a\\u200f"]\nrepository = "x/a"\ncontext = "a"\n', r"BUILD\.toml:1: ",
     ["invisible format character"]),
    ("chart-label-bidi-isolate", IMAGE_A + '[charts."c\\u2066"]\npath = "c"\n', r"BUILD\.toml:3: ",
     ["charts", "invisible format character"]),
]
_SETUPS["chart-label-bidi-isolate"] = _chart_c

# Known bugs: the same contract, expected to fail until olly is fixed.
_RAW_KEY_BUG = ("BUG: config.py format_key_path prints control characters of TOML keys raw: a newline splits "
                "the error over lines (an ESC would reach the terminal)")
BUG_CASES = [
    ("newline-in-label", '[images."a\\nb"]\nrepository = "x/a"\n', r"BUILD\.toml:1: ", ["control character"], _RAW_KEY_BUG),
    ("newline-in-arg-name", IMAGE_A + 'args = { "A\\nB" = "1" }\n', r"BUILD\.toml:3: ", ["invalid build-arg name"], _RAW_KEY_BUG),
    ("newline-in-registry-name", '[registries."r\\nx"]\npush = "https://r"\n' + IMAGE_A, r"BUILD\.toml:2: ",
     ["invalid endpoint"], _RAW_KEY_BUG),
    ("newline-in-unknown-key", IMAGE_A + '"x\\ny" = 1\n', r"BUILD\.toml:3: ", ["unknown key"], _RAW_KEY_BUG),
]


@pytest.fixture(scope="module")
def config_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, subprocess.CompletedProcess[str]]]:
    """Every BUILD.toml case, each in its own workspace (forked runs; a few also run as real subprocesses)."""
    base = tmp_path_factory.mktemp("config")
    spaces = {}
    for case_id, build, *_ in [*CONFIG_CASES, *BUG_CASES]:
        (base / case_id).mkdir()
        spaces[case_id] = ws = workspace(base / case_id, build)
        if case_id in _SETUPS:
            _SETUPS[case_id](ws)
    return {case_id: (ws, olly_forked(ws)) for case_id, ws in spaces.items()}


# The same contract through a real `python -m olly` for one case of each kind.
SUBPROCESS_CASES = ["invalid-toml", "wrong-type-args", "unknown-key", "same-table-twice", "label-image-and-chart",
                    "label-dotdot", "label-absolute", "symlink-label", "missing-dockerfile", "empty-file", "cycle",
                    "unknown-dependency", "non-utf8"]


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_broken_build_toml_subprocess(config_runs, case_id: str) -> None:
    ws, forked = config_runs[case_id]
    shutil.rmtree(ws / ".cache", ignore_errors=True)
    proc = olly(ws)
    case = next(c for c in CONFIG_CASES if c[0] == case_id)
    one_error(proc, 2, *case[3], where=case[2] or None)
    assert (proc.returncode, proc.stderr) == (forked.returncode, forked.stderr)
    no_db(ws)


@pytest.mark.parametrize("case", [
    *[pytest.param(c, id=c[0]) for c in CONFIG_CASES],
    *[pytest.param(c, id=c[0]) for c in BUG_CASES],  # bugs found here, since fixed
])
def test_broken_build_toml(config_runs, case) -> None:
    case_id, _, where, needles, *_ = case
    ws, proc = config_runs[case_id]
    one_error(proc, 2, *needles, where=where or None)
    no_db(ws)


def test_oversized_build_toml(tmp_path: Path) -> None:
    ws = workspace(tmp_path, IMAGE_A + "#" * (1 << 20) + "\n")
    one_error(olly(ws), 2, "over the 1048576", where=NO_LINE)
    no_db(ws)


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def test_huge_sparse_build_toml(tmp_path: Path) -> None:
    ws = workspace(tmp_path, "")
    with open(ws / "BUILD.toml", "wb") as f:
        f.truncate(4 << 30)  # sparse: no disk used
    one_error(olly(ws, preexec_fn=_limit_memory), 2, "over the 1048576", where=NO_LINE)
    no_db(ws)


@pytest.mark.parametrize("kind", ["directory", "dangling-symlink", "fifo"])
def test_build_toml_not_a_file(tmp_path: Path, kind: str) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    target = ws / "BUILD.toml"
    if kind == "directory":
        target.mkdir()
    elif kind == "dangling-symlink":
        target.symlink_to(tmp_path / "nowhere")
    else:
        os.mkfifo(target)
    one_error(olly(ws), 2, "no BUILD.toml found", str(ws))
    no_db(ws)


def test_missing_workspace_dir(tmp_path: Path) -> None:
    one_error(olly(tmp_path / "nope"), 2, "no such directory", str(tmp_path / "nope"))


# -- group 2: .dockerignore and .helmignore -----------------------------------

IGNORE_CASES = [
    # (id, context, .dockerignore bytes, location, words)
    ("bad-class", "a", b"# comment\nfoo\n[z-\n", r"error: a/\.dockerignore:3: ", ["[z-", "bad character class"]),
    ("bad-class-root-context", ".", b"x\n\n[z-\n", r"error: \.dockerignore:3: ", ["[z-"]),
    ("bad-class-nested-context", "a/b", b"[\n", r"error: a/b/\.dockerignore:1: ", ["'['"]),
    ("bad-exception", "a", b"ok\n![z-\n", r"error: a/\.dockerignore:2: ", ["[z-"]),
    ("bad-after-doublestar", "a", b"**/[z-\n", r"error: a/\.dockerignore:1: ", ["[z-"]),
    ("trailing-backslash", "a", b"x\ny\nz\\\n", r"error: a/\.dockerignore:3: ", ["trailing backslash"]),
    ("crlf", "a", b"x\r\n[z-\r\n", r"error: a/\.dockerignore:2: ", ["[z-"]),
    ("bom", "a", b"\xef\xbb\xbf[z-\n", r"error: a/\.dockerignore:1: ", ["[z-"]),
    ("non-utf8-then-bad", "a", b"\xff\xfe\n[z-\n", r"error: a/\.dockerignore:2: ", ["[z-"]),
]


def _ignore_ws(root: Path, context: str, ignore: bytes) -> Path:
    build = IMAGE_A + f'context = "{context}"\ndockerfile = "{posix_join(context, "Dockerfile")}"\n'
    ws = workspace(root, build, images=(context,))
    write(ws / "a" / "keep.txt", "x\n")
    write(ws / context / ".dockerignore", ignore)
    return ws


def posix_join(*parts: str) -> str:
    return "/".join(p for p in parts if p != ".")


@pytest.mark.parametrize("case", IGNORE_CASES, ids=[c[0] for c in IGNORE_CASES])
def test_broken_dockerignore(tmp_path: Path, case) -> None:
    _, context, ignore, where, needles = case
    ws = _ignore_ws(tmp_path, context, ignore)
    one_error(olly_forked(ws), 2, *needles, where=where)
    nothing_recorded(ws)
    one_error(olly_forked(ws, "inputs", "a"), 2, *needles, where=where)


def test_broken_dockerignore_subprocess(tmp_path: Path) -> None:
    ws = _ignore_ws(tmp_path, "a", b"# comment\nfoo\n[z-\n")
    one_error(olly(ws), 2, "invalid pattern '[z-'", where=r"error: a/\.dockerignore:3: ")
    nothing_recorded(ws)


def _inputs_json(ws: Path, target: str = "a", run=None) -> dict:
    proc = (run or olly_forked)(ws, "inputs", target, "--json")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return json.loads(proc.stdout)


def test_dockerignore_excluding_everything(tmp_path: Path) -> None:
    """``*`` excludes everything, Dockerfile and .dockerignore included: Docker sends those two
    (the daemon needs them) and removes them before COPY, so no file reaches the key's file list;
    the .dockerignore itself is still keyed."""
    ws = workspace(tmp_path, IMAGE_A)
    write(ws / "a" / ".dockerignore", "*\n")
    write(ws / "a" / "f.txt", "x\n")
    write(ws / "a" / "sub" / "g.txt", "y\n")
    (ws / "a" / "link").symlink_to("f.txt")
    data = _inputs_json(ws, run=olly)
    assert data["files"] == []
    assert data["dockerignore"] and data["dockerfile"]
    text = olly_forked(ws, "inputs", "a").stdout
    assert not any(line.startswith(("file ", "dir ", "link ", "exec ")) for line in text.splitlines()), text
    # Consistent: editing an excluded file changes nothing; editing the patterns does.
    key = data["key"]
    write(ws / "a" / "f.txt", "changed\n")
    write(ws / "a" / "new.txt", "new\n")
    assert _inputs_json(ws)["key"] == key
    write(ws / "a" / ".dockerignore", "*\n# edited\n")
    assert _inputs_json(ws)["key"] != key


def test_dockerignore_everything_but_dockerfile(tmp_path: Path) -> None:
    ws = workspace(tmp_path, IMAGE_A)
    write(ws / "a" / ".dockerignore", "*\n!Dockerfile\n")
    write(ws / "a" / "f.txt", "x\n")
    assert [row[0] for row in _inputs_json(ws)["files"]] == ["Dockerfile"]


HELMIGNORE_CASES = [
    # (id, .helmignore text, location, words)
    ("doublestar", "# x\n**\n", r"error: c/\.helmignore:2: ", ["double-star"]),
    ("doublestar-inside", "templates/**/x\n", r"error: c/\.helmignore:1: ", ["double-star"]),
    ("bad-class", "ok\n\n[z-\n", r"error: c/\.helmignore:3: ", ["syntax error", "[z-"]),
    ("bad-negated-class", "!x[\n", r"error: c/\.helmignore:1: ", ["syntax error"]),
    ("excludes-chart-yaml", "Chart.yaml\n", r"error: c: ", ["Chart.yaml is missing or excluded by .helmignore"]),
    ("excludes-values-yaml", "*.yaml\n", r"error: c: ", ["Chart.yaml is missing or excluded by .helmignore"]),
    ("negation-keeps-only-values", "!values.yaml\n", r"error: c: ", ["Chart.yaml is missing or excluded"]),
    ("excludes-values-only", "values.yaml\n", r"error: c: ", ["values.yaml is missing or excluded by .helmignore"]),
]


@pytest.mark.parametrize("case", HELMIGNORE_CASES, ids=[c[0] for c in HELMIGNORE_CASES])
def test_broken_helmignore(tmp_path: Path, case) -> None:
    _, text, where, needles = case
    ws = workspace(tmp_path, IMAGE_A + '[charts.c]\nimages = { "image" = "a" }\n', charts=("c",))
    write(ws / "c" / ".helmignore", text)
    one_error(olly_forked(ws), 2, *needles, where=where)
    nothing_recorded(ws)


def test_broken_helmignore_subprocess(tmp_path: Path) -> None:
    ws = workspace(tmp_path, '[charts.c]\n', images=(), charts=("c",))
    write(ws / "c" / ".helmignore", "# x\n**\n")
    one_error(olly(ws), 2, "double-star", where=r"error: c/\.helmignore:2: ")
    write(ws / "c" / ".helmignore", "Chart.yaml\n")
    one_error(olly(ws), 2, "Chart.yaml is missing or excluded by .helmignore", where=r"error: c: ")
    nothing_recorded(ws)


# -- group 3: the filesystem --------------------------------------------------


def test_symlinks_in_context_are_listed_not_followed(tmp_path: Path) -> None:
    ws = workspace(tmp_path, IMAGE_A)
    outside = tmp_path / "outside"
    write(outside / "secret.txt", "secret\n")
    ctx = ws / "a"
    (ctx / "to-file").symlink_to(outside / "secret.txt")
    (ctx / "to-dir").symlink_to(outside)
    (ctx / "to-etc").symlink_to("/etc")
    (ctx / "up").symlink_to("../..")
    (ctx / "dangling").symlink_to("nowhere")
    (ctx / "loop").symlink_to("loop")
    rows = {row[0]: row for row in _inputs_json(ws, run=olly)["files"]}
    assert rows["to-file"] == ["to-file", "l", False, str(outside / "secret.txt")]
    assert rows["to-dir"] == ["to-dir", "l", False, str(outside)]
    assert rows["to-etc"] == ["to-etc", "l", False, "/etc"]
    assert rows["up"] == ["up", "l", False, "../.."]
    assert rows["dangling"] == ["dangling", "l", False, "nowhere"]
    assert rows["loop"] == ["loop", "l", False, "loop"]
    assert not any(p.startswith(("to-dir/", "to-etc/", "up/")) for p in rows), sorted(rows)
    # The target's content is not an input: editing it does not change the key; retargeting does.
    key = _inputs_json(ws)["key"]
    write(outside / "secret.txt", "rotated\n")
    assert _inputs_json(ws)["key"] == key
    (ctx / "dangling").unlink()
    (ctx / "dangling").symlink_to("elsewhere")
    assert _inputs_json(ws)["key"] != key


CHART_LINK_CASES = [
    # (id, link name under c/templates, link target (relative to tmp_path if absolute-ish), words)
    ("escapes-to-file", "x.yaml", "OUTSIDE/secret.yaml", ["outside the chart directory"]),
    ("escapes-to-dir", "d", "OUTSIDE", ["outside the chart directory"]),
    ("escapes-relative", "up", "../../a", ["outside the chart directory"]),
    ("escapes-to-workspace-root", "root", "../..", ["outside the chart directory"]),
    ("loops-back", "loop", "..", ["loops back"]),
    ("dangling", "gone.yaml", "nowhere.yaml", ["dangling"]),
]


@pytest.mark.parametrize("case", CHART_LINK_CASES, ids=[c[0] for c in CHART_LINK_CASES])
def test_symlink_escaping_chart(tmp_path: Path, case) -> None:
    _, name, target, needles = case
    ws = workspace(tmp_path, IMAGE_A + '[charts.c]\nimages = { "image" = "a" }\n', charts=("c",))
    write(tmp_path / "outside" / "secret.yaml", "x: 1\n")
    link = ws / "c" / "templates" / name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target.replace("OUTSIDE", str(tmp_path / "outside")))
    one_error(olly_forked(ws), 2, f"c/templates/{name}", *needles)
    nothing_recorded(ws)


def test_symlink_escaping_chart_subprocess(tmp_path: Path) -> None:
    ws = workspace(tmp_path, '[charts.c]\n', images=(), charts=("c",))
    write(ws / "c" / "templates" / "ok.yaml", "x: 1\n")
    (ws / "c" / "templates" / "x.yaml").symlink_to("/etc/hostname")
    one_error(olly(ws), 2, "c/templates/x.yaml", "'/etc/hostname'", "outside the chart directory")
    nothing_recorded(ws)


def test_fifo_in_context(tmp_path: Path) -> None:
    ws = workspace(tmp_path, IMAGE_A)
    write(ws / "a" / "sub" / "ok.txt", "x\n")
    os.mkfifo(ws / "a" / "sub" / "pipe")
    # No reader ever opens the fifo: olly must not block on it (timeout=120 in olly()).
    one_error(olly(ws), 2, "a/sub/pipe", "fifo", ".dockerignore")
    nothing_recorded(ws)
    one_error(olly_forked(ws, "inputs", "a"), 2, "a/sub/pipe", "fifo")
    # Excluded, it is not part of the context at all.
    write(ws / "a" / ".dockerignore", "sub/pipe\n")
    assert "sub/pipe" not in [row[0] for row in _inputs_json(ws)["files"]]


def test_fifo_in_chart(tmp_path: Path) -> None:
    ws = workspace(tmp_path, '[charts.c]\n', images=(), charts=("c",))
    (ws / "c" / "templates").mkdir()
    os.mkfifo(ws / "c" / "templates" / "pipe")
    one_error(olly_forked(ws), 2, "c/templates/pipe", "irregular file")
    write(ws / "c" / ".helmignore", "templates/pipe\n")
    assert olly_forked(ws).returncode == 0


def test_socket_in_context_is_skipped_like_docker(tmp_path: Path) -> None:
    import socket

    ws = workspace(tmp_path, IMAGE_A)
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(ws / "a" / "s.sock"))
        assert "s.sock" not in [row[0] for row in _inputs_json(ws)["files"]]
    finally:
        sock.close()


def _bytes_tree(base: Path) -> None:
    """A context with names that are not valid UTF-8 (Latin-1, lone continuation bytes)."""
    b = os.fsencode(base)
    os.makedirs(b + b"/a/dir-\xff", exist_ok=True)
    for name, data in [(b"/a/caf\xe9.txt", b"latin-1 name\n"), (b"/a/dir-\xff/\x80\x81", b"continuation bytes\n"),
                       (b"/a/ok-\xc3\xa9.txt", b"valid utf-8 name\n")]:
        with open(b + name, "wb") as f:
            f.write(data)
    os.symlink(b"caf\xe9.txt", b + b"/a/link-\xfe")


def _plan_key(ws: Path, run=None) -> str:
    proc = (run or olly_forked)(ws, "plan", "--json")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return json.loads(proc.stdout)["targets"][0]["key"]


def test_non_utf8_file_names(tmp_path: Path) -> None:
    ws = workspace(tmp_path, IMAGE_A)
    _bytes_tree(ws)
    first = _plan_key(ws, run=olly)
    second = _plan_key(ws, run=olly)  # with a cache now
    assert first == second
    copy = tmp_path / "elsewhere" / "deeper" / "ws"
    shutil.copytree(ws, copy, symlinks=True, ignore=shutil.ignore_patterns(".cache"))
    assert _plan_key(copy) == first
    shutil.rmtree(copy / ".cache")
    shutil.copytree(ws / ".cache", copy / ".cache")  # a relocated cache (CI restore) gives the same key
    assert _plan_key(copy) == first
    files = [row[0] for row in _inputs_json(ws)["files"]]
    assert os.fsdecode(b"caf\xe9.txt") in files and os.fsdecode(b"dir-\xff/\x80\x81") in files
    text = olly_forked(ws, "inputs", "a")
    assert text.returncode == 0 and "Traceback" not in text.stderr
    # An edit to a file with an undecodable name changes the key.
    with open(os.fsencode(ws) + b"/a/dir-\xff/\x80\x81", "ab") as f:
        f.write(b"more\n")
    assert _plan_key(ws) != first


def test_non_utf8_file_names_in_chart(tmp_path: Path) -> None:
    ws = workspace(tmp_path, '[charts.c]\n', images=(), charts=("c",))
    os.makedirs(os.fsencode(ws) + b"/c/templates")
    with open(os.fsencode(ws) + b"/c/templates/\xff.yaml", "wb") as f:
        f.write(b"x: 1\n")
    assert olly(ws).returncode == 0
    assert olly_forked(ws).returncode == 0


@pytest.fixture
def deep_trees():
    """Removes deep trees afterwards with ``rm -rf``: shutil.rmtree (pytest's own cleanup of
    old temp dirs included) recurses once per level and would hit the recursion limit."""
    made: list[Path] = []
    yield made
    for top in made:
        subprocess.run(["rm", "-rf", "--", str(top)], check=False)


def _deep(base: Path, depth: int, name: str = "d") -> None:
    """``base/name/name/.../leaf`` ``depth`` levels down, built without long paths."""
    fd = os.open(base, os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            nxt = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        leaf = os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(leaf, b"deep\n")
        os.close(leaf)
    finally:
        os.close(fd)


def test_deep_directory_tree(tmp_path: Path, deep_trees: list[Path]) -> None:
    ws = workspace(tmp_path, IMAGE_A + '[charts.c]\nimages = { "image" = "a" }\n', charts=("c",))
    deep_trees += [ws / "a" / "d", ws / "c" / "d"]
    _deep(ws / "a", 300)
    _deep(ws / "c", 300)
    proc = olly(ws)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    files = [row[0] for row in _inputs_json(ws)["files"]]
    assert "/".join(["d"] * 300 + ["leaf"]) in files
    assert _plan_key(ws) == _plan_key(ws)


def test_deeper_context_than_the_recursion_limit(tmp_path: Path, deep_trees: list[Path]) -> None:
    ws = workspace(tmp_path, IMAGE_A)
    deep_trees.append(ws / "a" / "d")
    _deep(ws / "a", 1500)
    assert olly_forked(ws).returncode == 0


def test_deeper_chart_than_the_recursion_limit(tmp_path: Path, deep_trees: list[Path]) -> None:
    """Was a RecursionError (exit 4) before 9030e49; now packaged or refused in one line."""
    ws = workspace(tmp_path, '[charts.c]\n', images=(), charts=("c",))
    deep_trees.append(ws / "c" / "d")
    _deep(ws / "c", 1500)
    proc = olly_forked(ws)
    if proc.returncode != 0:
        one_error(proc, 2, "c", "too deep")
        nothing_recorded(ws)


def test_long_dependency_chain(tmp_path: Path) -> None:
    n = 1500
    build = "".join(f'[images.t{i}]\nrepository = "x/t{i}"\ncontext = "a"\n'
                    + (f'depends_on = ["t{i + 1}"]\n' if i + 1 < n else "") for i in range(n))
    ws = workspace(tmp_path, build)
    proc = olly(ws, "graph")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-500:]
    assert "t0  <- t1" in proc.stdout


def _over_path_max(tmp_path: Path, deep_trees: list[Path]) -> Path:
    ws = workspace(tmp_path, IMAGE_A)
    deep_trees.append(ws / "a" / ("n" * 250))
    _deep(ws / "a", 20, name="n" * 250)  # 5 KB of path: over Linux's PATH_MAX (4096)
    return ws


def test_context_path_longer_than_path_max(tmp_path: Path, deep_trees: list[Path]) -> None:
    """Was an internal error (ENAMETOOLONG, exit 4) before 9030e49."""
    ws = _over_path_max(tmp_path, deep_trees)
    proc = olly_forked(ws)
    assert proc.returncode in (2, 3), proc.stderr[-300:]
    one_error(proc, proc.returncode, "n" * 250, "file name too long")
    nothing_recorded(ws)


def test_context_path_longer_than_path_max_names_workspace_path(tmp_path: Path, deep_trees: list[Path]) -> None:
    ws = _over_path_max(tmp_path, deep_trees)
    one_error(olly_forked(ws), 2, where=r"^olly: error: a/n{250}/")


# Unreadable files. Tests run as root, which reads anything, so olly runs as nobody; where
# nobody cannot reach this interpreter (e.g. it lives under a 0700 /root), as root without
# the capabilities that bypass file permissions (the same EACCES for files owned by root).
AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
WITHOUT_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]


@pytest.fixture(scope="module")
def unprivileged() -> list[str]:
    """A command prefix under which a mode-0o000 file owned by root cannot be read."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    locked = Path(tempfile.mkdtemp(prefix="olly-probe-"))
    try:
        locked.chmod(0o755)
        (locked / "f").write_text("x")
        (locked / "f").chmod(0o000)
        for prefix in (AS_NOBODY, WITHOUT_DAC):
            probe = subprocess.run([*prefix, sys.executable, "-c", f"import olly.cli; open({str(locked / 'f')!r})"],
                                   cwd="/", env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
            if probe.returncode != 0 and "PermissionError" in probe.stderr:
                return prefix
    finally:
        shutil.rmtree(locked)
    pytest.skip("cannot drop the privilege to read unreadable files here")
    raise AssertionError("unreachable")


@pytest.fixture
def open_dir():
    """A fresh directory under the system temp dir that nobody can write and every parent of it traverse."""
    base = Path(tempfile.mkdtemp(prefix="olly-hostile-"))
    base.chmod(0o777)
    (base / "home").mkdir(mode=0o777)
    (base / "home").chmod(0o777)
    yield base
    for dirpath, dirnames, _ in os.walk(base):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o755)
    shutil.rmtree(base, ignore_errors=True)


def _unreadable_ws(base: Path) -> Path:
    ws = workspace(base, IMAGE_A + 'inputs = ["shared/x.txt"]\n[charts.c]\nimages = { "image" = "a" }\n', charts=("c",))
    write(ws / "a" / ".dockerignore", "ignored.txt\n")
    write(ws / "a" / "sub" / "ok.txt", "x\n")
    write(ws / "c" / "templates" / "t.yaml", "x: 1\n")
    write(ws / "c" / ".helmignore", "*.bak\n")
    write(ws / "shared" / "x.txt", "x\n")
    ws.chmod(0o777)  # nobody creates .cache here
    return ws


UNREADABLE_CASES = [
    # (id, path made unreadable (mode), expected exit codes, words, BUILD.toml unreadable => no db)
    ("context-file", "a/secret.txt", 0o000, {2}, ["a/secret.txt", "permission denied"]),
    ("dockerfile", "a/Dockerfile", 0o000, {2}, ["a/Dockerfile", "permission denied"]),
    ("dockerignore", "a/.dockerignore", 0o000, {2}, ["a/.dockerignore", "permission denied"]),
    ("excluded-file-is-not-read", "a/ignored.txt", 0o000, {0}, []),
    ("build-toml", "BUILD.toml", 0o000, {2}, ["BUILD.toml", "permission denied"]),
    ("context-subdir", "a/sub", 0o000, {2, 3}, ["a/sub", "permission denied"]),
    ("extra-input", "shared/x.txt", 0o000, {2}, ["shared/x.txt", "permission denied"]),
    ("chart-template", "c/templates/t.yaml", 0o000, {2}, ["c/templates/t.yaml", "permission denied"]),
    ("chart-values", "c/values.yaml", 0o000, {2}, ["c/values.yaml", "permission denied"]),
    ("chart-subdir", "c/templates", 0o000, {2, 3}, ["c/templates", "permission denied"]),
    ("helmignore", "c/.helmignore", 0o000, {2, 3}, ["c/.helmignore", "permission denied"]),
    ("workspace-not-writable", ".", 0o555, {3}, ["cannot create cache directory", ".cache"]),
]


def _run_unreadable(unprivileged: list[str], base: Path, rel: str, mode: int) -> tuple[Path, subprocess.CompletedProcess[str]]:
    ws = _unreadable_ws(base)
    if rel == "a/secret.txt":
        write(ws / rel, "secret\n")
    if rel == "a/ignored.txt":
        write(ws / rel, "ignored\n")
    (ws / rel).chmod(mode)
    return ws, olly(ws, prefix=unprivileged, env={"HOME": str(base / "home")}, cwd=ws)


@pytest.mark.parametrize("case", UNREADABLE_CASES, ids=[c[0] for c in UNREADABLE_CASES])
def test_unreadable(unprivileged: list[str], open_dir: Path, case) -> None:
    case_id, rel, mode, codes, needles = case
    ws, proc = _run_unreadable(unprivileged, open_dir, rel, mode)
    if codes == {0}:
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        return
    assert proc.returncode in codes, proc.stderr
    one_error(proc, proc.returncode, *needles)
    no_db(ws) if case_id == "build-toml" else nothing_recorded(ws)


def test_unsearchable_context_dir(unprivileged: list[str], open_dir: Path) -> None:
    """Was an internal error (PermissionError from Path.is_file, exit 4) before 9030e49."""
    ws, proc = _run_unreadable(unprivileged, open_dir, "a", 0o000)
    one_error(proc, 2, "a/Dockerfile", "permission denied", where=r"BUILD\.toml:1: ")
    no_db(ws)


def test_unreadable_chart_file_hint(unprivileged: list[str], open_dir: Path) -> None:
    _, proc = _run_unreadable(unprivileged, open_dir, "c/templates/t.yaml", 0o000)
    """Said 'exclude it in .dockerignore' before 9030e49 (charts use .helmignore)."""
    line = one_error(proc, 2, "c/templates/t.yaml", "permission denied")
    assert ".dockerignore" not in line


# -- group 4: disk full ---------------------------------------------------------


@pytest.fixture(scope="module")
def many_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A workspace with 2000 files whose walk olly remembers (so the db must grow), and its key."""
    import time

    ws = workspace(tmp_path_factory.mktemp("diskfull"), IMAGE_A)
    for i in range(2000):
        write(ws / "a" / f"d{i % 50}" / f"a-file-with-a-rather-long-name-{i:05}.txt", f"{i}\n")
    time.sleep(2.5)  # olly caches the hash of a file only once its ctime is over 2 s old (racy-git guard)
    proc = olly_forked(ws, "plan", "--json")
    assert proc.returncode == 0, proc.stderr
    key = json.loads(proc.stdout)["targets"][0]["key"]
    conn = sqlite3.connect(ws / ".cache" / "olly.db")
    # The db does grow with the files: the walk, with every file's digest and signature.
    assert conn.execute("SELECT SUM(LENGTH(entries)) FROM walk_memo").fetchone()[0] >= 2000 * 50
    conn.close()
    return ws, key


def _file_size_limit(n: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG from write() instead of death by signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))
    return apply


def _check_disk_full(ws: Path, key: str, proc: subprocess.CompletedProcess[str]) -> str:
    if proc.returncode == 0:
        assert json.loads(proc.stdout)["targets"][0]["key"] == key
        outcome = "ok"
    else:
        line = one_error(proc, 3, ".cache/olly.db")
        assert re.search(r"disk I/O error|full|too large|cannot (open|initialise|create)", line), line
        outcome = "failed"
    # Whatever happened, the cache is not left broken: the next unlimited run works and agrees.
    again = olly_forked(ws, "plan", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["targets"][0]["key"] == key
    return outcome


@pytest.mark.parametrize("limit", [0, 4096, 20000, 200_000])
def test_disk_full_subprocess(many_files: tuple[Path, str], limit: int) -> None:
    ws, key = many_files
    shutil.rmtree(ws / ".cache")
    proc = olly(ws, "plan", "--json", preexec_fn=_file_size_limit(limit))
    _check_disk_full(ws, key, proc)


def test_disk_full_many_limits(many_files: tuple[Path, str]) -> None:
    """Fresh and existing caches, limits from nothing to enough: success or one clear line."""
    ws, key = many_files
    outcomes = {}
    for fresh in (True, False):
        for limit in (0, 512, 4096, 16384, 65536, 131072, 262144, 1 << 23):
            if fresh:
                shutil.rmtree(ws / ".cache", ignore_errors=True)
            else:
                # An existing cache that must grow: forget the walk so plan writes it again.
                conn = sqlite3.connect(ws / ".cache" / "olly.db")
                conn.execute("DELETE FROM stat")
                conn.execute("DELETE FROM walk_memo")
                conn.commit()
                conn.execute("VACUUM")
                conn.close()
            proc = olly_forked(ws, "plan", "--json", preexec=_file_size_limit(limit))
            outcomes[(fresh, limit)] = _check_disk_full(ws, key, proc)
    assert outcomes[(True, 0)] == "failed" and outcomes[(True, 1 << 23)] == "ok"
    assert "failed" in {outcomes[(False, n)] for n in (0, 4096, 65536)}


# -- group 5: a cache olly cannot write (issue #7, item 14) ----------------------
# An environment error (exit 3, one line naming the path) for `make`, never an internal error;
# readers (`plan`, `why`, `inputs`) read a cache they cannot write, and write nothing.

# `olly` with tests/fakes.py's engine in place of Docker: `make` gets past its engine check.
FAKE_ENGINE_MAIN = "import sys, fakes, olly.api; olly.api.Engine = fakes.FakeEngine; import olly.cli; olly.cli.main(sys.argv[1:])"


def _fake_engine() -> None:
    import fakes
    import olly.api

    olly.api.Engine = fakes.FakeEngine


def olly_fake_engine(ws: Path, *args: str, prefix: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cmd = [*prefix, sys.executable, "-c", FAKE_ENGINE_MAIN, "-C", str(ws), *args]
    full_env = {**os.environ, **NO_ENGINE, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}", **env}
    return subprocess.run(cmd, cwd=ws, capture_output=True, text=True, env=full_env, timeout=120, errors="replace")


@pytest.mark.parametrize("command", [["make"], ["cache", "export", "out.db"]])
def test_lock_is_a_directory(tmp_path: Path, command: list[str]) -> None:
    """Was an internal error (IsADirectoryError, exit 4)."""
    ws = workspace(tmp_path, IMAGE_A)
    (ws / ".cache" / "lock").mkdir(parents=True)
    one_error(olly_forked(ws, *command, preexec=_fake_engine), 3, ".cache/lock", "is a directory",
              where=r"^olly: error: cannot open the workspace lock ")
    nothing_recorded(ws)


def test_logs_is_a_file(tmp_path: Path) -> None:
    """Was a target failing with an internal error (FileExistsError from mkdir) after planning."""
    ws = workspace(tmp_path, IMAGE_A)
    write(ws / ".cache" / "logs", "a file where olly keeps build logs\n")
    one_error(olly_forked(ws, "make", preexec=_fake_engine), 3, ".cache/logs", "not a directory")
    nothing_recorded(ws)


@pytest.mark.docker
def test_logs_is_a_file_real_engine(tmp_path: Path, docker_client) -> None:
    """With Docker, the target failed with "internal error: FileExistsError" (exit 1)."""
    ws = workspace(tmp_path, IMAGE_A)
    write(ws / ".cache" / "logs", "a file where olly keeps build logs\n")
    proc = olly(ws, "make", env={"DOCKER_HOST": os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")})
    one_error(proc, 3, ".cache/logs", "not a directory")
    nothing_recorded(ws)


def _built_ws(base: Path) -> Path:
    """A workspace whose cache, written by root, records a build of ``a``; its files were too
    new for the stat cache then, and are old enough now: a reader has stat rows to save."""
    import time

    import fakes
    import olly.api

    ws = workspace(base, IMAGE_A)
    write(ws / "a" / "file.txt", "x\n")
    written = time.time()
    assert olly.api.make(ws, [], engine=fakes.FakeEngine()).outcomes[0].status == "built"
    time.sleep(max(0.0, written + 2.2 - time.time()))  # olly's racy-file guard: 2 s
    return ws


# (id, mode of .cache, mode of .cache/olly.db)
READ_ONLY_CASES = [("read-only-dir", 0o555, 0o644), ("read-only-db", 0o777, 0o444), ("read-only-both", 0o555, 0o444)]


@pytest.mark.parametrize("case", READ_ONLY_CASES, ids=[c[0] for c in READ_ONLY_CASES])
def test_read_only_cache(unprivileged: list[str], open_dir: Path, case) -> None:
    """`plan`, `why`, `inputs` read a cache they cannot write (they used to fail: "attempt to
    write a readonly database"); `make` cannot record anything there: one line, exit 3."""
    _, dir_mode, db_mode = case
    ws = _built_ws(open_dir)
    cache = ws / ".cache"
    before = (cache / "olly.db").read_bytes()
    (cache / "olly.db").chmod(db_mode)
    cache.chmod(dir_mode)
    env = {"HOME": str(open_dir / "home")}
    plan = olly(ws, "plan", prefix=unprivileged, env=env, cwd=ws)
    assert plan.returncode == 0 and plan.stderr == "", plan.stderr
    assert plan.stdout.startswith("cached  a  x/a:olly-"), plan.stdout  # the recorded build was read
    why = olly(ws, "why", "a", prefix=unprivileged, env=env, cwd=ws)
    assert why.returncode == 0 and "up to date" in why.stdout, why.stderr
    inputs = olly(ws, "inputs", "a", prefix=unprivileged, env=env, cwd=ws)
    assert inputs.returncode == 0 and " file.txt\n" in inputs.stdout, inputs.stderr
    make = olly_fake_engine(ws, "make", prefix=unprivileged, env=env)
    one_error(make, 3, str(cache) + "/")
    cache.chmod(0o755)
    # Nothing recorded (the lock file, owned by whoever ran first, may hold a new pid).
    assert (cache / "olly.db").read_bytes() == before
