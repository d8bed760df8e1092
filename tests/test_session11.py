"""Session 11: a checkpoint in a local folder is named in the store key by what its files are (a new
fine-tune saved to the same path is never answered from the old model's rows), results.json records it,
and a case whose only fresh rows never reached the model reports no images/s."""
from __future__ import annotations

import os

from test_runner import ECHO, LABELS, samples

from vlmcls import backends, hub
from vlmcls.catalog import ModelEntry
from vlmcls.report.rows import revisions
from vlmcls.resolve import Resolver
from vlmcls.runner import CaseRunner, CaseSpec
from vlmcls.settings import BackendSettings
from vlmcls.store import Store
from vlmcls.types import Sample


def checkpoint(folder, weights: bytes = b"\x01" * 64):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "qwen2_vl"}')
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def local_runner(folder, store, resolver="exact", nli_model=None):
    """A case of an hf-vlm entry whose weights are `folder`, answered by the echo backend (no model load:
    the store key is what is under test)."""
    entry = ModelEntry(name="mine", backend="hf-vlm", weights=str(folder))
    settings = BackendSettings(batch_size=4)
    spec = CaseSpec(model=entry, ways=20, settings=settings, resolver=resolver,
                    **({"nli_model": nli_model} if nli_model else {}))
    return CaseRunner(spec, LABELS, backends.load(ECHO, settings, LABELS), Resolver("exact", LABELS), store)


def test_a_checkpoint_saved_again_to_the_same_folder_is_answered_afresh(tmp_path):
    """The walkthrough's wrong number: ckpt-a retrained in place, rerun without --refresh, scored with the
    old model's stored answers (and a CI baseline comparison read "lost 0, gained 0")."""
    store, data = Store(tmp_path / "s.sqlite"), samples(6)
    folder = checkpoint(tmp_path / "ckpt-a")
    assert local_runner(folder, store).run(data).resumed == 0
    assert local_runner(folder, store).run(data).resumed == 6  # untouched: every row from the store
    (folder / "model.safetensors").write_bytes(b"\x02" * 64)  # same size, new bytes, new mtime
    # within one process (a session) the folder is taken once: the model it loaded answers under that key
    assert local_runner(folder, store).run(data).resumed == 6
    hub.forget_folders()  # a new session
    assert local_runner(folder, store).run(data).resumed == 0
    # a model card, a lock, a Trainer's other outputs, a subfolder: loading reads none of them
    (folder / "README.md").write_text("notes")
    (folder / ".lock").write_text("")
    (folder / "eval_results.json").write_text("{}")
    (folder / "trainer_state.json").write_text("{}")
    (folder / "training_args.bin").write_bytes(b"x")
    (folder / "checkpoint-500").mkdir()
    hub.forget_folders()
    assert local_runner(folder, store).run(data).resumed == 6
    (folder / "tokenizer_config.json").write_text("{}")  # loading reads this one
    hub.forget_folders()
    assert local_runner(folder, store).run(data).resumed == 0


def test_the_key_names_a_local_folder_by_its_files_and_leaves_other_keys_as_they_were(tmp_path):
    folder = checkpoint(tmp_path / "ckpt")
    fields = local_runner(folder, None).spec.key_fields()
    assert fields["weights_files"] == hub.folder_files(str(folder)) and fields["weights_files"].startswith("files:")
    os.utime(folder / "config.json", ns=(5, 5))
    hub.forget_folders()
    assert local_runner(folder, None).spec.key_fields()["weights_files"] != fields["weights_files"]
    hub_id = CaseSpec(model=ModelEntry(name="q", backend="hf-vlm", weights="Qwen/Qwen2-VL-2B-Instruct"),
                      ways=20, settings=BackendSettings())
    smoke = CaseSpec(model=ECHO, ways=20, settings=BackendSettings())
    old = {"model", "backend", "weights", "settings", "dataset", "ways", "seed", "prompt", "labels", "resolver", "nli_model"}
    assert set(hub_id.key_fields()) == old and set(smoke.key_fields()) == old  # stores of hub and smoke models resume
    served = CaseSpec(model=ModelEntry(name="s", backend="openai-compatible", weights=str(folder)), ways=20,
                      settings=BackendSettings())
    assert "weights_files" not in served.key_fields()  # a served model's name is no folder of weights


def test_an_nli_model_in_a_local_folder_is_named_by_its_files_where_an_nli_stage_runs(tmp_path):
    nli = checkpoint(tmp_path / "nli")
    folder = checkpoint(tmp_path / "ckpt")
    study = local_runner(folder, None, resolver="study", nli_model=str(nli)).spec
    assert study.key_fields()["nli_files"] == hub.folder_files(str(nli))
    assert "nli_files" not in local_runner(folder, None, resolver="exact", nli_model=str(nli)).spec.key_fields()
    assert revisions(study) == {"weights": hub.folder_files(str(folder)), "nli_model": hub.folder_files(str(nli))}


