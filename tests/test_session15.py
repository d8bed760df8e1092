"""Session 15: stand-ins, the settings line, label names in rows, `report --out`, a baseline that asked
other questions, a server URL's query string."""
from __future__ import annotations

import pytest

from vlmcls import metrics, report
from vlmcls.catalog import ModelEntry
from vlmcls.plan import CaseSpec
from vlmcls.runner import CaseResult
from vlmcls.settings import BackendSettings

from tests.test_metrics_report import random_predictions


def _row(name: str, constrained: bool, resolver: str = "study", seed: int = 0) -> dict:
    entry = ModelEntry(name=name, backend="echo", weights="smoke:echo", smoke=True)
    spec = CaseSpec(model=entry, ways=20, settings=BackendSettings(constrained=constrained), resolver=resolver)
    preds = random_predictions(seed=seed)
    return report.case_row(CaseResult(spec, preds, metrics.compute(preds), images_per_s=1.0),
                           status="passed", threshold=0.0)


def _settings_line(rows) -> str:
    text = report.render_markdown(rows)
    return next(line for line in text.splitlines() if line.startswith("dataset "))


def test_the_settings_line_names_the_constrained_models_and_no_other():
    line = _settings_line([_row("free", False), _row("tied", True, seed=1), _row("also", True, seed=2)])
    assert "resolver `study` (constrained decoding for tied, also)," in line
    assert "mixed settings" not in line and "free" not in line and line.count("constrained decoding") == 1
    assert line.startswith("dataset `sample`, seed 0, prompt") and line.endswith("layout `image-first`")


def test_without_constrained_models_or_under_resolver_constrained_the_line_is_as_before():
    assert "constrained decoding" not in _settings_line([_row("free", False)])
    line = _settings_line([_row("c", True, resolver="constrained")])
    assert "resolver `constrained`," in line and "constrained decoding" not in line


def _named(name: str, digest: str, seed: int = 0) -> dict:
    return {**_row(name, False, seed=seed), "label_names": digest or None}


def test_the_settings_line_says_the_label_names_only_where_a_row_has_them():
    assert "label names" not in _settings_line([_named("a", ""), _named("b", "", seed=1)])
    line = _settings_line([_named("a", "0123abcd"), _named("b", "0123abcd", seed=1)])
    assert "label names `0123abcd`, resolver" in line and "mixed settings" not in line
    line = _settings_line([_named("a", "0123abcd"), _named("b", "", seed=1)])
    assert "label names `0123abcd`, `None`" in line and line.endswith("(mixed settings: see results.json)")
    old = {k: v for k, v in _named("b", "", seed=1).items() if k != "label_names"}  # a row from before the key
    line = _settings_line([_named("a", "0123abcd"), old])
    assert "label names `0123abcd`, resolver" in line and "mixed settings" not in line


def test_a_row_names_its_spec_label_digest_or_none():
    from dataclasses import replace

    row = _row("x", False)
    assert row["label_names"] is None
    entry = ModelEntry(name="y", backend="echo", weights="smoke:echo", smoke=True)
    spec = replace(CaseSpec(model=entry, ways=20, settings=BackendSettings()), label_digest="feedface")
    preds = random_predictions()
    named = report.case_row(CaseResult(spec, preds, metrics.compute(preds), images_per_s=1.0), status="passed",
                             threshold=0.0)
    assert named["label_names"] == "feedface"


def test_small_classes_and_empty_folders_are_quoted_so_a_comma_in_a_name_reads_as_one_name():
    from vlmcls.report.dataset import dataset_section

    d = {"name": "mine", "classes": 3, "label_set": 3, "images": 12, "per_class": [1, 10],
         "small_classes": [["crane, heron", 1], ["fox (red)", 1]], "ignored_folders": ["misc, old"]}
    text = dataset_section({"dataset": d}, [])
    assert 'steps of 1/n): "crane, heron" (1), "fox (red)" (1); ' in text
    assert 'left out of the classes: "misc, old"\n' in text


