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


def summary(rows: Iterable[Any], orders: int, ways: int) -> dict[str, Any]:
    """Everything the report's "Candidate order" section shows for one case (JSON-safe)."""
    images, incomplete = by_image(rows, orders)
    flat = [r for rs in images.values() for r in rs]
    acc = accuracy_per_order(images, orders)
    pos_acc, pos_n = position_accuracy(flat, ways)
    picked = picked_positions(flat, ways)
    expected, chi2, p = uniform_test(picked, ways)
    return {
        "orders": orders, "ways": ways, "images": len(images), "incomplete": incomplete,
        "accuracy": acc, "mean": statistics.fmean(acc) if acc else None,
        "min": min(acc, default=None), "max": max(acc, default=None),
        "std": statistics.stdev(acc) if len(acc) > 1 else None,  # sample std over the K orders
        **consistency(images),
        "bins": bins_for(ways), "bin_sizes": bin_sizes(ways),
        "position_accuracy": pos_acc, "position_n": pos_n,
        "picked": picked, "expected": expected, "chi2": chi2, "p_value": p,
        "rough_test": any(e < MIN_EXPECTED for e in expected),
    }
