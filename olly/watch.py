"""The workspace watcher (``olly watch start``): a process that outlives commands and tells
a plan which paths changed since a point it names, so that an unchanged context costs no
``lstat`` of its files at all.

How it knows (Linux inotify, as watchman does):

- **Every directory of the workspace is watched** (not olly's own ``.cache/`` and ``dist/``
  at the root: never inputs), symlinks not followed. Every event (a file written, created,
  deleted, moved, its mode or times changed) records the path with the next sequence number.
  A directory created or moved in is watched at once, and its path recorded, so a context
  holding it is changed whatever was written in it before its watch was added.
- **A sync point, not a clock.** A plan's ``sync`` has the watcher create a cookie file in
  ``.cache/watch/`` and answer only once the cookie's own event has been read: every change
  completed before the plan asked was queued before the cookie, so it is in the answer.
- **An epoch it can lose.** The answer names the watcher's *epoch* (random per start). An
  overflowed event queue, an unmounted directory or any change of the mount table (a file
  system mounted over a watched directory hides it) starts a new epoch, with the whole tree
  watched afresh: what was said under the old one is no longer vouched for. A directory it
  cannot watch (the kernel's ``max_user_watches``), or one it already watches under another
  path (a bind mount), ends it. A plan without a watcher walks as if none had run.
- **Moves settle after each batch of events.** Every watch under a directory created or moved
  (in, out, or two swapped by RENAME_EXCHANGE) is dropped, then what is there now is watched.

It answers one JSON line per connection on ``.cache/watch/sock``: ``sync``, ``status`` or
``stop``. It ends on ``stop``, when its socket or directory is removed, when the workspace
root is deleted or moved, or after ``--idle`` seconds with no request. Standard library only:
the CLI talks to it before olly's modules load (olly.watchsync).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import re
import select
import socket
import stat
import struct
import sys
import time
from typing import Any

PROTOCOL = 1
DIR = os.path.join(".cache", "watch")  # under the workspace root: socket, lock, log, cookies
OWN = (".cache", "dist")  # olly's own directories at the root: not watched (never inputs)
MAX_CHANGES = 20_000  # paths remembered; past it the oldest half is dropped (and ``floor`` rises)
SYNC_TIMEOUT = 2.0  # seconds for a cookie to come back before a sync is refused (it takes well under 1 ms)

IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF, IN_UNMOUNT, IN_Q_OVERFLOW, IN_IGNORED = 0x400, 0x800, 0x2000, 0x4000, 0x8000
IN_ONLYDIR, IN_DONT_FOLLOW, IN_ISDIR = 0x01000000, 0x02000000, 0x40000000
MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
        | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW)
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of NUL-padded name)
# File systems whose every change this machine makes itself (linux/magic.h): inotify sees them
# all. On a network or FUSE file system (NFS, SMB, 9p, virtiofs, a VM's shared folder) another
# machine's writes make no event, so a watcher there could not vouch for anything.
LOCAL_FS = {
    0xEF53: "ext2/3/4", 0x58465342: "xfs", 0x9123683E: "btrfs", 0x01021994: "tmpfs", 0x794C7630: "overlay",
    0x2FC12FC1: "zfs", 0xF2F52010: "f2fs", 0xCA451A4E: "bcachefs", 0x858458F6: "ramfs", 0x3153464A: "jfs",
    0x52654973: "reiserfs", 0x3434: "nilfs", 0x482B: "hfsplus", 0x2011BAB0: "exfat", 0x4D44: "vfat",
    0x5346544E: "ntfs", 0x7366746E: "ntfs3", 0xF15F: "ecryptfs", 0x73717368: "squashfs", 0xE0F5E1E2: "erofs",
    0x9660: "iso9660", 0x15013346: "udf",
}


class Gone(Exception):
    """The watcher must end: ``str`` says why (logged)."""


class Inotify:
    """The kernel's inotify through libc (ctypes: no compiled dependency)."""

    def __init__(self) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1: " + os.strerror(ctypes.get_errno()))

    def add(self, path: str, mask: int) -> int:
        wd = self.libc.inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
        return int(wd)

    def fs_type(self, path: str) -> int:
        """The file system type (``f_type`` of statfs(2), the first field on Linux)."""
        buf = ctypes.create_string_buffer(256)
        if self.libc.statfs(os.fsencode(path), buf) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
        return int(struct.unpack_from("l", buf.raw)[0]) & 0xFFFFFFFF

    def remove(self, wd: int) -> None:
        self.libc.inotify_rm_watch(self.fd, wd)  # may fail for a watch already gone: nothing to do

    def read(self) -> list[tuple[int, int, str]]:
        """Queued events as (wd, mask, name); [] if none."""
        try:
            data = os.read(self.fd, 1 << 20)
        except BlockingIOError:
            return []
        out, pos = [], 0
        while pos < len(data):
            wd, mask, _, size = _EVENT.unpack_from(data, pos)
            pos += _EVENT.size
            out.append((wd, mask, os.fsdecode(data[pos:pos + size].rstrip(b"\0"))))
            pos += size
        return out