# ---------------------------------------------------------------------- `vlmcls report --out`
def test_report_out_never_overwrites_the_baseline_or_a_pytest_run_and_replaces_an_earlier_render(tmp_path, capsys):
    import json

    from vlmcls.__main__ import main
    from tests.test_report_cli import case, preds, write_run

    main_run = write_run(tmp_path / "main", case("m", 20, preds(20)), case("only-main", 20, preds(5)))
    pr = write_run(tmp_path / "pr", case("m", 20, preds(40, wrong=2)))
    before = (main_run / "results.json").read_text()
    # the baseline, and a pytest run's own folder (its answers exist nowhere else): refused, untouched
    assert main(["report", str(pr), "--baseline", str(main_run), "--out", str(main_run), "--no-plots"]) == 2
    assert "is the baseline run; it would be overwritten" in capsys.readouterr().err
    assert main(["report", str(pr), "--out", str(main_run), "--no-plots"]) == 2
    assert "holds a pytest run (main) whose answers are nowhere else" in capsys.readouterr().err
    assert (main_run / "results.json").read_text() == before
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    assert main(["report", str(pr), "--out", str(tmp_path / "mine"), "--no-plots"]) == 2
    assert "holds no vlmcls run" in capsys.readouterr().err
    # an earlier render is replaced whole: the case only it had leaves no samples file behind
    out = tmp_path / "merged"
    assert main(["report", str(main_run), "--out", str(out), "--no-plots"]) == 0
    assert (out / "samples" / "only-main-20way.jsonl").is_file()
    (out / "index.md").write_text("my page")  # the user's own file in the folder --out names
    (out / "plots").mkdir()
    (out / "plots" / "confusions.png").write_bytes(b"old")
    assert main(["report", str(pr), "--out", str(out), "--no-plots"]) == 0
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["m-20way.jsonl"]
    assert (out / "index.md").read_text() == "my page" and not (out / "plots").exists()
    assert [c["case_id"] for c in json.loads((out / "results.json").read_text())["cases"]] == ["m-20way"]
    # re-rendering a run in place, --out naming it, stays allowed
    assert main(["report", str(pr), "--out", str(pr), "--no-plots"]) == 0


def test_merging_runs_of_other_label_modes_keeps_clip_per_mode_but_a_classifier_once(tmp_path, capsys):
    """CLIP reads the label names (its text side): a --labels raw run and a unique run of it are two rows,
    as for a VLM. A classifier reads no name: the later run replaces the earlier, and says so."""
    import json

    from vlmcls.__main__ import main
    from tests.test_report_cli import _row, preds, write_run

    raw = write_run(tmp_path / "a", _row("v", preds(30, wrong=3), labels_mode="raw"),
                    _row("c", preds(30, wrong=6), backend="clip", labels_mode="raw"),
                    _row("r", preds(30, wrong=9), backend="classifier", labels_mode="raw"))
    unique = write_run(tmp_path / "b", _row("v", preds(30, wrong=4), labels_mode="unique"),
                       _row("c", preds(30, wrong=7), backend="clip", labels_mode="unique"),
                       _row("r", preds(30, wrong=9), backend="classifier", labels_mode="unique"))
    assert main(["report", str(raw), str(unique), "--out", str(tmp_path / "out"), "--no-plots"]) == 0
    cases = {c["case_id"]: c for c in json.loads((tmp_path / "out" / "results.json").read_text())["cases"]}
    assert set(cases) == {"v-20way-raw", "v-20way-unique", "c-20way-raw", "c-20way-unique", "r-20way"}
    assert (cases["c-20way-raw"]["metrics"]["accuracy"], cases["c-20way-unique"]["metrics"]["accuracy"]) == (0.8, 23 / 30)
    assert cases["c-20way-raw"]["tag"] == "c [raw]" and cases["r-20way"]["labels"] == "unique"
    out = tmp_path / "out" / "samples"
    assert (out / "c-20way-raw.jsonl").read_text() == (raw / "samples" / "c-20way.jsonl").read_text()


