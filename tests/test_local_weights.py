"""A fine-tuned checkpoint in a local folder: `weights` paths in a user's catalog are read from the
catalog's folder (wherever pytest runs), `~` is expanded (catalog and --nli-model), a path that names no
folder is one skip line saying where it looked, a folder without processor files is one load line, and a
malformed `thresholds` shows the form it takes. Real folders on disk; tiny models built offline."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vlmcls.catalog import load_catalog
from vlmcls.options import add_options
from vlmcls.settings import BackendSettings

HINT = "(relative paths in a catalog are read from the catalog's folder)"


def catalog(folder: Path, **weights: str) -> Path:
    """A user catalog in `folder` with one hf-vlm model per keyword: name = weights."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "my.toml"
    path.write_text("".join(f'[models."{name}"]\nbackend = "hf-vlm"\nweights = "{w}"\n\n' for name, w in weights.items()))
    return path


def requirements(entry) -> str | None:
    from vlmcls.backends import hf_load

    return hf_load.requirements(entry, BackendSettings(), None)


def test_a_relative_weights_folder_is_read_from_the_catalogs_folder_wherever_pytest_runs(tmp_path, monkeypatch):
    (tmp_path / "cfg" / "ckpts" / "ckpt-a").mkdir(parents=True)
    (tmp_path / "cfg" / "ckpts" / "both").mkdir()
    (tmp_path / "run" / "ckpts" / "both").mkdir(parents=True)  # the same name beside where pytest runs
    (tmp_path / "run" / "ckpts" / "cwd-only").mkdir()
    catalog(tmp_path / "cfg", a="ckpts/ckpt-a", dotted="./ckpts/ckpt-a", both="ckpts/both", cwd="ckpts/cwd-only",
                   absolute=f"{tmp_path}/cfg/ckpts/ckpt-a/")
    monkeypatch.chdir(tmp_path / "run")
    models = load_catalog("../cfg/my.toml")
    assert models["a"].weights == models["dotted"].weights == str(tmp_path / "cfg" / "ckpts" / "ckpt-a")
    assert models["both"].weights == str(tmp_path / "cfg" / "ckpts" / "both")  # the catalog's folder first
    # a folder only beside where pytest runs is loaded as before, its path absolute (the store key's
    # `weights` no longer depends on the folder pytest runs in)
    assert models["cwd"].weights == str(tmp_path / "run" / "ckpts" / "cwd-only")
    assert models["absolute"].weights == f"{tmp_path}/cfg/ckpts/ckpt-a/"  # as written: its store key stays
    assert requirements(models["a"]) is None


def test_weights_written_as_a_path_that_names_no_folder_skip_that_model_saying_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "cfg" / "Qwen" / "beside").mkdir(parents=True)
    path = catalog(tmp_path / "cfg", dot="./ckpts/nope", up="../gone", home="~/nothing", absolute=str(tmp_path / "none"),
                   hub="Qwen/Qwen2-VL-2B-Instruct", local="Qwen/beside")
    models = load_catalog(path)  # one bad entry does not stop the others
    assert requirements(models["dot"]) == f"folder not found: {tmp_path / 'cfg' / 'ckpts' / 'nope'} {HINT}"
    assert requirements(models["up"]) == f"folder not found: {tmp_path / 'gone'} {HINT}"
    assert requirements(models["home"]) == f"folder not found: {tmp_path / 'home' / 'nothing'}"
    assert requirements(models["absolute"]) == f"folder not found: {tmp_path / 'none'}"
    # a hub repo id stays one (no folder of that name here); a folder of that shape beside the catalog is local
    assert models["hub"].weights == "Qwen/Qwen2-VL-2B-Instruct" and models["hub"].weights_problem is None
    assert models["local"].weights == str(tmp_path / "cfg" / "Qwen" / "beside")


def test_tilde_weights_are_expanded_at_load(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "myckpt").mkdir()
    models = load_catalog(catalog(tmp_path / "cfg", tilde="~/myckpt"))
    assert models["tilde"].weights == str(tmp_path / "myckpt")  # the loader takes it as given


def test_nli_model_tilde_is_expanded_when_parsed(monkeypatch, tmp_path):
    from test_plan import _Parser as Parser  # pytest's Parser, as far as add_options uses it

    monkeypatch.setenv("HOME", str(tmp_path))
    parser = Parser()
    add_options(parser)
    assert parser.argparse.parse_args(["--nli-model", "~/nli"]).nli_model == str(tmp_path / "nli")
    assert parser.argparse.parse_args(["--nli-model", "facebook/bart-large-mnli"]).nli_model == "facebook/bart-large-mnli"


