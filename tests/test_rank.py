"""Ranking mode (--resolver rank) and the calibration figures built on its scores.

The scores are checked against an independent computation: each candidate appended to the prompt and
run through the model in one full forward pass, no cache, positions computed by the model itself
(Qwen2-VL's multimodal rope included). Calibration figures are checked against values worked out by
hand in the comments."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from vlmcls import calibration
from vlmcls.backends import rank, rank_tree
from vlmcls.catalog import load_catalog
from vlmcls.prompts import get_template, render
from vlmcls.settings import BackendSettings
from vlmcls.store import Store
from vlmcls.types import LabelSet, Prediction, Query

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from vlmcls.backends import hf_vlm  # noqa: E402

# "crane" / "crane fly": a label that is the start of another (the end-of-turn token tells them apart)
NAMES = ("crane", "crane fly", "tench", "goldfish", "great white shark", "tiger shark", "hen")
LABELS = LabelSet(NAMES, tuple((n,) for n in NAMES))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: thread sync would cost more than the work
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def backends(smoke_model):
    catalog = load_catalog()
    out = {}
    for name in ("smoke-qwen2-vl", "smoke-llava-next"):
        smoke_model(name.removeprefix("smoke-"))
        out[name] = hf_vlm.load(catalog[name], BackendSettings(rank=True, device="cpu", dtype="float32",
                                                               batch_size=2), LABELS)
    return out


def _query(i: int = 0, ids=tuple(range(len(NAMES)))) -> Query:
    from PIL import Image

    rng = np.random.default_rng(i)
    image = Image.fromarray(rng.integers(0, 256, (60 + 10 * i, 90, 3), dtype=np.uint8))
    labels = tuple(NAMES[j] for j in ids)
    return Query(f"s{i}", image, tuple(ids), labels, render(get_template("thesis"), labels))


def _prepared(backend, query):
    prepared = backend.model_inputs(query)
    assert prepared is not None
    return prepared


def _full_pass(backend, inputs, seq) -> list[float]:
    """The candidate appended to the prompt, one forward pass without a cache."""
    add = torch.tensor([seq])
    full = dict(inputs)
    for key in ("input_ids", "attention_mask", "mm_token_type_ids"):
        if key in full:
            tail = add if key == "input_ids" else (torch.ones_like(add) if key == "attention_mask" else torch.zeros_like(add))
            full[key] = torch.cat([inputs[key], tail.to(inputs[key].dtype)], dim=1)
    base = backend.model.base_model
    if getattr(base, "rope_deltas", None) is not None:
        base.rope_deltas = None
    with torch.inference_mode():
        logprobs = backend.model(**full).logits[0].float().log_softmax(-1)
    start = inputs["input_ids"].shape[1] - 1
    return [logprobs[start + j, t].item() for j, t in enumerate(seq)]


@pytest.mark.parametrize("name", ["smoke-qwen2-vl", "smoke-llava-next"])
def test_scores_equal_one_full_forward_pass_per_candidate(name, backends):
    backend = backends[name]
    inputs, seqs = _prepared(backend, _query())
    assert all(s[-1] == backend.eos_ids[0] for s in seqs)  # the end of the reply is scored too
    scores = backend.rank_scores(inputs, seqs)
    for seq, got in zip(seqs, scores.tokens):
        assert len(got) == len(seq)
        assert got == pytest.approx(_full_pass(backend, inputs, seq), abs=1e-4)
    pre = rank.prefill(backend.model, inputs, backend.cache_kwarg)
    if name == "smoke-qwen2-vl":  # the text after the image is numbered from its grid: the rope delta is used
        assert pre.position != inputs["input_ids"].shape[1]


@pytest.mark.parametrize("name", ["smoke-qwen2-vl", "smoke-llava-next"])
def test_chunk_of_one_equals_all_at_once(name, backends):
    backend = backends[name]
    inputs, seqs = _prepared(backend, _query(1))
    pre = rank.prefill(backend.model, inputs, backend.cache_kwarg)
    one = rank.score(backend.model, pre, seqs, backend.cache_kwarg, 1, backend.pad_id, bucket=False)
    whole = rank.score(backend.model, pre, seqs, backend.cache_kwarg, len(seqs), backend.pad_id, bucket=False)
    bucketed = rank.score(backend.model, pre, seqs, backend.cache_kwarg, 3, backend.pad_id)
    assert len(rank._chunks(seqs, len(seqs), bucket=False)) == 1  # truly one forward pass
    for a, b, c in zip(one.tokens, whole.tokens, bucketed.tokens):
        assert a == pytest.approx(b, abs=1e-5) and c == pytest.approx(b, abs=1e-5)
    # the prompt's own cache was not touched by the chunks: a second round gives the same scores
    again = rank.score(backend.model, pre, seqs, backend.cache_kwarg, len(seqs), backend.pad_id, bucket=False)
    assert [x for row in again.tokens for x in row] == pytest.approx([x for row in whole.tokens for x in row])


def test_chunks_bucket_by_length_and_respect_the_size():
    seqs = [[1] * n for n in (3, 20, 19, 4, 11, 2)]
    groups = rank._chunks(seqs, 2, bucket=True)
    assert sorted(i for g in groups for i in g) == list(range(6))
    assert all(len(g) <= 2 for g in groups)
    assert groups[0] == [1, 2]  # longest first
    widths = [[len(seqs[i]) - 1 for i in g] for g in groups]
    assert all(2 * min(w) >= max(w) for w in widths)  # no row under half its chunk's width
    assert rank._chunks(seqs, 10, bucket=False) == [list(range(6))]


# ---------------------------------------------------------------- the token tree (the default path)

# shared prefixes ("cran" < "crane" < "crane fly"), a duplicate, a one-token label ("x" in the byte-level
# tokenizer), one that shares nothing
TREE_LABELS = ("crane", "crane fly", "cran", "crane", "x", "tench", "goldfish")


def _tree_case(backend):
    inputs, _ = _prepared(backend, _query(2))
    seqs = rank.sequences(backend.tokenizer, TREE_LABELS, backend.eos_ids[0])
    seqs.append([seqs[-1][0], backend.eos_ids[0]])  # one token + EOS, whatever the tokenizer does with "x"
    return inputs, seqs, rank.prefill(backend.model, inputs, backend.cache_kwarg)


def _flat(scores) -> list[float]:
    return [x for row in scores.tokens for x in row]


@pytest.mark.parametrize("name", ["smoke-qwen2-vl", "smoke-llava-next"])
def test_tree_equals_chunks_and_full_passes(name, backends):
    backend = backends[name]
    inputs, seqs, pre = _tree_case(backend)
    assert len(seqs[-1]) == 2  # its only read after the first token is the EOS, at a root node
    tree = rank_tree.forest(seqs)
    assert len(tree.tokens) == len({tuple(s[:j]) for s in seqs for j in range(1, len(s))})  # each prefix once
    assert len(tree.tokens) < sum(len(s) - 1 for s in seqs)
    before = [(k.clone(), v.clone()) for k, v in pre.layers]
    scores = rank_tree.score(backend.model, pre, seqs)
    chunked = rank.score(backend.model, pre, seqs, backend.cache_kwarg, 3, backend.pad_id)
    assert _flat(scores) == pytest.approx(_flat(chunked), abs=1e-4)
    for seq, got in zip(seqs, scores.tokens):
        assert got == pytest.approx(_full_pass(backend, inputs, seq), abs=1e-4)
    assert scores.tokens[0] == scores.tokens[3]  # the duplicate: the same nodes, the same numbers
    assert scores.total[1] != scores.total[0] != scores.total[2]  # the end-of-turn token tells them apart
    for (k0, v0), (k1, v1) in zip(before, pre.layers):  # the prompt's cache is left as it was
        assert torch.equal(k0, k1) and torch.equal(v0, v1)


@pytest.mark.parametrize("name", ["smoke-qwen2-vl", "smoke-llava-next"])
def test_sub_forests_give_the_same_scores(name, backends):
    backend = backends[name]
    _, seqs, pre = _tree_case(backend)
    whole = rank_tree.score(backend.model, pre, seqs)
    for nodes in (1, 5, 12):
        assert len(rank_tree.groups(seqs, nodes)) > 1
        assert _flat(rank_tree.score(backend.model, pre, seqs, nodes=nodes)) == pytest.approx(_flat(whole), abs=1e-4)


def test_sdpa_and_eager_attention_read_the_tree_mask_alike(backends):
    backend = backends["smoke-qwen2-vl"]
    inputs, seqs, pre = _tree_case(backend)
    assert backend.model.config.get_text_config()._attn_implementation == "sdpa"
    sdpa = rank_tree.score(backend.model, pre, seqs)
    backend.model.set_attn_implementation("eager")
    try:
        assert backend.model.config.get_text_config()._attn_implementation == "eager"
        eager = rank_tree.score(backend.model, pre, seqs)
        assert rank_tree.choose(backend.model, pre, seqs)[0] == "tree"
    finally:
        backend.model.set_attn_implementation("sdpa")
    assert _flat(eager) == pytest.approx(_flat(sdpa), abs=1e-4)
    assert scores_match_full_passes(backend, inputs, seqs, eager)


def scores_match_full_passes(backend, inputs, seqs, scores) -> bool:
    return all(got == pytest.approx(_full_pass(backend, inputs, s), abs=1e-4) for s, got in zip(seqs, scores.tokens))


def test_one_token_candidates_are_read_from_the_prompt_alone(backends):
    backend = backends["smoke-qwen2-vl"]
    _, seqs, pre = _tree_case(backend)
    ones = [[s[0]] for s in seqs]
    assert rank_tree.score(backend.model, pre, ones).tokens == tuple((pre.first[s[0]].item(),) for s in seqs)


def test_forest_shares_prefixes_and_masks_siblings():
    # inputs 1 2 3 | 1 2 3 4 5 | 1 2 | 1 2 3 (duplicate) | 7 | (one token: no input)
    seqs = [[1, 2, 3, 9], [1, 2, 3, 4, 5, 9], [1, 2, 9], [1, 2, 3, 9], [7, 9], [9]]
    tree = rank_tree.forest(seqs)
    assert tree.tokens == (1, 2, 3, 4, 5, 7) and tree.parents == (-1, 0, 1, 2, 3, -1)
    assert tree.depths == (0, 1, 2, 3, 4, 0)
    assert tree.reads == ((0, 1, 2), (0, 1, 2, 3, 4), (0, 1), (0, 1, 2), (5,), ())
    mask = rank_tree.tree_mask(tree, 3, torch.float32)
    assert mask.shape == (1, 1, 6, 9) and (mask[0, 0, :, :3] == 0).all()  # the prompt: seen by every node
    sees = (mask[0, 0, :, 3:] == 0).int().tolist()
    assert sees == [[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0],
                    [1, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 1]]  # ancestors and itself; "7" sees no other branch
    assert mask.min() == torch.finfo(torch.float32).min  # additive: eager adds it to the scores


def test_groups_bound_the_nodes_and_keep_prefixes_together():
    seqs = [[1, 2, 3, 9], [1, 2, 3, 4, 5, 9], [1, 2, 9], [1, 2, 3, 9], [7, 9], [7, 8, 9], [6, 6, 6, 6, 6, 6, 9]]
    for limit in (1, 3, 5, 6, 100):
        groups = rank_tree.groups(seqs, limit)
        assert sorted(i for g in groups for i in g) == list(range(len(seqs)))
        for g in groups:
            nodes = len(rank_tree.forest([seqs[i] for i in g]).tokens)
            assert nodes <= limit or len(g) == 1  # only a candidate longer than the limit goes over, alone
    assert rank_tree.groups(seqs, 100) == [[2, 0, 3, 1, 6, 4, 5]]  # one forest, in token order
    assert rank_tree.groups(seqs, 5) == [[2, 0, 3, 1], [6], [4, 5]]  # "1 2 3 4 5" fills the first


def test_a_model_that_ignores_the_mask_falls_back_to_chunks(backends, monkeypatch):
    """The self-check catches a model that attends past the tree mask (simulated: a plain causal mask,
    under which a node sees the sibling branches placed before it)."""
    backend = backends["smoke-llava-next"]
    _, seqs, pre = _tree_case(backend)
    assert rank_tree.choose(backend.model, pre, seqs)[0] == "tree"

    real = rank_tree.tree_mask

    def causal(tree, prompt, dtype):  # a chain: every node sees all the nodes before it
        return real(rank_tree.Forest(tree.tokens, tuple(range(-1, len(tree.tokens) - 1)), tree.depths, ()),
                    prompt, dtype)

    monkeypatch.setattr(rank_tree, "tree_mask", causal)
    path, note = rank_tree.choose(backend.model, pre, seqs)
    assert path == "chunked" and "ignored a 4D attention mask" in note


def test_sliding_window_models_take_the_chunked_path():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    small = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1)
    windowed = Qwen2ForCausalLM(Qwen2Config(**small, use_sliding_window=True, sliding_window=8, max_window_layers=0))
    assert "sliding_attention" in rank_tree.unsupported(windowed)
    assert rank_tree.unsupported(Qwen2ForCausalLM(Qwen2Config(**small))) is None


def test_the_backend_notes_which_path_ran(smoke_model):
    """Default: the tree, after the self-check; the catalog's rank_chunk asks for chunks. Same answers."""
    entry = load_catalog()["smoke-qwen2-vl"]
    smoke_model("qwen2-vl")
    answers = {}
    for extra in ({}, {"rank_chunk": 2}):
        backend = hf_vlm.load(entry, BackendSettings(rank=True, device="cpu", dtype="float32", batch_size=2,
                                                     extra=extra), LABELS)
        answers[backend.rank_path] = backend.answer([_query(i) for i in range(3)])
        assert backend.rank_path == ("chunked" if extra else "tree")
        assert sum(n.startswith("rank: ") for n in backend.notes) == 1
        assert ("chunks of 2" if extra else "token tree") in " ".join(backend.notes)
    for a, b in zip(answers["tree"], answers["chunked"]):
        assert a.top5 == b.top5 and a.top1_prob == pytest.approx(b.top1_prob, abs=1e-5)


