"""Ranking mode's default path: all of one image's candidates in one forward pass, as a token tree.

The candidates' input tokens (each label's tokens; its end-of-turn token is only a target) are merged into
a trie: "crane", "crane fly" and "cran" share the nodes of "cran", so each distinct prefix is computed
once. The nodes run in one forward pass after the prompt's cache (batch 1, never expanded), with a 4D
attention mask: a node sees the whole prompt, its ancestors and itself, never a sibling branch. Its
position is the prompt's next text position + its depth (`Prefilled.position` holds Qwen2-VL's rope
delta). Token j+1 of a candidate is read from the logits of its node at depth j; token 0 from
`Prefilled.first`, as in the chunked path.

Memory stays bounded: the language model runs to hidden states, and the LM head + log-softmax are applied
a slice of nodes at a time, keeping only the candidates' targets (never nodes x vocab float32 logits for
thousands of nodes). A tree too big for one pass (1000-way: ~5,000 nodes) is cut into sub-forests; each
gets a fresh cache built from the prompt's keys and values (a forward appends to its cache: the
prompt's own tensors are never written, and every sub-forest sees the prompt alone).

transformers uses a 4D mask as given (masking_utils returns it untouched); eager attention *adds* it to
the scores, so it is a float mask (0 = attend, the dtype's minimum = not), which sdpa also takes. Whether
a model honours it is checked once per model (`honours_tree_mask`): families that build their own masks
or use sliding-window layers fall back to the chunked path (backends/rank.py).

Importing this module never imports torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .prefix_cache import cache_kwarg_of
from .rank import Prefilled, Scores, expanded_cache

SLICE_BYTES = 2**28  # float32 logits (and their exp work space) one LM-head slice may take
FOREST_BYTES = 2**30  # attention scores one forward pass may take: heads x nodes x (prompt + nodes) x 4


@dataclass(frozen=True)
class Forest:
    """Trie nodes (parents before children) and, per candidate, the node whose logits predict each of its
    tokens after the first."""

    tokens: tuple[int, ...]
    parents: tuple[int, ...]  # -1: a root, whose parent is the prompt
    depths: tuple[int, ...]
    reads: tuple[tuple[int, ...], ...]  # per candidate (in the group's order): node per token 1..n-1


def forest(seqs: Sequence[Sequence[int]]) -> Forest:
    """The trie of the candidates' input tokens (all but the last token of each)."""
    tokens: list[int] = []
    parents: list[int] = []
    depths: list[int] = []
    children: dict[tuple[int, int], int] = {}
    reads = []
    for seq in seqs:
        node, path = -1, []
        for depth, token in enumerate(seq[:-1]):
            child = children.get((node, token))
            if child is None:
                child = children[(node, token)] = len(tokens)
                tokens.append(token)
                parents.append(node)
                depths.append(depth)
            node = child
            path.append(node)
        reads.append(tuple(path))
    return Forest(tuple(tokens), tuple(parents), tuple(depths), tuple(reads))


def groups(seqs: Sequence[Sequence[int]], max_nodes: int) -> list[list[int]]:
    """Candidate indices per sub-forest, each with at most `max_nodes` nodes (a single longer candidate
    alone). In token order, so that shared prefixes stay together: there the trie's size is exact, each
    candidate adding its length minus what it shares with the one before."""
    order = sorted(range(len(seqs)), key=lambda i: list(seqs[i][:-1]))
    out: list[list[int]] = []
    nodes, previous = 0, ()
    for i in order:
        inputs = tuple(seqs[i][:-1])
        added = len(inputs) - _shared(previous, inputs)
        if not out or nodes + added > max_nodes:
            out.append([])
            nodes, added = 0, len(inputs)
        out[-1].append(i)
        nodes, previous = nodes + added, inputs
    return out


