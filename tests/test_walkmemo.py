"""Remembered context walks (olly.walkmemo): a recalled context is exactly what hashing it
again gives, and any change a hash would see, or a racy file, means no recall."""

from __future__ import annotations

import os
import select
import sqlite3
import time
from pathlib import Path

import pytest

from olly import keys, walkhelper, walkmemo
from olly.cache import Cache, export_cache
from olly.config import ImageTarget
from olly.context import Entry, _merge, _places, _spliced, scan, send_dockerfile
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
    spliced = ctx.files_encoding()
    assert spliced is None or spliced == keys.encode([e.row() for e in ctx.entries])  # the key's own bytes
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


SAME_NAME_EDITS = ("content", "touch", "chmod")


def edit_in_place(path: Path, edit: str) -> None:
    """Change a file without renaming it: its content (same size, mtime put back: only the ctime
    tells), its mtime alone (by 1 ns), or its mode."""
    st = path.stat()
    if edit == "content":
        path.write_text(path.read_text().upper())
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    elif edit == "touch":
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    else:
        path.chmod(st.st_mode ^ 0o111)


@pytest.mark.parametrize("edit", ["content", "touch", "chmod", "add", "remove", "rename", "relink", "ignore"])
def test_any_change_a_hash_would_see_is_a_miss(tmp_path: Path, later, edit: str) -> None:
    root = workspace(tmp_path)
    cache = Cache(root / ".cache")
    first, _, _ = plan_scan(root, cache)
    if edit in SAME_NAME_EDITS:
        edit_in_place(root / "app/src/a.txt", edit)
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
    # Only what changed is read: the stored walk's signatures vouch for the rest.
    assert hasher.files_read == {"remove": 0, "relink": 0, "ignore": 0}.get(edit, 1)


def test_a_remembered_walk_holds_its_files_signatures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stat cache keeps no rows for a remembered context: after a miss, the stored walk's
    signatures spare the files that did not change, even past a racy re-walk (not remembered:
    the walk stored before stays) and ahead of an older stat row of the same file."""
    real = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real() + 60 * 10**9)
    root = workspace(tmp_path)
    cache = Cache(root / ".cache")
    first, hasher, _ = plan_scan(root, cache)
    assert hasher.files_read == 2 and cache.load_stats() == {}
    cache.save_stats([("app/src/b.txt", 1, 2, 3, 4, 5, "0" * 32)], [])  # left by an older olly: not b.txt now
    monkeypatch.setattr(time, "time_ns", real)  # plan right after the edit: a.txt is racy
    (root / "app/src/a.txt").write_text("ALPHA, longer")
    racy, hasher, memo = plan_scan(root, cache)
    assert hasher.files_read == 1 and memo.new == {}  # a.txt read, b.txt vouched for; nothing remembered
    monkeypatch.setattr(time, "time_ns", lambda: real() + 60 * 10**9)
    settled, hasher, memo = plan_scan(root, cache)
    assert hasher.files_read == 1 and len(memo.new) == 1  # the walk stored first still vouches for b.txt
    assert racy == settled == scan(root, target(), FileHasher(root, {})).entries != first
    again, hasher, memo = plan_scan(root, cache)
    assert again == settled and memo.hits == 1 and hasher.files_read == 0


def test_files_an_inputs_glob_shares_with_a_remembered_context_keep_their_rows(tmp_path: Path, later) -> None:
    """An `inputs` glob hashing files of a remembered context needs their stat rows, before or
    after the context's walk in the plan: an edit then reads only the edited file."""
    from olly.context import scan_inputs

    root = workspace(tmp_path)
    cache = Cache(root / ".cache")

    def plan(order: str) -> FileHasher:
        hasher = FileHasher(root, cache.stat_view())
        hasher.walks = memo = walkmemo.Memo(cache)
        for step in order:
            if step == "c":
                scan(root, target(), hasher)
            else:
                scan_inputs(root, ["app/src/**"], hasher, "other")
        cache.save_stats(list(hasher.updates.values()), hasher.forget)
        memo.save()
        return hasher

    for n, order in enumerate(["ci", "ic"]):
        assert plan(order).files_read == (2 if n == 0 else 0)
        (root / f"app/src/{'ab'[n]}.txt").write_text("edited " * (n + 1))
        assert plan(order).files_read == 1, order  # the edited file only, for the walk and the glob