class Watcher:
    """The watched tree and what changed in it, by sequence number."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.ino = Inotify()
        self.wds: dict[int, str] = {}  # watch -> workspace-relative directory ("" for the root)
        self.epoch = os.urandom(8).hex()
        self.seq = 0
        self.floor = 0  # marks below this are not vouched for (their changes were dropped)
        self.changes: dict[str, int] = {}
        self.pending: set[str] = set()  # cookies created, not yet seen
        self.moved: set[str] = set()  # directories created or moved, in the batch of events being read
        self.linked = ""  # a hard link made in this batch (its path): a change through it may make no event here
        self.devices: set[int] = set()  # of the directories watched, each checked to be a local file system
        self.cookie_wd = self.ino.add(os.path.join(root, DIR), IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_DELETE_SELF
                                      | IN_MOVE_SELF | IN_ONLYDIR)
        self.root_wd = -1
        self.add_tree("")

    def add_tree(self, rel: str) -> None:
        """Watch ``rel`` and every directory under it (not following symlinks). A directory
        it cannot watch, or one already watched under another path (a bind mount), ends the
        watcher: it could no longer vouch for anything."""
        stack = [rel]
        while stack:
            d = stack.pop()
            full = os.path.join(self.root, d) if d else self.root
            try:
                wd = self.ino.add(full, MASK)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                    continue  # gone already: its parent's event recorded it
                if exc.errno == errno.EACCES:
                    continue  # unreadable: no plan can walk it either; made readable, it is watched then (IN_ATTRIB)
                raise Gone(f"cannot watch {d or '.'}: {exc.strerror}"
                           + (" (raise fs.inotify.max_user_watches)" if exc.errno == errno.ENOSPC else ""))
            if self.wds.get(wd, d) != d:
                raise Gone(f"{d} is {self.wds[wd]} again (a bind mount?): changes would be seen under one path only")
            self.wds[wd] = d
            if d == "":
                self.root_wd = wd
            try:
                self.check_local(full)
                with os.scandir(full) as it:
                    for e in it:
                        if e.is_dir(follow_symlinks=False) and not (d == "" and e.name in OWN):
                            stack.append(f"{d}/{e.name}" if d else e.name)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                    raise Gone(f"cannot list {d or '.'}: {exc.strerror}")
                # gone (its parent's event recorded it), or not listable: its watch reports a chmod

    def check_local(self, full: str) -> None:
        """End the watcher on a file system whose changes it cannot all see."""
        dev = os.lstat(full).st_dev
        if dev not in self.devices:
            kind = self.ino.fs_type(full)
            if kind not in LOCAL_FS:
                raise Gone(f"{full} is on a file system inotify does not fully see (type {kind:#x}: "
                           "network, FUSE or shared folder)")
            self.devices.add(dev)

    def drop_tree(self, rel: str) -> None:
        """Stop watching ``rel`` and what is under it (moved away: its watches would report
        under the old path)."""
        prefix = rel + "/"
        for wd, d in list(self.wds.items()):
            if d == rel or d.startswith(prefix):
                del self.wds[wd]
                self.ino.remove(wd)

    def reset(self, why: str) -> None:
        """Events were lost: what is watched may not be what is there. Watch the tree afresh,
        under a new epoch (every mark made before is refused)."""
        for wd in self.wds:
            self.ino.remove(wd)
        self.wds, self.moved, self.linked = {}, set(), ""
        self.epoch, self.changes, self.floor = os.urandom(8).hex(), {}, self.seq
        self.add_tree("")
        log(f"new epoch {self.epoch}: {why}; watching {len(self.wds)} directories again")

    def record(self, rel: str) -> None:
        self.seq += 1
        self.changes[rel] = self.seq
        if len(self.changes) > MAX_CHANGES:  # keep the newest half: older marks lose their vouching
            kept = sorted(self.changes.items(), key=lambda kv: kv[1])[len(self.changes) // 2:]
            self.floor = kept[0][1] - 1
            self.changes = dict(kept)

    def handle(self, wd: int, mask: int, name: str) -> None:
        if mask & IN_Q_OVERFLOW:
            self.reset("the kernel's event queue overflowed")
            return
        if wd == self.cookie_wd:
            if mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED):
                raise Gone(f"{DIR} was removed")
            if mask & (IN_DELETE | IN_MOVED_FROM) and name in ("sock", "lock"):
                raise Gone(f"its {name} file was removed")  # e.g. rm -rf .cache (the socket pins the directory)
            self.pending.discard(name)
            return
        base = self.wds.get(wd)
        if base is None:
            return  # a watch already dropped
        if mask & IN_UNMOUNT:
            self.reset(f"{base or '.'} was unmounted")
            return
        if wd == self.root_wd and mask & (IN_DELETE_SELF | IN_MOVE_SELF):
            raise Gone("the workspace root was deleted or moved")
        if mask & IN_IGNORED:
            self.wds.pop(wd, None)
        if base == "" and name in OWN:
            return
        rel = f"{base}/{name}" if base and name else name or base
        self.record(rel)
        if mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_ATTRIB):
            self.moved.add(rel)  # watched afresh after this batch of events (``settle``); a chmod may make it listable
        elif mask & (IN_CREATE | IN_MOVED_TO) and not self.linked and name:
            try:
                st = os.lstat(os.path.join(self.root, rel))
            except OSError:
                return
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                self.linked = rel  # its other names' directories got no event for it (a link count is the file's own)

    def settle(self) -> None:
        """Directories created, moved in or out: drop every watch under those paths, then watch
        what is there now. Both steps after the whole batch: two directories swapped
        (RENAME_EXCHANGE) come as moves from and to both paths, in either order."""
        if self.linked:
            linked, self.linked = self.linked, ""
            self.reset(f"{linked} is a hard link: a file elsewhere in the workspace has a new name")
            return
        moved, self.moved = sorted(self.moved), set()
        for rel in moved:
            self.drop_tree(rel)
        for rel in moved:
            self.add_tree(rel)  # a path gone since is skipped

    def pump(self, timeout: float) -> None:
        """Handle the events that arrive within ``timeout`` seconds (0: those queued now)."""
        ready, _, _ = select.select([self.ino.fd], [], [], timeout)
        if ready:
            for event in self.ino.read():
                self.handle(*event)
            self.settle()

    def sync(self) -> dict[str, Any]:
        """Every change completed before now, recorded: a cookie's event comes after them."""
        name = f"cookie-{os.getpid()}-{self.seq}-{time.monotonic_ns()}"
        path = os.path.join(self.root, DIR, name)
        try:
            with open(path, "wb"):
                pass
        except OSError as exc:
            return {"error": f"cannot write its cookie: {exc.strerror}"}
        self.pending.add(name)
        deadline = time.monotonic() + SYNC_TIMEOUT
        try:
            while name in self.pending and time.monotonic() < deadline:
                self.pump(max(0.0, deadline - time.monotonic()))
        finally:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass  # its directory was emptied: the Gone that says so is what counts
        if name in self.pending:
            self.pending.discard(name)
            return {"error": "its cookie did not come back in time"}
        return {"protocol": PROTOCOL, "root": self.root, "epoch": self.epoch, "seq": self.seq,
                "floor": self.floor, "changes": self.changes}

    def status(self) -> dict[str, Any]:
        return {"protocol": PROTOCOL, "root": self.root, "pid": os.getpid(), "watches": len(self.wds),
                "epoch": self.epoch, "seq": self.seq, "changes": len(self.changes)}