def test_answer_in_rank_mode_scores_instead_of_generating(backends):
    backend = backends["smoke-qwen2-vl"]
    generate = backend.model.generate
    backend.model.generate = lambda **kw: pytest.fail("rank mode must not generate")
    try:
        queries = [_query(i, ids) for i, ids in enumerate([(0, 1, 2, 3, 4, 5, 6), (6, 2, 4), (3, 0, 5, 1, 2)])]
        answers = backend.answer(queries)
    finally:
        backend.model.generate = generate
    for q, a in zip(queries, answers):
        assert a.error is None and a.stage == "rank"
        assert a.top5[0] == a.class_id and a.text == NAMES[a.class_id]
        assert len(a.top5) == min(5, len(q.class_ids)) and set(a.top5) <= set(q.class_ids)
        inputs, seqs = _prepared(backend, q)
        total = backend.rank_scores(inputs, seqs).total
        assert a.top1_prob == pytest.approx(math.exp(max(total)) / sum(math.exp(t) for t in total), abs=1e-6)
        assert list(a.top5) == [q.class_ids[i] for i in sorted(range(len(total)), key=lambda i: -total[i])][:5]


def test_the_ranking_uses_the_sum_of_log_probabilities(backends):
    """Where sum and mean disagree: "tench" is one likely token (sum -1.0, mean -1.0), "great white shark"
    three (sum -1.8, mean -0.6). The answer is the one whose whole text is likelier: tench."""
    scores = rank.Scores(((-3.0, -2.0), (-1.0,), (-0.6, -0.6, -0.6)))
    assert scores.total == pytest.approx([-5.0, -1.0, -1.8]) and scores.mean == pytest.approx([-2.5, -1.0, -0.6])
    query = _query(0, (0, 2, 4))
    answer = backends["smoke-qwen2-vl"]._rank_answer(query, scores, 0.0, 10)
    assert answer.class_id == 2 and answer.top5 == (2, 4, 0)
    assert answer.top1_prob == pytest.approx(math.exp(-1.0) / (math.exp(-5.0) + math.exp(-1.0) + math.exp(-1.8)))