# ---------------------------------------------------------------------- a baseline that asked other questions
def _bench(tmp_path, *args):
    import subprocess
    import sys
    from pathlib import Path

    bench = tmp_path / "bench"
    if not bench.is_dir():
        bench.mkdir()
        (bench / "test_classify.py").write_text(
            (Path(__file__).resolve().parents[1] / "bench" / "test_classify.py").read_text())
    return subprocess.run([sys.executable, "-m", "pytest", "bench", "-k", "smoke-echo", "--ways", "20", "-p",
                           "no:cacheprovider", *args], cwd=tmp_path, capture_output=True, text=True, timeout=600)


def test_a_baseline_run_with_another_seed_pairs_nothing_and_strict_cases_fails_it(tmp_path):
    """Another seed draws other candidate sets (and another subset): the images both runs scored were asked
    other questions, so McNemar has nothing to pair. The case is named in the warning, the row says why,
    and --strict-cases fails it (it used to report a comparison on the one image both subsets shared)."""
    import json

    assert _bench(tmp_path, "--seed", "1", "--samples", "60", "--run-id", "main").returncode == 0
    loose = _bench(tmp_path, "--seed", "2", "--samples", "60", "--run-id", "pr", "--baseline", "reports/main")
    assert loose.returncode == 0, loose.stdout[-3000:]
    (row,) = json.loads((tmp_path / "reports" / "pr" / "results.json").read_text())["cases"]
    assert row["baseline"]["compared"] is False
    assert "asked with another label or candidate set (another seed" in row["baseline"]["why"]
    assert "gave nothing to compare" in loose.stdout + loose.stderr
    assert any("seed (1 vs 2)" in n for n in row["notes"])
    strict = _bench(tmp_path, "--seed", "2", "--samples", "60", "--run-id", "pr2", "--baseline", "reports/main",
                    "--strict-cases")
    assert strict.returncode == 1 and "--baseline gave nothing to compare" in strict.stdout
    # the same seed pairs every image (the echo model answers alike): compared, no difference
    same = _bench(tmp_path, "--seed", "1", "--samples", "60", "--run-id", "again", "--baseline", "reports/main")
    (row,) = json.loads((tmp_path / "reports" / "again" / "results.json").read_text())["cases"]
    assert same.returncode == 0 and row["baseline"]["compared"] is True and row["baseline"]["paired_n"] == 60


def test_a_baseline_given_as_a_run_id_alone_gets_a_hint(tmp_path):
    assert _bench(tmp_path, "--samples", "8", "--run-id", "main").returncode == 0
    out = _bench(tmp_path, "--samples", "8", "--baseline", "main")
    assert out.returncode == 4
    assert ("--baseline: run folder main not found (a run id alone is not found: did you mean --baseline "
            "reports/main?)") in out.stderr
    elsewhere = _bench(tmp_path, "--samples", "8", "--baseline", "nowhere")
    assert "run folder nowhere not found\n" in elsewhere.stderr  # no run of that id: no hint


def test_summary_refuses_a_catalog_it_would_not_read(tmp_path, capsys):
    from vlmcls.__main__ import main
    from tests.test_report_cli import case, preds, write_run

    run = write_run(tmp_path / "r", case("m", 20, preds(10)))
    assert main(["report", str(run), "--summary", "--catalog", str(tmp_path / "nope.toml")]) == 2
    assert "--summary shows no study rows, so it reads no catalog: drop --catalog" in capsys.readouterr().err
    assert main(["report", str(run), "--summary"]) == 0


def test_a_merge_does_not_call_a_row_from_before_label_names_different():
    from vlmcls.__main__ import _other_settings

    new = {**_named("m", "feedface"), "backend": "echo"}
    old = {k: v for k, v in new.items() if k != "label_names"}
    assert _other_settings(old, new) == ""
    assert "label_names None → feedface" in _other_settings({**old, "label_names": None}, new)


