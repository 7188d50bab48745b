"""A chart whose key did not change is not packaged again once its outputs are proven by
stat signature (olly.chartproof), and any change to those outputs is still caught."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import copy_workspace
from fakes import FakeEngine
from olly import api, chartproof, charts


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Files written a moment ago are inside the racy window; the proof logic itself is what
    # is under test here (test_settled_refuses_fresh_files covers the window).
    monkeypatch.setattr(chartproof, "RACY_NS", 0)
    ws = copy_workspace("pub", tmp_path)
    build = ws / "BUILD.toml"
    build.write_text(build.read_text().replace("REGISTRY_HOST", "127.0.0.1:9").replace("CHARTS_PREFIX", "proof"))
    return ws


def chart_outcome(root: Path, engine: FakeEngine) -> api.Outcome:
    result = api.make(root, [], engine=engine)
    return next(o for o in result.outcomes if o.label == "chart")


def no_packaging(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("packaged although the outputs were proven")

    monkeypatch.setattr(charts, "package", refuse)


def proven_root(root: Path, engine: FakeEngine) -> Path:
    """Built, then verified by packaging once more (which leaves the proof)."""
    assert chart_outcome(root, engine).status == "built"
    assert chart_outcome(root, engine).status == "cached"
    assert (root / ".cache" / "charts" / chartproof.FILE).is_file()
    return root


def test_a_proven_chart_is_not_packaged_again(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = FakeEngine()
    proven_root(root, engine)
    artifact = chart_outcome(root, engine).artifact
    before = Path(artifact).read_bytes()
    no_packaging(monkeypatch)
    o = chart_outcome(root, engine)
    assert o.status == "cached" and o.reason == "up to date"
    assert o.image_id == charts.sha256(before)  # the digest recorded is the package's own
    assert Path(o.artifact).read_bytes() == before


def test_an_edited_dist_copy_is_caught_and_rewritten(root: Path) -> None:
    engine = FakeEngine()
    proven_root(root, engine)
    artifact = Path(chart_outcome(root, engine).artifact)
    good = artifact.read_bytes()
    st = artifact.stat()
    artifact.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # same size
    os.utime(artifact, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime; the ctime moves
    assert chart_outcome(root, engine).status == "cached"
    assert artifact.read_bytes() == good


def test_a_replaced_stored_package_is_repackaged(root: Path) -> None:
    engine = FakeEngine()
    proven_root(root, engine)
    store = next((root / ".cache" / "charts").glob("*.tgz"))
    good = store.read_bytes()
    st = store.stat()
    store.write_bytes(b"\0" * len(good))
    os.utime(store, ns=(st.st_atime_ns, st.st_mtime_ns))
    o = chart_outcome(root, engine)
    assert o.status == "built" and o.reason == "packaged"  # its bytes no longer hash to the recorded digest
    assert store.read_bytes() == good


def test_a_changed_values_file_is_rewritten(root: Path) -> None:
    engine = FakeEngine()
    proven_root(root, engine)
    values = Path(chart_outcome(root, engine).artifact).with_suffix(".values.yaml")
    good = values.read_bytes()
    values.write_bytes(good + b"# edited\n")
    o = chart_outcome(root, engine)
    assert o.status == "cached" and any("wrote" in n for n in o.notes)
    assert values.read_bytes() == good


def test_another_packager_does_not_trust_the_proof(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = FakeEngine()
    proven_root(root, engine)
    monkeypatch.setattr(chartproof, "_PACKAGER", ["another olly"])
    calls = []
    real = charts.package
    monkeypatch.setattr(charts, "package", lambda *a: calls.append(1) or real(*a))
    assert chart_outcome(root, engine).status == "cached"
    assert calls, "a proof made by another packager must not be trusted"


def test_a_noop_run_writes_nothing_to_the_cache(root: Path) -> None:
    engine = FakeEngine()
    proven_root(root, engine)
    db = root / ".cache" / "olly.db"
    chart_outcome(root, engine)  # settles anything the last verification recorded
    artifacts = _rows(db, "SELECT * FROM artifacts")
    proofs = (root / ".cache" / "charts" / chartproof.FILE).stat()
    chart_outcome(root, engine)
    assert _rows(db, "SELECT * FROM artifacts") == artifacts
    assert (root / ".cache" / "charts" / chartproof.FILE).stat().st_mtime_ns == proofs.st_mtime_ns


def _rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return sorted(conn.execute(sql).fetchall())
    finally:
        conn.close()


def test_settled_refuses_fresh_files(tmp_path: Path) -> None:
    import time

    path = tmp_path / "f"
    path.write_bytes(b"x")
    assert chartproof.settled(path, time.time_ns()) is None  # written just now: inside the racy window
    assert chartproof.settled(path, time.time_ns() + 2 * chartproof.RACY_NS) == chartproof.signature(path)
    assert chartproof.settled(tmp_path / "missing", time.time_ns()) is None


def test_proofs_hold_only_for_the_same_claim_and_signatures(tmp_path: Path) -> None:
    path = tmp_path / "p"
    path.write_bytes(b"package")
    proofs = chartproof.Proofs(tmp_path)
    claim = {"key": "k", "digest": "d"}
    proofs.record("c", claim, {str(path): chartproof.signature(path) or []})
    proofs.save()
    again = chartproof.Proofs(tmp_path)
    assert again.holds("c", claim)
    assert not again.holds("c", {"key": "other", "digest": "d"})
    assert not again.holds("other", claim)
    path.write_bytes(b"package")  # same bytes, but rewritten: no longer the file that was verified
    os.utime(path, ns=(0, 0))
    assert not again.holds("c", claim)
    (tmp_path / chartproof.FILE).write_text("{not json")
    assert not chartproof.Proofs(tmp_path).holds("c", claim)