def test_ranked_keeps_the_first_of_tied_candidates():
    top, prob = rank.ranked([0.0, 2.0, 2.0, -1.0, 1.0, 0.5], [10, 11, 12, 13, 14, 15])
    assert top == (11, 12, 14, 15, 10) and prob == pytest.approx(math.exp(2) / sum(map(math.exp, [0, 2, 2, -1, 1, .5])))
    assert rank.ranked([1.0, 3.0], [7, 8]) == ((8, 7), pytest.approx(1 / (1 + math.exp(-2))))
    with pytest.raises(ValueError):
        rank.ranked([1.0], [1, 2])


# ---------------------------------------------------------------- calibration on hand-made predictions

def _pred(i: int, true: int, top5, prob, error=None) -> Prediction:
    pred = None if top5 is None else top5[0]
    return Prediction(f"s{i}", true, f"c{true}", ("a",), None, pred, None, "rank", error=error, top5=top5, top1_prob=prob)


HAND = [  # true class, top 5 (best first), top-1 probability
    _pred(0, 1, (1, 2, 3, 4, 5), 0.95),  # right
    _pred(1, 3, (2, 9, 3, 4, 5), 0.94),  # wrong, true at rank 3
    _pred(2, 4, (6, 7, 8, 9, 0), 0.90),  # wrong, not in the top 5
    _pred(3, 5, (5, 1, 2, 3, 4), 0.50),  # right
    _pred(4, 7, (1, 2, 3, 4, 7), 0.21),  # wrong, true at rank 5
    _pred(5, 2, None, None, error="boom"),  # no scores: left out
]


