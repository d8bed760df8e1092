"""Session 12's mutation run (run 12 in README's table), on what session 11 added or changed: resume by
content (`same_image`, `stamp`, the store's `rewrite`), a local folder's files in the store key
(`hub.folder_files`), the permutation test's p at K > 1 orders, one row per case run twice. Each test pins
what a user sees: a stored answer kept or asked again, a row of the store, a p-value in results.json, a
row of the report."""
from __future__ import annotations

import json
import math
import os
import sqlite3

import numpy as np
import pytest

from test_runner import jpeg, runner

from vlmcls import hub, orders
from vlmcls import runner as runner_mod
from vlmcls.store import Store, row_key
from vlmcls.types import Sample


# ---------------------------------------------------------------- orders: the permutation test's p
def _picks(rng, images: int, k: int, ways: int, first_bias: float) -> list[list[int]]:
    """K distinct positions per image (a model picking by content), sometimes the first listed."""
    out = []
    for _ in range(images):
        pos = rng.permutation(ways)[:k].tolist()
        if rng.random() < first_bias and 0 not in pos:
            pos[0] = 0
        out.append(pos)
    return out


def test_the_p_of_a_large_case_drawn_in_several_chunks_is_the_one_published():
    """700 images x 3 distinct picks: the 1,999 draws are made in chunks of 952 (bounded memory). Every
    chunk's draws count, and exactly 1,999 of them: results.json's p_value of these rows is 0.2905 (581 of
    2,000), the same in every version, so a published p can be reproduced from the stored rows. A change to
    how the draws are made must change this figure on purpose."""
    matrix = _picks(np.random.default_rng(12), 700, 3, 20, first_bias=0.04)
    p = orders.permutation_p(matrix, 20)
    assert p == 0.2905 and round(p * (1 + orders.PERMUTATION_DRAWS)) == 581


def test_many_images_with_one_pick_position_each_are_drawn_in_chunks_too():
    """2,500 images that each picked the first listed candidate in both orders (m = 1 distinct position
    per image): chunks of 800 draws; no relabelling reaches the observed counts, p = 1 / 2,000."""
    assert orders.permutation_p([[0, 0]] * 2500, 10) == 1 / (1 + orders.PERMUTATION_DRAWS)


def test_two_way_cases_get_a_permutation_p_too():
    """--ways 2 has two bins (one per position): a position test exists and agrees with the exact
    enumeration of every relabelling (it is not 'no test')."""
    from test_stats_outside import exact_relabelling_p

    rng = np.random.default_rng(5)
    for k in (2, 3):
        for _ in range(4):
            matrix = [[int(rng.integers(2)) if rng.random() > 0.1 else -1 for _ in range(k)] for _ in range(6)]
            if all(p < 0 for r in matrix for p in r):
                continue
            exact, p = exact_relabelling_p(matrix, 2), orders.permutation_p(matrix, 2)
            assert p is not None
            assert abs(p - exact) <= 4 * math.sqrt(exact * (1 - exact) / 1999) + 1 / 2000, (matrix, p, exact)
    assert orders.permutation_p([[0, 0]] * 30, 2) == 1 / (1 + orders.PERMUTATION_DRAWS)
    assert orders.permutation_p([[0, 0]], 1) is None  # one candidate: one bin, nothing to test


# ---------------------------------------------------------------- runner: resume by content
def test_a_stored_content_hash_never_matches_an_image_given_as_bytes():
    """A row stored for an image file (its fingerprint carries the file's content hash after `#`) and a
    sample whose image is now bytes under the same id: the quick fingerprints differ, and there is no
    file to hash: the row is stale (asked again), not an error."""
    data = jpeg("red")
    s = Sample("img0.jpg", 3, data)
    quick = runner_mod.fingerprint(s)
    assert runner_mod.same_image(quick, s, quick)
    assert not runner_mod.same_image("3:631-1700000000000000000#" + runner_mod._sha(data), s, quick)


def test_rows_of_every_order_matched_by_content_are_rewritten_in_place(tmp_path):
    """--orders 3 on a copied (touched) folder: each of the K rows of an image is matched by its content
    hash and rewritten under its own row key with the file's new size + mtime; no order's row takes
    another's record. The next run reads no file and resumes all of them."""
    store = Store(tmp_path / "s.sqlite")
    (tmp_path / "a").mkdir()
    for i in range(4):
        (tmp_path / "a" / f"img{i}.jpg").write_bytes(jpeg((i * 50, 90, 30)))
    data = [Sample(f"img{i}.jpg", i, str(tmp_path / "a" / f"img{i}.jpg")) for i in range(4)]
    first = runner(store=store, orders=3).run(data)
    before = {(p.sample_id, p.order): p for p in first.order_rows}
    for i in range(4):
        os.utime(tmp_path / "a" / f"img{i}.jpg", ns=(5_000_000_000, 5_000_000_000))
    again = runner(store=store, orders=3).run(data)
    assert again.resumed == 12 and again.notes == []
    key = runner(orders=3).key
    with sqlite3.connect(store.path) as db:
        stored = {sid: json.loads(rec) for sid, rec in
                  db.execute("SELECT sample_id, record FROM results WHERE case_key = ?", (key,))}
    assert len(stored) == 12
    for (sid, order), p in before.items():
        rec = stored[row_key(sid, order)]
        quick = runner_mod.fingerprint(next(s for s in data if s.sample_id == sid))
        assert quick.endswith("-5000000000")  # the touched time
        assert rec["order"] == order and rec["candidates"] == list(p.candidates)
        assert rec["fingerprint"] == f"{quick}#{p.fingerprint.partition('#')[2]}"
    real_sha, reads = runner_mod._file_sha, []
    runner_mod._file_sha = lambda path: reads.append(path) or real_sha(path)
    try:
        third = runner(store=store, orders=3).run(data)
    finally:
        runner_mod._file_sha = real_sha
    assert third.resumed == 12 and reads == [] and third.order_rows == again.order_rows


def test_a_write_that_fails_midway_stores_none_of_its_rows_and_the_store_goes_on(tmp_path):
    """One transaction per batch: a row the database refuses (here a trigger, standing in for a disk
    error) leaves none of the batch stored, raises that error itself, and the next write works."""
    store, data = Store(tmp_path / "s.sqlite"), [Sample(f"s{i}", i, jpeg((i * 60, 10, 10))) for i in range(3)]
    preds = runner().run(data).predictions
    with sqlite3.connect(store.path) as db:
        db.execute("CREATE TRIGGER refuse BEFORE INSERT ON results WHEN NEW.sample_id = 's1' "
                   "BEGIN SELECT RAISE(ABORT, 'refused'); END")
    with pytest.raises(sqlite3.IntegrityError, match="refused"):
        store.put("k", preds, 1.0)
    assert store.get("k") == {}
    store.put("k", [preds[0], preds[2]], 2.0)
    assert sorted(store.get("k")) == ["s0", "s2"]
    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT COUNT(*) FROM results").fetchone() == (2,)


# ---------------------------------------------------------------- hub: a local folder's files
def _ckpt(folder, weights: bytes):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "qwen2_vl"}')
    (folder / "model.safetensors").write_bytes(weights)
    os.utime(folder / "config.json", ns=(1, 1_000))
    os.utime(folder / "model.safetensors", ns=(1, 2_000))
    return folder


def test_two_folders_in_one_session_are_each_named_by_their_own_files(tmp_path):
    """Two local checkpoints compared in one session: each key holds its own folder's files (one cached
    hash per folder, not one for all), and the value is `files:` + the first 16 hex digits of the SHA-1 of
    each read file's name, size and mtime in ns (a store key written by this version must resume later)."""
    import hashlib

    hub.forget_folders()
    a, b = _ckpt(tmp_path / "a", b"\x01" * 64), _ckpt(tmp_path / "b", b"\x01" * 65)
    want = {f: "files:" + hashlib.sha1(f"config.json\0{len(cfg)}\0{1_000}\nmodel.safetensors\0{n}\0{2_000}\n".encode())
            .hexdigest()[:16] for f, cfg, n in ((a, '{"model_type": "qwen2_vl"}', 64), (b, '{"model_type": "qwen2_vl"}', 65))}
    assert hub.folder_files(str(a)) == want[a]
    assert hub.folder_files(str(b)) == want[b] != want[a]
    assert hub.folder_files(str(a)) == want[a]
    hub.forget_folders()


def test_a_dangling_link_in_the_folder_does_not_hide_the_files_after_it(tmp_path):
    """A file listed but gone when its size is read (a dangling link; a Trainer removing a checkpoint
    file): it is left out, and every file after it still counts."""
    folder = _ckpt(tmp_path / "c", b"\x01" * 64)
    (folder / "added_tokens.json").symlink_to(tmp_path / "nowhere.json")  # sorted before the others
    hub.forget_folders()
    before = hub.folder_files(str(folder))
    (folder / "model.safetensors").write_bytes(b"\x02" * 80)
    hub.forget_folders()
    assert hub.folder_files(str(folder)) != before
    hub.forget_folders()


def test_a_folder_that_cannot_be_listed_has_no_files_hash_and_results_json_says_null(tmp_path, monkeypatch):
    """A folder removed or unreadable between the check and the listing: no `files:` hash (None, as for a
    hub id), and results.json's revisions say null, not an empty string."""
    from pathlib import Path

    from vlmcls.catalog import ModelEntry
    from vlmcls.report.rows import revisions
    from vlmcls.runner import CaseSpec
    from vlmcls.settings import BackendSettings

    folder = _ckpt(tmp_path / "gone", b"\x01" * 64)

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    hub.forget_folders()
    monkeypatch.setattr(Path, "iterdir", refuse)
    assert hub.folder_files(str(folder)) is None
    spec = CaseSpec(model=ModelEntry(name="mine", backend="hf-vlm", weights=str(folder)), ways=20,
                    settings=BackendSettings())
    assert revisions(spec) == {"weights": None, "nli_model": None}
    assert spec.folder_fields() == {}
    hub.forget_folders()


# ---------------------------------------------------------------- session: one row per case
def test_a_case_that_ran_twice_keeps_its_first_row_unless_only_a_later_one_has_figures():
    """pytest-repeat's --count: an error row then a different error row is still one row that ran twice
    (the first kept); an error row then a scored one keeps the scored one's figures, saying it ran twice."""
    from types import SimpleNamespace

    from vlmcls.session import BenchSession

    note = "ran 2 times in this session (e.g. pytest-repeat's --count); the report keeps one run"
    holder = SimpleNamespace(rows=[])
    first = {"case_id": "a-2way", "metrics": None, "notes": [], "status": "error", "reason": "first"}
    BenchSession._add_row(holder, first)
    BenchSession._add_row(holder, {**first, "reason": "second"})
    assert holder.rows == [{**first, "runs": 2, "notes": [note]}]
    holder = SimpleNamespace(rows=[])
    scored = {"case_id": "a-2way", "metrics": {"n": 6}, "notes": ["x"], "status": "passed", "reason": ""}
    BenchSession._add_row(holder, first)
    BenchSession._add_row(holder, scored)
    assert holder.rows == [{**scored, "runs": 2, "notes": ["x", note]}]


# ---------------------------------------------------------------- hub: which files, which revision
def test_a_sharded_checkpoints_index_counts_and_a_hidden_copy_does_not(tmp_path):
    """`model.safetensors.index.json` names the shards loading reads: a new index is a new model. A hidden
    file (macOS's `._model.safetensors` beside a copied checkpoint, an editor's lock) is never read."""
    folder = _ckpt(tmp_path / "sharded", b"\x01" * 64)
    (folder / "model.safetensors.index.json").write_text('{"weight_map": {}}')
    hub.forget_folders()
    before = hub.folder_files(str(folder))
    (folder / "._model.safetensors").write_bytes(b"resource fork")
    hub.forget_folders()
    assert hub.folder_files(str(folder)) == before
    (folder / "model.safetensors.index.json").write_text('{"weight_map": {"a": "b"}}')
    hub.forget_folders()
    assert hub.folder_files(str(folder)) != before
    hub.forget_folders()


def test_a_hub_id_gets_its_cached_commit_not_a_missing_local_path(tmp_path):
    """A hub repo id is no folder here: its revision is the commit of its snapshot in the hub cache."""
    from pathlib import Path

    from huggingface_hub import constants

    commit = "ab" * 20
    repo = Path(constants.HF_HUB_CACHE) / "models--someone--cached-run12"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot / "model.safetensors").write_bytes(b"")
    assert hub.local_folder("someone/cached-run12") is None
    assert hub.revision("someone/cached-run12") == commit
    assert hub.short_revision(commit) == "abababababab"


# ---------------------------------------------------------------- catalog: local weights
def test_a_relative_folder_missing_at_load_is_named_absolute_and_is_fine_once_built(tmp_path, monkeypatch):
    """weights = "./ckpts/a" with no such folder yet: the entry holds the absolute path beside the catalog
    (the load and the report name it), the skip reason says where it looked; built later (a training job
    finishing after the catalog loaded), the case runs: no reason any more."""
    from vlmcls.catalog import load_catalog

    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "my.toml").write_text('[models.mine]\nbackend = "hf-vlm"\nweights = "./ckpts/a"\n')
    monkeypatch.chdir(tmp_path)
    entry = load_catalog(tmp_path / "cfg" / "my.toml")["mine"]
    where = tmp_path / "cfg" / "ckpts" / "a"
    assert entry.weights == str(where)
    assert entry.missing_weights() == (f"folder not found: {where} (relative paths in a catalog are read from "
                                       "the catalog's folder)")
    where.mkdir(parents=True)
    assert entry.missing_weights() is None


def test_a_smoke_name_stays_a_smoke_model_even_beside_a_folder_of_that_name(tmp_path, monkeypatch):
    from vlmcls.catalog import load_catalog

    (tmp_path / "smoke:qwen2-vl").mkdir()
    (tmp_path / "my.toml").write_text('[models.tiny]\nbackend = "hf-vlm"\nweights = "smoke:qwen2-vl"\nsmoke = true\n')
    monkeypatch.chdir(tmp_path)
    entry = load_catalog(tmp_path / "my.toml")["tiny"]
    assert entry.weights == "smoke:qwen2-vl" and entry.missing_weights() is None


# ---------------------------------------------------------------- orders: the picked positions
def test_the_picked_matrix_marks_unanswered_orders_minus_one():
    """Per image, per order, the picked position; -1 where there is no pick (unresolved, error). The p of
    the rows is that of this matrix (the matrix seeds the draws)."""
    def row(sid, order, cands, pred):
        names = "abcd"
        return {"sample_id": sid, "order": order, "candidates": list(cands), "pred_label": pred,
                "pred_id": None if pred is None else names.index(pred)}

    images = {"s1": [row("s1", 0, "abcd", "a"), row("s1", 1, "badc", None)],
              "s2": [row("s2", 0, "bcda", "c"), row("s2", 1, "dbac", "c")]}
    assert orders.picked_matrix(images, 4) == [[0, -1], [1, 3]]


# ---------------------------------------------------------------- runner: a row's fingerprint
def test_an_image_path_that_cannot_be_read_gets_no_content_hash(tmp_path):
    """A path that exists but is no readable file (a folder named like an image): an error row whose
    fingerprint is the quick one alone, with no `#` part naming a hash it never took."""
    (tmp_path / "img0.jpg").mkdir()
    s = Sample("img0.jpg", 3, str(tmp_path / "img0.jpg"))
    (p,) = runner().run([s]).predictions
    assert p.error is not None and p.fingerprint == runner_mod.fingerprint(s) and "#" not in p.fingerprint


# ---------------------------------------------------------------- report: provenance and summary lines
def test_the_weights_line_leaves_out_rows_without_weights_and_is_empty_without_any():
    from vlmcls import provenance

    scored = {"model": "mine", "weights": "/ck/a", "metrics": {"n": 2}, "revisions": {"weights": "files:0123456789abcdef"}}
    served = {"model": "api", "weights": None, "metrics": {"n": 2}}
    assert provenance.weights_line([scored, served]) == "- weights: mine = /ck/a @ files:0123456789abcdef"
    assert provenance.weights_line([served]) == ""
    meta = {"provenance": {"python": "3.11"}}
    assert provenance.markdown(meta, [served]) == provenance.markdown(meta)
    assert "- weights" not in provenance.markdown(meta) and "\n\n\n" not in provenance.markdown(meta)


def test_the_summary_names_every_case_answered_from_the_store_in_one_sentence():
    from vlmcls.report.summary import _stored

    rows = [{"case_id": "a-20way", "resumed": 6, "metrics": {"n": 6}},
            {"case_id": "b-20way", "resumed": 2, "metrics": {"n": 5}, "not_run": 1},
            {"case_id": "c-20way", "resumed": 0, "metrics": {"n": 6}}]
    assert _stored(rows) == ["From the result store, not asked again (`--refresh` asks again): a-20way (6 of 6 "
                             "samples), b-20way (2 of 6 samples).", ""]
    assert _stored(rows[2:]) == []


# ---------------------------------------------------------------- plugin: stops, --dist, failed tests
def test_an_interruption_with_no_message_still_says_pytest_stopped_it():
    from vlmcls.plugin import stop_rule

    assert stop_rule(pytest.Session.Interrupted(""), 0) == "pytest stopped the run"


@pytest.mark.parametrize("dist, workers, says", [
    ("load", 2, "vlmcls: with --dist load the cases of a model can run spread over the workers, each loading "
                "the model; --dist loadgroup, used when --dist is not given, keeps each model's cases on one "
                "worker and spreads the models"),
    ("each", 2, "vlmcls: with --dist each the cases of a model can run on every worker, each running them all; "
                "--dist loadgroup, used when --dist is not given, keeps each model's cases on one worker and "
                "spreads the models"),
    ("loadfile", 2, "vlmcls: with --dist loadfile the cases of a model can run all on one worker (one test "
                    "file: no parallelism); --dist loadgroup, used when --dist is not given, keeps each model's "
                    "cases on one worker and spreads the models"),
    ("no", 2, None), ("load", None, None), ("load", 0, None)])
def test_the_dist_note_word_for_word_and_only_with_workers(dist, workers, says):
    """The note reads the --dist the user gave (config.getvalue("dist")) and only where -n started workers
    (`--dist load` alone runs serially; `-n 2 --dist no` is serial too)."""
    from types import SimpleNamespace

    from vlmcls.plugin import dist_note

    config = SimpleNamespace(option=SimpleNamespace(numprocesses=workers),
                             getvalue=lambda name: {"dist": dist}[name])
    assert dist_note(config) == says


def test_no_dist_note_without_xdist():
    from types import SimpleNamespace

    from vlmcls.plugin import dist_note

    assert dist_note(SimpleNamespace(option=SimpleNamespace(), getvalue=lambda name: "load")) is None


def test_junit_properties_carry_the_figures_and_leave_out_what_is_missing():
    from vlmcls.plugin import junit_properties

    row = {"status": "passed", "threshold": 0.5,
           "metrics": {"accuracy": 0.75, "accuracy_ci": [0.6, 0.9], "n": 40}}
    assert junit_properties(row) == [("vlmcls_status", "passed"), ("vlmcls_accuracy", 0.75),
                                     ("vlmcls_accuracy_ci_low", 0.6), ("vlmcls_accuracy_ci_high", 0.9),
                                     ("vlmcls_n", 40), ("vlmcls_threshold", 0.5)]
    assert junit_properties({"status": "skipped", "metrics": None, "threshold": None}) == [("vlmcls_status", "skipped")]
    assert junit_properties({"status": "no gate", "metrics": {"accuracy": 0.5, "n": 4}, "threshold": 0.0}) == [
        ("vlmcls_status", "no gate"), ("vlmcls_accuracy", 0.5), ("vlmcls_n", 4), ("vlmcls_threshold", 0.0)]


def _rep(message: str | None, text: str = "boom, no crash line"):
    from types import SimpleNamespace

    if message is None:
        return SimpleNamespace(longrepr=text)
    return SimpleNamespace(longrepr=SimpleNamespace(reprcrash=SimpleNamespace(message=message)))


def test_a_failed_test_fails_its_row_whichever_way_it_ended():
    """The test's own failure message, in one line, in the row: after the gate passed (the row fails), before
    the gate was checked (the case's figures kept, failed), before the case finished (an error row), a
    failed or skipped verdict (kept as it is)."""
    from types import SimpleNamespace

    from vlmcls.plugin import failed_row
    from vlmcls.runner import CaseSpec
    from vlmcls.settings import BackendSettings
    from test_runner import ECHO, samples

    spec = CaseSpec(model=ECHO, ways=20, settings=BackendSettings(batch_size=4))
    result = runner().run(samples(4))
    passed = {"case_id": "echo-20way", "status": "passed", "metrics": {"n": 4}, "reason": ""}
    crash = _rep("AssertionError: team check\nassert 1 == 2")
    assert failed_row(SimpleNamespace(result=result, spec=spec), passed, crash) == {
        **passed, "status": "failed", "reason": "the test failed after the gate passed: AssertionError: team check"}  # its first line
    nogate = {**passed, "status": "no gate"}
    assert failed_row(SimpleNamespace(result=result, spec=spec), nogate, _rep(None))["reason"] == (
        "the test failed after the gate passed: boom, no crash line")
    for kept in ({**passed, "status": "failed", "reason": "below"}, {**passed, "status": "skipped", "reason": "x"}):
        assert failed_row(SimpleNamespace(result=result, spec=spec), kept, crash) == kept
    before = failed_row(SimpleNamespace(result=result, spec=spec), None, _rep("Failed: Timeout >5.0s"))
    assert before["status"] == "failed" and before["threshold"] is None and before["metrics"]["n"] == 4
    assert before["reason"] == "the test failed before the gate was checked: Failed: Timeout >5.0s"
    ended = failed_row(SimpleNamespace(result=None, spec=spec), None, _rep("Failed: Timeout >5.0s"))
    assert ended["status"] == "error" and ended["metrics"] is None
    assert ended["reason"] == "the test ended before the case finished: Failed: Timeout >5.0s"
    empty = failed_row(SimpleNamespace(result=None, spec=spec), None, SimpleNamespace(longrepr=None))
    assert empty["reason"] == "the test ended before the case finished: the test failed"
    assert failed_row(SimpleNamespace(result=None, spec=None), None, crash) is None


def test_pytests_own_stop_is_kept_once_in_one_line_on_the_controller_only():
    from types import SimpleNamespace

    from vlmcls.session import BenchSession

    s = SimpleNamespace(is_worker=False, selected={"a"}, stopped_early="")
    BenchSession.stopped(s, "stopping after\n  1 failures")
    assert s.stopped_early == "stopping after 1 failures"
    BenchSession.stopped(s, "later reason")
    assert s.stopped_early == "stopping after 1 failures"
    s = SimpleNamespace(is_worker=False, selected={"a"}, stopped_early="")
    BenchSession.stopped(s, "  ")
    assert s.stopped_early == "pytest stopped the run"
    for worker, selected in ((True, {"a"}), (False, set())):
        s = SimpleNamespace(is_worker=worker, selected=selected, stopped_early="")
        BenchSession.stopped(s, "stopping after 1 failures")
        assert s.stopped_early == ""


# ---------------------------------------------------------------- orders: the section's figures
def test_the_order_summary_of_k_orders_names_its_test_and_draws_and_one_image_is_tested():
    """K = 3, one image: a permutation p (one image's lists are not 'every image saw the same lists'),
    with its draws; two images that saw the same lists: no position test. K = 1: the chi-square table's p,
    no draws; expected counts of exactly 5 per bin are not rough."""
    from test_orders import _row

    one = [_row("s1", 0, "abcd", "a", "a"), _row("s1", 1, "badc", "a", "a"), _row("s1", 2, "cdab", "a", "a")]
    s = orders.summary(one, 3, 4)
    assert s["p_test"] == "permutation" and s["p_draws"] == orders.PERMUTATION_DRAWS and s["p_value"] is not None
    assert (s["ways"], s["bins"], s["bin_sizes"], s["images"]) == (4, 4, [1, 1, 1, 1], 1)
    two = one + [_row("s2", k, c, "b", "b") for k, c in enumerate(("abcd", "badc", "cdab"))]
    s = orders.summary(two, 3, 4)
    assert s["p_test"] == "shared lists" and s["p_value"] is None
    k1 = [_row(f"s{i}", 0, "ab" if i % 2 else "ba", "a", "a") for i in range(10)]  # 5 picks at each position
    s = orders.summary(k1, 1, 2)
    assert s["p_test"] == "chi-square" and "p_draws" not in s
    assert s["expected"] == [5.0, 5.0] and s["rough_test"] is False


def test_the_order_summary_of_no_complete_image_has_no_figures_not_an_error():
    from test_orders import _row

    s = orders.summary([_row("s1", 0, "abcd", "a", "a")], 3, 4)  # order 1 and 2 never answered
    assert (s["images"], s["incomplete"], s["accuracy"], s["mean"], s["min"], s["max"]) == (0, 1, [], None, None, None)


def test_only_a_hub_cache_snapshot_names_a_commit_and_a_folder_inside_one_gives_it(tmp_path):
    """A local checkpoint folder named like a git hash, or kept under a folder called snapshots, is no hub
    revision; a path into a hub cache snapshot (models--x--y/snapshots/<commit>/sub) gives that commit."""
    commit = "cd" * 20
    named = tmp_path / commit
    named.mkdir()
    under = tmp_path / "snapshots" / "mine"
    under.mkdir(parents=True)
    assert hub.revision(str(named)) is None and hub.revision(str(under)) is None
    inside = tmp_path / "models--a--b" / "snapshots" / commit / "vision"
    inside.mkdir(parents=True)
    assert hub.revision(str(inside)) == commit


# ---------------------------------------------------------------- session: cases a stop left without a row
def test_the_cases_a_stop_left_without_a_row_say_how_far_they_got_and_how_to_finish(tmp_path):
    """-x / --maxfail (pytest's stop) and Ctrl-C: every selected case without a row gets one, saying how
    many of its answers this run stored (read from the store) and which command finishes it; a case not
    selected, or already reported, gets none."""
    import time
    from types import SimpleNamespace

    from test_runner import ECHO, LABELS, samples

    from vlmcls import backends
    from vlmcls.outcomes import Case
    from vlmcls.resolve import Resolver
    from vlmcls.runner import CaseRunner, CaseSpec
    from vlmcls.session import BenchSession
    from vlmcls.settings import BackendSettings

    settings = BackendSettings(batch_size=4)
    specs = {n: CaseSpec(model=ECHO, ways=n, settings=settings) for n in (20, 50, 100, 200)}
    cases = [Case(s) for s in specs.values()]
    store = Store(tmp_path / "s.sqlite")
    started = time.time() - 1
    CaseRunner(specs[50], LABELS, backends.load(ECHO, settings, LABELS), Resolver("exact", LABELS), store).run(samples(3))
    done = {"case_id": specs[20].case_id, "status": "passed"}
    holder = SimpleNamespace(rows=[done], _cases=cases, selected={c.case_id for c in cases[:3]}, store=store,
                             started=started, opt=SimpleNamespace(refresh=False), was_interrupted=False,
                             stopped_early="stopping after 1 failures")
    holder._interrupted_reason = lambda c: BenchSession._interrupted_reason(holder, c)

    def got():
        return [(r["case_id"], r["status"], r["reason"], r["metrics"]) for r in BenchSession.interrupted_rows(holder)]

    how = "pytest stopped the run (stopping after 1 failures)"
    assert got() == [
        (specs[50].case_id, "not reached", f"{how} after 3 of its answers were stored; a run without -x / --maxfail "
                                           "/ --sw resumes it from there", None),
        (specs[100].case_id, "not reached", f"not reached: {how}; a run without -x / --maxfail / --sw runs it", None)]
    holder.was_interrupted = True
    assert got() == [
        (specs[50].case_id, "interrupted", "interrupted (Ctrl-C) after 3 of its answers were stored; the same command "
                                           "resumes it from there", None),
        (specs[100].case_id, "interrupted", "not reached before the run was interrupted (Ctrl-C); the same command "
                                            "runs it", None)]
    holder.opt.refresh = True
    assert got()[0][2] == ("interrupted (Ctrl-C) after 3 of its answers were stored; a rerun without --refresh "
                           "resumes from them, with --refresh it starts over")
    holder.started = time.time() + 60  # rows stored before this run: none of them is this run's
    assert got()[0][2] == "not reached before the run was interrupted (Ctrl-C); the same command runs it"

    def unreadable(key, since):
        raise sqlite3.DatabaseError("file is not a database")

    holder.store, holder.started = SimpleNamespace(count=unreadable), started
    assert got()[0][2] == "not reached before the run was interrupted (Ctrl-C); the same command runs it"
