"""The cached schema validation of BUILD.toml (olly.speccache): used only for the very bytes
and schema it was made for, so olly stays exactly as strict as validating every time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import copy_workspace
from olly import configschema, speccache
from olly.config import load_workspace
from olly.errors import OllyError


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = copy_workspace("busy", tmp_path)
    (root / ".cache").mkdir()
    return root


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = configschema.validate
    monkeypatch.setattr(configschema, "validate", lambda data: calls.append(1) or real(data))
    return calls


def targets(root: Path) -> list[tuple[str, object]]:
    return [(label, t) for label, t in load_workspace(root).targets.items()]


def test_second_load_is_not_validated_again_and_resolves_the_same(ws: Path, validations: list[int]) -> None:
    first = targets(ws)
    assert validations == [1] and (ws / ".cache" / speccache.FILE).is_file()
    assert targets(ws) == first  # same targets, same order
    assert validations == [1]


def test_any_byte_changed_validates_again(ws: Path, validations: list[int]) -> None:
    targets(ws)
    build = ws / "BUILD.toml"
    build.write_text(build.read_text() + "\n# a comment\n")
    targets(ws)
    assert validations == [1, 1]


def test_an_invalid_file_fails_every_time(ws: Path, validations: list[int]) -> None:
    targets(ws)
    build = ws / "BUILD.toml"
    valid = build.read_text()
    build.write_text(valid + '\n[images.extra]\nrepository = "x/extra"\ncolour = "blue"\n')
    for _ in range(2):
        with pytest.raises(OllyError) as info:
            load_workspace(ws)
        assert "unknown key" in info.value.message
    build.write_text(valid)
    targets(ws)
    assert len(validations) == 3  # a failed validation is never stored: the valid entry still is


def test_a_changed_schema_validates_again(ws: Path, validations: list[int], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    targets(ws)
    schema = tmp_path / "configschema.py"
    schema.write_bytes(speccache._SCHEMA_SOURCE.read_bytes() + b"\n# another schema\n")
    monkeypatch.setattr(speccache, "_SCHEMA_SOURCE", schema)
    targets(ws)
    assert validations == [1, 1]


def test_a_tampered_entry_is_not_used(ws: Path, validations: list[int]) -> None:
    targets(ws)
    path = ws / ".cache" / speccache.FILE
    entry = json.loads(path.read_text())
    entry["spec"]["images"]["base"]["repository"] = "evil/base"  # checksum no longer matches
    path.write_text(json.dumps(entry))
    assert dict(targets(ws))["base"].repository == "olly-fixture/base"  # type: ignore[attr-defined]
    path.write_text("{torn")
    targets(ws)
    assert validations == [1, 1, 1]


def test_values_that_do_not_survive_json_are_never_cached(ws: Path, validations: list[int]) -> None:
    build = ws / "BUILD.toml"
    build.write_text(build.read_text() + '\n[registries.r]\npush = "127.0.0.1:9"\nvalues = { when = 1979-05-27 }\n')
    for _ in range(2):
        with pytest.raises(OllyError) as info:
            load_workspace(ws)
        assert "values take a string, number or boolean" in info.value.message
    assert not (ws / ".cache" / speccache.FILE).exists()


def test_nothing_is_written_without_a_cache_directory(tmp_path: Path) -> None:
    root = copy_workspace("busy", tmp_path)
    targets(root)
    assert not (root / ".cache").exists()


def test_filesystem_checks_run_on_every_load(ws: Path, validations: list[int]) -> None:
    targets(ws)
    (ws / "solo" / "Dockerfile").unlink()
    with pytest.raises(OllyError) as info:
        load_workspace(ws)
    assert "file not found" in info.value.message
    assert validations == [1]  # the schema step was cached; the file check was not
