"""The cache's tables of remembered walks (olly.walkmemo): context walks, their watcher marks
(olly.watchsync) and `inputs` globs. Made on first use, never exported: inodes and ctimes
differ on every other machine, so no fingerprint would ever match there."""

from __future__ import annotations

from typing import Any

from olly.cachecore import guarded as _guarded
from olly.cachecore import path_out as _path_out

# ctx_dir and df_rel are the names' bytes (any file name), seq the order the last plan took them in.
_WALKS_TABLE = ("CREATE TABLE IF NOT EXISTS walk_memo (key TEXT PRIMARY KEY, ctx_dir BLOB, df_rel BLOB, "
                "seq INTEGER, fingerprint TEXT, entries BLOB)")
# Which remembered walk a watcher sync vouched for: the mark holds only for the walk_memo row
# of the same key and fingerprint.
_MARKS_TABLE = "CREATE TABLE IF NOT EXISTS walk_marks (key TEXT PRIMARY KEY, fingerprint TEXT, mark TEXT)"
# Remembered `inputs` globs (olly.walkmemo.inputs_fingerprint).
_INPUTS_TABLE = "CREATE TABLE IF NOT EXISTS inputs_memo (key TEXT PRIMARY KEY, fingerprint TEXT, rows BLOB)"


class MemoTables:
    """Part of olly.cache.Cache, using the Cache's ``db``, ``_tables()``, ``transaction()`` and
    ``save_stats()``."""

    db: Any
    read_only: bool
    _known_tables: set[str] | None

    @_guarded
    def walk_keys(self) -> set[str]:
        """The memo keys (olly.walkmemo.key_of) with a remembered walk."""
        if "walk_memo" not in self._tables():
            return set()
        return {row[0] for row in self.db.execute("SELECT key FROM walk_memo")}

    @_guarded
    def prune_memos(self, walks: set[str], inputs: set[str]) -> None:
        """Drop remembered walks and `inputs` globs whose keys are not in ``walks`` / ``inputs``:
        a plan of every target knows all the memos the workspace still has a use for. A dropped
        walk's signatures become stat rows (the stat cache holds none of its own for those
        files): an image put back (another branch) is not read again whole."""
        if self.read_only:
            return
        stale = [(table, [(key,) for (key,) in self.db.execute(f"SELECT key FROM {table}") if key not in keep])
                 for table, keep in (("walk_memo", walks), ("inputs_memo", inputs)) if table in self._tables()]
        if not any(keys for _, keys in stale):  # read first: a plan with nothing to drop writes nothing
            return
        from olly import walkmemo

        rows: list[tuple[Any, ...]] = []
        with self.transaction():
            for table, keys in stale:
                if table == "walk_memo":
                    for (key,) in keys:
                        found = self.db.execute("SELECT ctx_dir, entries FROM walk_memo WHERE key = ?", (key,)).fetchone()
                        rows += [] if found is None else walkmemo.stat_rows(_path_out(found[0]), bytes(found[1]))
                self.db.conn.executemany(f"DELETE FROM {table} WHERE key = ?", keys)
        self.save_stats(rows, [])

    @_guarded
    def walk(self, key: str) -> tuple[str, bytes] | None:
        """(fingerprint, packed entries) remembered for ``key``, or None."""
        return self._memo("walk_memo", "entries", key)

    @_guarded
    def save_walks(self, walks: dict[str, tuple[str, bytes, str, str | None, int]]) -> None:
        """Remember walks (olly.walkmemo.Memo.new: fingerprint, entries, context directory,
        Dockerfile in it, planning order); a reader that cannot write does without."""
        raw = lambda text: None if text is None else text.encode("utf-8", "surrogateescape")  # noqa: E731
        self._save_memos(_WALKS_TABLE, "walk_memo (key, ctx_dir, df_rel, seq, fingerprint, entries)",
                         [(key, raw(ctx), raw(df), seq, fp, blob) for key, (fp, blob, ctx, df, seq) in walks.items()])

    @_guarded
    def walk_marks(self) -> dict[str, tuple[str, str]]:
        """Memo key -> (fingerprint, mark) of the remembered walks a plan marked when it
        verified them (olly.walkmemo.Memo.unchanged): only marks of the very walk remembered now."""
        if not {"walk_memo", "walk_marks"} <= self._tables():
            return {}
        return {key: (fp, mark) for key, fp, mark in self.db.execute(
            "SELECT m.key, m.fingerprint, m.mark FROM walk_marks m JOIN walk_memo w "
            "ON w.key = m.key AND w.fingerprint = m.fingerprint")}

    @_guarded
    def save_walk_marks(self, marks: list[tuple[str, str, str]]) -> None:
        """Mark walks (memo key, fingerprint, mark); a reader that cannot write does without."""
        self._save_memos(_MARKS_TABLE, "walk_marks (key, fingerprint, mark)", marks)

    @_guarded
    def inputs_memo(self, key: str) -> tuple[str, bytes] | None:
        """(fingerprint, stored rows) remembered for an `inputs` memo key, or None."""
        return self._memo("inputs_memo", "rows", key)

    @_guarded
    def save_inputs_memos(self, memos: dict[str, tuple[str, bytes]]) -> None:
        self._save_memos(_INPUTS_TABLE, "inputs_memo (key, fingerprint, rows)",
                         [(key, fp, blob) for key, (fp, blob) in memos.items()])

    def _memo(self, table: str, column: str, key: str) -> tuple[str, bytes] | None:
        """(fingerprint, blob) of a memo table's row for ``key``; None without one (or the table)."""
        if table not in self._tables():
            return None
        row = self.db.execute(f"SELECT fingerprint, {column} FROM {table} WHERE key = ?", (key,)).fetchone()
        return None if row is None else (str(row[0]), bytes(row[1]))

    def _save_memos(self, create: str, into: str, rows: list[tuple[Any, ...]]) -> None:
        """Write memo rows (``into``: table and columns), the table made first if need be; a
        reader that cannot write does without."""
        if self.read_only or not rows:
            return
        with self.transaction():
            self.db.execute(create)
            self.db.conn.executemany(f"INSERT OR REPLACE INTO {into} VALUES ({', '.join('?' * len(rows[0]))})", rows)
        self._known_tables = None

    @_guarded
    def forget_walks(self, paths: list[str]) -> None:
        """Drop the remembered walks of the contexts holding ``paths`` (workspace-relative files
        whose content was not what their signatures promised, e.g. edited during a build), and
        every remembered `inputs` glob: they hold their files' signatures as the stat cache
        holds its rows."""
        if self.read_only or not paths:
            return
        covers = lambda ctx, path: ctx == "." or path.startswith(ctx + "/")  # noqa: E731
        with self.transaction():
            tables = set(self.db.table_names())  # as of now: another olly may have made one since
            if "walk_memo" in tables:
                doomed = [(key,) for key, raw in self.db.execute("SELECT key, ctx_dir FROM walk_memo")
                          if any(covers(_path_out(bytes(raw)), p) for p in paths)]
                self.db.conn.executemany("DELETE FROM walk_memo WHERE key = ?", doomed)
            if "inputs_memo" in tables:  # which globs matched them is not kept: all go
                self.db.execute("DELETE FROM inputs_memo")
