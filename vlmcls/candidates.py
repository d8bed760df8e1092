"""Seeded candidate sets: the true class + N-1 distinct distractors, shuffled.

A sample's set depends only on (seed, sample id, N): a private RNG is seeded from a hash of the
three, so order, threads and xdist workers cannot change it (never the global RNG).
"""
from __future__ import annotations

import hashlib
import random
from typing import Sequence

from .types import CandidateSet


def rng_for(*parts: object) -> random.Random:
    """A private RNG from a stable hash (Python's hash() is salted per process; sha256 is not)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def check_ways(ways: int, n_classes: int) -> None:
    if ways < 2:
        raise ValueError(f"N-way needs N >= 2 (got {ways})")
    if ways > n_classes:
        raise ValueError(f"{ways}-way needs at least {ways} classes but the dataset has {n_classes}; "
                         f"use --ways {n_classes} or less, or a dataset with more classes")


def candidate_set(sample_id: str, true_id: int, ways: int, n_classes: int, seed: int) -> CandidateSet:
    """N == number of classes means every class (still shuffled per sample)."""
    check_ways(ways, n_classes)
    rng = rng_for("candidates", seed, sample_id, ways)
    others = [c for c in range(n_classes) if c != true_id]
    ids = rng.sample(others, ways - 1) + [true_id]
    rng.shuffle(ids)
    return CandidateSet(sample_id=sample_id, ways=ways, true_id=true_id, class_ids=tuple(ids))


# ---------------------------------------------------------------------------------- K orders
def order_permutation(sample_id: str, ways: int, order: int, seed: int) -> tuple[int, ...]:
    """Permutation `order` of a sample's candidate list: `new[j] = old[perm[j]]`. Order 0 is the
    identity (today's list), so a run with one order changes nothing.

    Orders 0..N-1 form a Latin rectangle: perm_k[j] = b⁻¹((b[j] + c_k) mod N), with b a seeded
    shuffle and c_k distinct shifts (c_0 = 0). So no candidate sits at the same position in two
    orders: a model that always names the first listed label answers differently in every order,
    and the true label visits K different positions. Each order's positions are still uniformly
    random, and order k depends only on (seed, sample id, N, k) and the orders before it, so the
    first K' orders of a K-order run are those of a K'-order run (a larger K resumes a smaller)."""
    if order == 0:
        return tuple(range(ways))
    if order >= ways:  # more orders than positions: a Latin rectangle is impossible
        return _extra_permutation(sample_id, ways, order, seed)
    b = list(range(ways))
    rng_for("orders", seed, sample_id, ways).shuffle(b)
    slot = {v: j for j, v in enumerate(b)}  # b⁻¹
    c = _shifts(sample_id, ways, order, seed)[-1]
    return tuple(slot[(b[j] + c) % ways] for j in range(ways))


def _shifts(sample_id: str, ways: int, order: int, seed: int) -> list[int]:
    """c_1..c_order: distinct non-zero shifts, c_k drawn from its own RNG (re-drawn on a repeat)."""
    shifts: list[int] = []
    for k in range(1, order + 1):
        rng = rng_for("orders", seed, sample_id, ways, k)
        c = rng.randrange(1, ways)
        while c in shifts:
            c = rng.randrange(1, ways)
        shifts.append(c)
    return shifts


def _extra_permutation(sample_id: str, ways: int, order: int, seed: int) -> tuple[int, ...]:
    """Order k >= N: a seeded shuffle, re-drawn while it repeats an earlier order and N! allows."""
    import math

    earlier = set(order_permutations(sample_id, ways, order, seed))
    rng = rng_for("orders", seed, sample_id, ways, order)
    perm = list(range(ways))
    rng.shuffle(perm)
    while tuple(perm) in earlier and len(earlier) < math.factorial(ways):
        rng.shuffle(perm)
    return tuple(perm)


def orders_note(orders: int, ways: int) -> str | None:
    """The case note for --orders K > N (None otherwise): only N orders can keep every label off the
    positions it held (the Latin rectangle); the rest are the seeded shuffles of `_extra_permutation`,
    distinct from the earlier orders while N! allows, then repeats."""
    if orders <= ways:
        return None
    import math

    distinct = math.factorial(ways) if ways < 8 else orders + 1  # 8! > any K worth asking for
    head = f"--orders {orders} at {ways}-way: "
    if distinct == ways:  # 2-way: the two orders are the Latin rectangle already
        return head + f"{ways} candidates have only {ways} orders, so {_span(ways, orders - 1, 'repeats one of them', 'repeat them')}"
    last = min(orders, distinct) - 1
    note = (head + f"only orders 0-{ways - 1} keep every label off the positions it held in the other orders; "
            f"{_span(ways, last, 'is a seeded shuffle', 'are seeded shuffles')}, distinct from the earlier orders, "
            "in which a label can sit where it sat before")
    if orders > distinct:
        note += f"; {ways} candidates have only {distinct} orders, so {_span(distinct, orders - 1, 'repeats one of them', 'repeat them')}"
    return note


def _span(first: int, last: int, one: str, many: str) -> str:
    """"order 5 is ..." or "orders 5-7 are ..."."""
    return f"order {first} {one}" if first == last else f"orders {first}-{last} {many}"


def order_permutations(sample_id: str, ways: int, orders: int, seed: int) -> list[tuple[int, ...]]:
    """The first `orders` permutations of a sample's candidate list (see order_permutation)."""
    return [order_permutation(sample_id, ways, k, seed) for k in range(orders)]


def reorder(cs: CandidateSet, perm: Sequence[int]) -> CandidateSet:
    """The same candidate set, listed in the order `perm` (new[j] = old[perm[j]])."""
    return CandidateSet(cs.sample_id, cs.ways, cs.true_id, tuple(cs.class_ids[i] for i in perm))
