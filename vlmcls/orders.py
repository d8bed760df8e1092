"""Candidate-order robustness: one case's answers to the same images in K candidate orders.

Input: the per-sample rows of every order (Prediction objects or their JSON dicts, `order` field);
output: a JSON-safe dict that travels in the case row (workers send rows, the controller renders).
Statistics are over the images answered in every order, so an order is never compared on other
images than the others (a --max-cost stop can leave the last image with fewer answers).
"""
from __future__ import annotations

import statistics
from typing import Any, Iterable, Mapping, Sequence

MAX_BINS = 10  # deciles of the candidate list; fewer bins when N < 10 (one per position)
MIN_EXPECTED = 5  # below this expected count per bin the chi-square approximation is rough
# K > 1 orders: the p-value of the picked positions' chi-square statistic comes from this many seeded
# relabellings of each image's positions (`permutation_p`), not from the chi-square table (see there)
PERMUTATION_DRAWS = 1999  # p resolution 1/2000; its Monte-Carlo error at p = 0.05 is about 0.005
PERMUTATION_SEED = 20250101  # with a hash of the picks: the same rows always give the same p


def _get(row: Any, key: str, default: Any = None) -> Any:
    return row.get(key, default) if isinstance(row, Mapping) else getattr(row, key, default)


def by_image(rows: Iterable[Any], orders: int) -> tuple[dict[str, list[Any]], int]:
    """sample id -> its rows in order 0..K-1, for images answered in every order; and how many
    images lack some order."""
    seen: dict[str, dict[int, Any]] = {}
    for r in rows:
        seen.setdefault(str(_get(r, "sample_id")), {})[int(_get(r, "order", 0) or 0)] = r
    complete = {sid: [got[k] for k in range(orders)] for sid, got in seen.items() if all(k in got for k in range(orders))}
    return complete, len(seen) - len(complete)


def correct(row: Any) -> bool:
    """Unresolved and error rows are wrong, as in the main metrics."""
    pred = _get(row, "pred_id")
    return pred is not None and pred == _get(row, "true_id")


def position(row: Any, label: Any) -> int | None:
    """Where `label` sits in the row's candidate list; None when it is absent or listed twice
    (thesis labels: two classes are both "crane", so the position would be a guess)."""
    cands = list(_get(row, "candidates") or ())
    if label is None or cands.count(label) != 1:
        return None
    return cands.index(label)


def bins_for(ways: int) -> int:
    return max(1, min(MAX_BINS, ways))


def bin_of(pos: int, ways: int) -> int:
    """Decile of a 0-based position in a list of `ways` (bin 0 = the first tenth of the list)."""
    return pos * bins_for(ways) // ways


def bin_sizes(ways: int) -> list[int]:
    """Positions per bin (unequal when N is not a multiple of 10): the uniform expectation's weights."""
    sizes = [0] * bins_for(ways)
    for p in range(ways):
        sizes[bin_of(p, ways)] += 1
    return sizes


def position_edges(sizes: Sequence[int]) -> list[str]:
    """1-based position ranges of the bins, for tables and plots ("1–2", "3–4", ...; "1", "2", ... when N <= 10)."""
    edges, start = [], 1
    for size in sizes:
        edges.append(str(start) if size == 1 else f"{start}–{start + size - 1}")
        start += size
    return edges


def accuracy_per_order(images: Mapping[str, Sequence[Any]], orders: int) -> list[float]:
    n = len(images)
    return [sum(correct(rs[k]) for rs in images.values()) / n for k in range(orders)] if n else []


def consistency(images: Mapping[str, Sequence[Any]]) -> dict[str, float]:
    """Shares of images: whose K answers name the same candidate (unresolved / error never agree),
    and right in every order / in some but not every order / in none (these three add up to 1)."""
    n = len(images) or 1
    agree = sum(len({_get(r, "pred_id") for r in rs}) == 1 and _get(rs[0], "pred_id") is not None for rs in images.values())
    hits = [sum(map(correct, rs)) for rs in images.values()]
    k = len(next(iter(images.values()), ()))
    return {"consistent": agree / n, "right_all": sum(h == k for h in hits) / n,
            "right_some": sum(0 < h < k for h in hits) / n, "right_none": sum(h == 0 for h in hits) / n}


