"""The sqlite cache under ``.cache/``: stat cache, build results, input manifests.

All stored paths are workspace-relative, so the cache is relocatable (CI can
restore it into a fresh clone). The db carries a schema version; an incompatible
or corrupt db is one clear OllyError naming the file, never a traceback.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from olly import failpoints
from olly.cachecore import guarded as _guarded
from olly.cachecore import path_in as _path_in
from olly.cachecore import path_out as _path_out
from olly.errors import OllyError
from olly.memotables import MemoTables

if TYPE_CHECKING:
    from olly.statview import StatView

CACHE_SCHEMA = 1
DB_NAME = "olly.db"
LOCK_NAME = "lock"
_STAT_COLS = "path, size, mtime_ns, ino, ctime_ns, mode, hash"
# The tables of results (made by sqlite-utils: columns, primary key), written by Cache._put.
_TABLES: dict[str, tuple[dict[str, type], str | tuple[str, ...]]] = {
    "results": ({"target": str, "key": str, "image_id": str, "tag": str, "built_at": float, "duration_s": float},
                ("target", "key")),
    "manifests": ({"target": str, "key": str, "manifest": str}, "target"),
    # Registry manifest digests, per push endpoint (never `docker inspect .Id`).
    "pushes": ({"target": str, "key": str, "registry": str, "ref": str, "digest": str, "pushed_at": float},
               ("target", "key", "registry")),
    # Packaged charts: where the .tgz is and its sha256, per registry ("" = local).
    "artifacts": ({"target": str, "key": str, "registry": str, "path": str, "digest": str, "version": str},
                  ("target", "key", "registry")),
}
# Clustered by path (WITHOUT ROWID): the rows of one directory are one contiguous range.
_STAT_TABLE = ("CREATE TABLE stat (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, ino INTEGER, "
               "ctime_ns INTEGER, mode INTEGER, hash TEXT) WITHOUT ROWID")


class _Db:
    """The standard sqlite3 connection for reads, the stat cache (the hot path of a no-op run)
    and the writes of results (``Cache._put``); sqlite-utils — imported on first use, without numpy
    (``_import_sqlite_utils``) — creates the tables of a new cache db."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._utils: Any = None

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def table_names(self) -> list[str]:
        return [row[0] for row in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]

    def __getitem__(self, table: str) -> Any:
        if self._utils is None:
            self._utils = _import_sqlite_utils().Database(self.conn)
        return self._utils[table]