def test_a_plan_of_every_target_drops_the_memos_of_removed_ones(tmp_path: Path, later) -> None:
    """Remembered walks and `inputs` globs of images gone from BUILD.toml are dropped by the next
    plan of every target, not by a plan of some; a plan with nothing to drop writes nothing."""
    from olly import api
    from tests.conftest import copy_workspace

    root = copy_workspace("busy", tmp_path / "ws")
    build = root / "BUILD.toml"
    build.write_text(build.read_text().replace('args = { GREETING = "hello" }', 'args = { GREETING = "hello" }\ninputs = ["app/**"]'))
    (root / "solo/Dockerfile").write_text("FROM scratch\nCOPY . /solo/\n")  # walked whole: remembered
    api.plan(root, [], check_engine=False)
    cache = Cache(root / ".cache")
    solo, glob = walkmemo.key_of("solo", "Dockerfile"), walkmemo.inputs_key(["app/**"])
    walks = cache.walk_keys()
    assert solo in walks and len(walks) == 2 and cache.inputs_memo(glob) is not None
    cache.close()
    full = build.read_text()
    build.write_text(full.split("[images.solo]")[0])  # solo is gone
    api.plan(root, ["base"], check_engine=False)  # some targets: nothing is dropped
    cache = Cache(root / ".cache")
    assert cache.walk_keys() == walks
    cache.close()
    api.plan(root, [], check_engine=False)
    cache = Cache(root / ".cache")
    assert cache.walk_keys() == walks - {solo} and cache.inputs_memo(glob) is None
    assert {"solo/data.txt", "solo/busybox"} <= set(cache.load_stats())  # its signatures kept as stat rows
    cache.close()
    db = root / ".cache" / "olly.db"
    before = (db.stat().st_mtime_ns, db.read_bytes())
    api.plan(root, [], check_engine=False)
    assert (db.stat().st_mtime_ns, db.read_bytes()) == before  # nothing to drop: the db is left as it was
    build.write_text(full)  # solo is back (another branch): not read again whole
    assert api.plan(root, ["solo"], check_engine=False).files_read == 0


def test_walks_holding_a_file_that_lied_are_forgotten(tmp_path: Path, later) -> None:
    """A file whose content was not what its signature promised (edited under a build) drops
    the remembered walks of the contexts holding it; others stay."""
    root, cache = remembered_workspace(tmp_path)
    cache.forget_walks(["elsewhere/x.txt", "c1"])  # a path outside every context; a context's own name
    assert cache.walk_keys() == {walkmemo.key_of(c, d) for c, d in [("app", "Dockerfile"), ("c0", None), ("c1", None), ("c2", None)]}
    memo = walkmemo.Memo(cache)
    memo.remember_inputs("glob", "fp", [], b"")
    memo.save()
    only_inputs = Cache(tmp_path / "other")  # no walk remembered there, only a glob
    other = walkmemo.Memo(only_inputs)
    other.remember_inputs("glob", "fp", [], b"")
    other.save()
    only_inputs.forget_walks(["x/y"])
    assert only_inputs.inputs_memo("glob") is None
    only_inputs.close()
    cache.forget_walks(["c1/f.txt", "app/src/a.txt"])
    assert cache.walk_keys() == {walkmemo.key_of("c0", None), walkmemo.key_of("c2", None)}
    assert cache.inputs_memo("glob") is None  # which files an `inputs` glob matched is not kept: all go


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


def answers(helper: walkhelper.Helper, want: int, deadline_s: float = 20.0) -> dict:
    """Poll (never sleep blindly) until the helper has answered ``want`` contexts, or it ended."""
    limit = time.monotonic() + deadline_s
    while len(helper._answers) < want and helper._proc is not None and time.monotonic() < limit:
        helper._drain()
        select.select([], [], [], 0.01)
    return dict(helper._answers)


