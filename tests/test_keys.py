"""Key encoding and golden keys: a refactor must not silently change keys."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from olly import keys
from olly.cache import Cache
from olly.config import load_workspace
from olly.graph import Graph
from olly.plan import make_plan

GOLDEN = Path(__file__).parent / "data" / "golden_keys.json"


@pytest.fixture(autouse=True)
def classic_builder(monkeypatch: pytest.MonkeyPatch) -> None:
    """The golden keys are the classic builder's (key schema 5): the default builder (auto,
    BuildKit where the engine has it) must not change them. $OLLY_BUILDER is the lowest-precedence
    choice; subprocesses inherit it."""
    monkeypatch.setenv("OLLY_BUILDER", "classic")


def test_encoding_is_length_prefixed_and_unambiguous() -> None:
    assert keys.encode(["ab", "c"]) != keys.encode(["a", "bc"])
    assert keys.encode("a") != keys.encode(b"a")
    assert keys.encode({"b": 1, "a": 2}) == keys.encode({"a": 2, "b": 1})
    assert keys.encode([1]) != keys.encode([True])
    assert keys.encode("é") == b"S" + (2).to_bytes(8, "big") + "é".encode()


def test_encoding_rejects_unknown_types() -> None:
    with pytest.raises(TypeError):
        keys.encode(1.5)


def test_compute_key_requires_schema() -> None:
    with pytest.raises(ValueError):
        keys.compute_key({"kind": "image"})


def test_record_key_is_pinned() -> None:
    # Pins the encoding + hash of a hand-written record (see docs/keys.md example).
    record = keys.image_record(files=[["a.txt", "f", False, "00" * 16]], dockerfile=b"FROM scratch\n",
                               args={"X": "1"}, target=None, platform="linux/amd64", inputs=[], deps={}, labels={}, secrets=[], dockerignore=None,
                               bases={}, builder="buildkit")
    assert keys.compute_key(record) == GOLDEN_RECORD_KEY
    # A locked base image (olly.lock) is keyed by its digest: the docs/keys.md example too.
    record["bases"] = {"python:3.14-slim": "sha256:" + "1" * 64}
    assert keys.compute_key(record) == GOLDEN_RECORD_KEY_LOCKED
    # The builder is keyed: the same inputs built by the classic builder have another key.
    record["bases"], record["builder"] = {}, "classic"
    assert keys.compute_key(record) == GOLDEN_RECORD_KEY_CLASSIC


GOLDEN_RECORD_KEY = "4b8ebd4eb419830fa2fa6e0a00468add"
GOLDEN_RECORD_KEY_LOCKED = "471233d5b215960aa08f22537be9af05"
GOLDEN_RECORD_KEY_CLASSIC = "59f6f36c2face85fd4c7bae0b38ca3e1"


def golden_workspace(tmp_path: Path) -> Path:
    """The golden fixture at an arbitrary path, with the empty dir git cannot track."""
    root = tmp_path / "somewhere" / "golden"
    shutil.copytree(Path(__file__).parent / "data" / "golden", root, symlinks=True)
    (root / "app" / "empty").mkdir()
    os.chmod(root / "app" / "run.sh", 0o755)
    return root


def golden_keys(root: Path) -> dict[str, str]:
    ws = load_workspace(root)
    graph = Graph.of(ws)
    cache = Cache(root / ".cache")
    try:
        plan = make_plan(ws, graph, graph.select([]), cache, None)
    finally:
        cache.close()
    return {tp.label: tp.key for tp in plan.targets if tp.key}


def test_golden_keys(tmp_path: Path) -> None:
    expected = json.loads(GOLDEN.read_text())
    assert golden_keys(golden_workspace(tmp_path)) == {k: v for k, v in expected.items() if k != "chart"}


def test_golden_keys_under_auto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default builder, planned without an engine (BuildKit assumed): ``base`` is BuildKit's,
    ``app`` (its Dockerfile is outside its context: BuildKit would copy ``.dockerfile.<hex>``)
    falls back to classic, keyed as such."""
    monkeypatch.delenv("OLLY_BUILDER")
    root = golden_workspace(tmp_path)
    assert golden_keys(root) == {"base": "2ffe120f9869fa40ea5765d16c577934", "app": "b265a438605e5687cfc5caf209d6c9ee"}
    ws = load_workspace(root)
    graph = Graph.of(ws)
    cache = Cache(root / ".cache")
    try:
        plan = make_plan(ws, graph, graph.select([]), cache, None).by_label()
    finally:
        cache.close()
    assert plan["base"].manifest["builder"] == "buildkit" and plan["app"].manifest["builder"] == "classic"


def test_keys_do_not_depend_on_path_or_mtime(tmp_path: Path) -> None:
    a = golden_workspace(tmp_path / "one")
    b = golden_workspace(tmp_path / "two")
    for path in b.rglob("*"):
        if not path.is_symlink():
            os.utime(path, (1_000_000, 1_000_000))
    assert golden_keys(a) == golden_keys(b)


