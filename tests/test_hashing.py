"""Stat-cached hashing: no re-reads when nothing changed; racily-clean files re-hashed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from olly.hashing import RACY_NS, FileHasher, hash_file


@pytest.fixture
def later(monkeypatch):
    """Pretend hashing happens a minute from now, so existing files are not racy.
    (ctime cannot be set back, so files cannot be made old instead.)"""
    import olly.hashing

    real = time.time_ns
    monkeypatch.setattr(olly.hashing.time, "time_ns", lambda: real() + 60 * 10**9)


def test_cached_hash_is_reused(tmp_path: Path, later) -> None:
    f = tmp_path / "a.txt"
    f.write_text("one")
    known: dict = {}
    h1 = FileHasher(tmp_path, known)
    d1 = h1.hash("a.txt", f.lstat())
    assert h1.files_read == 1 and "a.txt" in h1.updates
    h2 = FileHasher(tmp_path, known)
    assert h2.hash("a.txt", f.lstat()) == d1
    assert h2.files_read == 0


def test_racily_clean_same_size_rewrite_is_seen(tmp_path: Path) -> None:
    """A same-size rewrite within the same mtime tick right after hashing is noticed."""
    f = tmp_path / "a.txt"
    f.write_text("aaaa")
    st = f.lstat()
    known: dict = {}
    first = FileHasher(tmp_path, known).hash("a.txt", st)
    # Rewrite with the same size and force the very same mtime (same tick).
    f.write_text("bbbb")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = FileHasher(tmp_path, known).hash("a.txt", f.lstat())
    assert first != second
    assert "a.txt" not in known  # fresh files are never trusted by stat alone


def test_change_with_same_mtime_old_file_detected_by_ctime(tmp_path: Path, later) -> None:
    f = tmp_path / "a.txt"
    f.write_text("aaaa")
    known: dict = {}
    FileHasher(tmp_path, known).hash("a.txt", f.lstat())
    st = f.lstat()
    f.write_text("bbbb")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime restored, ctime moves on
    h = FileHasher(tmp_path, known)
    assert h.hash("a.txt", f.lstat()) == hash_file(f, "a.txt")
    assert h.files_read == 1


def test_racy_window_is_at_least_a_coarse_tick() -> None:
    assert RACY_NS >= 1_000_000_000


def test_big_file_hash_covers_every_chunk(tmp_path: Path) -> None:
    import xxhash

    from olly.hashing import CHUNK

    f = tmp_path / "big.bin"
    data = os.urandom(CHUNK) + b"tail" + os.urandom(CHUNK // 3)
    f.write_bytes(data)
    assert hash_file(f, "big.bin") == hash_file(str(f), "big.bin") == xxhash.xxh3_128_hexdigest(data)
    (tmp_path / "empty").write_bytes(b"")
    assert hash_file(tmp_path / "empty", "empty") == xxhash.xxh3_128_hexdigest(b"")


@pytest.mark.parametrize("real", [0, 1, 100, (1 << 16) - 1, 1 << 16, (1 << 16) + 1, (1 << 20) - 1, 1 << 20,
                                  (1 << 20) + 1, 3 * (1 << 20) + 7])
def test_the_size_hint_never_changes_the_hash(tmp_path: Path, real: int) -> None:
    """The lstat size only sizes the first read: right, too small (the file grew since) or too
    big (it shrank), the whole file is read to EOF and hashed as one."""
    import xxhash

    f = tmp_path / "f.bin"
    data = os.urandom(real)
    f.write_bytes(data)
    want = xxhash.xxh3_128_hexdigest(data)
    for hint in {-1, 0, real, max(real - 1, 0), real + 1, real // 2, real * 2 + 5}:
        assert hash_file(f, "f.bin", hint) == want, hint


def test_a_held_row_serves_whoever_hashes_the_file_next(tmp_path: Path, later) -> None:
    """A row held back for a remembered walk (FileHasher.held) goes back to the stat rows to
    save when something else hashes the file, and serves that hash even if the lazy view of
    the stat cache has let the file's row go: no second read."""
    f = tmp_path / "ctx" / "a.txt"
    f.parent.mkdir()
    f.write_text("one")
    known: dict = {}
    h = FileHasher(tmp_path, known)
    h.walking = True
    digest = h.hash("ctx/a.txt", f.lstat())
    h.walking = False
    h.held("ctx", [type("E", (), {"type": "f", "path": "a.txt"})()])
    assert h.updates == {} and "ctx/a.txt" in h.held_rows
    known.clear()  # as a lazy view does past its memory budget
    assert h.hash("ctx/a.txt", f.lstat()) == digest and h.files_read == 1
    assert h.updates["ctx/a.txt"][-1] == digest and h.held_rows == {}
