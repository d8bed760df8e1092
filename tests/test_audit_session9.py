"""Session 9's audit of the code paths that change published figures: each test here failed on the
code before its fix (or pins behaviour that had no test), and says which figure it protects."""
from __future__ import annotations

import pytest

from answers import CATS, imagenet_labels
from vlmcls.resolve import Resolver
from vlmcls.types import Resolution

LABELS = imagenet_labels()
FIRST_ID = {name: i for i, name in reversed(list(enumerate(LABELS.names)))}


def ids_of(names) -> list[int]:
    return [FIRST_ID[n] for n in names]


def exact(answer: str, candidates=CATS) -> Resolution:
    return Resolver("exact", LABELS).resolve(answer, ids_of(candidates))


# ------------------------------------------------------------------ the match stage: line breaks

@pytest.mark.parametrize("answer", [
    "tabby\ntiger cat is less likely",
    "tabby\n\nTiger cat would also fit.",
    "Tabby.\n\nEgyptian cat is the other option.",
], ids=["next-line", "blank-line", "sentence-then-line"])
def test_a_label_ending_a_line_is_no_modifier_of_the_label_starting_the_next(answer):
    """The modifier rule ("orange tabby cat": "orange" only describes the tabby) read any whitespace as
    adjacency, a line break too: "tabby\\ntiger cat is less likely" resolved to tiger cat, the label the
    answer sets aside, and counted a correct tabby answer wrong (accuracy, every P/R/F1)."""
    got = exact(answer)
    assert (got.class_id, got.stage) == (FIRST_ID["tabby"], "match"), got


def test_the_modifier_rule_still_applies_within_a_line():
    got = exact("It's an orange tabby cat.", ("orange", "tabby", "lemon"))
    assert got.class_id == FIRST_ID["tabby"]


@pytest.mark.parametrize("answer", [
    "tabby\ntiger cat\nEgyptian cat",
    "1. tabby\n2. tiger cat\n3. Egyptian cat",
    "- tabby\n- tiger cat",
    "Classes:\n* tabby\n* tiger cat\n* Egyptian cat\n",
    "1) tabby\n2) tiger cat",
    "**tabby**\n**Egyptian cat**",
], ids=["bare-lines", "numbered", "dashes", "stars-under-a-heading", "parens", "bold-lines"])
def test_an_answer_listing_candidates_one_per_line_is_ambiguous(answer):
    """The same list on one line ("tabby, tiger cat, Egyptian cat") is ambiguous; one per line (a model
    echoing the `numbered` prompt's list) the first-sentence rule took the first line, i.e. the first
    listed candidate: a guess the README promises never to make, recorded as a `match` (the study
    resolver then never asks the NLI) and credited to the model as a pick of position 1 in the
    position-bias test."""
    got = exact(answer)
    assert (got.class_id, got.stage, got.ambiguous) == (None, "unresolved", True), got


@pytest.mark.parametrize("answer, expected", [
    ("1. tabby\n2. tiger cat\n3. Egyptian cat\n\nAnswer: tiger cat", "tiger cat"),
    ("- tabby\n- tiger cat\n\nThe object is most likely a tiger cat.", "tiger cat"),
    ("1. tabby", "tabby"),
    ("tabby\n\nOther options:\n- tiger cat\n- Egyptian cat", "tabby"),
    ("Lion.\nReasoning: the mane rules out a tiger or a cheetah.", "lion"),
    ("tiger cat\n\nThe tabby pattern is less likely here.", "tiger cat"),
], ids=["list-then-cue", "list-then-sentence", "one-item", "answer-then-list", "line-then-reason",
        "line-then-prose"])
def test_a_list_followed_by_an_answer_still_resolves(answer, expected):
    """Pins what the list rule must not break: a cue after the list decides, and one bare line followed
    by prose is still an answer."""
    candidates = ("tiger", "cheetah", "lion") if expected == "lion" else CATS
    got = exact(answer, candidates)
    assert (got.class_id, got.stage) == (FIRST_ID[expected], "match"), got


@pytest.mark.parametrize("answer", [
    "Is it a tiger cat? No, **tabby**.",  # the comma: already right
    "Is it a tiger cat? No — **tabby**.",
    "Tiger cat? No – **tabby**.",
    "Tiger cat? No… **tabby**",
], ids=["comma", "em-dash", "en-dash", "ellipsis"])
def test_a_dash_or_an_ellipsis_ends_a_negations_reach(answer):
    """After "No, " the emphasised tabby is the answer; after "No — " the "no" was read as negating the
    tabby (a negation reaches on until punctuation, and a dash was none), which left the question's tiger
    cat as the answer: a dash or an ellipsis ends the clause as the comma does."""
    got = exact(answer)
    assert (got.class_id, got.stage) == (FIRST_ID["tabby"], "match"), got


@pytest.mark.parametrize("answer", ["Not a tiger cat — a tabby", "Definitely not a tiger cat. Tabby."],
                         ids=["dash-after-the-negated", "sentence"])
def test_a_negation_still_reaches_the_label_right_after_it(answer):
    got = exact(answer)
    assert got.class_id == FIRST_ID["tabby"], got
