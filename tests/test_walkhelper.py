"""The walk helper's first walks (olly.walkhelper): on a plan with nothing remembered, the
helper walks and hashes contexts, and what the plan takes from it is exactly what its own
walk and hashing give: the same entries, the same key bytes, the same remembered walk."""

from __future__ import annotations

import json
import os
import select
import shutil
import time
from pathlib import Path

import pytest

from olly import keys, walkhelper, walkmemo
from olly.cache import Cache
from olly.config import ImageTarget
from olly.context import scan
from olly.hashing import RACY_NS, FileHasher

CONTEXTS = {"app": "Dockerfile", "c0": "Dockerfile", "c1": None, "sub/c2": "Dockerfile"}
BUILD = """[workspace]
name = "w"

[images.app]
repository = "x/app"

[images.c0]
repository = "x/c0"

[images.one]
repository = "x/one"
context = "c1"
dockerfile = "elsewhere/Dockerfile.c1"

[images."sub/c2"]
repository = "x/c2"
"""


def write_workspace(root: Path) -> Path:
    files = {"BUILD.toml": BUILD, "elsewhere/Dockerfile.c1": "FROM scratch\nCOPY . /c1/\n"}
    for ctx, df in CONTEXTS.items():
        if df:
            files[f"{ctx}/{df}"] = f"FROM scratch\nCOPY . /{ctx}/\n"
        files[f"{ctx}/.dockerignore"] = "tmp\n"
        files[f"{ctx}/tmp/junk"] = "ignored"
        for n in range(30):
            files[f"{ctx}/src/d{n % 3}/f{n}.txt"] = f"{ctx} {n}\n" * (n + 1)
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    os.symlink("src/d0/f0.txt", root / "app/link")
    os.chmod(root / "c0/src/d1/f1.txt", 0o755)
    return root


