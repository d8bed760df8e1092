"""What mutation testing of vlmcls/store.py and vlmcls/gate.py showed untested (mutmut 3.8.1, 2026-11-27).

Each test names the mutants it kills. The expectations are worked out by hand or read back
independently: keys from sha256 of a JSON text written out here, rows through the sqlite3 module,
a database file made without vlmcls, a real lock held by a second connection, and gate reasons
spelled out word for word.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path

import pytest

from test_gate import preds, result, spec
from vlmcls import gate
from vlmcls.report import spec_fields
from vlmcls.report.runs import Run
from vlmcls.runner import CaseResult
from vlmcls.store import Store, _retry_locked, case_key
from vlmcls.types import Prediction


# ================================================================ store.py
# ---------------------------------------------------------------- the key format on disk
def test_case_key_is_the_sha256_of_compact_sorted_json_cut_to_24_hex_digits():
    """A store written by an earlier version resumes only if the key of the same settings is the
    same string: the format (compact separators, sorted keys, str() of other types, 24 hex digits)
    is part of the file format, not a detail. Kills case_key mutants 5, 9, 11, 12 (separators) and
    14 (25 digits), which still separate settings but would orphan every stored row."""
    spec = {"ways": 20, "model": "m", "where": Path("/data/imagenet"), "extra": {"b": 1, "a": [1, 2]}}
    text = '{"extra":{"a":[1,2],"b":1},"model":"m","ways":20,"where":"/data/imagenet"}'  # written by hand
    assert case_key(spec) == hashlib.sha256(text.encode()).hexdigest()[:24]
    assert len(case_key(spec)) == 24


def old_record(sample_id: str, pred_id: int) -> dict:
    """A stored row as written before the order / top5 / fingerprint fields existed, by hand."""
    return {"sample_id": sample_id, "true_id": 3, "true_label": "goldfish", "candidates": ["goldfish", "tench"],
            "answer": "a goldfish", "pred_id": pred_id, "pred_label": "goldfish" if pred_id == 3 else "tench",
            "stage": "match", "latency_s": 0.5, "prompt_tokens": 10, "completion_tokens": 2, "cost_usd": 0.001,
            "error": None, "ambiguous": False}


def test_a_database_written_without_vlmcls_is_read_back(tmp_path):
    """A results file made with the sqlite3 module alone (the schema of the docstring, rows whose key
    is computed here from the settings' JSON text): Store reads exactly those rows, per case, and
    adds its own next to them. Checks get/count/put against a file they did not write."""
    path = tmp_path / "old.sqlite"
    key = hashlib.sha256(b'{"model":"m","ways":2}').hexdigest()[:24]
    other = hashlib.sha256(b'{"model":"m","ways":5}').hexdigest()[:24]
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE cases (case_key TEXT PRIMARY KEY, spec TEXT NOT NULL);"
                     "CREATE TABLE results (case_key TEXT NOT NULL, sample_id TEXT NOT NULL, record TEXT NOT NULL,"
                     " created REAL NOT NULL, PRIMARY KEY (case_key, sample_id));")
    db.executemany("INSERT INTO results VALUES (?, ?, ?, ?)",
                   [(key, "a", json.dumps(old_record("a", 3)), 1.0), (key, "b", json.dumps(old_record("b", 0)), 1.0),
                    (other, "a", json.dumps(old_record("a", 0)), 1.0)])
    db.commit()
    db.close()

    store = Store(path)
    assert case_key({"ways": 2, "model": "m"}) == key
    got = store.get(key)
    assert sorted(got) == ["a", "b"] and store.count(key) == 2 and store.count(other) == 1
    a = got["a"]
    assert (a.sample_id, a.true_id, a.pred_id, a.pred_label, a.candidates, a.cost_usd) == (
        "a", 3, 3, "goldfish", ("goldfish", "tench"), 0.001)
    assert (a.order, a.top5, a.fingerprint) == (0, None, "")  # the fields added since: their defaults
    assert got["b"].pred_id == 0 and store.get(other)["a"].pred_id == 0
    assert store.get("no-such-key") == {} and store.count("no-such-key") == 0


def test_rows_read_back_with_sqlite3_are_the_json_of_each_prediction(tmp_path):
    """put writes one row per (case key, row key) with the record as plain JSON and the given time;
    another --orders order of the same image gets its own row (id, 0x1f, "order", the index)."""
    store = Store(tmp_path / "s.sqlite")
    p0 = Prediction("img1", 4, "tench", ("tench", "goldfish"), "tench", 4, "tench", "match", cost_usd=0.002)
    p2 = Prediction("img1", 4, "tench", ("goldfish", "tench"), "goldfish", 5, "goldfish", "match", order=2)
    store.put("k", [p0, p2], now=123.5)
    store.close()
    rows = sqlite3.connect(tmp_path / "s.sqlite").execute(
        "SELECT case_key, sample_id, record, created FROM results ORDER BY sample_id").fetchall()
    assert [(k, sid, created) for k, sid, _, created in rows] == [("k", "img1", 123.5), ("k", "img1\x1forder2", 123.5)]
    first = json.loads(rows[0][2])
    assert (first["sample_id"], first["pred_id"], first["candidates"], first["cost_usd"], first["order"]) == (
        "img1", 4, ["tench", "goldfish"], 0.002, 0)
    assert json.loads(rows[1][2])["order"] == 2 and json.loads(rows[1][2])["pred_label"] == "goldfish"


# ---------------------------------------------------------------- connections
def test_one_connection_per_thread_however_many_calls(tmp_path, monkeypatch):
    """The docstring's promise: a worker that puts, gets and counts thousands of times opens the file
    once (sqlite3.connect counted), a second thread opens its own (a connection must not cross
    threads) and both see each other's committed rows. Kills _conn 1, 2, 7, 8 and 31 (the
    connection forgotten, so every call connects and sets its pragmas again; the suite already
    killed them indirectly, this says the promise itself)."""
    opened = []
    connect = sqlite3.connect

    def counting(*args, **kw):
        opened.append(threading.get_ident())
        return connect(*args, **kw)

    monkeypatch.setattr(sqlite3, "connect", counting)
    store = Store(tmp_path / "s.sqlite")
    for i in range(5):
        store.put("k", [Prediction(f"s{i}", 1, "a", ("a", "b"), "a", 1, "a", "match")], now=float(i))
        assert store.count("k") == i + 1 and len(store.get("k")) == i + 1
    assert len(opened) == 1
    seen = []
    worker = threading.Thread(target=lambda: (
        store.put("k", [Prediction("t", 1, "a", ("a", "b"), "a", 1, "a", "match")], now=9.0),
        seen.append(store.count("k"))))
    worker.start()
    worker.join()
    assert seen == [6] and len(opened) == 2 and opened[1] != opened[0]
    assert store.count("k") == 6 and len(opened) == 2


def test_a_store_in_a_folder_not_yet_made_creates_it(tmp_path):
    """--store reports/run-7/cache/results.sqlite on a fresh machine: every missing folder is made,
    and a second store in the same folder opens too. Kills __init__ 3, 5, 7 (no `parents=True`:
    every other test's folder already existed)."""
    path = tmp_path / "reports" / "run-7" / "cache" / "results.sqlite"
    Store(path).put("k", [Prediction("s", 1, "a", ("a", "b"), "a", 1, "a", "match")], now=0.0)
    assert path.is_file()
    assert Store(path.parent / "other.sqlite").count("k") == 0
    assert sqlite3.connect(path).execute("SELECT sample_id FROM results").fetchall() == [("s",)]


def test_the_database_is_in_wal_mode_and_a_reader_sees_each_committed_batch(tmp_path):
    """Read with the sqlite3 module while the store's connection stays open: the journal mode is WAL
    (readers and one writer together, see the module docstring), and every put and register is
    committed at once, not left in an open transaction. Kills _conn 15 (sqlite3's implicit
    transactions: register's INSERT left open) and 18 (WAL never set)."""
    store = Store(tmp_path / "s.sqlite")
    store.register("k", {"ways": 2})
    store.put("k", [Prediction("s1", 1, "a", ("a", "b"), "a", 1, "a", "match")], now=0.0)
    reader = sqlite3.connect(tmp_path / "s.sqlite")
    assert reader.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert reader.execute("SELECT case_key, spec FROM cases").fetchall() == [("k", '{"ways": 2}')]
    assert reader.execute("SELECT sample_id FROM results").fetchall() == [("s1",)]
    store.put("k", [Prediction("s2", 1, "a", ("a", "b"), "a", 1, "a", "match")], now=1.0)
    assert reader.execute("SELECT COUNT(*) FROM results").fetchone() == (2,)
    store.register("k", {"ways": 3})  # the first record of a key stays
    store.put("k", [Prediction("s3", 1, "a", ("a", "b"), "a", 1, "a", "match")], now=2.0)  # no open transaction left
    assert reader.execute("SELECT spec FROM cases").fetchall() == [('{"ways": 2}',)]
    assert store.count("k") == 3


# ---------------------------------------------------------------- retry while the file is locked
class Lock:
    """A second connection holding an EXCLUSIVE lock on a rollback-journal database: any other
    connection with no busy wait gets sqlite3's own "database is locked" until it is released."""

    def __init__(self, path: Path):
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("CREATE TABLE IF NOT EXISTS t (x)")
        self.db.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        self.db.execute("COMMIT")


def test_a_locked_database_is_retried_until_the_lock_goes(tmp_path):
    """Kills _retry_locked 2 (no deadline), 3 (a deadline already past), 4 (never tries), 6, 7, 8, 9
    (the "locked" test inverted or broken: gives up at once) and 11 (sleep(None))."""
    path = tmp_path / "db.sqlite"
    lock = Lock(path)
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        other.execute("SELECT COUNT(*) FROM t").fetchone()  # the premise: locked, no busy wait
    tries = []

    def action():
        tries.append(1)
        return other.execute("SELECT COUNT(*) FROM t").fetchone()

    timer = threading.Timer(0.3, lock.release)
    timer.start()
    try:
        assert _retry_locked(action, seconds=30.0) == (0,)  # the action's own value, after the lock went
    finally:
        timer.join()
    assert len(tries) >= 2  # it did meet the lock at least once


def test_other_errors_are_raised_at_once_and_a_lock_that_stays_is_given_up(tmp_path):
    """Kills _retry_locked 5 (`and`: a missing table retried until the deadline)."""
    path = tmp_path / "db.sqlite"
    db = sqlite3.connect(path, timeout=0, isolation_level=None)
    tries = []

    def missing_table():
        tries.append(1)
        return db.execute("SELECT * FROM no_such_table")

    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        _retry_locked(missing_table, seconds=1.0)
    assert len(tries) == 1
    lock = Lock(path)  # never released: after the deadline the lock error itself comes out
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        _retry_locked(lambda: db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone(), seconds=0.2)
    lock.release()


# ================================================================ gate.py
def accuracy_reason(r: CaseResult, threshold: float) -> str:
    lo, hi = r.metrics.accuracy_ci
    return (f"{r.spec.case_id}: accuracy {r.metrics.accuracy:.3f} (95% CI {lo:.4f}-{hi:.4f}, n={r.metrics.n}): "
            f"the CI's upper bound {hi:.4f} is below the gate {threshold:.4g}")


def test_a_case_below_its_gate_and_worse_than_its_baseline_gives_both_reasons():
    """60 of 100 right against a gate of 0.8 (the Wilson-like interval of 0.6 at n=100 ends near 0.69)
    and against a baseline that had 90 right, the 30 extra wrong ones all discordant: both reasons,
    in that order, joined by "; ". Kills judge 36 (`=` for `+=`: the McNemar reason replaced the
    accuracy one)."""
    s = spec(0.8)
    now = result(s, preds(100, 60))
    verdict = gate.judge(now, gate.Baseline(preds(100, 90), spec_fields(s)))
    assert len(verdict.reasons) == 2 and verdict.status == "failed"
    assert verdict.reasons[0] == accuracy_reason(now, 0.8)
    assert verdict.reasons[1].startswith(f"{s.case_id}: ") and "McNemar" in verdict.reasons[1]
    # one line for CI logs and the report: the case id said once
    assert verdict.reason == verdict.reasons[0] + "; " + verdict.reasons[1].removeprefix(f"{s.case_id}: ")


def test_a_smoke_case_below_a_given_gate_with_error_rows_gives_both_reasons():
    """A smoke model judged against an explicit threshold (a script, or a catalog that sets one):
    50 right, 47 wrong and 3 backend error rows of 100 fail the accuracy gate of 0.9 and the
    plumbing check. Kills failures 22 (`=` for `+=`: the plumbing reason replaced the accuracy one)."""
    s = spec(smoke=True)
    r = result(s, preds(100, 50, errors=3))
    verdict = gate.judge(r, threshold=0.9)
    assert verdict.reasons == (accuracy_reason(r, 0.9),
                               f"{s.case_id}: smoke plumbing check: 3 error rows, 0 samples not run")


def test_every_sample_failing_with_an_empty_message_still_fails_with_a_reason():
    """An error row whose message is empty (a third-party backend's `Answer(error="")`, an exception
    without text) counts as an error (error is not None), but is no example to quote: the reason
    ends at "e.g. ". Kills failures 16 (None[:200]: TypeError), 18 (next() without a default:
    StopIteration) and 19 (quotes "XXXX")."""
    s = spec()
    verdict = gate.judge(result(s, preds(3, 0, errors=3, error="")))
    assert verdict.status == "failed"
    assert verdict.reasons == (f"{s.case_id}: every one of the 3 samples failed, e.g. ",)


def test_a_baseline_differing_in_two_settings_names_both():
    """CONTEXT order: dataset, prompt, labels, resolver, seed, layout. Kills unlike_baseline 21
    (the ", " between the differences)."""
    s = spec()
    row = {**spec_fields(s), "prompt": "label-only", "seed": 7}
    verdict = gate.judge(result(s, preds(20, 10)), gate.Baseline(preds(20, 10), row))
    assert verdict.notes == ("the --baseline run differs in prompt (label-only vs thesis), seed (7 vs 0)",)


def test_a_saved_run_without_the_case_is_no_baseline_for_it(tmp_path):
    """A saved run whose results hold other cases only: the case gets an empty row and no records
    (judged as "not in the baseline"), not an exception. Kills baseline_of 6 (next() without a
    default: StopIteration out of the gate)."""
    s = spec(0.05)
    run = Run(tmp_path, {}, [{**spec_fields(spec(0.5, smoke=True)), "case_id": "another-case"}])
    assert s.case_id != "another-case"
    base = gate.baseline_of(run, s.case_id)
    assert base == gate.Baseline(None, {})
    now = result(s, preds(100, 60))
    assert gate.judge(now, base) == gate.Verdict("passed", 0.05)
    assert gate.judge(now, base, strict=True).reasons == (
        f"{s.case_id}: --baseline gave nothing to compare (not in the baseline) (--strict-cases)",)
    assert gate.baseline_of(None, s.case_id) is None