# ---------------------------------------------------------------------- a server URL with a query string
@pytest.mark.parametrize("backend", ["openai-compatible", "anthropic"])
def test_a_base_urls_query_string_goes_with_every_request(monkeypatch, backend):
    """`?api-version=...` (Azure-style gateways) or a gateway's `?token=...`: left in the base URL the SDK
    put the path after it and every request got a 404; now each request carries it after the path."""
    pytest.importorskip("openai" if backend != "anthropic" else "anthropic")
    from vlmcls.backends import api
    from vlmcls.catalog import ModelEntry
    from vlmcls.smoke.api_server import ApiServer
    from tests.test_standins import LABELS, _query

    for name in ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(api.COMPAT_KEY_ENV, "k-session15")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-session15")
    entry = ModelEntry(name="served", backend=backend, weights="my-org/my-vlm-7b")
    with ApiServer() as srv:
        if backend == "anthropic":  # its URL comes from the SDK's variable (--base-url is openai-compatible's)
            monkeypatch.setenv("ANTHROPIC_BASE_URL", f"{srv.url}?api-version=2024-10-21&x=")
            settings = BackendSettings(max_retries=0, timeout_s=5.0)
        else:
            settings = BackendSettings(base_url=f"{srv.url}/v1?api-version=2024-10-21&x=", max_retries=0, timeout_s=5.0)
        loaded = api.load(entry, settings, LABELS)
        try:
            loaded.begin_case()
            answers = loaded.answer([_query(0), _query(1)])
        finally:
            loaded.close()
        paths = [r.path for r in srv.records]
    assert all(a.error is None and a.text for a in answers), answers
    path = "/v1/chat/completions" if backend == "openai-compatible" else "/v1/messages"
    assert paths == [f"{path}?api-version=2024-10-21&x="] * 2


def test_split_query_keeps_a_url_without_one_whole():
    from vlmcls.backends.api import split_query

    assert split_query("http://h:8000/v1") == ("http://h:8000/v1", {})
    assert split_query(None) == (None, {})
    assert split_query("https://u:p@h/v1?a=1&b=two") == ("https://u:p@h/v1", {"a": "1", "b": "two"})


# ---------------------------------------------------------------------- stored answers read by this version's rules
def _stored_case(tmp_path, resolver):
    """(a maker of the echo case's runner on one store, its 6 samples, the store)."""
    from vlmcls import backends
    from vlmcls.runner import CaseRunner, CaseSpec
    from vlmcls.store import Store
    from tests.test_runner import ECHO, LABELS, samples

    store = Store(tmp_path / "s.sqlite")
    settings = BackendSettings(batch_size=4)
    make = lambda: CaseRunner(CaseSpec(model=ECHO, ways=20, settings=settings, resolver=resolver.mode), LABELS,  # noqa: E731
                              backends.load(ECHO, settings, LABELS), resolver, store)
    return make, samples(6), store


def _plant(store, key, row, **fields):
    from dataclasses import replace

    store.rewrite(key, [replace(row, **fields)])


def test_stored_answers_are_resolved_by_this_versions_rules_and_the_store_learns_it(tmp_path):
    """An earlier version read "It can't be a X." as naming X (a contracted negation it did not know)
    and missed a plain "**X**": the rows it stored are scored as this version reads them, the note
    says how many, the store holds the new reading, and nothing is asked of the model again."""
    from vlmcls.resolve import Resolver

    labels = imagenet()
    make, data, store = _stored_case(tmp_path, Resolver("exact", labels))
    first = make().run(data)
    key = make().key
    a, b = first.predictions[0], first.predictions[1]
    name_a, name_b = labels.names[a.true_id], labels.names[b.true_id]
    _plant(store, key, a, answer=f"It can't be a {name_a}.", pred_id=a.true_id, pred_label=name_a, stage="match")
    _plant(store, key, b, answer=f"**{name_b}**", pred_id=None, pred_label=None, stage="unresolved")
    again = make().run(data)
    assert again.resumed == 6 and again.stage_seconds.get("nli", 0) == 0
    got = {p.sample_id: p for p in again.predictions}
    assert (got[a.sample_id].pred_id, got[a.sample_id].stage) == (None, "unresolved")
    assert (got[b.sample_id].pred_id, got[b.sample_id].stage) == (b.true_id, "match")
    assert "2 stored answers resolved otherwise by this version's resolver" in " ".join(again.notes)
    stored = store.get(key)
    assert stored[a.sample_id].stage == "unresolved" and stored[b.sample_id].pred_id == b.true_id
    third = make().run(data)  # nothing left to re-read: no note, the same figures
    assert not any("resolved otherwise" in n for n in third.notes)
    assert third.metrics.accuracy == again.metrics.accuracy