def test_folder_files_reads_sizes_and_times_not_names_alone_and_expands_home(tmp_path, monkeypatch):
    folder = checkpoint(tmp_path / "home" / "ckpt")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    hub.forget_folders()
    first = hub.folder_files("~/ckpt")
    assert first == hub.folder_files(str(folder)) and first is not None
    (folder / "model.safetensors").write_bytes(b"\x01" * 65)
    os.utime(folder / "model.safetensors", ns=(7, 7))
    assert hub.folder_files(str(folder)) == first  # taken once per process
    hub.forget_folders()
    second = hub.folder_files(str(folder))
    (folder / "model.safetensors").write_bytes(b"\x01" * 64)
    os.utime(folder / "model.safetensors", ns=(7, 7))
    hub.forget_folders()
    assert len({first, second, hub.folder_files(str(folder))}) == 3
    assert hub.folder_files("Qwen/Qwen2-VL-2B-Instruct") is None and hub.folder_files("smoke:qwen2-vl") is None
    assert hub.folder_files(str(tmp_path / "nowhere")) is None


def test_a_case_whose_fresh_rows_are_all_unreadable_images_reports_no_speed(tmp_path):
    """The walkthrough: a rerun whose one fresh row was a corrupt image retried read "img/s 1414"."""
    store = Store(tmp_path / "s.sqlite")
    data = samples(4) + [Sample("broken", 3, b"not an image")]
    first = local_runner(checkpoint(tmp_path / "c"), store).run(data)
    assert first.images_per_s is not None and first.images_per_s > 0
    again = local_runner(tmp_path / "c", store).run(data)
    assert again.resumed == 4 and again.images_per_s is None


def test_the_provenance_section_names_the_weights_each_scored_model_ran_with():
    from vlmcls import provenance

    meta = {"provenance": {"vlmcls": "0.1.0"}}
    rows = [
        {"model": "qwen", "weights": "Qwen/Qwen2-VL-2B-Instruct", "metrics": {"n": 1},
         "revisions": {"weights": "a" * 40, "nli_model": None}},
        {"model": "qwen", "weights": "Qwen/Qwen2-VL-2B-Instruct", "metrics": {"n": 1},
         "revisions": {"weights": "a" * 40}},  # its 100-way case: once
        {"model": "mine", "weights": "/ckpt/a|b", "metrics": {"n": 1}, "revisions": {"weights": "files:ffff"}},
        {"model": "mine", "weights": "/ckpt/a|b", "metrics": {"n": 1}, "revisions": {"weights": "files:0123456789abcdef"}},
        {"model": "gone", "weights": "org/gone", "metrics": None},  # skipped: it ran with nothing
        {"model": "api", "weights": "gpt-4o-2024-08-06", "metrics": {"n": 1}},
    ]
    lines = provenance.markdown(meta, rows).splitlines()
    assert lines[:3] == ["## Provenance", "",
                         "- weights: qwen = Qwen/Qwen2-VL-2B-Instruct @ aaaaaaaaaaaa; mine = /ckpt/a\\|b @ files:ffff; "
                         "mine = /ckpt/a\\|b @ files:0123456789abcdef; api = gpt-4o-2024-08-06"]
    assert "- weights" not in provenance.markdown(meta)  # no rows: no line (and the section stays as it was)


def test_a_merge_says_where_the_later_run_had_other_weights_under_the_same_name(tmp_path, capsys):
    """A fine-tune saved again to the same folder, or a new hub commit: the case id and settings are the
    same, the weights are not; the merge note names the change instead of 'the later run wins' alone."""
    from test_report_cli import _row, preds, write_run

    from vlmcls.__main__ import main

    def case(wrong, rev):
        row, rows = _row("m", preds(30, wrong=wrong))
        return {**row, "revisions": {"weights": rev}}, rows

    a = write_run(tmp_path / "a", case(3, "files:0000aaaa"))
    b = write_run(tmp_path / "b", case(9, "files:1111bbbb"))
    c = write_run(tmp_path / "c", case(9, "files:1111bbbb"))
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "out"), "--no-plots"]) == 0
    assert "; 1 of those ran other settings" in capsys.readouterr().err
    assert "it ran other settings (weights files:0000aaaa → files:1111bbbb)" in (tmp_path / "out" / "report.md").read_text()
    assert main(["report", str(b), str(c), "--out", str(tmp_path / "out2"), "--no-plots"]) == 0
    assert "other settings" not in capsys.readouterr().err  # the same weights: nothing to say


def test_the_summary_says_which_cases_answered_from_the_result_store():
    """A CI job's summary: a gate that passed on stored answers (a kept reports/ folder, a served model
    redeployed under the same name) says so; report.md's notes did, the PR comment did not."""
    from vlmcls.report.summary import summary_markdown

    def row(case_id, resumed, n=48):
        return {"case_id": case_id, "ways": 20, "status": "passed", "threshold": 0.1, "resumed": resumed,
                "not_run": 0, "metrics": {"accuracy": 0.5, "accuracy_ci": [0.3, 0.7], "n": n}}

    text = summary_markdown([row("a-20way", 47), row("b-20way", 0)], {"run_id": "pr-1"})
    assert "From the result store, not asked again (`--refresh` asks again): a-20way (47 of 48 samples)." in text
    assert "b-20way (" not in text
    assert "result store" not in summary_markdown([row("b-20way", 0)], {"run_id": "pr-1"})
