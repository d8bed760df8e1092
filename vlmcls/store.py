"""Per-sample result store: SQLite in WAL mode.

Why SQLite/WAL rather than an append-only JSONL log: several xdist workers write at once (WAL lets
readers and one writer proceed together; busy_timeout serialises writers), a row is committed
atomically with its transaction (a SIGKILL loses at most the batch in flight, never corrupts a
finished one), and lookups by (case key, sample id) need no scan of the whole history.
Rows are JSON text: data, never pickle.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

from .types import Prediction

SCHEMA = """
CREATE TABLE IF NOT EXISTS cases (case_key TEXT PRIMARY KEY, spec TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    case_key TEXT NOT NULL, sample_id TEXT NOT NULL, record TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (case_key, sample_id));
"""


def case_key(spec: Mapping[str, Any]) -> str:
    """Stable key over everything that changes an answer (model settings, dataset, N, seed, ...)."""
    blob = json.dumps(spec, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def row_key(sample_id: str, order: int = 0) -> str:
    """A row's key within its case: the sample id for order 0 (so stores written before --orders
    resume), the id and the order for the other candidate orders (0x1f: a control character no dataset id holds)."""
    return sample_id if not order else f"{sample_id}\x1forder{order}"


def to_record(p: Prediction) -> dict:
    return asdict(p)


def from_record(d: Mapping[str, Any]) -> Prediction:
    """A stored row; fields this version does not know (a store a newer vlmcls wrote too) are left out."""
    d = {k: v for k, v in d.items() if k in _FIELDS}
    d["candidates"] = tuple(d["candidates"])
    return Prediction(**d)


_FIELDS = frozenset(f.name for f in fields(Prediction))


def _retry_locked(action, seconds: float = 60.0):
    """Switching to WAL while another process opens the file can fail with "database is locked"
    at once, without waiting on the busy timeout: retry for a while."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Store:
    """One connection per process (and per thread); safe with concurrent writer processes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        _retry_locked(lambda: self._conn().executescript(SCHEMA))

    def _conn(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            _retry_locked(lambda: db.execute("PRAGMA journal_mode=WAL"))
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process kills
            db.execute("PRAGMA busy_timeout=60000")
            self._local.db = db
        return db

    def register(self, key: str, spec: Mapping[str, Any]) -> None:
        self._conn().execute("INSERT OR IGNORE INTO cases VALUES (?, ?)", (key, json.dumps(spec, sort_keys=True, default=str)))

    def get(self, key: str) -> dict[str, Prediction]:
        """Row key (see row_key: the sample id for order 0) -> prediction."""
        rows = self._conn().execute("SELECT sample_id, record FROM results WHERE case_key = ?", (key,))
        return {sid: from_record(json.loads(rec)) for sid, rec in rows}

    def put(self, key: str, preds: Iterable[Prediction], now: float) -> None:
        self._write("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?)",
                    [(key, row_key(p.sample_id, p.order), json.dumps(to_record(p)), now) for p in preds])

    def rewrite(self, key: str, preds: Iterable[Prediction]) -> None:
        """Rows already stored, rewritten in place (their time kept: they are not this run's answers)."""
        self._write("UPDATE results SET record = ? WHERE case_key = ? AND sample_id = ?",
                    [(json.dumps(to_record(p)), key, row_key(p.sample_id, p.order)) for p in preds])

    def _write(self, sql: str, rows: list[tuple]) -> None:
        """One transaction: every row or none (a SIGKILL loses at most the batch in flight)."""
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(sql, rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def count(self, key: str, since: float | None = None) -> int:
        """Rows of a case; `since` (a time.time()): only those written from then on (this run's)."""
        if since is None:
            return self._conn().execute("SELECT COUNT(*) FROM results WHERE case_key = ?", (key,)).fetchone()[0]
        return self._conn().execute("SELECT COUNT(*) FROM results WHERE case_key = ? AND created >= ?",
                                    (key, since)).fetchone()[0]

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