def remembered_workspace(tmp_path: Path) -> tuple[Path, Cache]:
    root = workspace(tmp_path)
    for n in range(3):
        (root / f"c{n}").mkdir()
        (root / f"c{n}/f.txt").write_text(str(n))
    cache = Cache(root / ".cache")
    memo = walkmemo.Memo(cache, [("app", "Dockerfile"), ("c0", None), ("c1", None), ("c2", None)])
    for ctx, df in [("app", "Dockerfile"), ("c0", None), ("c1", None), ("c2", None)]:
        memo.remember(ctx, df, "fp", [])
    cache.save_walks(memo.new)
    return root, cache


def test_the_helper_fingerprints_as_the_plan_would(tmp_path: Path) -> None:
    """It reads the remembered contexts from the cache and answers each, last planned first,
    with the fingerprint the plan's own walk gives."""
    root, _ = remembered_workspace(tmp_path)
    helper = walkhelper.Helper(root)
    try:
        got = answers(helper, 4)
        assert set(got) == {walkmemo.key_of(c, d) for c, d in [("app", "Dockerfile"), ("c0", None), ("c1", None), ("c2", None)]}
        fp_app, ignore, specials = got[walkmemo.key_of("app", "Dockerfile")]
        assert (ignore, specials) == (b"tmp\n", (".dockerignore", "Dockerfile"))
        assert fp_app == fp(root, started=time.time_ns())[0]
        items = walkmemo.walk(root, "c2", DockerIgnore.parse(""), "c2/")
        assert got[walkmemo.key_of("c2", None)] == (walkmemo.fingerprint("c2", None, (), items, time.time_ns())[0], None, ())
        assert helper.answer(walkmemo.key_of("c2", None)) is not None and helper.answer(walkmemo.key_of("c2", None)) is None
    finally:
        helper.close()


def test_the_plan_never_waits_and_tells_the_helper_what_it_walks(tmp_path: Path, later) -> None:
    root, cache = remembered_workspace(tmp_path)
    memo = walkmemo.Memo(cache)
    memo.helper = helper = walkhelper.Helper(root)
    try:
        started = time.monotonic()
        assert memo.prefetched("c0", None, None, ()) in (None, answers(helper, 0).get("x"))  # whatever has arrived
        assert time.monotonic() - started < 1
        skipped = walkmemo.key_of("c1", None)
        helper.skip(skipped)  # as prefetched() does for what the plan walks itself
        got = answers(helper, 3)
        assert skipped not in got or len(got) == 4  # skipped, unless the helper had already done it
        assert memo.prefetched("c2", None, b"other bytes", ()) is None  # not the walk the plan makes
    finally:
        memo.close()
    assert helper._proc is None