def position_accuracy(rows: Iterable[Any], ways: int) -> tuple[list[float | None], list[int]]:
    """Accuracy by the decile of the true label's position (None for an empty bin), and the rows per bin."""
    hit, n = [0] * bins_for(ways), [0] * bins_for(ways)
    for r in rows:
        pos = position(r, _get(r, "true_label"))
        if pos is not None:
            n[bin_of(pos, ways)] += 1
            hit[bin_of(pos, ways)] += correct(r)
    return [h / c if c else None for h, c in zip(hit, n)], n


def picked_positions(rows: Iterable[Any], ways: int) -> list[int]:
    """How many answers picked a candidate in each decile of the list (unresolved / error: none)."""
    counts = [0] * bins_for(ways)
    for r in rows:
        pos = position(r, _get(r, "pred_label")) if _get(r, "pred_id") is not None else None
        if pos is not None:
            counts[bin_of(pos, ways)] += 1
    return counts


def uniform_test(counts: Sequence[int], ways: int) -> tuple[list[float], float | None, float | None]:
    """Expected counts under "the position does not matter" (the true label's position is uniform by
    construction, so an unbiased model's picks are too) and the chi-square statistic and p-value."""
    total = sum(counts)
    expected = [total * s / ways for s in bin_sizes(ways)]
    if total == 0 or len(counts) < 2:
        return expected, None, None
    from scipy.stats import chisquare

    res = chisquare(counts, expected)
    return expected, float(res.statistic), float(res.pvalue)


def picked_matrix(images: Mapping[str, Sequence[Any]], ways: int) -> list[list[int]]:
    """Per image, per order: the position of the picked candidate in that order's list (-1: none,
    as `picked_positions` leaves it out: unresolved, error, or a label listed twice)."""
    out = []
    for rs in images.values():
        line = []
        for r in rs:
            pos = position(r, _get(r, "pred_label")) if _get(r, "pred_id") is not None else None
            line.append(-1 if pos is None else pos)
        out.append(line)
    return out


