"""Mutation run 13 (mutmut 3.8.1): tests for the mutants of session 12's new and changed functions that
the earlier tests left alive (README, Mutation testing). Each test pins what a user sees."""
from __future__ import annotations

import base64
import io
import logging
import sys

import pytest

from vlmcls.backends import api
from vlmcls.backends.api_protocols import OpenAIProtocol
from vlmcls.backends.servers import Pool, Server
from vlmcls.catalog import ModelEntry
from vlmcls.settings import BackendSettings

SERVED = ModelEntry(name="fleet", backend="openai-compatible", weights="served-model")
ENVS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN",
        api.COMPAT_KEY_ENV)


@pytest.fixture(autouse=True)
def no_keys(monkeypatch):
    for name in ENVS:
        monkeypatch.delenv(name, raising=False)


def logged(*records: logging.LogRecord) -> str:
    """What a log handler carrying the plugin's filter writes (pytest's --log-level / log_file handlers)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(api.LogRedactor())
    for record in records:
        handler.handle(record)
    return out.getvalue()


def record(msg, *args, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("httpx", logging.INFO, __file__, 1, msg, args, exc_info)


# ---------------------------------------------------------------------- the log filter
def test_a_log_line_shows_no_key_of_any_api_and_no_url_credentials(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", "plainAntToken42")  # no sk-, no Bearer: only the exact list masks it
    monkeypatch.setenv(api.COMPAT_KEY_ENV, "fleetkey-9911")
    line = record('HTTP Request: POST %s "HTTP/1.1 200 OK" token=%s via %s',
                  "http://ops:hunter22@gpu-box:8000/v1/chat/completions?tenant=acme", "plainAntToken42", "fleetkey-9911")
    assert logged(line) == ('INFO HTTP Request: POST http://***@gpu-box:8000/v1/chat/completions?tenant=*** '
                            '"HTTP/1.1 200 OK" token=*** via ***\n')
    assert line.args == ()  # the masked text is the whole message now: no handler formats the raw args again


def test_a_clean_log_line_keeps_its_arguments_and_a_malformed_one_is_still_handled():
    clean = record("%s answered %d requests", "gpu-box", 3)
    assert logged(clean) == "INFO gpu-box answered 3 requests\n"
    assert clean.msg == "%s answered %d requests" and clean.args == ("gpu-box", 3)
    broken = record("%d requests", "many")  # logging reports it itself: the filter must not drop the record
    assert api.LogRedactor().filter(broken) is True and broken.msg == "%d requests" and broken.args == ("many",)


def test_a_logged_traceback_is_masked_and_a_formatted_one_is_kept(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "plainOpenAiKey77")
    try:
        raise ConnectionError("refused: http://ops:hunter22@gpu-box/v1 key plainOpenAiKey77")
    except ConnectionError:
        exc = sys.exc_info()
    text = logged(record("request failed", exc_info=exc))
    assert "hunter22" not in text and "plainOpenAiKey77" not in text, text
    assert text.endswith("ConnectionError: refused: http://***@gpu-box/v1 key ***\n"), text
    done = record("request failed", exc_info=exc)
    done.exc_text = "already formatted"
    assert api.LogRedactor().filter(done) is True and done.exc_text == "already formatted"


# ---------------------------------------------------------------------- error text: what URLs carry
class Refused(Exception):
    status_code = 401


class EchoingServer:
    """A protocol whose server answers 401 quoting what it was sent (as a proxy's error page may)."""

    rank = constrained = False

    def __init__(self, echo: str) -> None:
        self.echo = echo

    def request(self, query):
        return {}

    def send(self, client, kwargs):
        raise Refused(self.echo)


def backend_for(url: str, echo: str, client=None) -> api.ApiBackend:
    settings = BackendSettings(base_url=url, max_retries=0)
    client = client or type("Client", (), {"api_key": api.NO_KEY})()
    return api.ApiBackend(SERVED, settings, Pool([Server(url, client)], 30.0, ()), EchoingServer(echo))


def test_url_secrets_are_the_password_as_written_and_decoded_its_basic_header_and_query_values():
    basic = base64.b64encode(b"us@er:p@ss").decode()
    assert api.url_secrets(["http://us%40er:p%40ss@h/v1?token=abc&x=12345"]) == ("p%40ss", "p@ss", basic, "abc", "12345")
    # a user alone is the secret (a token as user name); a password alone too; not-URLs and None carry none
    assert api.url_secrets(["http://tok-1234@h", None, "", "gpu-box?token=zzzz"]) == (
        "tok-1234", "tok-1234", base64.b64encode(b"tok-1234:").decode())
    assert api.url_secrets(["http://:pw99@h"]) == ("pw99", "pw99", base64.b64encode(b":pw99").decode())
    assert api.url_secrets(["http://gpu-box:8000/v1"]) == ()
    # a server the SDK finds itself is named "default": the URLs after it (the environment's) still count
    assert api.url_secrets(["default", None, "http://ci:envpass-3344@other/v1"])[0] == "envpass-3344"


def test_an_error_row_masks_every_credential_a_server_url_carries_longest_first(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://ci:envpass-3344@other/v1")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://ant/v1?sig=antsig-2211")
    # "wxyz-key" sorts after "abc-wxyz-key" but lies inside it: masked first, it would leave "abc-" behind
    url = "http://us%40er:abc-wxyz-key@gpu-box:8000/v1?token=wxyz-key"
    basic = base64.b64encode(b"us@er:abc-wxyz-key").decode()
    client = type("Client", (), {"api_key": "direct-key-8899", "auth_token": None})()
    echo = f"denied abc-wxyz-key {basic} wxyz-key envpass-3344 antsig-2211 direct-key-8899 with {api.NO_KEY}"
    backend = backend_for(url, echo, client)
    row = backend._answer_one(None)  # the row the runner stores (answer() then stops the case)
    assert row.error == "HTTP 401: denied *** *** *** *** *** *** with EMPTY"
    with pytest.raises(RuntimeError) as stop:  # the 401 ends the case: its reason is masked alike
        backend.answer([None])
    assert str(stop.value) == "fleet: HTTP 401: denied *** *** *** *** *** *** with EMPTY"


def test_a_server_the_sdk_finds_in_the_environment_has_its_credentials_masked(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://ci:envpass-3344@other/v1")
    backend = backend_for("default", "denied envpass-3344")  # load() names such a server "default"
    assert backend._answer_one(None).error == "HTTP 401: denied ***"


# ---------------------------------------------------------------------- the unsent-key note
def test_the_unsent_key_note_names_one_server_without_a_count_and_only_for_served_models(monkeypatch):
    monkeypatch.setenv(api.COMPAT_KEY_ENV, "sk-fleetkey1234")
    one = BackendSettings(base_url="http://ops:pw@a:8000/v1?token=qq, http://b:8000/v1")
    assert api.unsent_key(SERVED, one) == (f"{api.COMPAT_KEY_ENV} not sent to http://***@a:8000/v1?token=***: its "
                                           "user:password@ becomes HTTP Basic auth, which replaces the key's Bearer header")
    # a smoke model is answered by the loopback stand-in, an Anthropic model by its API: neither asks the servers
    assert api.unsent_key(ModelEntry(name="s", backend="openai-compatible", weights="smoke:echo"), one) is None
    assert api.unsent_key(ModelEntry(name="c", backend="anthropic", weights="claude-x"), one) is None


# ---------------------------------------------------------------------- what is stored and published
def served_case(settings: BackendSettings):
    from vlmcls.runner import CaseSpec

    return CaseSpec(model=SERVED, ways=5, settings=settings)


def test_the_store_key_and_results_row_keep_no_url_credentials_of_base_url_or_catalog_options():
    from vlmcls.report.rows import spec_fields

    case = served_case(BackendSettings(base_url="http://ops:pw@b:8000/v1?token=qq,http://a:8000/v1",
                                       extra={"base_url": "http://u:p@h/v1", "n": 3, "layout": "thesis"}))
    servers = "http://***@b:8000/v1?token=***,http://a:8000/v1"
    assert case.key_fields()["settings"] == {
        "quant": "none", "dtype": "auto", "max_new_tokens": 32, "layout": "thesis", "constrained": False,
        "max_image_side": 768, "base_url": servers, "trust_remote_code": False,
        "extra": {"base_url": "http://***@h/v1", "n": 3, "layout": "thesis"}}
    row = spec_fields(case)["settings"]  # results.json's settings: every setting, credentials masked
    assert row["base_url"] == servers and row["extra"] == {"base_url": "http://***@h/v1", "n": 3, "layout": "thesis"}
    assert "pw" not in repr(case.settings) and "u:p@" not in repr(case.settings)


def test_an_option_that_is_the_only_text_is_stored_without_its_credentials_and_a_date_as_text():
    import datetime

    from vlmcls.report.rows import spec_fields

    # a catalog's TOML may hold a date (`released = 2024-05-01`): results.json writes it as text
    case = served_case(BackendSettings(extra={"base_url": "http://u:p@h/v1", "n": 3,
                                              "released": datetime.date(2024, 5, 1)}))
    assert case.key_fields()["settings"]["extra"]["base_url"] == "http://***@h/v1"
    assert spec_fields(case)["settings"]["extra"] == {"base_url": "http://***@h/v1", "n": 3, "released": "2024-05-01"}


def test_options_without_credentials_are_stored_as_given():
    case = served_case(BackendSettings(extra={"layout": "image-first", "url": "http://h/v1", "n": 3}))
    assert case.key_fields()["settings"]["extra"] == {"layout": "thesis", "url": "http://h/v1", "n": 3}


def test_a_settings_repr_is_the_dataclass_repr_with_urls_masked():
    shown = repr(BackendSettings(base_url="http://ops:pw@h/v1?token=abc", extra={"k": 1}))
    assert shown == ("BackendSettings(quant='none', dtype='auto', device='auto', batch_size=8, batch_auto=None, "
                     "max_new_tokens=32, layout='image-first', constrained=False, rank=False, concurrency=8, "
                     "max_image_side=768, timeout_s=60.0, max_retries=4, base_url='http://***@h/v1?token=***', "
                     "trust_remote_code=False, extra={'k': 1})")


# ---------------------------------------------------------------------- report.md: a gate that cannot fail
def _gate_line(tmp_path, meta, **row_fields) -> str:
    from test_report_cli import _row, preds
    from vlmcls.report.writer import full_markdown

    row, _ = _row("m", preds(30, wrong=3), dataset="terns")
    text = full_markdown(tmp_path, [{**row, "threshold": 0.05, **row_fields}], plots=False, meta=meta)
    (line,) = [x for x in text.splitlines() if "cannot fail" in x]
    head = "- `m-20way`: at n=30 its gate 0.05 cannot fail (0 of 30 right still has a 95% upper bound of 0.116); it needs n ≥ 72"
    assert line.startswith(head), line
    return line[len(head):]


def test_a_gate_that_cannot_fail_says_whether_the_dataset_holds_the_samples_it_needs(tmp_path):
    more = ", more than the {} images of its dataset: a higher gate or more images"
    # the size comes from results.json's dataset, or a merged run's, or the row's own
    assert _gate_line(tmp_path, {"dataset": {"name": "terns", "images": 71}}) == more.format(71)
    assert _gate_line(tmp_path, {"dataset": {"name": "other", "images": 9},
                                 "merged_from": [{"dataset": {"name": "terns", "images": 50}}]}) == more.format(50)
    assert _gate_line(tmp_path, {"dataset": {"name": "terns", "images": 30}}, dataset_images=60) == more.format(60)
    # exactly the 72 it needs, or no size known: more samples would do
    assert _gate_line(tmp_path, {"dataset": {"name": "terns", "images": 72}}) == " (`--samples`)"
    assert _gate_line(tmp_path, {"dataset": {"name": "other", "images": 9}}) == " (`--samples`)"
    assert _gate_line(tmp_path, {}) == " (`--samples`)"


def test_report_md_has_the_dataset_section_of_results_json(tmp_path):
    from test_report_cli import _row, preds
    from vlmcls.report.dataset import dataset_section
    from vlmcls.report.writer import full_markdown

    row, _ = _row("m", preds(30, wrong=3), dataset="terns")
    meta = {"dataset": {"name": "terns", "images": 30, "classes": 2, "notes": ["1 file left out"]}}
    section = dataset_section(meta, [row])
    assert section.startswith("## Dataset") and "1 file left out" in section
    assert section.strip() in full_markdown(tmp_path, [row], plots=False, meta=meta)


# ---------------------------------------------------------------------- folder names as labels
def test_a_folder_name_of_blanks_is_named_by_its_class_and_an_ordinal_one_answers_to_both():
    from vlmcls import labels

    ls = labels.labelset(["001.Black_footed_Albatross", " ", "Skimmer", "3 - Common Tern"], "unique", synonyms=False)
    assert ls.names == ("001.Black_footed_Albatross", "class 1", "Skimmer", "3 - Common Tern")
    assert ls.synonyms == (("001.Black_footed_Albatross", "Black_footed_Albatross"), ("class 1",), ("Skimmer",),
                           ("3 - Common Tern", "Common Tern"))


# ---------------------------------------------------------------------- the Dataset section: files not read
def test_files_the_reader_skips_are_counted_by_kind_most_first_and_hidden_ones_are_not(tmp_path):
    from PIL import Image

    from vlmcls import labels
    from vlmcls.data import describe, open_dataset

    root = tmp_path / "terns"
    for name in ("Common Tern", "Arctic Tern"):
        (root / name).mkdir(parents=True)
        for k in range(3):
            Image.new("RGB", (40, 30), (k * 50, 9, 9)).save(root / name / f"{k}.jpg")
    for k in range(3):
        Image.new("RGB", (40, 30)).save(root / "Arctic Tern" / f"IMG_{k}.HEIC", "JPEG")
    for k in range(2):
        Image.new("RGB", (40, 30)).save(root / "Common Tern" / f"x{k}.avif", "JPEG")
    (root / "Common Tern" / "README").write_text("x")
    (root / "Common Tern" / ".DS_Store").write_text("x")  # hidden: `datasets` skips it, and so does the count
    (root / ".cache").mkdir()
    (root / ".cache" / "a.txt").write_text("x")
    src = open_dataset(str(root))
    d = describe("terns", src, labels.labelset(src.annotations, "unique", synonyms=src.synonyms))
    assert d["images"] == 6
    assert d["notes"] == ["6 files in the class folders not read as images, left out: 3 .heic, 2 .avif, 1 no suffix"]


# ---------------------------------------------------------------------- datasets as people download them
def _terns_parquet(tmp_path):
    from datasets import ClassLabel, Dataset, Image as HFImage
    from PIL import Image

    (tmp_path / "src").mkdir()
    photos = []
    for k in range(6):
        Image.new("RGB", (40, 30), (k * 20, 0, 0)).save(tmp_path / "src" / f"{k}.jpg")
        photos.append(str(tmp_path / "src" / f"{k}.jpg"))
    ds = Dataset.from_dict({"image": photos, "label": [k % 3 for k in range(6)]})
    return ds.cast_column("image", HFImage()).cast_column("label", ClassLabel(names=["Common Tern", "Arctic Tern", "Skimmer"]))


def test_a_hub_snapshot_is_read_from_its_data_folder_and_scores_validation(tmp_path):
    from vlmcls.data import DatasetError, open_dataset

    ds = _terns_parquet(tmp_path)
    snap = tmp_path / "snapshot"  # as `hf download --repo-type dataset` leaves it
    (snap / "data").mkdir(parents=True)
    (snap / "README.md").write_text("# terns\n")
    ds.to_parquet(str(snap / "data" / "train-00000-of-00001.parquet"))
    ds.select(range(3)).to_parquet(str(snap / "data" / "validation-00000-of-00001.parquet"))
    src = open_dataset(str(snap))
    assert (src.name, src.size, src.split) == (f"{snap}:validation", 3, "validation")
    assert src.annotations == ("Common Tern", "Arctic Tern", "Skimmer")
    assert src.notes == (f"{snap} has splits train, validation; scored validation (pick one with --dataset {snap}:SPLIT)",)
    assert open_dataset(f"{snap}:train").size == 6
    one = tmp_path / "one"  # a file name that says no split: the whole of it, and no split to pick
    (one / "data").mkdir(parents=True)
    ds.to_parquet(str(one / "data" / "part.parquet"))
    src = open_dataset(str(one))
    assert (src.name, src.size, src.split, src.notes) == (str(one), 6, None, ())
    with pytest.raises(DatasetError) as info:
        open_dataset(f"{one}:test")
    assert str(info.value) == (f"dataset {str(one)!r} has no splits (no file name says one; `datasets` calls the "
                               "whole of it 'train'): drop ':test'")


def _flat(folder, csv_name: str, header: tuple[str, str], labels_of) -> None:
    import csv

    from PIL import Image

    folder.mkdir(parents=True)
    with open(folder / csv_name, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for i, label in enumerate(labels_of):
            Image.new("RGB", (40, 30), (30 * i, 20, 9)).save(folder / f"img_{i}.jpg")
            w.writerow((f"img_{i}.jpg", label))


def test_metadata_csv_text_labels_become_the_classes_as_written(tmp_path):
    from vlmcls.data import open_dataset

    _flat(tmp_path / "flat", "metadata.csv", ("file_name", "label"),
          ["Gull, Herring", "Gull, Herring", "Arctic_Tern", "Arctic_Tern", "tern", "Tern"])
    src = open_dataset(str(tmp_path / "flat"))
    assert src.size == 6 and src.annotations == ("Arctic_Tern", "Gull, Herring", "Tern", "tern")


def test_a_flat_folder_names_the_first_csv_it_did_not_read(tmp_path):
    from vlmcls.data import DatasetError, open_dataset

    folder = tmp_path / "flat"
    _flat(folder, "labels.csv", ("filename", "label"), ["a", "a", "b", "b"])
    (folder / "notes.csv").write_text("x\n")
    with pytest.raises(DatasetError) as info:
        open_dataset(str(folder))
    assert str(info.value) == (
        f"dataset {str(folder)!r} needs an image column and a ClassLabel column; it has {{'image': 'Image'}}; an image "
        "folder needs one subfolder per class, at least two, e.g. DIR/<split>/<class>/<image>; labels.csv is not read: "
        "`datasets` takes a flat folder's labels from a metadata.csv with a file_name column (rename it and its file "
        "column), or move each image into its class's folder")


def test_a_metadata_csv_without_a_label_column_is_refused_and_not_called_unread(tmp_path):
    from vlmcls.data import DatasetError, open_dataset

    folder = tmp_path / "flat"  # only a column named `label` holds the classes: `species` stays text
    _flat(folder, "metadata.csv", ("file_name", "species"), ["a", "a", "b", "b"])
    with pytest.raises(DatasetError) as info:
        open_dataset(str(folder))
    assert str(info.value) == (
        f"dataset {str(folder)!r} needs an image column and a ClassLabel column; it has {{'image': 'Image', 'species': "
        "'Value'}; an image folder needs one subfolder per class, at least two, e.g. DIR/<split>/<class>/<image>; "
        "metadata.csv holds no column named `label`, the one whose text becomes the classes (it has species): rename "
        "the class column to label")


def test_parquet_files_beside_a_data_folder_are_the_dataset(tmp_path):
    from vlmcls.data import open_dataset

    ds = _terns_parquet(tmp_path)
    both = tmp_path / "both"
    (both / "data").mkdir(parents=True)
    ds.to_parquet(str(both / "terns.parquet"))
    ds.select(range(3)).to_parquet(str(both / "data" / "terns.parquet"))
    assert open_dataset(str(both)).size == 6


# ---------------------------------------------------------------------- one error line for a folder that fails
@pytest.mark.parametrize("raised, said", [
    (ValueError("x" * 170 + "\nthe traceback's next line"), "ValueError: " + "x" * 160),  # its first line, cut at 160
    (OSError(""), "OSError: OSError"),  # no message: its type
])
def test_a_saved_dataset_that_fails_to_load_is_one_line_naming_what_it_was_read_as(tmp_path, monkeypatch, raised, said):
    import datasets

    from vlmcls.data import LAYOUTS, DatasetError, open_dataset

    def fail(path):
        raise raised

    monkeypatch.setattr(datasets, "load_from_disk", fail)
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "dataset_info.json").write_text("{}")
    with pytest.raises(DatasetError) as info:
        open_dataset(str(tmp_path / "saved"))
    assert str(info.value) == f"dataset {str(tmp_path / 'saved')!r} could not be read as a save_to_disk folder ({said}); {LAYOUTS}"


def test_a_file_that_is_no_parquet_is_named(tmp_path):
    from vlmcls.data import LAYOUTS, DatasetError, open_dataset

    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DatasetError) as info:
        open_dataset(str(tmp_path / "x.txt"))
    assert str(info.value) == f"dataset {str(tmp_path / 'x.txt')!r} is a file, not a dataset; {LAYOUTS}"


def test_finish_report_by_default_draws_the_plots_and_adds_no_other_section(tmp_path):
    from test_report_cli import _row, preds
    from vlmcls.report.writer import finish_report, full_markdown

    row, _ = _row("m", preds(30, wrong=3))
    text = finish_report(tmp_path / "a", [row]).read_text()
    assert any((tmp_path / "a" / "plots").iterdir())
    assert text == full_markdown(tmp_path / "b", [row], plots=True, sources="", provenance="")


# ---------------------------------------------------------------------- session: one row per case
def _rows_after(*rows: dict) -> list[dict]:
    """The session's rows (results.json's cases) after these test reports came in, in order."""
    from types import SimpleNamespace

    from vlmcls.session import REPEATED, BenchSession

    assert REPEATED == "times in this session (e.g. pytest-repeat's --count); the report keeps one run"
    holder = SimpleNamespace(rows=[])
    for row in rows:
        BenchSession._add_row(holder, row)
    return holder.rows


def test_a_crashed_workers_row_is_replaced_by_the_rerun_and_a_third_run_counts_three():
    ran = "ran {} times in this session (e.g. pytest-repeat's --count); the report keeps one run"
    crashed = {"case_id": "a-2way", "metrics": None, "notes": [], "status": "crashed", "reason": "worker died"}
    scored = {"case_id": "a-2way", "metrics": {"n": 6}, "notes": ["x"], "status": "passed", "reason": ""}
    other = {"case_id": "b-2way", "metrics": {"n": 6}, "notes": [], "status": "passed", "reason": ""}
    # xdist ran the crashed worker's case again: that is no repeat
    assert _rows_after(crashed, other, scored) == [scored, other]
    # a crash after a scored run, or a crash again: the first row is kept, and the count says how often it ran
    assert _rows_after(scored, crashed, {**scored, "notes": ["y"]}) == [{**scored, "runs": 3, "notes": ["x", ran.format(3)]}]
    assert _rows_after(crashed, {**crashed, "reason": "again"}) == [{**crashed, "runs": 2, "notes": [ran.format(2)]}]
    # a skipped (not crashed) row then a scored one is a repeat: the scored figures are kept
    skipped = {**crashed, "status": "skipped"}
    assert _rows_after(skipped, scored) == [{**scored, "runs": 2, "notes": ["x", ran.format(2)]}]
    assert _rows_after(scored, dict(scored)) == [scored]  # the same row sent twice (setup and call): one run
    assert _rows_after({"case_id": "c", "metrics": {"n": 1}}, {"case_id": "c", "metrics": {"n": 2}}) == [
        {"case_id": "c", "metrics": {"n": 1}, "runs": 2, "notes": [ran.format(2)]}]  # a row without notes


def test_the_terminal_summary_ends_with_what_the_baseline_checked_and_what_it_did_not(tmp_path):
    import json
    from types import SimpleNamespace

    from test_report_cli import _row, preds, write_run
    from vlmcls.outcomes import summary_lines
    from vlmcls.report.runs import load_run
    from vlmcls.session import BenchSession

    base = load_run(write_run(tmp_path / "base", _row("m", preds(30, wrong=3)), _row("gone", preds(30))))
    now = write_run(tmp_path / "now", _row("m", preds(30, wrong=4)), _row("new", preds(30, wrong=4)))
    rows = json.loads((now / "results.json").read_text())["cases"]
    rows.append({"case_id": "x-20way", "status": "skipped", "metrics": None, "ways": 20, "model": "x", "reason": "r"})
    session = SimpleNamespace(rows=rows, crashed=[], baseline=base, report_dir=now, opt=SimpleNamespace(strict=False))
    checked = ("Baseline base: 1 case compared by McNemar's test on the images both runs scored, 0 significantly worse; "
               "1 not compared (see the table).")
    unchecked = (f"warning: --baseline {tmp_path / 'base'} gave nothing to compare for 1 of 2 cases (1: not in the "
                 "baseline); the baseline gate did not check them (--strict-cases fails them); see report.md")
    plain = summary_lines(rows, [], True, False)
    assert BenchSession.summary_lines(session, True) == [*plain, checked, unchecked]
    session.opt.strict = True
    assert BenchSession.summary_lines(session, False, compact=True) == [*summary_lines(rows, [], False, True), checked,
                                                                        unchecked.replace(
        "the baseline gate did not check them (--strict-cases fails them)", "--strict-cases failed them")]
    session.rows = rows[:1]  # every case compared: no warning
    assert BenchSession.summary_lines(session, True)[-1].startswith("Baseline base: 1 case compared")
    session.baseline = None
    assert BenchSession.summary_lines(session, True) == summary_lines(rows[:1], [], True, False)


# ---------------------------------------------------------------------- the decode pool
def test_two_or_more_workers_are_processes_started_by_a_forkserver_and_one_is_a_thread():
    """A worker forked from the caller (mp's "fork" default on Linux before Python 3.14) inherits torch's
    and the caller's threads mid-state and can hang; forkserver children fork from a clean process."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    from vlmcls import fastimage

    assert isinstance(fastimage.worker_pool(1), ThreadPoolExecutor)
    pool = fastimage.worker_pool(2)
    assert isinstance(pool, ProcessPoolExecutor) and fastimage.worker_pool(2) is pool
    want = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    assert pool._mp_context.get_start_method() == want  # no public accessor: the executor's own context