def test_a_helper_that_fails_only_costs_the_plan_its_own_walk(tmp_path: Path, later,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    root = workspace(tmp_path)
    cache = Cache(root / ".cache")
    first, _, _ = plan_scan(root, cache)
    monkeypatch.setattr(walkhelper, "HELPER", "import sys; sys.stdout.buffer.write(b'garbage' * 3); sys.exit(3)")
    memo = walkmemo.Memo(cache)
    memo.helper = walkhelper.Helper(root)
    limit = time.monotonic() + 20
    while memo.helper._proc is not None and time.monotonic() < limit:  # until it has died and been dropped
        memo.helper._drain()
        select.select([], [], [], 0.01)
    assert memo.prefetched("app", "Dockerfile", b"tmp\n", (".dockerignore", "Dockerfile")) is None
    hasher = FileHasher(root, cache.stat_view())
    hasher.walks = memo
    assert scan(root, target(), hasher).entries == first and memo.hits == 1  # walked here, recalled
    memo.close()


def test_the_cli_starts_a_helper_only_for_a_cache_worth_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, cache = remembered_workspace(tmp_path)
    cache.close()
    (root / "BUILD.toml").write_text("[workspace]\n")
    monkeypatch.setattr(walkhelper, "MIN_DB_BYTES", 1 << 40)
    walkhelper.start(str(root / "app" / "src"))
    assert walkhelper.claim(root) is None  # a small cache: no process
    monkeypatch.setattr(walkhelper, "MIN_DB_BYTES", 0)
    walkhelper.start(str(root / "app" / "src"))  # found from a directory inside the workspace
    helper = walkhelper.claim(root)
    assert helper is not None and walkhelper.claim(root) is None
    helper.close()
    walkhelper.start(str(tmp_path))  # no workspace there: nothing, and no error
    assert walkhelper._RUNNING == {}


def test_walks_stay_on_this_machine(tmp_path: Path, later) -> None:
    """An exported cache (for CI) holds no walks: inodes and ctimes differ on every machine."""
    root = workspace(tmp_path)
    cache = Cache(root / ".cache")
    plan_scan(root, cache)
    assert cache.walk_keys() == {walkmemo.key_of("app", "Dockerfile")}
    cache.close()
    export_cache(root / ".cache", tmp_path / "export.db")
    tables = {r[0] for r in sqlite3.connect(tmp_path / "export.db").execute("SELECT name FROM sqlite_master")}
    assert "walk_memo" not in tables and "results" in tables


def test_an_unreadable_memo_is_a_miss(tmp_path: Path, later) -> None:
    root = workspace(tmp_path)
    cache = Cache(root / ".cache")
    first, _, _ = plan_scan(root, cache)
    key = walkmemo.key_of("app", "Dockerfile")
    fingerprint = cache.walk(key)[0]  # type: ignore[index]
    cache.save_walks({key: (fingerprint, b"not marshal data", "app", "Dockerfile", 0)})
    again, _, memo = plan_scan(root, cache)
    assert again == first and memo.hits == 0


def test_remembered_rows_give_the_key_the_very_bytes_it_would_encode(tmp_path: Path, later) -> None:
    """A recalled context's ``files`` encoding is spliced from remembered rows; with the
    in-memory entries inserted among them, replaced (a pinned Dockerfile) or anything else
    changed in the list, it is exactly ``keys.encode`` of the rows, or None (encoded afresh)."""
    root = workspace(tmp_path)
    (root / "app/Dockerfile.z").write_text("FROM scratch\n")  # sorts after the Dockerfile
    cache = Cache(root / ".cache")
    plan_scan(root, cache)
    hasher = FileHasher(root, cache.stat_view())
    hasher.walks = walkmemo.Memo(cache)
    ctx = scan(root, target(), hasher)
    assert ctx.lazy is not None and ctx.lazy.at  # recalled, the Dockerfile and .dockerignore inserted
    assert ctx.files_encoding() == keys.encode(ctx.file_rows())
    send_dockerfile(ctx, b"FROM scratch@sha256:" + b"0" * 64 + b"\nCOPY . /app/\n")  # olly.baselock pins it
    assert ctx.lazy is not None  # replaced among the inserted entries: no Entry objects made
    pinned = ctx.files_encoding()
    assert pinned == keys.encode(ctx.file_rows())
    truth = lambda: keys.encode([e.row() for e in ctx.entries])  # noqa: E731
    assert pinned == truth() and ctx.lazy is None  # made now, and the same
    assert ctx.recalled is not None and ctx.files_encoding() == truth()
    ctx.entries[-1] = ctx.entries[-1]._replace(digest="0" * 32)  # not what was recalled: refused
    assert ctx.files_encoding() is None
    ctx.entries.pop()
    assert ctx.files_encoding() is None


def test_in_memory_entries_land_where_a_walk_puts_them() -> None:
    """A recalled context places its in-memory entries (Dockerfile, .dockerignore) among the
    remembered rows exactly where merging them into walked entries does: first, between,
    last, and not at all where a walked entry already has the path."""
    walked = [Entry(p, "f", False, 1, "d" + p) for p in ("b", "d/x", "f", "m")]
    for names in ([], ["a"], ["a", "c", "z"], ["f", "g"], ["0", "b", "e", "n", "o"]):
        visible = {n: Entry(n, "f", False, 2, "mem", b"x") for n in names}
        merged, inserted = _merge(visible, walked)
        at, extra = _places(walkmemo.pack(walked)[1].find, visible)
        assert (at, extra) == (inserted, [merged[i] for i in inserted])
        assert _spliced(walked, at, extra) == merged


def test_a_fifo_dockerignore_does_not_stall_the_helper(tmp_path: Path) -> None:
    """The helper opens only a regular .dockerignore (a FIFO would block it forever): for
    anything else it leaves the context to the plan, and goes on with the others."""
    root, _ = remembered_workspace(tmp_path)
    (root / "app/.dockerignore").unlink()
    os.mkfifo(root / "app/.dockerignore")
    assert walkmemo.fingerprint_context(root, "app", "Dockerfile") is None
    helper = walkhelper.Helper(root)
    try:
        got = answers(helper, 3)
        assert set(got) == {walkmemo.key_of(c, None) for c in ("c0", "c1", "c2")}
    finally:
        helper.close()


def test_remembered_walks_are_written_as_they_come(tmp_path: Path, later, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past FLUSH_BYTES the walks are saved at once (a first plan of 10^5 files holds none of
    them to the end); a cache opened read-only remembers nothing."""
    root = workspace(tmp_path)
    cache = Cache(root / ".cache")
    monkeypatch.setattr(walkmemo, "FLUSH_BYTES", 0)
    hasher = FileHasher(root, cache.stat_view())
    hasher.walks = memo = walkmemo.Memo(cache)
    scan(root, target(), hasher)
    assert memo.new == {} and cache.walk_keys() == {walkmemo.key_of("app", "Dockerfile")}
    cache.read_only = True
    memo.remember("other", None, "fp", [])
    assert memo.new == {} and len(cache.walk_keys()) == 1


def test_the_plan_never_blocks_telling_a_busy_helper_what_to_skip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A helper deep in one long walk reads no skips; once its pipe is full they are dropped
    (they only save work), rather than the plan waiting (5,000 contexts: ~200 KB of skips)."""
    root, _ = remembered_workspace(tmp_path)
    monkeypatch.setattr(walkhelper, "HELPER", "import time; time.sleep(60)")  # reads nothing
    helper = walkhelper.Helper(root)
    try:
        started = time.monotonic()
        for n in range(20_000):
            helper.skip(walkmemo.key_of(f"ctx/{n}", None))
        assert time.monotonic() - started < 10 and helper._proc is not None
    finally:
        helper.close()


def test_answers_from_walks_begun_too_early_are_not_taken(tmp_path: Path) -> None:
    """A walk that began before the plan's cutoff may have missed an edit (olly make waited for
    the workspace lock meanwhile): its answer is dropped, and the plan walks for itself."""
    root, _ = remembered_workspace(tmp_path)
    helper = walkhelper.Helper(root)
    helper.since_ns = time.monotonic_ns() + 3600 * 10**9  # every walk it makes begins before this
    try:
        assert answers(helper, 1) == {} and helper._proc is None  # it answered all 4, then ended
        fresh = walkhelper.Helper(root)
        assert len(answers(fresh, 4)) == 4  # the same walks, begun after its cutoff
        fresh.close()
    finally:
        helper.close()


def test_olly_make_takes_only_walks_begun_under_the_workspace_lock(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from olly import api
    from tests.conftest import copy_workspace
    from tests.fakes import FakeEngine

    root = copy_workspace("busy", tmp_path / "ws")
    calls: list[Path] = []
    monkeypatch.setattr(walkhelper, "fresh_from_now", lambda r: calls.append(r))
    api.make(root, [], engine=FakeEngine())
    assert calls == [root.resolve()] or calls == [root]


def test_a_helper_no_plan_claimed_ends_with_its_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A command that fails before planning (an unknown target) stops the helper it started:
    no process is left, and no later plan in the same process could take its answers."""
    from click.testing import CliRunner

    from olly.cli import cli

    root, cache = remembered_workspace(tmp_path)
    cache.close()
    (root / "BUILD.toml").write_text('[workspace]\nname = "w"\n\n[images.app]\nrepository = "x/app"\n')
    monkeypatch.setattr(walkhelper, "MIN_DB_BYTES", 0)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/olly-test.sock")
    started: list[walkhelper.Helper] = []
    real = walkhelper.Helper
    monkeypatch.setattr(walkhelper, "Helper", lambda r: started.append(real(r)) or started[-1])
    result = CliRunner().invoke(cli, ["-C", str(root), "plan", "nosuch"])
    assert result.exit_code != 0 and started and walkhelper._RUNNING == {}
    assert started[0]._proc is None  # stopped, and waited for


# -- remembered `inputs` globs ------------------------------------------------------------

PATTERNS = ["shared/**", "extra/one.txt"]


def inputs_workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    for rel, text in {"shared/a.txt": "alpha", "shared/sub/b.txt": "beta", "extra/one.txt": "one",
                      "elsewhere/c.txt": "gamma"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    os.symlink("../elsewhere/c.txt", root / "shared/link.txt")  # followed: its target's bytes
    return root


def inputs_scan(root: Path, cache: Cache, patterns: list[str] = PATTERNS) -> tuple[list, FileHasher, walkmemo.Memo]:
    from olly.context import scan_inputs

    hasher = FileHasher(root, cache.stat_view())
    hasher.walks = memo = walkmemo.Memo(cache)
    rows, encoded = scan_inputs(root, patterns, hasher, "app")
    assert encoded is None or encoded == keys.encode(rows)  # the key's own bytes for `inputs`
    cache.save_stats(list(hasher.updates.values()), hasher.forget)
    memo.save()
    return rows, hasher, memo


def test_remembered_inputs_are_recalled_exactly(tmp_path: Path, later) -> None:
    root = inputs_workspace(tmp_path)
    cache = Cache(root / ".cache")
    first, hasher, memo = inputs_scan(root, cache)
    assert [r[0] for r in first] == ["extra/one.txt", "shared/a.txt", "shared/link.txt", "shared/sub/b.txt"]
    assert hasher.files_read == 4 and memo.hits == 0
    again, hasher, memo = inputs_scan(root, cache)
    assert again == first and memo.hits == 1 and hasher.files_read == 0
    other, _, memo = inputs_scan(root, cache, ["shared/**"])  # other patterns: another memo
    assert memo.hits == 0 and other == [r for r in first if r[0].startswith("shared/")]


@pytest.mark.parametrize("edit", ["content", "touch", "chmod", "add", "remove", "rename", "link-target"])
def test_any_change_to_what_inputs_match_is_a_miss(tmp_path: Path, later, edit: str) -> None:
    root = inputs_workspace(tmp_path)
    cache = Cache(root / ".cache")
    first, _, _ = inputs_scan(root, cache)
    a = root / "shared/a.txt"
    if edit in SAME_NAME_EDITS:
        edit_in_place(a, edit)
    elif edit == "add":
        (root / "shared/new.txt").write_text("new")
    elif edit == "remove":
        a.unlink()
    elif edit == "rename":
        a.rename(root / "shared/z.txt")
    elif edit == "link-target":  # the link's own stat is unchanged; what it points to is not
        (root / "elsewhere/c.txt").write_text("GAMMA")
    again, hasher, memo = inputs_scan(root, cache)
    assert memo.hits == 0
    fresh, _, _ = inputs_scan(root, Cache(root / ".cache-fresh"))
    assert again == fresh
    if edit in ("content", "link-target"):
        assert again != first


def test_racy_inputs_are_not_remembered(tmp_path: Path) -> None:
    root = inputs_workspace(tmp_path)
    cache = Cache(root / ".cache")
    inputs_scan(root, cache)  # files written just now: inside the racy window
    assert cache.inputs_memo(walkmemo.inputs_key(PATTERNS)) is None
    _, hasher, memo = inputs_scan(root, cache)
    assert memo.hits == 0 and hasher.files_read == 4


def test_remembered_inputs_stay_on_this_machine_and_unreadable_ones_are_a_miss(tmp_path: Path, later) -> None:
    root = inputs_workspace(tmp_path)
    cache = Cache(root / ".cache")
    first, _, _ = inputs_scan(root, cache)
    key = walkmemo.inputs_key(PATTERNS)
    fingerprint = cache.inputs_memo(key)[0]  # type: ignore[index]
    cache.save_inputs_memos({key: (fingerprint, b"not marshal data")})
    again, _, memo = inputs_scan(root, cache)
    assert again == first and memo.hits == 0
    cache.close()
    export_cache(root / ".cache", tmp_path / "export.db")
    tables = {r[0] for r in sqlite3.connect(tmp_path / "export.db").execute("SELECT name FROM sqlite_master")}
    assert "inputs_memo" not in tables and "results" in tables
