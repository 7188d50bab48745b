"""The sqlite cache: schema, corruption, relocatability, lock."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path

import pytest

from olly.cache import CACHE_SCHEMA, Cache, workspace_lock, writable_dir
from olly.errors import EXIT_ENVIRONMENT, OllyError


def test_roundtrip(tmp_path: Path) -> None:
    c = Cache(tmp_path / ".cache")
    c.record_build("apps/a", "k1", "sha256:abc", "olly-k1", 1.5, {"key": "k1", "files": []})
    assert c.result("apps/a", "k1")["image_id"] == "sha256:abc"
    assert c.result("apps/a", "k2") is None
    assert c.manifest("apps/a") == {"key": "k1", "files": []}
    c.forget_result("apps/a", "k1")
    assert c.result("apps/a", "k1") is None
    c.close()


def test_a_cache_made_before_pushes_and_packages_were_recorded_gets_their_tables(tmp_path: Path) -> None:
    """Caches of the same schema made by an older olly lack the later tables: the first write
    to one creates it (sqlite-utils' upsert did; olly's plain SQL write does too)."""
    Cache(tmp_path / ".cache").close()
    with sqlite3.connect(tmp_path / ".cache" / "olly.db") as db:
        db.execute("DROP TABLE pushes")
        db.execute("DROP TABLE artifacts")
    c = Cache(tmp_path / ".cache")
    c.record_push("apps/a", "k1", "reg", "reg/a:t", "sha256:" + "1" * 64)
    c.record_artifact("charts/c", "k2", "", "dist/c.tgz", "sha256:" + "2" * 64, "1.0.0", {"key": "k2"})
    assert c.push("apps/a", "k1", "reg") == "sha256:" + "1" * 64
    assert c.artifact("charts/c", "k2", "") == {"path": "dist/c.tgz", "digest": "sha256:" + "2" * 64, "version": "1.0.0"}
    c.close()


def test_last_image_ids_name_each_targets_newest_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The prefetch hint (olly.imageview): per target asked for, the image of its newest build."""
    c = Cache(tmp_path / ".cache")
    clock = iter([100.0, 300.0, 200.0, 400.0])
    monkeypatch.setattr("olly.cache.time.time", lambda: next(clock))
    c.record_build("a", "k1", "sha256:old", "t", 0.1, {})
    c.record_build("a", "k2", "sha256:new", "t", 0.1, {})
    c.record_build("a", "k3", "sha256:between", "t", 0.1, {})
    c.record_build("b", "k", "sha256:b", "t", 0.1, {})
    assert c.last_image_ids(["a"]) == ["sha256:new"]
    assert sorted(c.last_image_ids(["a", "b", "none"])) == ["sha256:b", "sha256:new"]
    c.close()


def test_relocatable(tmp_path: Path) -> None:
    c = Cache(tmp_path / "one" / ".cache")
    c.save_stats([{"path": "a/b.txt", "size": 1, "mtime_ns": 2, "ino": 3, "ctime_ns": 4, "mode": 5, "hash": "h"}], [])
    c.record_build("a", "k", "id", "t", 0.1, {})
    c.close()
    shutil.copytree(tmp_path / "one" / ".cache", tmp_path / "two" / ".cache")
    c2 = Cache(tmp_path / "two" / ".cache")
    assert c2.load_stats() == {"a/b.txt": (1, 2, 3, 4, 5, "h")}
    assert c2.result("a", "k") is not None


