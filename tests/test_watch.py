"""The workspace watcher (olly.watch, olly.watchsync), against the real kernel (inotify): what
it records, when it stops vouching, and that a plan taking walks on its word plans exactly
what one without it plans, edits made just before included."""

from __future__ import annotations

import json
import os
import signal
import shutil
import time
from pathlib import Path
from typing import Iterator

import pytest

from olly import walkhelper, walkmemo, watchsync
from olly.cache import Cache
from olly.config import ImageTarget
from olly.context import scan
from olly.hashing import FileHasher

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/sys/fs/inotify"), reason="the watcher needs inotify")

BUILD = """[workspace]
name = "w"

[images.a]
repository = "x/a"
context = "ctx/a"

[images.b]
repository = "x/b"
context = "ctx/b"
"""


def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    files = {"BUILD.toml": BUILD, "ctx/a/Dockerfile": "FROM scratch\nCOPY . /a/\n", "ctx/a/src/one.txt": "1",
             "ctx/a/src/deep/two.txt": "2", "ctx/b/Dockerfile": "FROM scratch\nCOPY . /b/\n", "ctx/b/x.txt": "x",
             "docs/readme": "r"}
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[Path]:
    root = workspace(tmp_path)
    found = watchsync.start(root, idle=600)
    assert found["already"] is False and found["watches"] >= 6  # root, ctx, ctx/a, src, deep, ctx/b, docs
    yield root
    watchsync.stop(root)


def synced(root: Path) -> watchsync.Sync:
    found = watchsync.sync(root)
    assert found is not None
    return found


def test_start_status_stop(watched: Path) -> None:
    again = watchsync.start(watched)
    assert again["already"] is True
    status = watchsync.status(watched)
    assert status is not None and status["pid"] == again["pid"] and status["watches"] >= 6
    assert watchsync.stop(watched) is not None
    assert not os.path.exists(watchsync.socket_path(watched)) and watchsync.status(watched) is None
    assert watchsync.sync(watched) is None and watchsync.stop(watched) is None
    assert "exiting: stopped" in (watched / ".cache/watch/log").read_text()


@pytest.mark.parametrize("edit", ["write", "touch", "chmod", "create", "delete", "rename", "mkdir", "symlink"])
def test_every_kind_of_change_makes_its_context_changed_and_no_other(watched: Path, edit: str) -> None:
    before = synced(watched)
    target = watched / "ctx/a/src/deep/two.txt"
    if edit == "write":
        target.write_text("22")
    elif edit == "touch":
        os.utime(target, ns=(1, 1))
    elif edit == "chmod":
        target.chmod(0o755)
    elif edit == "create":
        (watched / "ctx/a/src/deep/three.txt").write_text("3")
    elif edit == "delete":
        target.unlink()
    elif edit == "rename":
        target.rename(watched / "ctx/a/src/moved.txt")
    elif edit == "mkdir":  # written in before its watch can exist: the directory itself is recorded
        (watched / "ctx/a/new/deeper").mkdir(parents=True)
        (watched / "ctx/a/new/deeper/f").write_text("f")
    else:
        os.symlink("../one.txt", watched / "ctx/a/src/deep/link")
    after = synced(watched)  # no wait: the sync itself guarantees the change is in
    assert after.epoch == before.epoch and after.seq > before.seq
    assert not after.clean("ctx/a", before.token) and not after.clean(".", before.token)
    assert after.clean("ctx/b", before.token) and after.clean("docs", before.token)
    assert after.clean("ctx/a", after.token)  # nothing since the second sync


def test_a_new_directory_is_watched_for_what_comes_later(watched: Path) -> None:
    (watched / "ctx/b/new").mkdir()
    first = synced(watched)
    (watched / "ctx/b/new/later.txt").write_text("later")
    second = synced(watched)
    assert "ctx/b/new/later.txt" in second.changes and not second.clean("ctx/b", first.token)


