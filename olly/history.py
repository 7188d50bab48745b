"""Run history: every `olly make` is recorded (when, what command, and per target its
action, duration, cache source and key), for `olly log` and `olly stats`.

Stored in the cache db, in tables created on first use (older caches gain them without
a schema change). History is a convenience: failing to write it never fails a run.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from olly.errors import OllyError

if TYPE_CHECKING:
    from olly.cache import Cache
    from olly.jobs import Outcome
    from olly.plan import Plan

RUNS_KEPT = 200  # older runs are dropped

_TABLES = (
    "CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY AUTOINCREMENT, started REAL, ended REAL, "
    "command TEXT, exit_code INTEGER)",
    "CREATE TABLE IF NOT EXISTS run_targets (run INTEGER, target TEXT, status TEXT, source TEXT, "
    "duration_s REAL, key TEXT, reason TEXT, PRIMARY KEY (run, target))",
)


def source_of(o: Outcome, action: str, adopted: bool) -> str:
    """Where a target's result came from: built now, or the cache that had it (local = olly's
    cache db, engine = an image found in the engine, registry = a remote-cache hit)."""
    if o.status in ("built", "failed", "skipped"):
        return o.status
    if action == "remote":
        return "registry"
    return "engine" if adopted else "local"


def record_run(cache: Cache, plan: Plan, outcomes: list[Outcome], started: float, command: str,
               exit_code: int) -> None:
    by_label = plan.by_label()
    rows = []
    for o in outcomes:
        tp = by_label.get(o.label)
        source = source_of(o, tp.action if tp else "", bool(tp and tp.adopted))
        rows.append((o.label, o.status, source, round(o.duration_s, 3), o.key, o.reason[:300]))
    conn = cache.db.conn
    try:
        with cache.transaction():
            for sql in _TABLES:
                conn.execute(sql)
            cur = conn.execute("INSERT INTO runs (started, ended, command, exit_code) VALUES (?, ?, ?, ?)",
                               (started, time.time(), command, exit_code))
            conn.executemany("INSERT INTO run_targets VALUES (?, ?, ?, ?, ?, ?, ?)",
                             [(cur.lastrowid, *row) for row in rows])
            conn.execute("DELETE FROM run_targets WHERE run <= (SELECT MAX(id) FROM runs) - ?", (RUNS_KEPT,))
            conn.execute("DELETE FROM runs WHERE id <= (SELECT MAX(id) FROM runs) - ?", (RUNS_KEPT,))
    except (sqlite3.Error, OllyError):
        pass  # a read-only or full cache: the run itself succeeded or failed on its own


@dataclass
class Run:
    id: int
    started: float
    ended: float
    command: str
    exit_code: int
    counts: dict[str, int]


def _has_history(cache: Cache) -> bool:
    return "runs" in set(cache.db.table_names())


def recent_runs(cache: Cache, limit: int) -> list[Run]:
    if not _has_history(cache):
        return []
    runs = cache.db.execute("SELECT id, started, ended, command, exit_code FROM runs ORDER BY id DESC LIMIT ?",
                            [limit]).fetchall()
    out = []
    for rid, started, ended, command, code in runs:
        counts = dict(cache.db.execute("SELECT status, COUNT(*) FROM run_targets WHERE run = ? GROUP BY status",
                                       [rid]).fetchall())
        out.append(Run(rid, started, ended, command, code, counts))
    return out


def stats(cache: Cache, runs: int) -> dict[str, Any]:
    """Hit rates and the slowest builds over the last ``runs`` runs."""
    if not _has_history(cache):
        return {"runs": 0, "targets": [], "sources": {}}
    first = cache.db.execute("SELECT MIN(id) FROM (SELECT id FROM runs ORDER BY id DESC LIMIT ?)", [runs]).fetchone()[0]
    n = cache.db.execute("SELECT COUNT(*) FROM runs WHERE id >= ?", [first or 0]).fetchone()[0]
    rows = cache.db.execute(
        "SELECT target, COUNT(*), SUM(status = 'built'), SUM(status = 'cached'), SUM(status = 'failed'), "
        "MAX(CASE WHEN status = 'built' THEN duration_s END), AVG(CASE WHEN status = 'built' THEN duration_s END) "
        "FROM run_targets WHERE run >= ? GROUP BY target", [first or 0]).fetchall()
    targets = [{"target": t, "runs": c, "built": b or 0, "cached": h or 0, "failed": f or 0,
                "hit_rate": round((h or 0) / c, 3) if c else 0.0,
                "slowest_build_s": mx, "mean_build_s": round(avg, 3) if avg is not None else None}
               for t, c, b, h, f, mx, avg in rows]
    targets.sort(key=lambda r: -(r["slowest_build_s"] or 0))
    sources = dict(cache.db.execute("SELECT source, COUNT(*) FROM run_targets WHERE run >= ? GROUP BY source",
                                    [first or 0]).fetchall())
    return {"runs": n, "targets": targets, "sources": sources}