def _shared(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    while n < len(a) and n < len(b) and a[n] == b[n]:
        n += 1
    return n


def max_nodes(model, pre: Prefilled, budget: int = FOREST_BYTES) -> int:
    """Nodes per forward pass: the largest m with heads x m x (prompt + m) x 4 bytes within the budget
    (the attention scores, which sdpa's math path and eager materialise; the mask is one more head)."""
    config = model.config.get_text_config(decoder=True)
    heads = int(getattr(config, "num_attention_heads", 32)) + 1
    prompt = int(pre.layers[0][0].shape[-2])
    per = budget / (4 * heads)
    return max(16, int((-prompt + (prompt * prompt + 4 * per) ** 0.5) / 2))


# ---------------------------------------------------------------- scoring (torch)

def score(model, pre: Prefilled, seqs: Sequence[Sequence[int]], nodes: int | None = None) -> Scores:
    """Every candidate's per-token log-probabilities; at most `nodes` trie nodes per forward pass."""
    import torch

    limit = nodes or max_nodes(model, pre)
    firsts = pre.first[torch.tensor([s[0] for s in seqs], device=pre.first.device)].tolist()
    rows: dict[int, tuple[float, ...]] = {}
    for group in groups(seqs, limit):
        rest = _score_forest(model, pre, [seqs[i] for i in group])
        rows.update((i, (firsts[i], *r)) for i, r in zip(group, rest))
    return Scores(tuple(rows[i] for i in range(len(seqs))))


def _score_forest(model, pre: Prefilled, seqs: Sequence[Sequence[int]]) -> list[tuple[float, ...]]:
    import torch

    tree = forest(seqs)
    if not tree.tokens:  # every candidate is one token long: all read from the prompt's logits
        return [()] * len(seqs)
    hidden = hidden_states(model, pre, tree)
    nodes = torch.tensor([n for r in tree.reads for n in r], dtype=torch.long)
    targets = torch.tensor([s[j + 1] for s, r in zip(seqs, tree.reads) for j in range(len(r))], dtype=torch.long)
    values = _log_probs(model, hidden, nodes, targets, int(pre.first.shape[0])).tolist()
    out, at = [], 0
    for r in tree.reads:
        out.append(tuple(values[at:at + len(r)]))
        at += len(r)
    return out


def hidden_states(model, pre: Prefilled, tree: Forest, mask=None):
    """The language model's last hidden state at every node (nodes, hidden), the prompt's cache untouched."""
    import torch

    device = pre.first.device
    inner = getattr(model, "base_model", model)
    dtype = pre.layers[0][0].dtype
    mask = tree_mask(tree, int(pre.layers[0][0].shape[-2]), dtype) if mask is None else mask
    ids = torch.tensor([tree.tokens], device=device)
    positions = pre.position + torch.tensor([tree.depths], device=device)
    with torch.inference_mode():
        out = inner(input_ids=ids, position_ids=positions, attention_mask=mask.to(device), use_cache=True,
                    **{cache_kwarg_of(inner): expanded_cache(model, pre.layers, 1)})
    return out.last_hidden_state[0]


def tree_mask(tree: Forest, prompt: int, dtype):
    """(1, 1, nodes, prompt + nodes) additive mask: 0 where a node may look (the prompt, its ancestors,
    itself), the dtype's minimum elsewhere (eager adds the mask to the scores; sdpa takes it as well)."""
    import torch

    m = len(tree.tokens)
    sees = torch.zeros(m, m, dtype=torch.bool)
    for i, parent in enumerate(tree.parents):  # parents come first: their rows are complete
        if parent >= 0:
            sees[i] = sees[parent]
        sees[i, i] = True
    mask = torch.zeros(1, 1, m, prompt + m, dtype=dtype)
    mask[0, 0, :, prompt:].masked_fill_(~sees, torch.finfo(dtype).min)
    return mask


def _log_probs(model, hidden, nodes, targets, vocab: int):
    """log P(target | node) for each (node, target) pair, the LM head applied to a slice of nodes at a time."""
    import torch

    head = model.get_output_embeddings()
    cap = getattr(model.config.get_text_config(decoder=True), "final_logit_softcapping", None)
    step = max(1, SLICE_BYTES // (2 * 4 * vocab))
    nodes, targets = nodes.to(hidden.device), targets.to(hidden.device)
    out = torch.empty(len(nodes), dtype=torch.float32, device=hidden.device)
    with torch.inference_mode():
        for start in range(0, hidden.shape[0], step):
            logits = head(hidden[start:start + step]).float()
            if cap:  # Gemma's soft cap, as its ForConditionalGeneration applies it
                logits = torch.tanh(logits / cap) * cap
            lse = logits.logsumexp(-1)
            pick = ((nodes >= start) & (nodes < start + step)).nonzero().squeeze(-1)
            local = nodes[pick] - start
            out[pick] = logits[local, targets[pick]] - lse[local]
    return out


# ---------------------------------------------------------------- which path a model takes

def unsupported(model) -> str | None:
    """Why the model's configuration rules the tree out (None: it does not): a sliding-window layer would
    get the full mask and a cache that keeps only its window."""
    config = model.config.get_text_config(decoder=True)
    kinds = set(getattr(config, "layer_types", None) or ())
    if kinds - {"full_attention"}:
        return f"layer types {sorted(kinds)}"
    if not kinds and getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return "sliding-window attention"
    if model.get_output_embeddings() is None:
        return "no output embeddings"
    return None


def honours_tree_mask(model, pre: Prefilled, a: int, b: int) -> bool:
    """Whether the model attends as the mask says: a branch's hidden states must not change when a
    sibling branch placed *before* it changes (under a plain causal mask they would). Run without the
    prompt, where a leak would be a third of a node's attention rather than a thousandth; with the same
    shapes and the sibling masked out, both passes give the same numbers. Then one node after the real
    prompt, which must run and be finite."""
    import torch

    empty = Prefilled([(k[..., :0, :], v[..., :0, :]) for k, v in pre.layers], pre.first, 0)
    shape = dict(parents=(-1, 0, -1, 2), depths=(0, 1, 0, 1), reads=())
    first = hidden_states(model, empty, Forest((a, a, b, a), **shape))[2:].float()
    second = hidden_states(model, empty, Forest((b, b, b, a), **shape))[2:].float()
    after = hidden_states(model, pre, Forest((a,), (-1,), (0,), ()))
    scale = float(first.abs().max()) or 1.0
    finite = bool(torch.isfinite(first).all()) and bool(torch.isfinite(after).all())
    return finite and float((first - second).abs().max()) <= 1e-4 * scale


def choose(model, pre: Prefilled, seqs: Sequence[Sequence[int]]) -> tuple[str, str]:
    """("tree" or "chunked", a note for the report saying which ran and why)."""
    import torch

    from ..errors import one_line

    reason = unsupported(model)
    if reason is None:
        a, b = seqs[0][0], next((t for s in seqs for t in s if t != seqs[0][0]), seqs[0][0] + 1)
        try:
            reason = None if honours_tree_mask(model, pre, a, b) else "the model ignored a 4D attention mask"
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:  # a family whose forward refuses a 4D mask: chunks still work
            reason = f"a 4D attention mask failed: {one_line(exc, with_type=True)}"
    if reason:
        return "chunked", f"rank: candidates scored in chunks, the prompt's cache expanded per chunk ({reason})"
    return "tree", "rank: each image's candidates scored as one token tree (4D attention mask, shared prefixes once)"