def log(text: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {text}", flush=True)


def serve(root: str, idle: float) -> str:
    """Watch ``root`` and answer on its socket until something ends it; why it ended."""
    home = os.path.join(root, DIR)
    lock = os.open(os.path.join(home, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return "another watcher runs for this workspace"
    sock_path = os.path.join(home, "sock")
    if os.path.lexists(sock_path):
        os.unlink(sock_path)  # a dead watcher's (we hold the lock)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    os.chmod(sock_path, 0o600)
    try:
        watcher = Watcher(root)
    except Gone as exc:
        server.close()
        os.unlink(sock_path)
        return str(exc)
    server.listen(16)
    ours = os.stat(sock_path).st_ino
    log(f"watching {root}: {len(watcher.wds)} directories, epoch {watcher.epoch}")
    last = checked = time.monotonic()
    mounts = open("/proc/self/mounts", "rb")  # a mount or unmount anywhere: an exceptional condition on it
    over = mounts_over(root, mounts.read())
    try:
        while True:
            ready, _, exceptional = select.select([watcher.ino.fd, server], [], [mounts], min(10.0, idle))
            if exceptional:  # a file system mounted over a watched directory hides it from its watch
                mounts.seek(0)
                now = mounts_over(root, mounts.read())
                if now != over:  # not every container's overlay: only mounts in, at or above the workspace
                    over = now
                    watcher.reset("a file system was mounted or unmounted in or above the workspace")
            if watcher.ino.fd in ready:
                watcher.pump(0)
            if server in ready:
                last = time.monotonic()
                if answer(server, watcher):
                    return "stopped"
            now = time.monotonic()
            if now - last > idle:
                return f"idle for {idle:.0f} s"
            if now - checked > 10:
                checked = now
                try:
                    if os.stat(sock_path).st_ino != ours:
                        return "its socket was replaced"
                except FileNotFoundError:
                    return "its socket was removed"
    except Gone as exc:
        return str(exc)
    finally:
        mounts.close()
        server.close()
        try:
            if os.stat(sock_path).st_ino == ours:
                os.unlink(sock_path)
        except OSError:
            pass


def mounts_over(root: str, table: bytes) -> list[bytes]:
    """The mount points (with what is mounted there) in, at or above ``root``, from
    /proc/self/mounts (its paths octal-escaped: a space is \\040)."""
    def path(field: bytes) -> bytes:
        return re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), field)

    here = os.fsencode(root)
    out = []
    for line in table.splitlines():
        fields = line.split(b" ")
        if len(fields) > 2:
            point = path(fields[1])
            if point == here or point.startswith(here + b"/") or here.startswith(point.rstrip(b"/") + b"/"):
                out.append(b" ".join(fields[:4]))
    return out


def answer(server: socket.socket, watcher: Watcher) -> bool:
    """Answer one client; True if it asked the watcher to stop."""
    conn, _ = server.accept()
    with conn:
        conn.settimeout(2.0)  # a client that never writes does not stall the watcher
        try:
            data = b""
            while not data.endswith(b"\n") and len(data) < 4096:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            op = json.loads(data or b"{}").get("op")
            reply = (watcher.sync() if op == "sync" else watcher.status() if op in ("status", "stop")
                     else {"error": f"unknown request {op!r}"})
            conn.sendall(json.dumps(reply).encode() + b"\n")
        except (OSError, ValueError, AttributeError, RecursionError):
            return False
        return op == "stop"


def main(argv: list[str]) -> int:
    root, idle = os.path.realpath(argv[0]), float(argv[1])
    try:
        why = serve(root, idle)
    except Exception as exc:  # said in its log; a plan without a watcher walks as usual
        why = f"failed: {type(exc).__name__}: {exc}"
    log(f"exiting: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
