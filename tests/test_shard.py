"""Shard assignment: deterministic, chains together when that balances, spread otherwise."""

from __future__ import annotations

import pytest

from olly.errors import OllyError
from olly.shard import assign, components, parse_shard


def test_parse_shard() -> None:
    assert str(parse_shard("2/3")) == "2/3"
    for bad in ("0/3", "4/3", "x", "1/0", "1-2"):
        with pytest.raises(OllyError):
            parse_shard(bad)


def test_components_follow_dependencies() -> None:
    graph = {"b": ["a"], "a": [], "c": ["b"], "x": [], "y": ["x"], "z": []}
    assert components(graph) == [["a", "b", "c"], ["x", "y"], ["z"]]


def test_chains_stay_together_when_that_balances() -> None:
    graph = {"a": [], "b": ["a"], "x": [], "y": ["x"]}
    shards = assign(graph, 2)
    assert shards["a"] == shards["b"] and shards["x"] == shards["y"] and shards["a"] != shards["x"]


def test_a_heavy_chain_is_spread_and_weights_balance() -> None:
    graph = {"base": [], "app1": ["base"], "app2": ["base"], "app3": ["base"]}
    shards = assign(graph, 3)
    assert sorted(shards.values()).count(1) >= 1 and len(set(shards.values())) == 3
    weighted = assign({"slow": [], "f1": [], "f2": [], "f3": []}, 2, {"slow": 30, "f1": 10, "f2": 10, "f3": 10})
    assert weighted["slow"] != weighted["f1"] == weighted["f2"] == weighted["f3"]


def test_assignment_is_deterministic_whatever_the_order() -> None:
    graph = {f"img{i}": ([f"img{i - 1}"] if i % 3 else []) for i in range(12)}
    reordered = dict(reversed(list(graph.items())))
    assert assign(graph, 4) == assign(reordered, 4)