def _weights(ways: int) -> "Any":
    """Integer w_b proportional to 1 / size_b: with the total fixed, Pearson's statistic is
    N / total * sum(c_b**2 / size_b) - total, so sum(w_b * c_b**2) orders the statistics exactly
    (integers: a relabelling that gives the observed counts ties with them, never misses by rounding)."""
    import math

    import numpy as np

    sizes = bin_sizes(ways)
    lcm = math.lcm(*sizes)
    return np.array([lcm // s for s in sizes], dtype=np.int64)


def _distinct(rng: Any, shape: tuple[int, ...], m: int, ways: int) -> "Any":
    """(m,) + shape positions: along the first axis, m distinct values drawn uniformly without replacement
    from range(ways) (m <= ways). Draw j takes the u-th value not drawn yet, u uniform below ways - j:
    the least v with v = u + #(earlier draws <= v), reached by iterating from v = u (at most j steps)."""
    import numpy as np

    out = np.empty((m,) + shape, dtype=np.int32)
    for j in range(m):
        u = rng.integers(0, ways - j, size=shape, dtype=np.int32)
        v = u
        for _ in range(j):
            nxt = u + sum(out[t] <= v for t in range(j))
            if np.array_equal(nxt, v):
                break
            v = nxt
        out[j] = v
    return out


def permutation_p(matrix: Sequence[Sequence[int]], ways: int, draws: int = PERMUTATION_DRAWS,
                  seed: int = PERMUTATION_SEED) -> float | None:
    """Monte-Carlo p-value of Pearson's chi-square statistic of the picked positions (all orders pooled,
    against the bin sizes) under "the pick does not depend on the position", respecting the design.

    `matrix`: per image, the picked position in each order (-1: none). The K orders of an image are not
    K independent lists: no candidate sits at the same position twice (a Latin rectangle), so a model
    that picks by content alone spreads its K picks over K different positions, more evenly than K
    independent picks: the chi-square table's p-value is then too large (at K = 5, p < 0.05 almost never).
    The design (`candidates.candidate_set` shuffles order 0 uniformly; `candidates.order_permutation`
    derives the others from it) gives the joint law of an image's K lists that any one relabelling of
    the positions 0..N-1, the same for all K orders of the image, leaves unchanged. Under the null the
    picks are independent of the lists, so the observed picked positions are as likely as any such
    relabelling of them: each draw relabels every image's positions by its own uniform random permutation
    (equal positions stay equal, distinct stay distinct, unanswered stay out) and recomputes the
    statistic; p = (1 + draws at or above the observed) / (1 + draws). None when no pick or a single bin."""
    import numpy as np

    bins = bins_for(ways)
    pos = np.asarray(matrix, dtype=np.int64).reshape(len(matrix), -1) if len(matrix) else np.full((0, 1), -1)
    valid = pos >= 0
    if not valid.any() or bins < 2:
        return None
    w = _weights(ways)
    observed = int(w @ np.bincount(pos[valid] * bins // ways, minlength=bins) ** 2)
    # each image's distinct picked positions, numbered 0, 1, ... in the image: a relabelling maps them to
    # that many distinct random positions, so only the numbering of the observed ones is needed
    row = np.nonzero(valid)[0]
    uniq, inverse = np.unique(row * (ways + 1) + pos[valid], return_inverse=True)
    first = np.searchsorted(uniq, row * (ways + 1))  # the image's first distinct value in `uniq`
    label = inverse.ravel() - first
    m = int(label.max()) + 1  # at most min(K, N)
    # the draws are seeded by the picks too: one fixed set of draws would be reused by every case of the same
    # shape, each sharing its luck (its 95th percentile a little off); these are still the same for the same rows
    import hashlib

    digest = hashlib.sha256(np.ascontiguousarray(pos).tobytes() + str(ways).encode()).digest()
    rng = np.random.default_rng([seed, int.from_bytes(digest[:8], "big")])
    images = pos.shape[0]
    chunk = max(1, min(draws, 2_000_000 // max(1, images * m)))  # bounded memory
    above, done = 0, 0
    while done < draws:
        c = min(chunk, draws - done)
        new = _distinct(rng, (c, images), m, ways)[label, :, row].T  # (c, picks): the relabelled positions
        cell = (np.arange(c)[:, None] * bins + new * bins // ways).ravel()
        counts = np.bincount(cell, minlength=c * bins).reshape(c, bins)
        above += int(((counts ** 2) @ w >= observed).sum())
        done += c
    return (1 + above) / (1 + draws)


def summary(rows: Iterable[Any], orders: int, ways: int) -> dict[str, Any]:
    """Everything the report's "Candidate order" section shows for one case (JSON-safe). The p-value of
    the picked positions: the chi-square table's at K = 1 (`uniform_test`), a permutation test's that
    respects the K orders' design at K > 1 (`permutation_p`); `p_test` says which."""
    images, incomplete = by_image(rows, orders)
    flat = [r for rs in images.values() for r in rs]
    acc = accuracy_per_order(images, orders)
    pos_acc, pos_n = position_accuracy(flat, ways)
    picked = picked_positions(flat, ways)
    expected, chi2, p = uniform_test(picked, ways)
    permutation = orders > 1
    # labels-first at N = every class: every image saw the same K lists (class order, then its reorders), so a
    # position is always the same class and a preference for a class reads as one for a position: no test
    shared = len(images) > 1 and len({tuple(_get(rs[0], "candidates") or ()) for rs in images.values()}) == 1
    if permutation and p is not None:
        p = None if shared else permutation_p(picked_matrix(images, ways), ways)
    return {
        "orders": orders, "ways": ways, "images": len(images), "incomplete": incomplete,
        "accuracy": acc, "mean": statistics.fmean(acc) if acc else None,
        "min": min(acc, default=None), "max": max(acc, default=None),
        "std": statistics.stdev(acc) if len(acc) > 1 else None,  # sample std over the K orders
        **consistency(images),
        "bins": bins_for(ways), "bin_sizes": bin_sizes(ways),
        "position_accuracy": pos_acc, "position_n": pos_n,
        "picked": picked, "expected": expected, "chi2": chi2, "p_value": p,
        "p_test": "shared lists" if shared and permutation else "permutation" if permutation else "chi-square",
        **({"p_draws": PERMUTATION_DRAWS} if permutation else {}),
        # only the chi-square table's p needs expected counts of 5 or more; a permutation p is exact but for draws
        "rough_test": not permutation and any(e < MIN_EXPECTED for e in expected),
    }
