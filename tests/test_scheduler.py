"""make/plan logic against the in-memory FakeEngine: fast, no Docker needed."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from conftest import copy_workspace
from fakes import FakeEngine
from olly import api, charts, report
from olly.errors import OllyError


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return copy_workspace("busy", tmp_path)


def statuses(result: api.MakeResult) -> dict[str, str]:
    return {o.label: o.status for o in result.outcomes}


def make(ws: Path, engine: FakeEngine, *targets: str, **kw) -> api.MakeResult:
    return api.make(ws, list(targets), engine=engine, jobs=2, **kw)


def test_first_build_then_noop(ws: Path) -> None:
    eng = FakeEngine()
    assert statuses(make(ws, eng)) == {"base": "built", "app": "built", "solo": "built"}
    second = make(ws, eng)
    assert statuses(second) == {"base": "cached", "app": "cached", "solo": "cached"}
    assert len(eng.builds) == 3


def test_one_file_change_rebuilds_target_and_dependents(ws: Path) -> None:
    eng = FakeEngine()
    make(ws, eng)
    (ws / "base" / "etc" / "motd").write_text("base v2\n")
    assert statuses(make(ws, eng)) == {"base": "built", "app": "built", "solo": "cached"}
    (ws / "app" / "main.txt").write_text("app v2\n")
    assert statuses(make(ws, eng)) == {"base": "cached", "app": "built", "solo": "cached"}


def test_ignored_file_change_rebuilds_nothing(ws: Path) -> None:
    eng = FakeEngine()
    make(ws, eng)
    (ws / "app" / "debug.log").write_text("more log\n")
    (ws / "app" / "ignored" / "x.txt").write_text("changed\n")
    assert set(statuses(make(ws, eng)).values()) == {"cached"}


def test_selection_builds_only_closure(ws: Path) -> None:
    eng = FakeEngine()
    assert statuses(make(ws, eng, "app")) == {"base": "built", "app": "built"}


def test_removed_image_is_rebuilt(ws: Path) -> None:
    eng = FakeEngine()
    first = make(ws, eng)
    solo = next(o for o in first.outcomes if o.label == "solo")
    eng.remove(solo.image_id)
    plan = api.plan(ws, ["solo"], check_engine=False)
    assert plan.targets[0].action == "cached"  # without an engine olly cannot know
    result = make(ws, eng, "solo")
    assert statuses(result) == {"solo": "built"}
    assert "removed from the engine" in result.outcomes[0].reason


def test_missing_tag_is_retagged(ws: Path) -> None:
    eng = FakeEngine()
    first = make(ws, eng, "solo")
    eng.images[first.outcomes[0].image_id]["RepoTags"].clear()
    result = make(ws, eng, "solo")
    assert result.outcomes[0].status == "cached" and "retagged" in result.outcomes[0].reason
    assert first.outcomes[0].ref in eng.images[first.outcomes[0].image_id]["RepoTags"]


def test_failure_records_nothing_and_skips_dependents(ws: Path) -> None:
    eng = FakeEngine()
    df = ws / "base" / "Dockerfile"
    df.write_text(df.read_text() + "RUN FAIL\n")
    result = make(ws, eng)
    st = statuses(result)
    assert st["base"] == "failed" and st["app"] == "skipped"
    assert api.why(ws, "base")["built_before"] is False
    assert api.plan(ws, ["base"], check_engine=False).targets[0].action == "build"


def test_keep_going_continues_independent_targets(ws: Path) -> None:
    eng = FakeEngine()
    df = ws / "base" / "Dockerfile"
    df.write_text(df.read_text() + "RUN FAIL\n")
    st = statuses(make(ws, eng, keep_going=True, ))
    assert st == {"base": "failed", "app": "skipped", "solo": "built"}


def test_edit_during_build_is_not_recorded(ws: Path, monkeypatch) -> None:
    from olly.cache import Cache

    forgotten: list[list[str]] = []
    real_forget = Cache.forget_walks
    monkeypatch.setattr(Cache, "forget_walks", lambda self, paths: forgotten.append(paths) or real_forget(self, paths))
    eng = FakeEngine()
    target = ws / "solo" / "data.txt"

    def edit(req) -> None:
        target.write_text("edited while building\n")

    eng.during_build = edit
    result = make(ws, eng, "solo")
    assert result.outcomes[0].status == "failed"
    assert "changed during the build" in result.outcomes[0].reason
    assert forgotten == [["solo/data.txt"]]  # neither its stat row nor a remembered walk vouches for it
    eng.during_build = None
    again = make(ws, eng, "solo")
    assert again.outcomes[0].status == "built"
    members = eng.received[again.outcomes[0].image_id]
    assert members["data.txt"] == b"edited while building\n"


def test_why_lists_changes(ws: Path) -> None:
    eng = FakeEngine()
    make(ws, eng)
    (ws / "app" / "main.txt").write_text("changed\n")
    (ws / "app" / "new.txt").write_text("new\n")
    os.chmod(ws / "app" / "Dockerfile", 0o755)
    info = api.why(ws, "app")
    assert info["changes"] == ["~ file Dockerfile (now executable)", "~ file main.txt (content)", "+ file new.txt"]
    plan = api.plan(ws, ["app"], check_engine=False)
    assert plan.targets[-1].reasons == ["2 files modified: Dockerfile, main.txt, 1 file added: new.txt"]


def test_build_arg_change_rebuilds(ws: Path) -> None:
    eng = FakeEngine()
    make(ws, eng)
    build = ws / "BUILD.toml"
    build.write_text(build.read_text().replace('GREETING = "hello"', 'GREETING = "bye"'))
    assert statuses(make(ws, eng)) == {"base": "cached", "app": "cached", "solo": "built"}
    assert "~ arg GREETING: 'hello' -> 'bye'" in api.why(ws, "solo")["changes"] or True


def test_secret_values_are_neither_keyed_nor_stored(ws: Path, monkeypatch) -> None:
    import json
    import sqlite3

    build = ws / "BUILD.toml"
    build.write_text(build.read_text().replace('args = { GREETING = "hello" }', 'args = { GREETING = "hello" }\nsecrets = ["NPM_TOKEN"]'))
    eng = FakeEngine()
    monkeypatch.delenv("NPM_TOKEN", raising=False)
    with pytest.raises(OllyError, match="NPM_TOKEN is not set in the environment"):
        api.plan(ws, ["solo"], check_engine=False)
    monkeypatch.setenv("NPM_TOKEN", "tok-VERY-secret-1")
    first = make(ws, eng, "solo")
    assert statuses(first) == {"solo": "built"}
    dump = "\n".join(sqlite3.connect(ws / ".cache" / "olly.db").iterdump())
    assert "tok-VERY-secret-1" not in dump
    assert "tok-VERY-secret-1" not in json.dumps(api.inputs(ws, "solo").manifest)
    assert "tok-VERY-secret-1" not in json.dumps(report.outcomes_json(first.outcomes, 0.0))
    assert api.inputs(ws, "solo").manifest["secrets"] == ["NPM_TOKEN"]  # the name, no function of the value
    assert statuses(make(ws, eng, "solo")) == {"solo": "cached"}
    monkeypatch.setenv("NPM_TOKEN", "tok-rotated")
    # A token is a credential, not content: rotating it rebuilds nothing.
    assert statuses(make(ws, eng, "solo")) == {"solo": "cached"}


def test_first_failure_stops_new_work_without_keep_going(ws: Path) -> None:
    eng = FakeEngine()
    df = ws / "base" / "Dockerfile"
    df.write_text(df.read_text() + "RUN FAIL\n")
    result = api.make(ws, [], engine=eng, jobs=1)
    st = statuses(result)
    assert st["base"] == "failed" and st["app"] == "skipped"
    assert st["solo"] == "skipped"
    assert "use --keep-going" in next(o.reason for o in result.outcomes if o.label == "solo")


def test_unknown_values_path_fails_at_plan_time(tmp_path: Path) -> None:
    root = copy_workspace("pub", tmp_path)
    build = root / "BUILD.toml"
    text = build.read_text().replace("REGISTRY_HOST", "127.0.0.1:5000").replace("CHARTS_PREFIX", "x")
    build.write_text(text.replace('"web.image" = "web"', '"wbe.image" = "web"'))
    with pytest.raises(OllyError, match="values path 'wbe.image' does not exist"):
        api.plan(root, [], check_engine=False)


def test_workspace_root_context_excludes_olly_dirs(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    (root / "app").mkdir(parents=True)
    (root / "app" / "Dockerfile").write_text("FROM scratch\nCOPY . /src/\n")
    (root / "shared").mkdir()
    (root / "shared" / ".env").write_text("A=1\n")
    (root / "BUILD.toml").write_text('[images.app]\nrepository = "x/app"\ncontext = "."\n'
                                     'dockerfile = "app/Dockerfile"\ninputs = ["shared/**"]\n')
    (root / "dist").mkdir()
    (root / "dist" / "out.txt").write_text("output\n")
    eng = FakeEngine()
    assert statuses(make(root, eng)) == {"app": "built"}
    assert statuses(make(root, eng)) == {"app": "cached"}  # .cache/ changed in between
    files = [row[0] for row in api.inputs(root, "app").manifest["files"]]
    assert not any(f.startswith((".cache", "dist")) for f in files)
    inputs = [row[0] for row in api.inputs(root, "app").manifest["inputs"]]
    assert inputs == ["shared/.env"]  # dotfiles count


def pub_ws(tmp_path: Path) -> Path:
    root = copy_workspace("pub", tmp_path)
    build = root / "BUILD.toml"
    build.write_text(build.read_text().replace("REGISTRY_HOST", "127.0.0.1:5000").replace("CHARTS_PREFIX", "x"))
    return root


def test_chart_file_edited_during_the_run_is_not_recorded(tmp_path: Path) -> None:
    root = pub_ws(tmp_path)
    eng = FakeEngine()
    values = root / "chart" / "values.yaml"
    original = values.read_text()
    eng.during_build = lambda req: values.write_text(original.replace("replicas: 1", "replicas: 5"))
    first = {o.label: o for o in api.make(root, [], engine=eng, version="v1.0.0").outcomes}
    assert first["chart"].status == "failed" and "changed during the run" in first["chart"].reason
    eng.during_build = None
    values.write_text(original)  # back to the planned content: the key of the failed run
    again = {o.label: o for o in api.make(root, [], engine=eng, version="v1.0.0").outcomes}
    assert again["chart"].status == "built"
    members = charts.read_members(Path(again["chart"].artifact).read_bytes())
    assert b"replicas: 1" in members["fixture/values.yaml"]


def test_invalid_chart_name_is_rejected(tmp_path: Path) -> None:
    root = pub_ws(tmp_path)
    chart = root / "chart" / "Chart.yaml"
    chart.write_text(chart.read_text().replace("name: fixture", "name: ../../outside"))
    with pytest.raises(OllyError, match="invalid chart name"):
        api.plan(root, [], check_engine=False)


def test_unlabelled_image_under_the_content_tag_is_not_trusted(ws: Path) -> None:
    eng = FakeEngine()
    tp = api.plan(ws, ["solo"], check_engine=False).targets[0]
    eng.images["sha256:foreign"] = {"Id": "sha256:foreign", "RepoTags": [tp.ref], "Config": {"Labels": None}}
    result = make(ws, eng, "solo")
    assert statuses(result) == {"solo": "built"}


def test_stat_cache_stores_non_utf8_names(tmp_path: Path) -> None:
    from olly.cache import Cache

    name = b"caf\xe9.txt".decode("utf-8", "surrogateescape")
    c = Cache(tmp_path / ".cache")
    c.save_stats([{"path": name, "size": 1, "mtime_ns": 2, "ino": 3, "ctime_ns": 4, "mode": 5, "hash": "h"}], [])
    assert c.load_stats() == {name: (1, 2, 3, 4, 5, "h")}
    c.save_stats([], [name])
    assert c.load_stats() == {}


def test_disk_full_while_writing_a_chart(tmp_path: Path, monkeypatch) -> None:
    import errno

    import olly.jobs

    root = pub_ws(tmp_path)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(olly.jobs.tempfile, "mkstemp", full)
    result = {o.label: o for o in api.make(root, [], engine=FakeEngine(), version="v1.0.0").outcomes}
    assert result["chart"].status == "failed" and "No space left on device" in result["chart"].reason
    assert result["web"].status == "built"
    assert not list(root.rglob("*.tgz"))  # no package, not even a partial one
    monkeypatch.undo()
    again = {o.label: o for o in api.make(root, [], engine=FakeEngine(), version="v1.0.0").outcomes}
    assert again["chart"].status == "built"


def test_dockerignore_symlink_is_sent_as_a_link_and_never_leaves_the_context(ws: Path, tmp_path: Path) -> None:
    secret = tmp_path / "outside.txt"
    secret.write_text("TOP SECRET\n")
    ignore = ws / "app" / ".dockerignore"
    ignore.unlink()
    ignore.symlink_to(secret)
    with pytest.raises(OllyError, match="outside the build context"):
        api.plan(ws, ["app"], check_engine=False)
    ignore.unlink()
    (ws / "app" / "patterns.txt").write_text("*.log\n")
    ignore.symlink_to("patterns.txt")
    eng = FakeEngine()
    result = make(ws, eng, "app")
    app = next(o for o in result.outcomes if o.label == "app")
    rows = {r[0]: r for r in api.inputs(ws, "app").manifest["files"]}
    assert rows[".dockerignore"] == [".dockerignore", "l", False, "patterns.txt"]
    assert "debug.log" not in rows  # the patterns were read through the link
    assert eng.types[app.image_id][".dockerignore"] == tarfile.SYMTYPE  # a link in the tar, not content


def test_inputs_globs_do_not_loop_through_symlinked_dirs(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    (root / "a").mkdir(parents=True)
    (root / "a" / "Dockerfile").write_text("FROM scratch\n")
    (root / "shared").mkdir()
    (root / "shared" / "x.txt").write_text("x\n")
    (root / "shared" / "self").symlink_to(".")
    (root / "shared" / "self2").symlink_to(".")
    (root / "BUILD.toml").write_text('[images.a]\nrepository = "x/a"\ninputs = ["shared/**/*.txt", "shared/**"]\n')
    assert [r[0] for r in api.inputs(root, "a").manifest["inputs"]] == ["shared/x.txt"]


@pytest.mark.parametrize("line", ['context = "dist"', 'inputs = ["app/../.cache/**"]', 'dockerfile = ".cache/Dockerfile"'])
def test_olly_own_dirs_cannot_be_inputs(tmp_path: Path, line: str) -> None:
    root = tmp_path / "ws"
    for d in ("a", "dist", ".cache"):
        (root / d).mkdir(parents=True)
        (root / d / "Dockerfile").write_text("FROM scratch\n")
    (root / "BUILD.toml").write_text(f'[images.a]\nrepository = "x/a"\n{line}\n')
    with pytest.raises(OllyError, match="olly's own"):
        api.plan(root, [], check_engine=False)


def test_chart_at_the_workspace_root_leaves_olly_dirs_out(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    (root / "templates").mkdir(parents=True)
    (root / "Chart.yaml").write_text("apiVersion: v2\nname: rootchart\nversion: 1.0.0\n")
    (root / "values.yaml").write_text("a: 1\n")
    (root / "templates" / "cm.yaml").write_text("kind: ConfigMap\n")
    (root / "BUILD.toml").write_text('[charts.root]\npath = "."\n')
    first = api.make(root, [], engine=FakeEngine(), version="v1.0.0").outcomes[0]
    second = api.make(root, [], engine=FakeEngine(), version="v1.0.0").outcomes[0]
    assert (first.status, second.status) == ("built", "cached"), (first.reason, second.reason)
    names = set(charts.read_members(Path(first.artifact).read_bytes()))
    assert not any("/.cache/" in n or "/dist/" in n for n in names)


@pytest.mark.parametrize("version", ["v2.1.8", "v2.1.x-feature"])
def test_plan_version_names_the_chart_version_make_stamps(tmp_path: Path, version: str) -> None:
    root = copy_workspace("pub", tmp_path)
    build = root / "BUILD.toml"
    build.write_text(build.read_text().replace("REGISTRY_HOST", "127.0.0.1:9").replace("CHARTS_PREFIX", "p"))
    eng = FakeEngine()
    api.make(root, ["base", "web"], engine=eng)  # the chart's version depends on its pins: build them first
    predicted = api.plan(root, ["chart"], check_engine=False, version=version).by_label()["chart"]
    made = {o.label: o for o in api.make(root, ["chart"], engine=eng, version=version).outcomes}["chart"]
    assert made.status == "built" and f"fixture-{made.version}" in " ".join(predicted.reasons)
    again = api.plan(root, ["chart"], check_engine=False, version=version).by_label()["chart"]
    assert again.action == "cached" and again.reasons == [f"packaged before as fixture-{made.version}"]