def test_a_directory_moved_away_reports_under_its_new_path(watched: Path) -> None:
    (watched / "ctx/a/src").rename(watched / "docs/src")
    first = synced(watched)
    assert not first.clean("ctx/a", "x") and "ctx/a/src" in first.changes and "docs/src" in first.changes
    (watched / "docs/src/one.txt").write_text("one")
    second = synced(watched)
    assert "docs/src/one.txt" in second.changes and second.clean("ctx/a", first.token)


def test_a_change_above_a_context_makes_it_changed(watched: Path) -> None:
    before = synced(watched)
    (watched / "ctx").rename(watched / "old")
    (watched / "ctx").mkdir()
    after = synced(watched)
    assert not after.clean("ctx/a", before.token) and not after.clean("ctx/b", before.token)
    assert after.clean("docs", before.token)


def test_olly_own_directories_are_not_changes(watched: Path) -> None:
    before = synced(watched)
    (watched / ".cache/junk").write_text("j")
    (watched / "dist").mkdir()
    (watched / "dist/chart.tgz").write_text("c")
    after = synced(watched)
    assert after.clean(".", before.token) and all(not p.startswith((".cache", "dist")) for p in after.changes)


def test_another_epoch_or_a_foreign_token_is_not_vouched_for(watched: Path) -> None:
    before = synced(watched)
    assert before.clean("ctx/a", before.token)
    for token in ("0" * 16 + ":0", before.epoch + ":x", before.epoch + f":{before.seq + 1}", "", before.epoch):
        assert not before.clean("ctx/a", token)
    watchsync.stop(watched)
    watchsync.start(watched)
    assert not synced(watched).clean("ctx/a", before.token)  # a new watcher: a new epoch