def _import_sqlite_utils() -> Any:
    """sqlite-utils, imported without numpy and pandas: it loads them when they are installed,
    to store their values (0.1 s here), and olly never gives it any."""
    blocked = [name for name in ("numpy", "pandas") if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        import sqlite_utils
    finally:
        for name in blocked:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
    return sqlite_utils


class Cache(MemoTables):
    """One open cache db. Use from one thread (the scheduler's main thread).

    ``reader=True`` (plan, why, inputs): if the db exists but this user cannot write it
    (read-only ``.cache``, db or filesystem), open it read-only instead of failing;
    ``read_only`` is then True and the stat cache is not saved.
    """

    def __init__(self, cache_dir: Path, *, create: bool = True, reader: bool = False) -> None:
        self.dir = cache_dir
        self.path = cache_dir / DB_NAME
        self.read_only = False
        self._known_tables: set[str] | None = None  # table names, read once (walks is made on first use)
        exists = _exists(self.path)
        if not exists and (not create or (reader and _exists(cache_dir) and not _writable(self.path))):
            self.db = _Db(sqlite3.connect(":memory:", isolation_level=None))  # nothing recorded yet, and none to record
        elif exists and reader and not _writable(self.path):
            self.db = self._open_read_only()
        else:
            _make_dir(cache_dir)
            self.db = self._open()
        self._init_schema()

    def _open(self) -> _Db:
        try:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 30000")
            # A new db only (an existing one keeps its size): 16 KiB pages make a first plan's
            # commit of 10^5 stat rows write a tenth of the WAL frames, and a remembered walk
            # (tens of KB) a few pages, not a chain of overflow pages.
            conn.execute("PRAGMA page_size = 16384")
            _retry_locked(lambda: conn.execute("PRAGMA journal_mode = WAL"))
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.OperationalError as exc:
            raise OllyError("cache-write-failed", f"cannot open cache database {self.path}: {exc}")
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc)
        return _Db(conn)

    def _open_read_only(self) -> _Db:
        """``mode=ro`` sees committed WAL content but needs the -shm file (or to create it);
        in a read-only dir without one, ``immutable=1`` is the only way in. It skips locking,
        which is safe only if nothing writes: refused while a non-empty -wal file exists."""
        uri = self.path.resolve().as_uri()
        wal = Path(f"{self.path}-wal")
        modes = ["mode=ro"] if _exists(wal) and wal.stat().st_size else ["mode=ro", "immutable=1"]
        error: Exception | None = None
        for mode in modes:
            try:
                conn = sqlite3.connect(f"{uri}?{mode}", uri=True, timeout=30, isolation_level=None)
                conn.execute("PRAGMA busy_timeout = 30000")
                tables = conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]  # opens the file for real
                if not tables:  # an empty file: nothing recorded, as if there were no cache yet
                    conn.close()
                    return _Db(sqlite3.connect(":memory:", isolation_level=None))
                self.read_only = True
                return _Db(conn)
            except sqlite3.OperationalError as exc:
                error = exc
            except sqlite3.DatabaseError as exc:
                raise self._corrupt(exc)
        raise OllyError("io-error", f"cannot open cache database {self.path} read-only: {error}")

    def _corrupt(self, exc: Exception) -> OllyError:
        return OllyError(
            "cache-corrupt",
            f"cache database {self.path} is unreadable ({exc}); move it away or delete {self.dir} to start fresh",
        )

    def _init_schema(self) -> None:
        try:
            # One transaction: two olly processes starting on a fresh workspace serialise
            # here instead of both creating the tables.
            with self.transaction():
                tables = set(self.db.table_names())
                if "meta" not in tables:
                    if tables:
                        raise OllyError("cache-incompatible", f"{self.path} is not an olly cache database; delete it to start fresh")
                    self._create_tables()
                    return
                row = self.db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            version = int(row[0]) if row else None
            if version != CACHE_SCHEMA:
                raise OllyError(
                    "cache-incompatible",
                    f"cache database {self.path} has schema {version}, this olly needs {CACHE_SCHEMA}; "
                    f"delete {self.dir} (olly rebuilds what it needs)",
                )
        except sqlite3.OperationalError as exc:
            raise OllyError("cache-write-failed", f"cannot initialise cache database {self.path}: {exc}")
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc)

    def _create_tables(self) -> None:
        self.db["meta"].insert({"key": "schema", "value": str(CACHE_SCHEMA)}, pk="key")
        self.db.execute(_STAT_TABLE)
        for name in _TABLES:
            self._create(name)

    def _create(self, name: str) -> None:
        columns, pk = _TABLES[name]
        self.db[name].create(columns, pk=pk, if_not_exists=True)
        self._known_tables = None

    def _put(self, table: str, row: dict[str, Any]) -> None:
        """Write ``row`` whole, replacing the row with its primary key: each caller gives every
        column of the table (``_TABLES``). Plain SQL, not sqlite-utils' upsert: importing
        sqlite-utils costs 0.1 s of CPU (numpy, its plugins' entry points), which a build would
        pay on a 2-core machine while the engine builds. A table a cache made by an older olly
        lacks (``pushes`` and ``artifacts`` came later, under the same schema) is created first,
        as the upsert did."""
        names = ", ".join(row)
        sql = f"INSERT OR REPLACE INTO [{table}] ({names}) VALUES ({', '.join('?' * len(row))})"
        if table not in self._tables():
            self._create(table)
        self.db.execute(sql, list(row.values()))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic write (the connection is in autocommit mode otherwise)."""
        conn = self.db.conn
        # IMMEDIATE takes the write lock up front; a read-only connection only reads.
        conn.execute("BEGIN" if self.read_only else "BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- stat cache ----------------------------------------------------------

    @_guarded
    def load_stats(self) -> dict[str, tuple[int, int, int, int, int, str]]:
        rows = self.db.execute(f"SELECT {_STAT_COLS} FROM stat")
        return {_path_out(r[0]): tuple(r[1:]) for r in rows}  # type: ignore[misc]

    def stat_view(self) -> StatView:
        """The stat cache for a FileHasher, loaded one directory at a time (olly.statview)."""
        from olly.statview import StatView

        return StatView(self)

    @_guarded
    def _stat_rows(self, prefix: str) -> dict[str, tuple[Any, ...]]:
        """The rows below directory ``prefix`` ("" = all). Text paths sort before BLOB ones
        (non-UTF-8 names), so each kind is one range: ``prefix/`` up to ``prefix0``."""
        if not prefix:
            rows = self.db.execute(f"SELECT {_STAT_COLS} FROM stat")
            return {r[0] if type(r[0]) is str else _path_out(r[0]): r[1:] for r in rows}
        raw = prefix.encode("utf-8", "surrogateescape")
        where = f"SELECT {_STAT_COLS} FROM stat WHERE path >= ? AND path < ?"
        text = _path_in(prefix)  # bytes: not valid UTF-8, so no text path lies below it
        out = {r[0]: r[1:] for r in self.db.execute(where, (prefix + "/", prefix + "0"))} if isinstance(text, str) else {}
        out.update({_path_out(r[0]): r[1:] for r in self.db.execute(where, (raw + b"/", raw + b"0"))})
        return out

    @_guarded
    def _db_bytes(self) -> int:
        """The database's size: a bound on what loading its whole stat table can cost."""
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        return int(pages) * int(self.db.execute("PRAGMA page_size").fetchone()[0])

    def _tables(self) -> set[str]:
        if self._known_tables is None:
            self._known_tables = set(self.db.table_names())
        return self._known_tables

    @_guarded
    def _stat_row(self, path: str) -> tuple[Any, ...] | None:
        row = self.db.execute(f"SELECT {_STAT_COLS} FROM stat WHERE path = ?", (_path_in(path),)).fetchone()
        return None if row is None else row[1:]

    @_guarded
    def save_stats(self, rows: list[Any], forget: list[str]) -> None:
        """Store stat-cache rows: tuples ``(path, size, mtime_ns, ino, ctime_ns, mode, hash)``
        (FileHasher.updates) or dicts with those keys; drop the ``forget`` paths."""
        # Read-only: the stat cache only saves re-hashing next time; a reader does without.
        if self.read_only:
            return
        if not rows and not forget:
            self._cluster_stats()
            return
        cols = _STAT_COLS.split(", ")
        with self.transaction():
            self._cluster_stats()
            # Plain executemany: sqlite-utils' upsert_all is ~10x slower for 10^4 rows.
            self.db.conn.executemany(
                f"INSERT OR REPLACE INTO stat ({_STAT_COLS}) VALUES ({', '.join('?' * len(cols))})",
                # A tuple row is in column order already: passed as is unless its path needs care.
                [(_path_in(r["path"]), *(r[c] for c in cols[1:])) if isinstance(r, dict)
                 else r if r[0].isascii() else (_path_in(r[0]), *r[1:]) for r in rows],
            )
            self.db.conn.executemany("DELETE FROM stat WHERE path = ?", [(_path_in(p),) for p in forget])

    def _cluster_stats(self) -> None:
        """Caches made before the stat table was WITHOUT ROWID get it now (in the caller's
        transaction): a directory's rows are then contiguous, and StatView reads a context's
        rows as fast as a scan of the whole table."""
        sql = self.db.execute("SELECT sql FROM sqlite_master WHERE name = 'stat'").fetchone()
        if sql is None or "WITHOUT ROWID" in sql[0].upper():
            return
        if not self.db.conn.in_transaction:
            with self.transaction():
                self._cluster_stats()
            return
        self.db.execute(_STAT_TABLE.replace("stat (", "stat_clustered (", 1))
        self.db.execute(f"INSERT INTO stat_clustered ({_STAT_COLS}) SELECT {_STAT_COLS} FROM stat")
        self.db.execute("DROP TABLE stat")
        self.db.execute("ALTER TABLE stat_clustered RENAME TO stat")

    # -- results and manifests -----------------------------------------------

    @_guarded
    def result(self, target: str, key: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT image_id, tag, built_at, duration_s FROM results WHERE target = ? AND key = ?", [target, key]
        ).fetchone()
        if row is None:
            return None
        return {"image_id": row[0], "tag": row[1], "built_at": row[2], "duration_s": row[3]}

    @_guarded
    def last_image_ids(self, targets: list[str]) -> list[str]:
        """The image id each target's most recent recorded build gave: what a plan will most
        likely inspect (a hint for olly.imageview's prefetch, never an answer)."""
        rows = self.db.execute("SELECT target, image_id, max(built_at) FROM results GROUP BY target").fetchall()
        wanted = set(targets)
        return [row[1] for row in rows if row[0] in wanted and row[1]]

    @_guarded
    def record_build(self, target: str, key: str, image_id: str, tag: str, duration_s: float, manifest: dict[str, Any],
                     history: str | None = None) -> None:
        """Record a verified build and its input manifest (kept under ``history``, default the
        target; ``label@platform`` for one platform of a multi-platform image) atomically."""
        with self.transaction():
            self._put("results", {"target": target, "key": key, "image_id": image_id, "tag": tag,
                                  "built_at": time.time(), "duration_s": round(duration_s, 3)})
            failpoints.hit("record")  # between the two writes of one transaction
            self._put("manifests", {"target": history or target, "key": key, "manifest": json.dumps(manifest)})

    @_guarded
    def build_durations(self, targets: list[str]) -> dict[str, float]:
        """Mean recorded build seconds per target (those with any), for balancing shards."""
        marks = ", ".join("?" * len(targets))
        rows = self.db.execute(f"SELECT target, AVG(duration_s) FROM results WHERE target IN ({marks}) "
                               "AND duration_s > 0 GROUP BY target", targets).fetchall() if targets else []
        return {target: float(mean) for target, mean in rows}

    @_guarded
    def push(self, target: str, key: str, registry: str) -> str | None:
        row = self.db.execute("SELECT digest FROM pushes WHERE target = ? AND key = ? AND registry = ?",
                              [target, key, registry]).fetchone()
        return row[0] if row else None

    @_guarded
    def record_push(self, target: str, key: str, registry: str, ref: str, digest: str) -> None:
        with self.transaction():
            self._put("pushes", {"target": target, "key": key, "registry": registry, "ref": ref,
                                 "digest": digest, "pushed_at": time.time()})

    @_guarded
    def artifact(self, target: str, key: str, registry: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT path, digest, version FROM artifacts WHERE target = ? AND key = ? AND registry = ?",
                              [target, key, registry]).fetchone()
        return {"path": row[0], "digest": row[1], "version": row[2]} if row else None

    @_guarded
    def record_artifact(self, target: str, key: str, registry: str, path: str, digest: str, version: str,
                        manifest: dict[str, Any] | None = None) -> None:
        """Record a chart package and the input manifest it was made from (``olly why`` diffs
        the chart against it)."""
        with self.transaction():
            self._put("artifacts", {"target": target, "key": key, "registry": registry, "path": path,
                                    "digest": digest, "version": version})
            if manifest is not None:
                self._put("manifests", {"target": target, "key": key, "manifest": json.dumps(manifest, sort_keys=True)})

    @_guarded
    def forget_result(self, target: str, key: str) -> None:
        with self.transaction():
            self.db.execute("DELETE FROM results WHERE target = ? AND key = ?", [target, key])

    @_guarded
    def manifest(self, target: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT manifest FROM manifests WHERE target = ?", [target]).fetchone()
        if row is None:
            return None
        try:
            data = json.loads(row[0])
        except (TypeError, ValueError):
            data = None
        if not isinstance(data, dict):
            raise OllyError("cache-corrupt", f"cache database {self.path}: unreadable manifest for {target}; delete {self.dir} to start fresh")
        return data

    def close(self) -> None:
        self.db.conn.close()


# Tables that travel between machines; the stat cache does not (inodes and ctimes are local).
_PORTABLE = {
    "results": ("target", "key", "image_id", "tag", "built_at", "duration_s"),
    "manifests": ("target", "key", "manifest"),
    "pushes": ("target", "key", "registry", "ref", "digest", "pushed_at"),
    "artifacts": ("target", "key", "registry", "path", "digest", "version"),
}


# Rows an export may bring in: anything else (hand-edited, truncated, foreign) is dropped.
_DIGEST = "GLOB 'sha256:" + "[0-9a-f]" * 64 + "'"
_VALID_ROW = {
    "results": f"typeof(target) = 'text' AND typeof(key) = 'text' AND image_id {_DIGEST} AND typeof(tag) = 'text'",
    "manifests": "typeof(target) = 'text' AND typeof(key) = 'text' AND json_valid(manifest) "
                 "AND json_type(manifest) = 'object' AND json_extract(manifest, '$.key') = key",
    "pushes": f"typeof(target) = 'text' AND typeof(key) = 'text' AND typeof(registry) = 'text' AND digest {_DIGEST}",
    "artifacts": f"typeof(target) = 'text' AND typeof(key) = 'text' AND typeof(path) = 'text' AND digest {_DIGEST} "
                 "AND path NOT LIKE '/%' AND path NOT LIKE '%..%'",
}


def export_cache(cache_dir: Path, dest: Path) -> dict[str, int]:
    """Write a consistent snapshot of the portable tables to ``dest`` (for CI caches)."""
    if not (cache_dir / DB_NAME).exists():
        raise OllyError("cache-missing", f"no cache to export: {cache_dir / DB_NAME} does not exist")
    cache = Cache(cache_dir)
    tmp = dest.with_name(dest.name + ".olly-tmp")
    try:
        tmp.unlink(missing_ok=True)
        out = sqlite3.connect(tmp)
        cache.db.conn.backup(out)  # sqlite's online backup: consistent even while others write
        out.execute("DELETE FROM stat")
        out.execute("DROP TABLE IF EXISTS walk_memo")
        out.execute("DROP TABLE IF EXISTS walk_marks")
        out.execute("DROP TABLE IF EXISTS inputs_memo")
        out.commit()
        out.execute("VACUUM")
        counts = {t: out.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in _PORTABLE}
        out.close()
        os.replace(tmp, dest)
    except (OSError, sqlite3.Error) as exc:
        tmp.unlink(missing_ok=True)
        raise OllyError("io-error", f"cannot export the cache to {dest}: {exc}")
    finally:
        cache.close()
    return counts


def import_cache(cache_dir: Path, src: Path) -> dict[str, int]:
    """Merge another cache's results into this one; local rows win on conflict.

    Imported results are hints, not trust: an image id that this engine does not
    have is rebuilt (or adopted by tag and label), a registry digest is re-checked.
    """
    try:
        probe = sqlite3.connect(Path(src).resolve().as_uri() + "?mode=ro", uri=True)
        row = probe.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        probe.close()
    except sqlite3.Error as exc:
        raise OllyError("cache-corrupt", f"{src} is not an olly cache export ({exc})")
    if not row or int(row[0]) != CACHE_SCHEMA:
        raise OllyError("cache-incompatible", f"{src} has cache schema {row[0] if row else None}, this olly needs {CACHE_SCHEMA}")
    cache = Cache(cache_dir)
    conn = cache.db.conn
    counts = {}
    try:
        conn.execute("ATTACH DATABASE ? AS incoming", [str(src)])
        with cache.transaction():
            for table, cols in _PORTABLE.items():
                names = ", ".join(cols)
                cur = conn.execute(f"INSERT OR IGNORE INTO main.{table} ({names}) SELECT {names} FROM incoming.{table} "
                                   f"WHERE {_VALID_ROW[table]}")
                counts[table] = cur.rowcount
        conn.execute("DETACH DATABASE incoming")
    except sqlite3.Error as exc:
        raise OllyError("cache-write-failed", f"cannot import {src} into {cache.path}: {exc}")
    finally:
        cache.close()
    return counts


def _retry_locked(action: Callable[[], Any], deadline_s: float = 30.0) -> Any:
    """Some pragmas fail with "database is locked" at once instead of honouring busy_timeout."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError as exc:  # e.g. a .cache without search permission
        raise OllyError("io-error", f"cannot access {path}: {exc.strerror}") from None


def _writable(db: Path) -> bool:
    """Whether this process may write the db (or create it) and its -wal/-shm files next to it."""
    return os.access(db.parent, os.W_OK | os.X_OK) and all(
        os.access(p, os.W_OK) for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if _exists(p))


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # with exist_ok: it, or a parent of it, is not a directory
        raise OllyError("io-error", f"cannot create cache directory {path}: {exc.filename or path} is not a directory")
    except OSError as exc:
        raise OllyError("io-error", f"cannot create cache directory {path}: {exc.strerror}")


def writable_dir(path: Path) -> None:
    """Create ``path`` (e.g. ``.cache/logs``) if needed; refuse up front, with one line naming it,
    a directory olly could not write into later, in the middle of a build."""
    _make_dir(path)
    if not os.access(path, os.W_OK | os.X_OK):
        raise OllyError("io-error", f"cannot write into cache directory {path}: permission denied")


@contextlib.contextmanager
def workspace_lock(cache_dir: Path, on_wait: Callable[[str], None]) -> Iterator[None]:
    """Hold the workspace lock for a mutating command; wait (saying so) if another holds it."""
    _make_dir(cache_dir)
    path = cache_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:  # a read-only .cache, or something else (a directory) in the way
        raise OllyError("io-error", f"cannot open the workspace lock {path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            on_wait(f"waiting for another olly (pid {holder}) to finish in this workspace")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock
