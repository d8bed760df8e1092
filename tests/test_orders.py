"""--orders K: each image asked in K seeded candidate orders; robustness and position-bias statistics."""
from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from dataclasses import asdict

import pytest
from PIL import Image

from vlmcls import backends, orders, report
from vlmcls.candidates import candidate_set, order_permutation, order_permutations, reorder
from vlmcls.catalog import ModelEntry
from vlmcls.labels import imagenet_labelset
from vlmcls.resolve import Resolver
from vlmcls.runner import CaseRunner, CaseSpec
from vlmcls.settings import BackendSettings
from vlmcls.smoke.api_server import ApiServer, first_listed
from vlmcls.store import Store, row_key
from vlmcls.types import LabelSet, Sample

IMAGENET = imagenet_labelset()
TEN = LabelSet(names=tuple(f"class{i}" for i in range(10)), synonyms=tuple((f"class{i}",) for i in range(10)))
ECHO = ModelEntry(name="echo", backend="echo", weights="smoke:echo", smoke=True)


def jpeg(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), color).save(buf, "JPEG")
    return buf.getvalue()


def samples(n: int, n_classes: int = 1000) -> list[Sample]:
    return [Sample(f"s{i}", (i * 37) % n_classes, jpeg((i * 40 % 255, 80, 160))) for i in range(n)]


def runner(entry=ECHO, labels=IMAGENET, ways=20, settings=BackendSettings(batch_size=4), store=None, **spec) -> CaseRunner:
    case = CaseSpec(model=entry, ways=ways, settings=settings, **spec)
    return CaseRunner(case, labels, backends.load(entry, settings, labels), Resolver("exact", labels), store)


def without_latency(preds) -> list[dict]:
    return [{k: v for k, v in asdict(p).items() if k != "latency_s"} for p in preds]


# ---------------------------------------------------------------------------------- permutations
@pytest.mark.parametrize("ways, k", [(2, 2), (5, 3), (5, 5), (20, 7), (1000, 10)])
def test_orders_are_distinct_seeded_and_start_with_todays_list(ways, k):
    perms = order_permutations("img-1", ways, k, seed=3)
    assert perms[0] == tuple(range(ways)) and len(set(perms)) == k
    assert all(sorted(p) == list(range(ways)) for p in perms)
    assert perms == order_permutations("img-1", ways, k, seed=3)
    if ways > 2:  # 2 candidates have one other order only
        assert perms[1:] != order_permutations("img-1", ways, k, seed=4)[1:]
        assert perms[1:] != order_permutations("img-2", ways, k, seed=3)[1:]
    # no candidate at the same position in two orders (a Latin rectangle, since k <= ways)
    assert all(len({p[j] for p in perms}) == k for j in range(ways))


def test_a_larger_k_extends_a_smaller_one_and_stops_repeating_only_when_n_factorial_runs_out():
    assert order_permutations("x", 30, 4, 0) == order_permutations("x", 30, 9, 0)[:4]
    assert len(set(order_permutations("x", 3, 6, 0))) == math.factorial(3)  # every permutation once
    two = order_permutations("x", 2, 4, 0)  # 2! = 2 < 4: repeats are unavoidable, and do not hang
    assert set(two) == {(0, 1), (1, 0)} and two[:2] == [(0, 1), (1, 0)]


def test_orders_are_stable_across_processes():
    code = ("import json; from vlmcls.candidates import order_permutations as o; "
            "print(json.dumps([o(f's{i}', w, 4, 7) for i in range(3) for w in (3, 20)]))")
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")]
    here = [order_permutations(f"s{i}", w, 4, 7) for i in range(3) for w in (3, 20)]
    assert json.loads(outs[0]) == json.loads(outs[1]) == [[list(p) for p in ps] for ps in here]


def test_reorder_keeps_the_candidate_set():
    cs = candidate_set("s1", 5, 20, 1000, 0)
    moved = reorder(cs, order_permutation("s1", 20, 2, 0))
    assert moved.class_ids != cs.class_ids and sorted(moved.class_ids) == sorted(cs.class_ids)
    assert (moved.true_id, moved.ways, moved.sample_id) == (cs.true_id, cs.ways, cs.sample_id)