def test_a_stored_nli_verdict_stands_and_only_an_answer_newly_left_to_the_nli_is_asked(tmp_path, smoke_model):
    """study: an answer the rules still leave to the NLI keeps its stored NLI verdict (no model call);
    one the old rules matched and these do not ("It can't be a X.") goes to the NLI now, once."""
    from vlmcls.resolve import Resolver

    smoke_model("bart-mnli")
    labels = imagenet()
    resolver = Resolver("study", labels, nli_model="smoke:bart-mnli", device="cpu")
    make, data, store = _stored_case(tmp_path, resolver)
    first = make().run(data)
    key = make().key
    a, b = first.predictions[0], first.predictions[1]
    other = next(c for c in labels.names if c not in a.candidates)
    # a stored NLI verdict on an answer naming no candidate: kept as it is, even a "wrong" one
    _plant(store, key, a, answer=f"Looks like a {other}.", pred_id=a.true_id, pred_label=labels.names[a.true_id],
           stage="nli")
    _plant(store, key, b, answer=f"It can't be a {labels.names[b.true_id]}.", pred_id=b.true_id,
           pred_label=labels.names[b.true_id], stage="match")
    calls = []
    handle = resolver.pipeline().model.register_forward_hook(lambda *args: calls.append(1))
    try:
        again = make().run(data)
    finally:
        handle.remove()
    got = {p.sample_id: p for p in again.predictions}
    assert (got[a.sample_id].pred_id, got[a.sample_id].stage) == (a.true_id, "nli")
    assert got[b.sample_id].stage == "nli" and got[b.sample_id].pred_id in {c for c in range(len(labels.names))
                                                                            if labels.names[c] in b.candidates}
    assert len(calls) >= 1 and again.resumed == 6


def imagenet():
    from tests.test_runner import LABELS

    return LABELS


# ---------------------------------------------------------------------- the gate, mutation run 15's survivors
def _result(preds, **kw):
    from vlmcls.runner import CaseSpec as Spec

    entry = kw.pop("entry", ModelEntry(name="served", backend="openai-compatible", weights="org/m", thresholds={20: 0.9}))
    return CaseResult(Spec(model=entry, ways=20, settings=BackendSettings()), preds, metrics.compute(preds),
                      images_per_s=1.0, **kw)


def test_a_stand_in_case_is_judged_on_plumbing_with_threshold_zero():
    from vlmcls import gate
    from tests.test_stats_outside import pred

    right = [pred(i, 1, 1) for i in range(28)] + [pred(i, 1, 2) for i in range(28, 40)]  # 0.7, CI to 0.83 < 0.9
    real = gate.judge(_result(right))
    assert real.failed and real.threshold == 0.9
    stub = gate.judge(_result(right, stand_in=True))
    assert (stub.status, stub.threshold, stub.reasons) == ("passed", 0.0, ())
    broken = gate.judge(_result(right + [pred(40, 1, None, error="HTTP 500")], stand_in=True))
    assert broken.failed and "smoke plumbing check: 1 error row" in broken.reason


def test_the_gate_passes_an_upper_bound_equal_to_the_threshold_and_keeps_every_reason():
    from vlmcls import gate
    from tests.test_stats_outside import pred

    wrong = [pred(i, 0, 1) for i in range(40)]
    result = _result(wrong)
    hi = result.metrics.accuracy_ci[1]
    assert gate.failures(result, hi) == [] and len(gate.failures(result, hi + 1e-12)) == 1  # "below", not "at"
    # the accuracy gate and a baseline both fail it: both reasons are kept, in that order
    base = gate.Baseline([pred(i, 0, 0) for i in range(40)], {"case_id": result.spec.case_id, "metrics": {"n": 40}})
    verdict = gate.judge(result, base, threshold=0.5)
    assert len(verdict.reasons) == 2 and "below the gate 0.5" in verdict.reasons[0]
    assert "significantly worse" in verdict.reasons[1]