def test_an_overflowed_event_queue_starts_a_new_epoch(watched: Path) -> None:
    """Events the kernel dropped cannot be vouched for: stop the watcher, write more files
    than the queue holds, let it go on."""
    before = synced(watched)
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    pid = watchsync.status(watched)["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        for n in range(limit + 100):  # in a watched directory: each is an event
            (watched / "docs" / str(n)).touch()
    finally:
        os.kill(pid, signal.SIGCONT)
    after = synced(watched)
    assert after.epoch != before.epoch and not after.clean("ctx/b", before.token)
    assert after.clean("ctx/b", after.token)
    assert "new epoch" in (watched / ".cache/watch/log").read_text()
    # The tree is watched afresh: a directory made while events were lost is watched too.
    os.kill(pid, signal.SIGSTOP)
    try:
        (watched / "ctx/b/lost").mkdir()
        for n in range(limit + 100):
            (watched / "docs" / str(n)).write_text("again")
    finally:
        os.kill(pid, signal.SIGCONT)
    third = synced(watched)
    (watched / "ctx/b/lost/f").write_text("seen")
    fourth = synced(watched)
    assert third.epoch != after.epoch and "ctx/b/lost/f" in fourth.changes and not fourth.clean("ctx/b", third.token)


def test_two_directories_swapped_stay_watched(watched: Path) -> None:
    """renameat2(RENAME_EXCHANGE) swaps two directories: moves from and to both paths."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(-100, str(watched / "ctx/a").encode(), -100, str(watched / "ctx/b").encode(), 2) != 0:
        pytest.skip(f"renameat2: {os.strerror(ctypes.get_errno())}")
    first = synced(watched)
    (watched / "ctx/a/x.txt").write_text("in the old b")
    (watched / "ctx/b/src/deep/two.txt").write_text("in the old a")
    second = synced(watched)
    assert {"ctx/a/x.txt", "ctx/b/src/deep/two.txt"} <= set(second.changes)
    assert not second.clean("ctx/a", first.token) and not second.clean("ctx/b", first.token)


def test_a_hard_link_made_in_the_workspace_starts_a_new_epoch(watched: Path) -> None:
    """A file's link count is its own: writes through a new name elsewhere make no event in
    the file's first directory, so a new name for it refuses every mark made before."""
    before = synced(watched)
    os.link(watched / "ctx/a/src/one.txt", watched / "docs/other-name")
    after = synced(watched)
    assert after.epoch != before.epoch and not after.clean("ctx/a", before.token)
    with open(watched / "docs/other-name", "w") as f:
        f.write("changed")
    assert "docs/other-name" in synced(watched).changes  # under docs/ only: the new epoch is what guards ctx/a
    assert "hard link" in (watched / ".cache/watch/log").read_text()


def test_only_local_file_systems_are_watched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from olly import watch

    root = workspace(tmp_path)
    (root / ".cache/watch").mkdir(parents=True)
    assert watch.Inotify().fs_type(str(root)) in watch.LOCAL_FS  # this machine's, read by statfs(2)
    monkeypatch.setattr(watch.Inotify, "fs_type", lambda self, path: 0x6969)  # NFS
    with pytest.raises(watch.Gone, match="does not fully see"):
        watch.Watcher(str(root))


def test_only_mounts_in_or_above_the_workspace_count() -> None:
    from olly.watch import mounts_over

    table = (b"/dev/x / ext4 rw 0 0\ntmpfs /ws/a\\040b tmpfs rw 0 0\ntmpfs /ws/sub tmpfs rw 0 0\n"
             b"overlay /var/lib/docker/overlay2/x/merged overlay rw 0 0\ntmpfs /ws tmpfs rw 0 0\n")
    assert mounts_over("/ws", table) == [b"/dev/x / ext4 rw", b"tmpfs /ws/a\\040b tmpfs rw", b"tmpfs /ws/sub tmpfs rw",
                                         b"tmpfs /ws tmpfs rw"]
    assert mounts_over("/w", table) == [b"/dev/x / ext4 rw"]  # /ws is not under /w
    assert mounts_over("/ws/a b", table) == [b"/dev/x / ext4 rw", b"tmpfs /ws/a\\040b tmpfs rw", b"tmpfs /ws tmpfs rw"]


def test_a_file_system_mounted_in_the_workspace_starts_a_new_epoch(watched: Path) -> None:
    """A mount over a watched directory hides it from its watch: the tree is watched afresh."""
    import subprocess

    before = synced(watched)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "none", str(watched / "ctx/b")], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount here: {mounted.stderr.decode().strip()}")
    try:
        deadline = time.monotonic() + 10
        while synced(watched).epoch == before.epoch and time.monotonic() < deadline:
            time.sleep(0.05)  # the mount table's change reaches the watcher on its own
        after = synced(watched)
        assert after.epoch != before.epoch and not after.clean("ctx/b", before.token)
        (watched / "ctx/b/on-tmpfs").write_text("t")
        assert "ctx/b/on-tmpfs" in synced(watched).changes  # the mounted directory is watched
    finally:
        subprocess.run(["umount", str(watched / "ctx/b")], check=True)