@pytest.fixture(scope="module")
def settled_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Written once and left alone until every file is past the racy window: the helper (its
    own process, real clock) hands over only settled walks. Polled with a deadline."""
    root = write_workspace(tmp_path_factory.mktemp("first") / "ws")
    newest = max(os.lstat(os.path.join(d, f)).st_ctime_ns for d, _, fs in os.walk(root) for f in fs)
    deadline = time.monotonic() + 30
    while time.time_ns() - newest <= RACY_NS + 10**8 and time.monotonic() < deadline:
        select.select([], [], [], 0.05)
    return root


@pytest.fixture
def ws(settled_workspace: Path, tmp_path: Path) -> Path:
    """The settled workspace with no cache: each test starts from a first plan."""
    shutil.rmtree(settled_workspace / ".cache", ignore_errors=True)
    return settled_workspace


def target(ctx: str) -> ImageTarget:
    df = "elsewhere/Dockerfile.c1" if ctx == "c1" else f"{ctx}/Dockerfile"
    return ImageTarget(label=ctx, repository=f"x/{ctx}", context=ctx, dockerfile=df, args={}, target=None,
                       inputs=[], depends_on=[], platforms=(), network=None)


def finished(helper: walkhelper.Helper, deadline_s: float = 30.0) -> walkhelper.Helper:
    """Poll until the helper has answered everything and ended (its answers stay usable)."""
    limit = time.monotonic() + deadline_s
    while helper._proc is not None and time.monotonic() < limit:
        helper._drain()
        select.select([], [], [], 0.01)
    assert helper._proc is None, "the helper did not finish in time"
    return helper


def own_scan(root: Path, ctx: str) -> tuple[list, dict]:
    """The plan's own walk and hashing of ``ctx``, nothing remembered, no helper: its entries
    and the stat-cache rows its hashing made."""
    hasher = FileHasher(root, {})
    return scan(root, target(ctx), hasher).entries, hasher.updates


def own_memo(root: Path, ctx: str, df: str | None) -> bytes:
    """The walk the plan itself remembers for ``ctx`` (a fresh cache, no helper)."""
    cache = Cache(root / ".cache-own")
    hasher = FileHasher(root, cache.stat_view())
    hasher.walks = memo = walkmemo.Memo(cache)
    scan(root, target(ctx), hasher)
    cache.close()
    shutil.rmtree(root / ".cache-own")
    return memo.new[walkmemo.key_of(ctx, df)][1]


def test_the_helper_hints_its_first_walks_from_build_toml(tmp_path: Path) -> None:
    (tmp_path / "BUILD.toml").write_text(BUILD + '\n[images.dot]\nrepository = "x/dot"\ncontext = "./"\n'
                                         '\n[images.bad]\nrepository = "x/b"\ncontext = 3\n'
                                         '\n[images.out]\nrepository = "x/o"\ncontext = "a/./b/"\ndockerfile = "a/Dockerfile"\n')
    assert walkhelper._hinted(tmp_path) == [("app", "Dockerfile"), ("c0", "Dockerfile"), ("c1", None),
                                            ("sub/c2", "Dockerfile"), (".", "Dockerfile"), ("a/b", None)]
    for text in ("[images", "images = 3\n", "[workspace]\n"):
        (tmp_path / "BUILD.toml").write_text(text)
        assert walkhelper._hinted(tmp_path) == []  # unreadable or no images: nothing to walk first
    (tmp_path / "BUILD.toml").unlink()
    assert walkhelper._hinted(tmp_path) == []
    os.symlink("/etc", tmp_path / "out")
    escaping = ["..", "/etc", "out", "a/../..", ".cache/x", "dist", "dist/y"]
    (tmp_path / "BUILD.toml").write_text("".join(f'[images.i{n}]\nrepository = "x/{n}"\ncontext = "{c}"\n'
                                                 for n, c in enumerate([*escaping, "distro"])))
    assert walkhelper._hinted(tmp_path) == [("distro", "Dockerfile")]  # what olly.config refuses is not walked
    (tmp_path / "BUILD.toml").write_text('[images.a]\nrepository = "x/a"\ncontext = "a\\u0000b"\n')
    assert walkhelper._hinted(tmp_path) == []  # a NUL: realpath refuses it, and so does the helper


def test_a_first_plan_takes_exactly_what_its_own_walk_gives(ws: Path) -> None:
    helper = finished(walkhelper.Helper(ws))
    assert set(helper._firsts) == {walkmemo.key_of(c, d) for c, d in CONTEXTS.items()}  # all walked, first
    cache = Cache(ws / ".cache")
    memo = walkmemo.Memo(cache)
    memo.helper = helper
    try:
        for ctx, df in CONTEXTS.items():
            hasher = FileHasher(ws, cache.stat_view())
            hasher.walks = memo
            planned = scan(ws, target(ctx), hasher)
            entries, rows = own_scan(ws, ctx)
            assert planned.entries == entries
            assert planned.files_encoding() == keys.encode([e.row() for e in entries])  # the key's very bytes
            assert hasher.files_read == len(rows) and rows and not hasher.updates  # read by the helper, counted here
            key = walkmemo.key_of(ctx, df)
            assert memo.hits == 0 and memo.new[key][1] == own_memo(ws, ctx, df)  # remembered as its own walk would be
            prefix = ctx + "/"
            assert walkmemo.signatures(walkmemo.unpack(memo.new[key][1]), prefix) == {p: r[1:] for p, r in rows.items()}
    finally:
        memo.close()
    cache.save_walks(memo.new)
    hasher = FileHasher(ws, cache.stat_view())
    hasher.walks = again = walkmemo.Memo(cache)
    assert scan(ws, target("c0"), hasher).entries == own_scan(ws, "c0")[0] and again.hits == 1  # recalled
    cache.close()


def test_a_first_walk_not_of_the_plans_walk_is_not_taken(ws: Path) -> None:
    helper = finished(walkhelper.Helper(ws))
    cache = Cache(ws / ".cache")
    memo = walkmemo.Memo(cache)
    memo.helper = helper
    try:
        assert memo.prefetched("app", "Dockerfile", b"other\n", (".dockerignore", "Dockerfile")) is None
        assert memo._firsts == {}  # another .dockerignore: the plan walks and hashes for itself
        hasher = FileHasher(ws, cache.stat_view())
        hasher.walks = memo
        assert memo.recall("app", "Dockerfile", "not the fingerprint", hasher) is None and hasher.files_read == 0
    finally:
        memo.close()
        cache.close()


def test_an_unsettled_context_is_left_to_the_plan(tmp_path: Path) -> None:
    """A racy file (here one mtime an hour ahead: racy however late the helper walks) keeps the
    helper from handing over its context; the others are handed over."""
    root = write_workspace(tmp_path / "ws")
    for ctx in CONTEXTS:
        os.utime(root / ctx / "src/d1/f1.txt", ns=(time.time_ns(), time.time_ns() + 3600 * 10**9))
    helper = finished(walkhelper.Helper(root))
    try:
        assert helper._firsts == {} and helper._answers == {}
    finally:
        helper.close()


def test_a_failpoint_armed_for_olly_is_not_the_helpers(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Crash tests arm `hash`; the helper hashes too, and must not die of it in olly's place."""
    monkeypatch.setenv("OLLY_FAILPOINT", "hash")
    helper = finished(walkhelper.Helper(ws))
    try:
        assert len(helper._firsts) == len(CONTEXTS)
    finally:
        helper.close()