def test_corrupt_db_is_one_clear_error(tmp_path: Path) -> None:
    d = tmp_path / ".cache"
    d.mkdir()
    (d / "olly.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(OllyError) as info:
        Cache(d)
    assert info.value.reason == "cache-corrupt"
    assert str(d / "olly.db") in info.value.message
    assert info.value.exit_code == EXIT_ENVIRONMENT


def test_incompatible_schema(tmp_path: Path) -> None:
    Cache(tmp_path / ".cache").close()
    conn = sqlite3.connect(tmp_path / ".cache" / "olly.db")
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema'", [str(CACHE_SCHEMA + 1)])
    conn.commit()
    conn.close()
    with pytest.raises(OllyError) as info:
        Cache(tmp_path / ".cache")
    assert info.value.reason == "cache-incompatible"
    assert "olly.db" in info.value.message


def test_foreign_db_rejected(tmp_path: Path) -> None:
    (tmp_path / ".cache").mkdir()
    conn = sqlite3.connect(tmp_path / ".cache" / "olly.db")
    conn.execute("CREATE TABLE other (x)")
    conn.commit()
    conn.close()
    with pytest.raises(OllyError, match="not an olly cache"):
        Cache(tmp_path / ".cache")


def test_lock_waits_and_says_so(tmp_path: Path) -> None:
    said: list[str] = []
    entered = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with workspace_lock(tmp_path, said.append):
            entered.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    assert entered.wait(10)
    # flock is per open file description, so a second lock in this process still blocks.
    got = threading.Event()

    def second() -> None:
        with workspace_lock(tmp_path, said.append):
            got.set()

    t2 = threading.Thread(target=second)
    t2.start()
    assert not got.wait(0.3)  # blocked while held (bounded wait, not a sleep for a race)
    release.set()
    assert got.wait(10)
    t.join()
    t2.join()
    assert said and "waiting for another olly" in said[0]


# -- a cache olly cannot write (issue #7, item 14); as root, see also tests/test_hostile.py ----


def test_lock_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "lock").mkdir()
    with pytest.raises(OllyError) as info:
        with workspace_lock(tmp_path, lambda _: None):
            pass
    assert info.value.reason == "io-error" and info.value.exit_code == EXIT_ENVIRONMENT
    assert str(tmp_path / "lock") in info.value.message and "directory" in info.value.message


@pytest.mark.parametrize("file", [".cache/logs", ".cache"])
def test_cache_dir_that_is_a_file(tmp_path: Path, file: str) -> None:
    (tmp_path / file).parent.mkdir(exist_ok=True)
    (tmp_path / file).write_text("not a directory\n")
    with pytest.raises(OllyError) as info:
        writable_dir(tmp_path / ".cache" / "logs")
    assert info.value.reason == "io-error" and info.value.exit_code == EXIT_ENVIRONMENT
    assert info.value.message.startswith(f"cannot create cache directory {tmp_path / '.cache' / 'logs'}: ")
    assert info.value.message.lower().endswith("not a directory")


def test_reader_opens_an_unwritable_cache_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / ".cache"
    c = Cache(d)
    c.record_build("a", "k", "sha256:abc", "t", 0.1, {"key": "k"})
    c.close()
    before = (d / "olly.db").read_bytes()
    # Root writes anything: pretend this user may not (tests/test_hostile.py does it for real).
    monkeypatch.setattr("olly.cache._writable", lambda db: False)
    reader = Cache(d, reader=True)
    assert reader.read_only
    assert reader.result("a", "k") is not None and reader.manifest("a") == {"key": "k"}
    reader.save_stats([{"path": "x", "size": 1, "mtime_ns": 2, "ino": 3, "ctime_ns": 4, "mode": 5, "hash": "h"}], [])
    assert reader.load_stats() == {}  # the stat cache is skipped, not half-written
    with pytest.raises(OllyError) as info:
        reader.record_build("b", "k", "sha256:abc", "t", 0.1, {})
    assert info.value.exit_code == EXIT_ENVIRONMENT
    reader.close()
    assert (d / "olly.db").read_bytes() == before


def test_reader_without_a_db_in_an_unwritable_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".cache").mkdir()
    monkeypatch.setattr("olly.cache._writable", lambda db: False)
    reader = Cache(tmp_path / ".cache", reader=True)
    assert reader.result("a", "k") is None
    reader.close()
    assert list((tmp_path / ".cache").iterdir()) == []


def test_reader_with_an_empty_db_file_in_an_unwritable_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "olly.db").write_bytes(b"")  # e.g. a first run that died before its first write
    monkeypatch.setattr("olly.cache._writable", lambda db: False)
    reader = Cache(tmp_path / ".cache", reader=True)
    assert reader.result("a", "k") is None and reader.load_stats() == {}
    reader.close()
    assert (tmp_path / ".cache" / "olly.db").read_bytes() == b""