def wait_gone(root: Path, pid: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return  # ended; its parent (this test process) has not reaped it
        time.sleep(0.05)
    raise AssertionError(f"watcher {pid} still runs")


def test_the_watcher_ends_when_its_socket_goes(watched: Path) -> None:
    pid = watchsync.status(watched)["pid"]
    os.unlink(watchsync.socket_path(watched))
    wait_gone(watched, pid)
    assert "its sock file was removed" in (watched / ".cache/watch/log").read_text()


def test_the_watcher_ends_when_no_command_asks_it(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    pid = watchsync.start(root, idle=1)["pid"]
    wait_gone(root, pid)
    assert "exiting: idle for 1 s" in (root / ".cache/watch/log").read_text()
    assert watchsync.sync(root) is None  # a plan then walks as usual


def test_the_watcher_ends_with_its_workspace(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    pid = watchsync.start(root)["pid"]
    shutil.rmtree(root, ignore_errors=True)  # the watcher removes its socket meanwhile
    shutil.rmtree(root, ignore_errors=True)
    assert not root.exists()
    wait_gone(root, pid)


# -- plans on the watcher's word ------------------------------------------------------


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plan a minute from now, so the files just written are past the racy window."""
    real = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real() + 60 * 10**9)


def target(ctx: str) -> ImageTarget:
    return ImageTarget(label=ctx, repository="x/" + ctx, context=ctx, dockerfile=ctx + "/Dockerfile", args={},
                       target=None, inputs=[], depends_on=[], platforms=(), network=None)


def plan_scans(root: Path, sync: watchsync.Sync | None) -> tuple[list[list], FileHasher, walkmemo.Memo]:
    """Both contexts scanned as a plan scans them, walks and marks saved; their manifest rows."""
    cache = Cache(root / ".cache")
    hasher = FileHasher(root, cache.stat_view())
    hasher.walks = memo = walkmemo.Memo(cache)
    memo.sync = sync
    rows = [scan(root, target(c), hasher).file_rows() for c in ("ctx/a", "ctx/b")]
    cache.save_stats(list(hasher.updates.values()), hasher.forget)
    memo.save()
    cache.close()
    return rows, hasher, memo


def truth(root: Path) -> list[list]:
    return [scan(root, target(c), FileHasher(root, {})).file_rows() for c in ("ctx/a", "ctx/b")]


def test_a_plan_takes_the_walks_the_watcher_vouches_for(watched: Path, later) -> None:
    first, hasher, memo = plan_scans(watched, synced(watched))
    assert memo.vouched == 0 and hasher.files_read == 3  # nothing marked yet: walked and hashed
    again, hasher, memo = plan_scans(watched, synced(watched))
    assert again == first == truth(watched) and memo.vouched == 2 and hasher.files_read == 0
    (watched / "ctx/a/src/one.txt").write_text("one, edited")  # and planned right away
    edited, hasher, memo = plan_scans(watched, synced(watched))
    assert memo.vouched == 1 and hasher.files_read == 1 and edited == truth(watched) != first
    _, _, memo = plan_scans(watched, synced(watched))
    assert memo.vouched == 2  # the re-walk was marked
    _, _, memo = plan_scans(watched, None)
    assert memo.vouched == 0  # no sync: walked as always


def test_a_mark_holds_only_for_the_walk_it_was_made_for(watched: Path, later) -> None:
    plan_scans(watched, synced(watched))
    cache = Cache(watched / ".cache")
    marks = cache.walk_marks()
    assert len(marks) == 2
    cache.db.execute("UPDATE walk_memo SET fingerprint = 'other' WHERE ctx_dir = ?", (b"ctx/a",))
    cache.db.conn.commit()
    assert len(cache.walk_marks()) == 1  # ctx/a's row is another walk now: its mark does not hold
    cache.close()
    _, hasher, memo = plan_scans(watched, synced(watched))
    assert memo.vouched == 1 and hasher.files_read == 0  # ctx/a walked (its signatures spared the reads)


def test_a_context_reached_through_a_symlink_is_walked(watched: Path, later) -> None:
    """The watcher records a change under the directory's own path: a context whose path
    goes through a symlink is never taken on its word."""
    (watched / "ctx/b").rename(watched / "real-b")
    os.symlink("../real-b", watched / "ctx/b")
    plan_scans(watched, synced(watched))
    _, _, memo = plan_scans(watched, synced(watched))
    assert memo.vouched == 1  # ctx/a only
    (watched / "real-b/x.txt").write_text("changed through the link's target")
    rows, _, memo = plan_scans(watched, synced(watched))
    assert memo.vouched == 1 and rows == truth(watched)


def test_a_context_holding_a_hard_link_is_walked(watched: Path, later, tmp_path: Path) -> None:
    """A file with another name (outside the workspace here) can change without an event in
    its context's directory: such a context is never taken on the watcher's word."""
    os.link(watched / "ctx/b/x.txt", tmp_path / "other-name")
    plan_scans(watched, synced(watched))
    _, _, memo = plan_scans(watched, synced(watched))
    assert memo.vouched == 1  # ctx/a only
    with open(tmp_path / "other-name", "w") as f:
        f.write("changed through the other name")
    rows, hasher, memo = plan_scans(watched, synced(watched))
    assert memo.vouched == 1 and rows == truth(watched) and hasher.files_read == 1


def test_a_mark_of_another_walk_format_is_not_taken(watched: Path, later, monkeypatch: pytest.MonkeyPatch) -> None:
    plan_scans(watched, synced(watched))
    monkeypatch.setattr(walkmemo, "MARK", "0.0")
    _, _, memo = plan_scans(watched, synced(watched))
    assert memo.vouched == 0


def test_a_late_sync_drops_the_helper_walks_begun_before_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan that syncs only itself (no CLI before it) came after the walk helper started:
    the helper's walks from before the sync are not taken."""
    root = workspace(tmp_path)
    calls: list[str] = []
    monkeypatch.setattr(walkhelper, "fresh_from_now", lambda r: calls.append("fresh"))
    found = watchsync.Sync("e", 1, 0, {}, os.fspath(root.resolve()))
    monkeypatch.setattr(watchsync, "sync", lambda r: found)
    (root / ".cache/watch").mkdir(parents=True)
    (root / ".cache/watch/sock").touch()
    assert watchsync.take(root) is found and found.late
    watchsync._EARLY[os.fspath(root.resolve())] = early = watchsync.Sync("e", 2, 0, {}, os.fspath(root.resolve()))
    assert watchsync.take(root) is early and not early.late
    from olly import api

    monkeypatch.setattr(watchsync, "take", lambda r: found)
    api.plan(root, [], check_engine=False)
    assert calls == ["fresh"]
    monkeypatch.setattr(watchsync, "take", lambda r: early)
    api.plan(root, [], check_engine=False)
    assert calls == ["fresh"]  # an early sync came before the helper started


def test_plan_json_is_the_same_with_and_without_the_watcher(watched: Path, later,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from olly.cli import cli

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/olly-test.sock")
    monkeypatch.setattr(walkhelper, "start", lambda directory=None, watched=False: None)
    runner = CliRunner()
    outputs = []
    for env in ({}, {}, {"OLLY_WATCH": "0"}):
        result = runner.invoke(cli, ["-C", str(watched), "plan", "--json"], env=env)
        assert result.exit_code == 0, result.output
        outputs.append(json.loads(result.output))
    assert outputs[0] == outputs[1] == outputs[2]
    (watched / "ctx/b/x.txt").write_text("changed")
    result = runner.invoke(cli, ["-C", str(watched), "plan", "--json"])
    unwatched = runner.invoke(cli, ["-C", str(watched), "plan", "--json"], env={"OLLY_WATCH": "0"})
    assert json.loads(result.output) == json.loads(unwatched.output) != outputs[0]


def test_watch_cli(watched: Path) -> None:
    from click.testing import CliRunner

    from olly.cli import cli

    runner = CliRunner()
    status = runner.invoke(cli, ["-C", str(watched), "watch", "status", "--json"])
    assert status.exit_code == 0 and json.loads(status.output)["running"] is True
    stopped = runner.invoke(cli, ["-C", str(watched), "watch", "stop"])
    assert stopped.exit_code == 0 and "stopped the watcher" in stopped.output
    status = runner.invoke(cli, ["-C", str(watched), "watch", "status"])
    assert status.exit_code == 0 and "no watcher runs" in status.output
    status = runner.invoke(cli, ["-C", str(watched), "watch", "status", "--json"])
    assert json.loads(status.output) == {"schema": 1, "running": False, "root": None, "pid": None, "watches": None,
                                         "epoch": None, "seq": None, "changes": None}
    started = runner.invoke(cli, ["-C", str(watched), "watch", "start", "--idle", "1"])
    assert started.exit_code == 0 and "watching" in started.output
