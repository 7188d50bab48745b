"""`olly doctor`: one line per check, each miss with its fix, exit 3 on a miss; --json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from olly import api, doctor
from olly.cli import cli
from olly.errors import OllyError
from test_publish_docker import pub


def doctor_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def by_name(checkup: doctor.Checkup) -> dict[str, doctor.Check]:
    return {c.name: c for c in checkup.checks}


@pytest.mark.docker
@pytest.mark.registry
def test_real_run_is_all_ok(tmp_path: Path, docker_client, busybox: Path, unique_prefix: str, registry) -> None:
    ws = pub(tmp_path, busybox, unique_prefix, registry.host)
    checks = by_name(api.doctor(ws))
    assert all(c.ok for c in checks.values()), [(c.name, c.detail, c.fix) for c in checks.values() if not c.ok]
    assert list(checks) == ["workspace", "engine", "registry split", "registry test", "qemu", "lock", "cache", "git"]
    assert checks["engine"].detail.startswith(("docker ", "podman "))
    assert f"http://{registry.host} answers, anonymously" in checks["registry test"].detail
    assert "no git version here" in checks["git"].detail  # a copy outside git
    code, out = doctor_cli("-C", str(ws), "doctor")
    assert code == 0 and out.count("\n") == 8 and all(line.startswith("ok    ") for line in out.splitlines())


class NoEngine:
    def __init__(self) -> None:
        raise OllyError("engine-unreachable", "no Docker engine at unix:///nowhere (connection refused): start it")


@pytest.fixture
def broken(tmp_path: Path, monkeypatch) -> Path:
    """A workspace where every check misses: no engine, a registry nobody answers, foreign
    platforms without working qemu, an unlocked base, an unwritable .cache, a broken git."""
    root = tmp_path / "ws"
    (root / "app").mkdir(parents=True)
    (root / "app" / "Dockerfile").write_text("FROM python:3.12-slim\n")
    (root / "BUILD.toml").write_text(
        '[registries.down]\npush = "127.0.0.1:1"\ninsecure = true\n\n'
        '[images.app]\nrepository = "t/app"\nplatforms = ["linux/s390x", "linux/ppc64le", "linux/riscv64", "linux/mips64le"]\n')
    binfmt = tmp_path / "binfmt"
    binfmt.mkdir()
    (binfmt / "qemu-s390x").write_text("disabled\ninterpreter /usr/bin/qemu-s390x\nflags: F\n")
    (binfmt / "qemu-riscv64").write_text("enabled\ninterpreter /usr/bin/qemu-riscv64\nflags: \n")
    (binfmt / "qemu-mips64el").write_text("enabled\ninterpreter /usr/bin/qemu-mips64el\nflags: OCF\n")
    monkeypatch.setattr(doctor, "BINFMT_DIR", binfmt)
    monkeypatch.setattr(doctor, "Engine", NoEngine)
    monkeypatch.setattr(doctor, "_writable", lambda path: False)

    def broken_git(root: Path) -> str:
        raise OllyError("git-error", f"`git describe` failed in {root}: fatal: detected dubious ownership; "
                        "if you trust it, run: git config --global --add safe.directory /ws")

    monkeypatch.setattr(doctor, "git_version", broken_git)
    return root


def test_every_miss_has_a_fix_and_exit_3(broken: Path) -> None:
    checks = by_name(api.doctor(broken))
    assert checks["workspace"].ok
    missing = {name for name, c in checks.items() if not c.ok}
    assert missing == {"engine", "registry down", "qemu s390x", "qemu ppc64le", "qemu riscv64", "lock", "cache", "git"}
    assert checks["qemu mips64le"].ok
    assert "connection refused" in checks["registry down"].detail and "127.0.0.1:1" in checks["registry down"].fix
    assert "disabled" in checks["qemu s390x"].detail and "tonistiigi/binfmt --install s390x" in checks["qemu s390x"].fix
    assert "no binfmt handler" in checks["qemu ppc64le"].detail
    assert "F (fix-binary)" in checks["qemu riscv64"].detail
    assert "python:3.12-slim is not locked" in checks["lock"].detail and checks["lock"].fix == "olly lock"
    assert "chown" in checks["cache"].fix and "safe.directory" in checks["git"].detail
    assert "DOCKER_HOST" in checks["engine"].fix
    code, out = doctor_cli("-C", str(broken), "doctor")
    assert code == 3
    lines = out.splitlines()
    assert len(lines) == len(checks)
    assert all(line.startswith("ok    ") or (line.startswith("MISS  ") and ("-> fix:" in line or "git" in line))
               for line in lines), out


def test_json(broken: Path) -> None:
    code, out = doctor_cli("-C", str(broken), "doctor", "--json")
    data = json.loads(out)
    assert code == 3 and data["ok"] is False and data["workspace"] == str(broken.resolve())
    assert {"name", "ok", "detail", "fix"} == set(data["checks"][0])
    assert [c["name"] for c in data["checks"] if not c["ok"]][:2] == ["engine", "registry down"]


def test_without_a_workspace_it_says_run_init(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(doctor, "Engine", NoEngine)
    checks = by_name(api.doctor(tmp_path))
    assert list(checks) == ["workspace", "engine"]
    assert not checks["workspace"].ok and "olly init" in checks["workspace"].fix
    code, out = doctor_cli("-C", str(tmp_path), "doctor")
    assert code == 3 and out.startswith("MISS  workspace")


def test_engine_reports_kind_version_and_builder(monkeypatch) -> None:
    class FakeEngine:
        kind, engine_version, endpoint, version, platform = "podman", "5.0.1", "unix:///run/podman.sock", "1.41", "linux/arm64"

    monkeypatch.setattr(doctor, "Engine", FakeEngine)
    engine, check = doctor.engine_check()
    assert check.ok and check.detail.startswith("podman 5.0.1 at unix:///run/podman.sock") and "buildah" in check.detail