def test_every_sample_failed_quotes_the_first_error_to_200_characters():
    from vlmcls import gate
    from tests.test_stats_outside import pred

    long = "E" * 199 + "F" + "G" * 100
    (reason,) = gate.failures(_result([pred(0, 1, None, error=long), pred(1, 1, None, error="second")]), None)
    assert reason.endswith("e.g. " + long[:200])


def test_clearing_a_run_folder_that_lacks_some_of_the_files_a_run_writes(tmp_path):
    from vlmcls.report.writer import clear_run_folder

    (tmp_path / "results.json").write_text("{}")
    (tmp_path / "samples").mkdir()
    (tmp_path / "keep.md").write_text("mine")
    clear_run_folder(tmp_path)  # no report.md, summary.md or plots/: nothing to remove there, no error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.md"]


def test_pairing_on_the_same_question_counts_and_says_what_did_not_pair():
    """stats.pair: an image both runs scored with another candidate set is not paired, counted apart from
    the images only one run has; the summary says so in each case, and says nothing of it when none."""
    from vlmcls.report.stats import pair
    from vlmcls.types import Prediction

    def row(i, cands=("a", "b"), right=True):
        return Prediction(f"s{i}", 0, "a", cands, "x", 0 if right else 1, "a" if right else "b", "match")

    now = [row(0), row(1), row(2, ("a", "c")), row(3)]
    before = [row(0, right=False), row(1), row(2), row(9)]
    p = pair(now, before)
    assert (p.n, p.b, p.c, p.only_current, p.only_baseline, p.other_question) == (2, 0, 1, 1, 1, 1)
    assert p.summary().endswith("; 1 samples only in this run, 1 only in the baseline; 1 images in both asked "
                                "with another label or candidate set (another seed, label mode, label names or "
                                "dataset), not paired")
    none = pair([row(2, ("a", "c"))], [row(2)])
    assert none.n == 0 and none.summary() == (
        "no sample in common with the baseline (0 only in this run, 0 only in the baseline; 1 images in both asked "
        "with another label or candidate set (another seed, label mode, label names or dataset)): cannot compare")
    plain = pair([row(0), row(5)], [row(0)])
    assert plain.other_question == 0 and plain.summary().endswith("; 1 samples only in this run, 0 only in the baseline")
    assert pair([row(0)], [row(0)]).summary().endswith(": no significant difference")
    assert pair([row(1)], [row(7)]).summary() == ("no sample in common with the baseline (1 only in this run, "
                                                  "1 only in the baseline): cannot compare")
    # an order change is the same question: the candidates compare as a set
    assert pair([row(0, ("b", "a"))], [row(0)]).n == 1


def test_report_out_names_a_file_refuses_and_a_merged_folder_is_replaced(tmp_path, capsys):
    from vlmcls.__main__ import main
    from tests.test_report_cli import case, preds, write_run

    a = write_run(tmp_path / "a", case("m", 20, preds(10)))
    b = write_run(tmp_path / "b", case("m", 20, preds(10, wrong=2)), case("k", 20, preds(4)))
    (tmp_path / "f.txt").write_text("x")
    assert main(["report", str(a), "--out", str(tmp_path / "f.txt"), "--no-plots"]) == 2
    assert f"--out {tmp_path / 'f.txt'} is a file, where the report's folder is needed" in capsys.readouterr().err
    merged = tmp_path / "merged"
    assert main(["report", str(a), str(b), "--out", str(merged), "--no-plots"]) == 0
    assert main(["report", str(a), "--out", str(merged), "--no-plots"]) == 0  # a merge's folder: replaced
    assert sorted(p.name for p in (merged / "samples").iterdir()) == ["m-20way.jsonl"]
    # a pytest run is named by its run id, whatever its folder is called
    c = write_run(tmp_path / "folder-c", case("m", 20, preds(10)), run_id="nightly-7")
    assert main(["report", str(a), "--out", str(c), "--no-plots"]) == 2
    assert "holds a pytest run (nightly-7) whose answers are nowhere else" in capsys.readouterr().err