def test_first_walks_are_read_after_the_helper_ended_and_dropped_on_close(ws: Path) -> None:
    helper = finished(walkhelper.Helper(ws))
    key = walkmemo.key_of("c0", "Dockerfile")
    assert helper.answer(key) is not None
    first = helper.first_walk(key)
    assert first is not None and isinstance(first[0], bytes) and first[1] == 30
    helper.close()
    assert helper.first_walk(walkmemo.key_of("c1", None)) is None  # closed: nothing left to read


def test_contexts_are_walked_first_only_in_a_fresh_cache(ws: Path) -> None:
    """Once the cache holds a walk or a stat row, a context without a remembered walk is mostly
    one the plan scans by reach (never remembered) or was not asked to plan: the helper leaves it."""
    cache = Cache(ws / ".cache")  # a db with no walk and no stat row yet: fresh
    cache.close()
    assert len(finished(walkhelper.Helper(ws))._firsts) == len(CONTEXTS)
    cache = Cache(ws / ".cache")
    cache.save_stats([("elsewhere/x", 1, 2, 3, 4, 5, "0" * 32)], [])
    cache.close()
    helper = finished(walkhelper.Helper(ws))
    assert helper._firsts == {} and helper._answers == {}
    (ws / ".cache" / "olly.db").write_bytes(b"not a database")  # unreadable: the plan does it all
    assert finished(walkhelper.Helper(ws))._firsts == {}


def test_one_walk_serves_every_scan_of_its_key(ws: Path) -> None:
    """A second scan of the same context and Dockerfile in one plan (another platform, another
    image) takes the walk the first one took, the helper's too: nothing is read twice."""
    if walkhelper._scratch_file() is None:
        pytest.skip("no O_TMPFILE here: the helper only fingerprints")
    helper = finished(walkhelper.Helper(ws))
    assert walkmemo.key_of("c0", "Dockerfile") in helper._firsts
    cache = Cache(ws / ".cache")
    memo = walkmemo.Memo(cache)
    memo.helper = helper
    hasher = FileHasher(ws, cache.stat_view())
    hasher.walks = memo
    try:
        first = scan(ws, target("c0"), hasher)
        assert memo._firsts == {} and hasher.files_read == 30  # the helper's walk, taken
        second = scan(ws, target("c0"), hasher)
        assert first.entries == second.entries and hasher.files_read == 30  # taken again, not re-read
    finally:
        memo.close()
        cache.close()


def test_the_cli_starts_a_helper_for_a_first_plan(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    walkhelper.start(str(ws / "c0"))
    helper = walkhelper.claim(ws)
    assert helper is not None
    helper.close()


def test_a_first_plan_with_the_helper_plans_what_one_without_it_plans(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from olly.cli import cli

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/olly-test.sock")
    runner = CliRunner()
    started: list[walkhelper.Helper] = []
    real = walkhelper.Helper
    monkeypatch.setattr(walkhelper, "Helper", lambda r: started.append(finished(real(r))) or started[-1])
    helped = runner.invoke(cli, ["-C", str(ws), "plan", "--json"])
    assert helped.exit_code == 0, helped.output
    assert started and started[0]._firsts == {}  # every first walk taken by the plan
    remembered = "SELECT key, ctx_dir, df_rel, fingerprint, entries FROM walk_memo ORDER BY key"
    cache = Cache(ws / ".cache")
    walks = cache.db.execute(remembered).fetchall()
    assert len(walks) == len(CONTEXTS) and cache.db.execute("SELECT COUNT(*) FROM stat").fetchone()[0] == 0
    cache.close()
    shutil.rmtree(ws / ".cache")
    monkeypatch.setattr(walkhelper, "start", lambda directory=None, watched=False: None)
    alone = runner.invoke(cli, ["-C", str(ws), "plan", "--json"])
    assert alone.exit_code == 0, alone.output
    assert json.loads(helped.output) == json.loads(alone.output)
    cache = Cache(ws / ".cache")
    assert cache.db.execute(remembered).fetchall() == walks  # byte for byte
    cache.close()