@pytest.mark.parametrize("value", ["0.05", '{ "12way" = 0.05 }', "[0.05]", "{ \"20.5\" = 0.3 }"])
def test_malformed_thresholds_show_the_form_they_take(tmp_path, value):
    path = tmp_path / "th.toml"
    path.write_text(f'[models.x]\nbackend = "hf-vlm"\nweights = "org/m"\nthresholds = {value}\n')
    with pytest.raises(ValueError) as err:
        load_catalog(path)
    assert str(err.value) == (f"{path}: model 'x': thresholds must map N to an accuracy, "
                              "e.g. thresholds = { 20 = 0.30, 100 = 0.15 }")
    path.write_text('[models.x]\nbackend = "hf-vlm"\nweights = "org/m"\nthresholds = { "20" = 0.3, 100 = 0.15 }\n')
    assert load_catalog(path)["x"].thresholds == {20: 0.3, 100: 0.15}  # TOML keys are strings: "20" is N = 20


@pytest.mark.parametrize("kept", [(), ("tokenizer.json", "tokenizer_config.json")], ids=["model-only", "tokenizer-only"])
def test_a_checkpoint_folder_without_processor_files_is_one_load_line(tmp_path, smoke_model, kept):
    """A Trainer save: the model (and perhaps the tokenizer) without the image processor's config."""
    from vlmcls.backends import hf_load
    from vlmcls.catalog import ModelEntry

    pytest.importorskip("transformers")
    built, folder = smoke_model("qwen2-vl"), tmp_path / "ckpt-sep"
    folder.mkdir()
    for name in ("config.json", "generation_config.json", "model.safetensors", *kept):
        shutil.copy(built / name, folder / name)
    entry = ModelEntry(name="ft", backend="hf-vlm", weights=str(folder))
    assert requirements(entry) is None  # the weights are here: the case runs, and its load says it
    with pytest.raises(RuntimeError) as err:
        hf_load.load_model(entry, BackendSettings(device="cpu"))
    assert str(err.value) == (f"ft: {folder} has no processor files (preprocessor_config.json / processor_config.json / "
                              "tokenizer): save them there with processor.save_pretrained(FOLDER), or copy the base model's")


def test_a_run_from_another_folder_loads_the_catalogs_relative_and_tilde_checkpoints(bench: pytest.Pytester, smoke_model):
    """The walkthrough: `--catalog cfg/my.toml` with weights "ckpts/ckpt-a" (at cfg/ckpts/ckpt-a) and
    "~/myckpt" runs both; "./ckpts/nope" skips that model alone, saying where it looked."""
    pytester = bench  # pytester runs in its folder with HOME set to it
    built = smoke_model("qwen2-vl")
    shutil.copytree(built, pytester.path / "cfg" / "ckpts" / "ckpt-a")
    shutil.copytree(built, pytester.path / "myckpt")
    catalog(pytester.path / "cfg", rel="ckpts/ckpt-a", tilde="~/myckpt", gone="./ckpts/nope")
    out = pytester.runpytest_subprocess("bench", "--catalog", "cfg/my.toml", "-p", "no:cacheprovider", "--ways", "20",
                                        "--samples", "2", "--resolver", "exact", "--device", "cpu", "-rs")
    out.assert_outcomes(passed=2, skipped=1)
    out.stdout.fnmatch_lines([f"SKIPPED *folder not found: {pytester.path / 'cfg' / 'ckpts' / 'nope'} {HINT}*"])


def test_a_baseline_whose_weights_path_names_no_folder_skips_saying_where_it_looked(tmp_path):
    """CLIP and classifiers ask the same question as the VLMs: a path is never taken for a hub repo id."""
    from vlmcls.backends import baselines
    from vlmcls.catalog import load_catalog
    from vlmcls.settings import BackendSettings

    (tmp_path / "c.toml").write_text('[models.r]\nbackend = "classifier"\nweights = "./nope"\n'
                                     '[models.c]\nbackend = "clip"\nweights = "../gone"\n')
    cat = load_catalog(tmp_path / "c.toml")
    assert baselines.requirements(cat["r"], BackendSettings(), None) == (
        f"folder not found: {tmp_path / 'nope'} (relative paths in a catalog are read from the catalog's folder)")
    assert baselines.requirements(cat["c"], BackendSettings(), None).startswith(f"folder not found: {tmp_path.parent / 'gone'}")