def test_top5_accuracy_by_hand():
    assert calibration.top_k_accuracy(HAND) == pytest.approx(4 / 5)  # s0, s1, s3, s4
    assert calibration.top_k_accuracy(HAND, k=1) == pytest.approx(2 / 5)
    assert calibration.top_k_accuracy(HAND[-1:]) is None


def test_ece_by_hand():
    """Bins of width 1/15: 0.95 and 0.94 share bin 14 (accuracy 1/2, confidence 0.945), 0.90 is in bin 13,
    0.50 in bin 7, 0.21 in bin 3. ECE = 2/5*|0.5-0.945| + 1/5*0.9 + 1/5*0.5 + 1/5*0.21 = 0.5."""
    summary = calibration.summary(HAND)
    assert summary["n"] == 5 and summary["top1_accuracy"] == pytest.approx(0.4)
    assert summary["ece"] == pytest.approx(0.178 + 0.18 + 0.1 + 0.042)
    filled = {i: b for i, b in enumerate(summary["reliability"]) if b["n"]}
    assert sorted(filled) == [3, 7, 13, 14] and len(summary["reliability"]) == 15
    assert filled[14]["n"] == 2 and filled[14]["accuracy"] == 0.5 and filled[14]["confidence"] == pytest.approx(0.945)
    assert filled[14]["low"] == pytest.approx(14 / 15) and filled[14]["high"] == 1.0
    json.dumps(summary)  # goes into results.json as is
    assert calibration.summary(HAND[-1:]) is None