# ---------------------------------------------------------------------------------- the runner
def test_one_order_gives_todays_rows_and_store_keys(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    data = samples(10)
    result = runner(store=store).run(data)
    assert [p.sample_id for p in result.predictions] == [s.sample_id for s in data]
    for s, p in zip(data, result.predictions):
        assert p.candidates == candidate_set(s.sample_id, s.label, 20, 1000, 0).labels(IMAGENET) and p.order == 0
    assert sorted(store.get(runner().key)) == sorted(s.sample_id for s in data) and result.order_rows == []
    assert runner(orders=1).run(data).predictions == runner().run(data).predictions


def test_k_orders_ask_each_image_k_times_and_order_zero_is_the_k1_run(tmp_path):
    data = samples(8)
    one, three = runner().run(data), runner(orders=3).run(data)
    assert runner(orders=3).key == runner().key  # K is not a case setting: rows carry the order
    assert without_latency(three.predictions) == without_latency(one.predictions)
    assert three.metrics.accuracy == one.metrics.accuracy and len(three.order_rows) == 24
    by = {(p.sample_id, p.order): p for p in three.order_rows}
    for s in data:
        lists = [by[(s.sample_id, k)].candidates for k in range(3)]
        assert len(set(lists)) == 3 and len({frozenset(c) for c in lists}) == 1


def test_a_k3_run_resumes_the_k1_rows_and_asks_only_the_new_orders(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    data = samples(6)
    with ApiServer() as srv:
        entry, settings = _served(srv)
        first = runner(entry, store=store, settings=settings).run(data)
        asked = len(srv.records)
        again = runner(entry, store=store, settings=settings, orders=3).run(data)
        assert asked == 6 and len(srv.records) - asked == 12 and again.resumed == 6
        assert again.predictions == first.predictions  # order 0 straight from the store
        rerun = runner(entry, store=store, settings=settings, orders=3).run(data)
        assert len(srv.records) == 18 and rerun.resumed == 18 and rerun.order_rows == again.order_rows
    keys = store.get(runner(entry, settings=settings).key)
    assert sorted(keys) == sorted(row_key(s.sample_id, k) for s in data for k in range(3))


# ---------------------------------------------------------------------------------- statistics
def _row(sid, order, cands, true, pred):
    names = "abcd"
    return {"sample_id": sid, "order": order, "candidates": list(cands), "true_label": true, "true_id": names.index(true),
            "pred_label": pred, "pred_id": None if pred is None else names.index(pred)}


FIXTURE = [
    _row("s1", 0, "abcd", "a", "a"), _row("s1", 1, "badc", "a", "a"),
    _row("s2", 0, "bcda", "b", "c"), _row("s2", 1, "dbac", "b", "d"),
    _row("s3", 0, "acbd", "c", "c"), _row("s3", 1, "cdab", "c", None),
    _row("s4", 0, "dabc", "d", "d"),  # order 1 missing: stopped early
]


def test_statistics_equal_hand_computed_values():
    from scipy.stats import chi2

    s = orders.summary(FIXTURE, 2, 4)
    assert (s["images"], s["incomplete"]) == (3, 1)
    assert s["accuracy"] == pytest.approx([2 / 3, 1 / 3]) and s["mean"] == pytest.approx(0.5)
    assert (s["min"], s["max"]) == pytest.approx((1 / 3, 2 / 3)) and s["std"] == pytest.approx(math.sqrt(2) / 6)
    assert [s[k] for k in ("consistent", "right_all", "right_some", "right_none")] == pytest.approx([1 / 3] * 4)
    assert s["position_n"] == [3, 3, 0, 0] and s["position_accuracy"][:2] == pytest.approx([1 / 3, 2 / 3])
    assert s["position_accuracy"][2:] == [None, None]
    assert s["picked"] == [2, 3, 0, 0] and s["expected"] == [1.25] * 4
    assert s["chi2"] == pytest.approx(5.4) and s["p_test"] == "permutation" and not s["rough_test"]
    # K = 2: p by relabelling each image's positions (the same permutation of 0..3 for both its orders). The
    # picked positions are s1 (0, 1), s2 (1, 0), s3 (1, -): 12 * 12 * 4 relabellings, equally likely; those at
    # or above the observed statistic (counts [2, 3, 0, 0] in some order of the bins) are those putting all five
    # picks on two positions (3 on the position of s3's pick): s2's pair equal to s1's as a set (2 of 12),
    # s3's pick on one of the pair (2 of 4) -- 1/6 * 1/2 = 1/12 of them; 1,999 draws give that within 0.03
    assert s["p_value"] == pytest.approx(1 / 12, abs=0.03) and s["p_value"] != pytest.approx(chi2.sf(5.4, 3), abs=0.03)
    # one order only: the chi-square table's p, as before
    one = orders.summary([r for r in FIXTURE if r["order"] == 0], 1, 4)
    assert one["p_test"] == "chi-square" and one["p_value"] == chi2.sf(one["chi2"], 3) and one["rough_test"]


def test_deciles_and_ambiguous_positions():
    assert orders.bin_sizes(25) == [3, 2] * 5 and orders.bin_sizes(4) == [1] * 4 and sum(orders.bin_sizes(1000)) == 1000
    assert [orders.bin_of(p, 20) for p in (0, 1, 2, 19)] == [0, 0, 1, 9]
    assert orders.position_edges([3, 2]) == ["1–3", "4–5"] and orders.position_edges([1, 1]) == ["1", "2"]
    # raw (study) labels: two classes named "crane" in one list: the position would be a guess
    assert orders.position({"candidates": ["crane", "x", "crane"]}, "crane") is None
    assert orders.position({"candidates": ["crane", "x", "crane"]}, "x") == 1


def test_first_listed_api_shows_maximal_position_bias_and_zero_consistency():
    data = samples(12, n_classes=10)
    with ApiServer(answer=first_listed) as srv:
        entry, settings = _served(srv)
        result = runner(entry, TEN, ways=10, settings=settings, orders=3).run(data)
    s = orders.summary(result.order_rows, 3, 10)
    assert s["images"] == 12 and s["consistent"] == 0 and s["right_all"] == 0
    assert s["picked"] == [36] + [0] * 9 and s["p_value"] == 1 / (1 + orders.PERMUTATION_DRAWS)  # no draw reaches it
    assert s["position_accuracy"][0] == 1 and all(a in (0, None) for a in s["position_accuracy"][1:])
    first = [sum(p.candidates[0] == p.true_label for p in result.order_rows if p.order == k) / 12 for k in range(3)]
    assert s["accuracy"] == pytest.approx(first)
    text = "\n".join(report.order_section([{"case_id": "first-10way", "backend": "openai-compatible", "orders": s}]))
    assert "## Candidate order" in text and "in none" in text and "cannot change" not in text
    assert (f"Picked positions against uniform: chi-square {s['chi2']:.2f}, p ≤ 0.0005 (none of 1,999 relabellings "
            "reached it), from a permutation test: 1,999 seeded relabellings of each image's positions, one for all its 3 "
            "orders.") in text


def test_the_position_line_names_the_test_that_gave_its_p():
    s = orders.summary(FIXTURE, 2, 4)
    line = report.order_section([{"case_id": "c", "orders": s}])
    verdict = next(l for l in line if l.startswith("Picked positions"))
    assert verdict.startswith(f"Picked positions against uniform: chi-square 5.40, p = {s['p_value']:.3g}, from a "
                              "permutation test") and "degrees of freedom" not in verdict
    assert "the chi-square table's p-value would be too large" in verdict and "approximate" not in verdict
    # a row saved before the permutation test (K = 2, the chi-square table's p): shown, and said to be too large
    old = {k: v for k, v in s.items() if k not in ("p_test", "p_draws")} | {"p_value": 0.14, "rough_test": True}
    verdict = next(l for l in report.order_section([{"case_id": "c", "orders": old}]) if l.startswith("Picked"))
    assert verdict.startswith("Picked positions against uniform: chi-square 5.40, 3 degrees of freedom, p = 0.14 (the "
                              "chi-square table's, saved by an older vlmcls") and "too large" in verdict


def test_max_cost_and_resume_with_k_orders(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    data = samples(30)
    with ApiServer() as srv:
        entry, settings = _served(srv, price=(1000.0, 1000.0))
        cut = runner(entry, store=store, settings=settings, orders=3, max_cost=0.5).run(data)
        spent = sum(p.cost_usd for p in cut.order_rows)
        assert "stopped by --max-cost 0.5" in cut.stopped and 0 < spent <= 0.5 + 1e-9
        assert len(srv.records) == len(cut.order_rows) < 90
        assert orders.summary(cut.order_rows, 3, 20)["incomplete"] <= 1  # orders of one image side by side
        assert cut.not_run == 30 - len(cut.predictions)
        done = runner(entry, store=store, settings=settings, orders=3).run(data)
        assert done.resumed == len(cut.order_rows) and len(srv.records) == 90 and len(done.order_rows) == 90


def _served(srv: ApiServer, price=None):
    entry = ModelEntry(name="served", backend="openai-compatible", weights="served-model", price=price)
    return entry, BackendSettings(base_url=f"{srv.url}/v1", concurrency=4, max_retries=0, timeout_s=10.0)


# ---------------------------------------------------------------------------------- direct scorers
def test_a_direct_scorer_answers_the_same_in_every_order(smoke_model):
    pytest.importorskip("torch")
    smoke_model("clip")
    entry = ModelEntry(name="smoke-clip", backend="clip", weights="smoke:clip", smoke=True)
    settings = BackendSettings(device="cpu", batch_size=8)
    data = [Sample(f"c{i}", (i * 91) % 1000, jpeg((i * 50 % 255, (i * 90) % 255, 30 + i))) for i in range(6)]
    result = runner(entry, settings=settings, orders=4).run(data)
    by = {(p.sample_id, p.order): p for p in result.order_rows}
    for s in data:
        rows = [by[(s.sample_id, k)] for k in range(4)]
        assert len({r.candidates for r in rows}) == 4 and len({r.pred_id for r in rows}) == 1
    s = orders.summary(result.order_rows, 4, 20)
    assert s["consistent"] == 1 and len(set(s["accuracy"])) == 1
    text = "\n".join(report.order_section([{"case_id": "smoke-clip-20way", "backend": "clip", "orders": s}]))
    assert "cannot change its answer" in text


# ---------------------------------------------------------------------------------- the plugin
CATALOG = """
[models.echo-a]
backend = "echo"
weights = "smoke:echo"
smoke = true
"""


def test_plugin_rows_are_the_same_serially_and_with_xdist(bench: pytest.Pytester):
    pytester = bench
    pytester.makefile(".toml", catalog=CATALOG)
    got = {}
    for name, extra in (("serial", ()), ("xdist", ("-n", "2"))):
        res = pytester.runpytest_subprocess("bench", "--catalog", "catalog.toml", "-p", "no:cacheprovider", "--ways", "20,50",
                                            "--samples", "12", "--orders", "3", "--resolver", "exact", "--refresh",
                                            "--report-dir", name, *extra)
        res.assert_outcomes(passed=2)
        (run_dir,) = [d for d in (pytester.path / name).iterdir() if d.is_dir()]
        rows = {r["case_id"]: r for r in json.loads((run_dir / "results.json").read_text())["cases"]}
        lines = {p.name: [{k: v for k, v in json.loads(l).items() if k != "latency_s"} for l in p.read_text().splitlines()]
                 for p in sorted((run_dir / "samples").glob("*.orders.jsonl"))}
        got[name] = ({c: r["orders"] for c, r in rows.items()}, lines)
        assert "## Candidate order" in (run_dir / "report.md").read_text()
        assert (run_dir / "plots" / "orders" / "echo-a-20way-picked-position.png").is_file()
    assert got["serial"] == got["xdist"] and len(got["serial"][1]["echo-a-50way.orders.jsonl"]) == 36


def test_labels_first_at_every_class_gives_no_position_test():
    """Every image asked with the same K lists (labels-first at N = all classes): a position is always the
    same class, so the picks cannot say position from class; the report says so instead of a p-value."""
    lists = ["abcd", "badc"]
    rows = [_row(f"s{i}", k, lists[k], "abcd"[i], "a") for i in range(4) for k in range(2)]
    s = orders.summary(rows, 2, 4)
    assert s["p_value"] is None and s["p_test"] == "shared lists" and s["chi2"] is not None
    text = "\n".join(report.order_section([{"case_id": "c", "orders": s}]))
    assert "a preference for a class cannot be told from one for a position" in text
    assert orders.summary(FIXTURE, 2, 4)["p_test"] == "permutation"  # each image its own lists: tested
