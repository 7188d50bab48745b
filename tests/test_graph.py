"""Target graph: order, cycles, selection patterns, suggestions, rendering."""

from __future__ import annotations

from pathlib import Path

import pytest

from olly.config import load_workspace
from olly.errors import OllyError
from olly.graph import Graph

REPO = Path(__file__).resolve().parent.parent


def ws_with(tmp_path: Path, images: dict[str, list[str]]) -> Graph:
    lines = []
    for label, deps in images.items():
        (tmp_path / label).mkdir(parents=True, exist_ok=True)
        (tmp_path / label / "Dockerfile").write_text("FROM scratch\n")
        lines.append(f'[images."{label}"]\nrepository = "x/{label.replace("/", "-")}"\ndepends_on = {deps!r}\n'.replace("'", '"'))
    (tmp_path / "BUILD.toml").write_text("\n".join(lines))
    return Graph.of(load_workspace(tmp_path))


def test_cycle_reports_full_path(tmp_path: Path) -> None:
    with pytest.raises(OllyError) as info:
        ws_with(tmp_path, {"a": ["b"], "b": ["c"], "c": ["a"]})
    assert info.value.reason == "dependency-cycle"
    assert "a -> b -> c -> a" in info.value.message


def test_self_cycle(tmp_path: Path) -> None:
    with pytest.raises(OllyError, match="a -> a"):
        ws_with(tmp_path, {"a": ["a"]})


def test_order_and_selection(tmp_path: Path) -> None:
    g = ws_with(tmp_path, {"apps/base": [], "apps/x": ["apps/base"], "apps/y": [], "tools/z": ["apps/x"]})
    order = g.order()
    assert order.index("apps/base") < order.index("apps/x") < order.index("tools/z")
    assert g.select(["tools/z"]) == ["apps/base", "apps/x", "tools/z"]
    assert set(g.select(["apps/..."])) == {"apps/base", "apps/x", "apps/y"}
    assert set(g.select(["..."])) == set(g.targets)
    assert g.select(["//apps/y"]) == ["apps/y"]
    assert g.dependents("apps/base") == ["apps/x"]


def test_unknown_label_suggests(tmp_path: Path) -> None:
    g = ws_with(tmp_path, {"apps/ollyscale": []})
    with pytest.raises(OllyError, match="did you mean apps/ollyscale"):
        g.select(["apps/olyscale"])
    with pytest.raises(OllyError, match="matches no target"):
        g.select(["nope/..."])


def test_patterns_relative_to_the_current_directory(tmp_path: Path) -> None:
    g = ws_with(tmp_path, {"apps/base": [], "apps/web": ["apps/base"], "charts/x": []})
    g.cwd = "apps/web"
    assert g.select(["."]) == ["apps/base", "apps/web"]
    assert g.match("../base") == {"apps/base"}
    assert g.match("apps/base") == {"apps/base"}  # a label from the root still works
    assert g.match("//charts/x") == {"charts/x"}
    g.cwd = "apps"
    assert g.match("...") == {"apps/base", "apps/web"}
    g.cwd = ""
    with pytest.raises(OllyError, match="did you mean apps/web"):
        g.match("web")


def test_repo_graph_renders() -> None:
    g = Graph.of(load_workspace(REPO))
    text = g.render("text", stale={"apps/demo"})
    assert "chart   charts/ollyscale-demos  <- apps/demo (backend.image, frontend.image)" in text
    assert "image * apps/demo" in text and text.endswith("* = inputs changed since the last build (would build)")
    dot = g.render("dot")
    assert '"apps/demo" -> "charts/ollyscale-demos" [label="backend.image, frontend.image"];' in dot
    data = __import__("json").loads(g.render("json", stale={"apps/demo"}))
    assert data["schema"] == 1 and {"label": "apps/demo", "kind": "image", "stale": True} in data["nodes"]
    assert {"from": "apps/demo", "to": "charts/ollyscale-demos",
            "values_paths": ["backend.image", "frontend.image"]} in data["edges"]
    mermaid = g.render("mermaid")
    assert mermaid.startswith("graph LR") and "-->" in mermaid
    assert g.select(["charts/ollyscale-demos"]) == ["apps/demo", "charts/ollyscale-demos"]