def test_bin_edges_are_closed_on_the_right():
    assert [calibration.bin_index(c) for c in (0.0, 1 / 15, 1 / 15 + 1e-9, 0.5, 1.0)] == [0, 0, 1, 7, 14]
    assert calibration.ece([1.0, 1.0], [True, True]) == 0.0
    assert calibration.ece([0.6], [False]) == pytest.approx(0.6)


def test_scores_survive_the_store_and_old_rows_still_load(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    store.put("k", HAND[:2], 0.0)
    back = store.get("k")
    assert back["s0"].top5 == (1, 2, 3, 4, 5) and back["s0"] == HAND[0]
    old = {k: v for k, v in json.loads(json.dumps(HAND[0].__dict__)).items() if k not in ("top5", "top1_prob")}
    from vlmcls.store import from_record

    assert from_record(old).top5 is None


# ---------------------------------------------------------------- the benchmark, as users run it

def test_bench_runs_in_rank_mode(bench):
    pytester = bench
    out = pytester.runpytest_subprocess("bench", "-k", "smoke-qwen2-vl-none-20way", "--resolver", "rank",
                                        "--samples", "6", "-p", "no:cacheprovider")
    out.assert_outcomes(passed=1)
    (run_dir,) = [d for d in (pytester.path / "reports").iterdir() if d.is_dir()]
    (row,) = json.loads((run_dir / "results.json").read_text())["cases"]
    assert row["resolver"] == "rank" and row["stages"] == {"rank": 1.0}
    assert row["calibration"]["n"] == 6 and 0 <= row["calibration"]["ece"] <= 1
    samples = [json.loads(l) for f in run_dir.rglob("*.jsonl") for l in f.read_text().splitlines()]
    assert len(samples) == 6 and all(len(s["top5"]) == 5 and 0 < s["top1_prob"] <= 1 for s in samples)
    assert "## Calibration" in (run_dir / "report.md").read_text()


def test_reliability_diagram_is_drawn_only_with_scores(tmp_path):
    pytest.importorskip("matplotlib")
    from vlmcls import plots

    rows = [{"case_id": "m-20way", "calibration": calibration.summary(HAND)}, {"case_id": "api-20way", "calibration": None}]
    path = plots.reliability_diagram(rows, tmp_path / "r.png")
    assert path.read_bytes().startswith(b"\x89PNG")
    assert plots.reliability_diagram(rows[1:], tmp_path / "none.png") is None


def test_the_run_plots_include_the_reliability_diagram_only_with_scores(tmp_path):
    pytest.importorskip("matplotlib")
    from vlmcls import plots

    rows = [{"case_id": "m-20way", "calibration": calibration.summary(HAND)}, {"case_id": "api-20way", "calibration": None}]
    assert plots.write_plots(rows, tmp_path / "a", confusions=[])["reliability"].name == "reliability.png"
    assert "reliability" not in plots.write_plots(rows[1:], tmp_path / "b", confusions=[])