def test_stat_view_loads_one_directory_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """StatView: a preloaded directory answers from memory, anything else row by row; the
    previous directory's rows are dropped; non-UTF-8 names (BLOB paths) are found too."""
    monkeypatch.setattr("olly.statview.WHOLE_BYTES", 0)  # a big cache: per directory
    c = Cache(tmp_path / ".cache")
    odd = b"ctx/b/\xff.txt".decode("utf-8", "surrogateescape")
    rows = [("ctx/a/x.txt", 1, 2, 3, 4, 5, "ha"), ("ctx/a/sub/y.txt", 1, 2, 3, 4, 5, "hy"), ("ctx/ab.txt", 1, 2, 3, 4, 5, "hab"),
            ("ctx/b/z.txt", 1, 2, 3, 4, 5, "hz"), (odd, 1, 2, 3, 4, 5, "hodd"), ("top.txt", 1, 2, 3, 4, 5, "ht")]
    c.save_stats(rows, [])
    view = c.stat_view()
    view.preload("ctx/a")
    assert view._rows == {"ctx/a/x.txt": (1, 2, 3, 4, 5, "ha"), "ctx/a/sub/y.txt": (1, 2, 3, 4, 5, "hy")}
    assert view.get("ctx/ab.txt") == (1, 2, 3, 4, 5, "hab")  # outside: looked up on its own
    assert view.get("ctx/a/none.txt") is None
    view.preload("ctx/b")
    assert set(view._rows) == {"ctx/b/z.txt", odd} and view.get(odd)[-1] == "hodd"
    view["ctx/b/new.txt"] = (9, 9, 9, 9, 9, "new")
    assert view.get("ctx/b/new.txt")[-1] == "new" and view.pop("ctx/b/new.txt") is not None
    view.preload("")
    assert len(view._rows) == len(rows) and view.get("top.txt")[-1] == "ht"
    c.close()


def test_small_stat_cache_is_loaded_whole_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache database under WHOLE_BYTES is read with one query at the first preload; every
    later preload is answered from it, and a stale row is still only a hint (FileHasher)."""
    c = Cache(tmp_path / ".cache")
    c.save_stats([("ctx/a/x.txt", 1, 2, 3, 4, 5, "ha"), ("ctx/b/z.txt", 1, 2, 3, 4, 5, "hz")], [])
    queries: list[str] = []
    real = c._stat_rows
    monkeypatch.setattr(c, "_stat_rows", lambda prefix: queries.append(prefix) or real(prefix))
    view = c.stat_view()
    view.preload("ctx/a")
    view.preload("ctx/b")
    assert queries == [""] and view.get("ctx/b/z.txt")[-1] == "hz" and view.get("ctx/a/x.txt")[-1] == "ha"
    monkeypatch.setattr("olly.statview.WHOLE_BYTES", 0)
    other = c.stat_view()
    other.preload("ctx/a")
    assert queries == ["", "ctx/a"] and set(other._rows) == {"ctx/a/x.txt"}
    c.close()


def test_old_stat_table_is_clustered_on_write(tmp_path: Path) -> None:
    """A cache made when the stat table had a rowid gets the WITHOUT ROWID table, rows kept."""
    c = Cache(tmp_path / ".cache")
    c.db.execute("DROP TABLE stat")
    c.db.execute("CREATE TABLE stat (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, ino INTEGER, "
                 "ctime_ns INTEGER, mode INTEGER, hash TEXT)")
    c.db.execute("INSERT INTO stat VALUES ('a/b', 1, 2, 3, 4, 5, 'h')")
    c.save_stats([], [])
    sql = c.db.execute("SELECT sql FROM sqlite_master WHERE name = 'stat'").fetchone()[0]
    assert "WITHOUT ROWID" in sql.upper() and c.load_stats() == {"a/b": (1, 2, 3, 4, 5, "h")}
    c.close()


def test_a_new_cache_has_16k_pages_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    Cache(tmp_path / "new").close()
    assert sqlite3.connect(tmp_path / "new" / "olly.db").execute("PRAGMA page_size").fetchone()[0] == 16384
    (tmp_path / "old").mkdir()
    old = sqlite3.connect(tmp_path / "old" / "olly.db")
    old.execute("PRAGMA page_size = 4096")
    old.execute("CREATE TABLE t (x)")
    old.close()
    with pytest.raises(OllyError):  # not an olly cache: refused, its pages kept
        Cache(tmp_path / "old")
    assert sqlite3.connect(tmp_path / "old" / "olly.db").execute("PRAGMA page_size").fetchone()[0] == 4096


def test_creating_a_cache_imports_no_numpy(tmp_path: Path) -> None:
    """sqlite-utils loads numpy and pandas when installed (0.1 s); olly stores none of their
    values, so a new cache is made without them, and they stay importable afterwards."""
    import subprocess
    import sys

    code = ("import sys; from pathlib import Path; from olly.cache import Cache; Cache(Path(sys.argv[1])).close(); "
            "print('sqlite_utils' in sys.modules, 'numpy' in sys.modules, 'pandas' in sys.modules, "
            "sys.modules.get('numpy', 0) is None)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "c")], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False", "False", "False"]
    assert (tmp_path / "c" / "olly.db").exists()