def test_golden_chart_key(tmp_path: Path) -> None:
    """Pins the chart key of the golden fixture (no registry: pins are content tags)."""
    from fakes import FakeEngine
    from olly import api

    root = golden_workspace(tmp_path)
    result = api.make(root, [], engine=FakeEngine(), version="v1.0.0")
    chart = next(o for o in result.outcomes if o.label == "chart")
    assert chart.status == "built", chart.reason
    expected = json.loads(GOLDEN.read_text())
    assert chart.key == expected["chart"]


def test_keys_do_not_depend_on_creation_order_owner_or_locale(tmp_path: Path) -> None:
    import subprocess
    import sys

    a = golden_workspace(tmp_path / "one")
    b = tmp_path / "two" / "golden"
    # Same files, created in reverse order (directory listing order differs), other owner.
    files = sorted((p for p in a.rglob("*") if ".cache" not in p.parts), key=lambda p: str(p), reverse=True)
    for p in sorted(files, key=lambda p: len(p.parts)):
        dest = b / p.relative_to(a)
        if p.is_symlink():
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(os.readlink(p))
        elif p.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
    for p in files:
        dest = b / p.relative_to(a)
        if p.is_file() and not p.is_symlink():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, dest)
            os.chmod(dest, p.stat().st_mode)
            if os.geteuid() == 0:
                os.chown(dest, 65534, 65534)
    assert golden_keys(a) == golden_keys(b)
    keys = set()
    for env in ({"LC_ALL": "C"}, {"LC_ALL": "C.UTF-8"}, {"LANG": "", "LC_ALL": "POSIX", "PYTHONUTF8": "0"}):
        out = subprocess.run([sys.executable, "-m", "olly", "-C", str(b), "inputs", "--json", "app"], capture_output=True,
                             text=True, env={**os.environ, **env, "DOCKER_HOST": "unix:///nonexistent.sock"})
        keys.add(json.loads(out.stdout)["key"])
    assert keys == {golden_keys(a)["app"]}


def test_fast_paths_encode_like_the_spec() -> None:
    """The exact-type fast paths (strings, rows of a ``files`` list) give the bytes of the
    spec's table (docs/keys.md §2), and subclasses take the general path to the same bytes."""
    import enum
    import struct

    def spec(v: object) -> bytes:  # docs/keys.md §2, written out
        if v is None:
            return b"N"
        if isinstance(v, bool):
            return b"T" if v else b"F"
        if isinstance(v, int):
            return b"I" + struct.pack(">q", v)
        if isinstance(v, str):
            data = v.encode("utf-8", "surrogateescape")
            return b"S" + struct.pack(">Q", len(data)) + data
        if isinstance(v, (bytes, bytearray)):
            return b"B" + struct.pack(">Q", len(v)) + bytes(v)
        if isinstance(v, (list, tuple)):
            return b"L" + struct.pack(">Q", len(v)) + b"".join(spec(i) for i in v)
        assert isinstance(v, dict)
        return b"D" + struct.pack(">Q", len(v)) + b"".join(spec(k) + spec(v[k]) for k in sorted(v))

    class Name(str):
        pass

    class Num(enum.IntEnum):
        ONE = 1

    values = [[["a/b.txt", "f", True, "0" * 32], ["d", "d", False, ""], ["l", "l", False, "../x"]],
              [[Name("sub"), Num.ONE, None, b"\x00", [1, ["x"]]]], ("t", ("u",)), "\udcff", "x" * 5000,
              [["y" * 70000]], {"k": [Name("v")], "n": -5}, list(range(4100))]
    for v in values:
        assert keys.encode(v) == spec(v)


def test_pre_encoded_files_give_the_same_key() -> None:
    """compute_key(record, {"files": ...}) with the bytes encode would write for ``files``
    (spliced from remembered rows, olly.walkmemo) is the key of the record itself."""
    rows = [["a", "d", False, ""], ["a/b\udcff", "f", True, "0" * 32], ["c", "l", False, "../x"]]
    blob, ends = keys.encode_rows(rows)
    assert keys.list_encoding(len(rows), blob) == keys.encode(rows)
    assert ends[-1] == len(blob) and ends == sorted(ends) and len(ends) == len(rows)
    first = keys.encode_rows(rows[:1])[0]
    assert blob.startswith(first) and len(first) == ends[0]
    record = keys.image_record(files=rows, dockerfile=b"FROM scratch\n", dockerignore=None, args={}, target=None,
                               platform="linux/amd64", inputs=[], deps={}, labels={}, secrets=[], bases={},
                               builder="buildkit")
    assert keys.compute_key(record, {"files": keys.list_encoding(len(rows), blob)}) == keys.compute_key(record)
    assert keys.compute_key(record, {"files": keys.encode(rows[:2])}) != keys.compute_key(record)
