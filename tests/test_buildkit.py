"""olly.buildkit without an engine: which builder an image gets, and why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from olly import buildkit
from olly.errors import OllyError


class _Engine:
    def __init__(self, kind: str = "docker", version: str = "1.41") -> None:
        self.kind, self.version, self.endpoint = kind, version, "unix:///x"


def test_default_is_auto_buildkit_where_the_engine_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(buildkit.ENV, raising=False)
    assert buildkit.builder_for(None, None, None, _Engine()) == "buildkit"
    assert buildkit.builder_for(None, None, None, _Engine(version="1.38")) == "classic"
    # Podman's compatible API ignores version=2 and builds with buildah: classic there.
    assert buildkit.builder_for(None, None, None, _Engine(kind="podman")) == "classic"
    assert buildkit.supports(_Engine()) and not buildkit.supports(_Engine(version="1.38"))
    assert not buildkit.supports(_Engine(kind="podman"))
    choice = buildkit.choose(None, None, None, _Engine(kind="podman"))
    assert choice.builder == "classic" and "podman engine cannot build with BuildKit" in choice.reason
    assert not choice.note  # nothing to say in the plan's reasons: the engine decides


def test_auto_without_an_engine_uses_what_was_remembered_or_assumes_buildkit(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(buildkit.ENV, raising=False)
    assumed = buildkit.choose(None, None, None, None)
    assert assumed.builder == "buildkit" and buildkit.ASSUMED in assumed.reason
    assert buildkit.choose(None, None, None, None, known=False).builder == "classic"
    assert buildkit.choose(None, None, None, None, known=True).builder == "buildkit"
    cache = tmp_path / ".cache"
    assert buildkit.remembered(cache, "unix:///x") is None
    buildkit.remember(cache, _Engine(kind="podman"))
    assert buildkit.remembered(cache, "unix:///x") is False
    buildkit.remember(cache, _Engine())
    assert buildkit.remembered(cache, "unix:///x") is True
    buildkit.remember(cache, object())  # a test double says nothing: nothing remembered of it
    assert list(json.loads((cache / buildkit.MEMORY).read_text())) == ["unix:///x"]
    (cache / buildkit.MEMORY).write_text("{not json")
    assert buildkit.remembered(cache, "unix:///x") is None


def test_auto_builds_classic_when_buildkit_would_copy_what_the_daemon_drops(monkeypatch: pytest.MonkeyPatch) -> None:
    from olly.context import Entry

    monkeypatch.delenv(buildkit.ENV, raising=False)
    extras = [Entry(".dockerfile.0123", "f")]
    choice = buildkit.choose(None, None, None, _Engine(), extras, "apps/x")
    assert choice.builder == "classic"
    assert "BuildKit would copy .dockerfile.0123 into the image" in choice.reason
    assert choice.note.startswith("builder classic: BuildKit would copy .dockerfile.0123")
    assert buildkit.choose(None, None, None, None, extras, "apps/x").builder == "classic"  # offline too
    # Asked for explicitly, it stays an error (never a silent switch of a keyed choice).
    with pytest.raises(OllyError, match=r"apps/x: builder \"buildkit\" would copy .dockerfile.0123"):
        buildkit.choose(None, "buildkit", None, _Engine(), extras, "apps/x")
    assert buildkit.choose("classic", None, None, _Engine(), extras, "apps/x").builder == "classic"


def test_buildkit_refuses_contexts_whose_dropped_files_it_would_copy(tmp_path) -> None:
    from olly.context import Entry

    buildkit.check_context("classic", [Entry(".dockerfile.0123", "f")], "apps/x")  # classic drops it
    buildkit.check_context("buildkit", [], "apps/x")
    with pytest.raises(OllyError, match=r"apps/x: builder \"buildkit\" would copy .dockerfile.0123 into the image"):
        buildkit.check_context("buildkit", [Entry(".dockerfile.0123", "f")], "apps/x")


def test_builder_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(buildkit.ENV, "classic")
    engine = _Engine()
    assert buildkit.builder_for(None, None, None, engine) == "classic"  # env beats the default
    assert buildkit.builder_for(None, "buildkit", None, engine) == "buildkit"  # [workspace] beats env
    assert buildkit.builder_for("classic", "buildkit", None, engine) == "classic"  # image beats workspace
    assert buildkit.builder_for("classic", None, "buildkit", engine) == "buildkit"  # --builder beats all
    # "auto" is a choice too: it stops the precedence there.
    assert buildkit.builder_for(None, "auto", None, engine) == "buildkit"  # [workspace] auto beats env classic
    assert buildkit.builder_for("classic", None, "auto", engine) == "buildkit"  # --builder auto beats the image
    assert buildkit.builder_for(None, None, "auto", _Engine(kind="podman")) == "classic"
    assert buildkit.choose(None, None, "classic", engine).reason == "--builder"
    assert buildkit.choose(None, None, None, engine).reason == "$OLLY_BUILDER"
    assert buildkit.choose(None, "auto", None, engine).reason == ("auto (BUILD.toml [workspace] builder): the engine "
                                                                  "builds with BuildKit")
    monkeypatch.setenv(buildkit.ENV, "kaniko")
    with pytest.raises(OllyError, match="unknown builder"):
        buildkit.builder_for(None, None, None, engine)


def test_buildkit_on_podman_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(buildkit.ENV, raising=False)
    with pytest.raises(OllyError, match="builder-unsupported|cannot build with BuildKit"):
        buildkit.builder_for("buildkit", None, None, _Engine(kind="podman"))


def test_builder_in_build_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from olly.cache import Cache
    from olly.config import load_workspace
    from olly.graph import Graph
    from olly.plan import make_plan

    monkeypatch.delenv(buildkit.ENV, raising=False)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "BUILD.toml").write_text('[workspace]\nbuilder = "classic"\n[images.a]\nrepository = "x/a"\n'
                                         '[images.b]\nrepository = "x/b"\ncontext = "a"\nbuilder = "buildkit"\n')
    ws = load_workspace(tmp_path)
    graph = Graph.of(ws)
    cache = Cache(tmp_path / ".cache")
    try:
        plan = make_plan(ws, graph, graph.select([]), cache, None).by_label()
        assert plan["a"].manifest["builder"] == "classic" and plan["b"].manifest["builder"] == "buildkit"
        ws.builder_override = "classic"
        again = make_plan(ws, graph, graph.select([]), cache, None).by_label()
        assert again["b"].manifest["builder"] == "classic" and again["b"].key != plan["b"].key
        assert again["a"].key == plan["a"].key
    finally:
        cache.close()
    (tmp_path / "BUILD.toml").write_text('[workspace]\nbuilder = "kaniko"\n[images.a]\nrepository = "x/a"\n')
    with pytest.raises(OllyError, match="builder"):
        load_workspace(tmp_path)


def test_plan_says_when_auto_falls_back_to_classic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from olly import api, report

    monkeypatch.delenv(buildkit.ENV, raising=False)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f.txt").write_text("x\n")
    (tmp_path / "a" / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    (tmp_path / "df").mkdir()
    (tmp_path / "df" / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")  # outside its context
    (tmp_path / "BUILD.toml").write_text('[images.a]\nrepository = "x/a"\n'
                                         '[images.b]\nrepository = "x/b"\ncontext = "a"\ndockerfile = "df/Dockerfile"\n')
    plan = api.plan(tmp_path, [], check_engine=False)
    a, b = plan.by_label()["a"], plan.by_label()["b"]
    assert a.manifest["builder"] == "buildkit" and buildkit.ASSUMED in a.manifest["builder_reason"]
    assert b.manifest["builder"] == "classic"
    assert any(r.startswith("builder classic: BuildKit would copy .dockerfile.") for r in b.reasons), b.reasons
    doc = report.plan_json(plan)
    entry = doc["targets"][1]["platforms"][0]
    assert entry["builder"] == "classic" and "BuildKit would copy .dockerfile." in entry["builder_reason"]
    assert report.plan_lines(plan)[-1].endswith("(engine not reachable: images not verified; keys assume it builds "
                                                 "with BuildKit)")
    assert "builder classic: BuildKit would copy" in api.why(tmp_path, "b")["notes"][0]
    # What a run saw of the engine decides plans without one: Podman (no BuildKit) -> classic.
    from olly.engine import endpoint

    buildkit.remember(tmp_path / ".cache", type("P", (), {"kind": "podman", "endpoint": endpoint()})())
    again = api.plan(tmp_path, [], check_engine=False).by_label()["a"]
    assert again.manifest["builder"] == "classic" and again.key != a.key
    assert report.plan_lines(api.plan(tmp_path, [], check_engine=False))[-1].endswith("images not verified)")
    # Asked for explicitly, BuildKit with such a context is refused with one line.
    (tmp_path / "BUILD.toml").write_text((tmp_path / "BUILD.toml").read_text() + 'builder = "buildkit"\n')
    with pytest.raises(OllyError, match=r'b: builder "buildkit" would copy \.dockerfile\.'):
        api.plan(tmp_path, ["b"], check_engine=False)


def test_why_names_a_builder_change() -> None:
    from olly.manifest import diff_manifests, summarize

    changes = diff_manifests({"schema": 5, "builder": "classic"}, {"schema": 5, "builder": "buildkit"})
    assert changes == ["~ builder 'classic' -> 'buildkit'"]  # as target and platform changes read
    assert summarize(changes).startswith("builder 'classic' -> 'buildkit'")
    assert diff_manifests({"schema": 4}, {"schema": 5, "builder": "buildkit"}) == ["~ key schema 4 -> 5"]
