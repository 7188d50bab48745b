"""Remembered context walks (olly.walkmemo): a recalled context is exactly what hashing it
again gives, and any change a hash would see, or a racy file, means no recall."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from olly import walkmemo
from olly.cache import Cache, export_cache
from olly.config import ImageTarget
from olly.context import scan
from olly.dockerignore import DockerIgnore
from olly.hashing import FileHasher


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plan a minute from now, so the files just written are past the racy window."""
    real = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real() + 60 * 10**9)


def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    for rel, text in {"app/Dockerfile": "FROM scratch\nCOPY . /app/\n", "app/.dockerignore": "tmp\n",
                      "app/src/a.txt": "alpha", "app/src/b.txt": "beta", "app/tmp/junk": "x"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    os.symlink("src/a.txt", root / "app/link")
    return root


def target() -> ImageTarget:
    return ImageTarget(label="app", repository="x/app", context="app", dockerfile="app/Dockerfile", args={},
                       target=None, inputs=[], depends_on=[], platforms=(), network=None)


def plan_scan(root: Path, cache: Cache) -> tuple[list, FileHasher, walkmemo.Memo]:
    hasher = FileHasher(root, cache.stat_view())
    hasher.walks = memo = walkmemo.Memo(cache)
    ctx = scan(root, target(), hasher)
    cache.save_stats(list(hasher.updates.values()), hasher.forget)
    cache.save_walks(memo.new)
    return ctx.entries, hasher, memo


def fp(root: Path, ignore: bytes | None = b"tmp\n", specials: tuple[str, ...] = (".dockerignore", "Dockerfile"),
       started: int | None = None) -> tuple[str, bool]:
    items = walkmemo.walk(root, "app", DockerIgnore.parse((ignore or b"").decode()), "app/")
    return walkmemo.fingerprint("app", ignore, specials, items, started or time.time_ns() + 60 * 10**9)


def test_a_remembered_context_is_recalled_exactly(tmp_path: Path, later) -> None:
    root = workspace(tmp_path)
    cache = Cache(root / ".cache")
    first, hasher, memo = plan_scan(root, cache)
    assert hasher.files_read > 0 and memo.hits == 0 and len(memo.new) == 1
    again, hasher, memo = plan_scan(root, cache)
    assert again == first and memo.hits == 1 and hasher.files_read == 0  # nothing read, nothing hashed
    assert [e.path for e in again] == sorted(e.path for e in again)
    assert "tmp/junk" not in {e.path for e in again} and {"link", "src/a.txt", "Dockerfile"} <= {e.path for e in again}


@pytest.mark.parametrize("edit", ["content", "touch", "chmod", "add", "remove", "rename", "relink", "ignore"])
def test_any_change_a_hash_would_see_is_a_miss(tmp_path: Path, later, edit: str) -> None:
    root = workspace(tmp_path)
    cache = Cache(root / ".cache")
    first, _, _ = plan_scan(root, cache)
    a = root / "app/src/a.txt"
    st = a.stat()
    if edit == "content":  # same size, mtime put back: only the ctime tells
        a.write_text("ALPHA")
        os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    elif edit == "touch":
        os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    elif edit == "chmod":
        a.chmod(0o755)
    elif edit == "add":
        (root / "app/src/c.txt").write_text("gamma")
    elif edit == "remove":
        (root / "app/src/b.txt").unlink()
    elif edit == "rename":
        (root / "app/src/b.txt").rename(root / "app/src/c.txt")
    elif edit == "relink":
        (root / "app/link").unlink()
        os.symlink("src/b.txt", root / "app/link")
    else:
        (root / "app/.dockerignore").write_text("tmp\nsrc/b.txt\n")
    again, hasher, memo = plan_scan(root, cache)
    assert memo.hits == 0 and (again != first or edit == "touch")  # a touch changes no entry, but is seen
    fresh = scan(root, target(), FileHasher(root, {}))  # no stat cache, no memo: the truth
    assert again == fresh.entries


def test_a_racy_walk_is_not_remembered(tmp_path: Path) -> None:
    """Files younger than RACY_NS could change again within their timestamp tick."""
    root = workspace(tmp_path)
    cache = Cache(root / ".cache")
    _, _, memo = plan_scan(root, cache)
    assert memo.new == {} and cache.walk_keys() == set()


def test_the_fingerprint_covers_what_shapes_the_walk(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    base, settled = fp(root)
    assert settled and fp(root) == (base, True)
    assert fp(root, ignore=b"tmp\n#\n")[0] != base  # other .dockerignore bytes
    assert fp(root, specials=("Dockerfile",))[0] != base  # another Dockerfile sent from memory
    assert fp(root, started=time.time_ns())[1] is False  # files just written: racy


def test_a_fresh_directory_alone_does_not_make_a_walk_racy(tmp_path: Path) -> None:
    """Directories are listed on every walk (their names are in the fingerprint): only files
    and symlinks are trusted by their signatures."""
    root = workspace(tmp_path)
    later = time.time_ns() + 60 * 10**9
    (root / "app/empty").mkdir()
    items = walkmemo.walk(root, "app", DockerIgnore.parse("tmp\n"), "app/")
    young = {rel for rel, st in items if st.st_ctime_ns >= later - walkmemo.RACY_NS}
    assert young == set()  # all written before `later` minus the window
    assert walkmemo.fingerprint("app", b"tmp\n", (), items, later)[1]


def test_the_helper_fingerprints_as_the_plan_would(tmp_path: Path, later) -> None:
    root = workspace(tmp_path)
    for n in range(3):
        (root / f"c{n}").mkdir()
        (root / f"c{n}/f.txt").write_text(str(n))
    prefetch = walkmemo.Prefetch(root, [("c1", None, "c1/"), ("app", "Dockerfile", "app/"), ("c2", None, "c2/")])
    try:
        assert prefetch.take("app", "Dockerfile") == (fp(root)[0], b"tmp\n", (".dockerignore", "Dockerfile"))
        assert prefetch.take("c0", None) is None  # never asked of the helper
        items = walkmemo.walk(root, "c2", DockerIgnore.parse(""), "c2/")
        assert prefetch.take("c2", None) == (walkmemo.fingerprint("c2", None, (), items, time.time_ns())[0], None, ())
    finally:
        prefetch.close()


def test_a_helper_that_fails_only_costs_the_plan_its_own_walk(tmp_path: Path, later,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    root = workspace(tmp_path)
    cache = Cache(root / ".cache")
    first, _, _ = plan_scan(root, cache)
    (root / "app2").mkdir()
    monkeypatch.setattr(walkmemo, "_HELPER", "import sys; sys.stdout.buffer.write(b'garbage'); sys.exit(3)")
    memo = walkmemo.Memo(cache)
    prefetch = walkmemo.Prefetch(root, [("app", "Dockerfile", "app/")])
    memo.prefetch = prefetch
    assert memo.prefetched("app", "Dockerfile", b"tmp\n", (".dockerignore", "Dockerfile")) is None
    hasher = FileHasher(root, cache.stat_view())
    hasher.walks = memo
    assert scan(root, target(), hasher).entries == first and memo.hits == 1  # walked here, recalled
    memo.close()


def test_walks_stay_on_this_machine(tmp_path: Path, later) -> None:
    """An exported cache (for CI) holds no walks: inodes and ctimes differ on every machine."""
    root = workspace(tmp_path)
    cache = Cache(root / ".cache")
    plan_scan(root, cache)
    assert cache.walk_keys() == {walkmemo.key_of("app", "Dockerfile")}
    cache.close()
    export_cache(root / ".cache", tmp_path / "export.db")
    tables = {r[0] for r in sqlite3.connect(tmp_path / "export.db").execute("SELECT name FROM sqlite_master")}
    assert "walks" not in tables and "results" in tables


def test_an_unreadable_memo_is_a_miss(tmp_path: Path, later) -> None:
    root = workspace(tmp_path)
    cache = Cache(root / ".cache")
    first, _, _ = plan_scan(root, cache)
    key = walkmemo.key_of("app", "Dockerfile")
    fingerprint = cache.walk(key)[0]  # type: ignore[index]
    cache.save_walks({key: (fingerprint, b"not marshal data")})
    again, _, memo = plan_scan(root, cache)
    assert again == first and memo.hits == 0
