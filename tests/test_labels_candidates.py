"""Labels (first-synonym simplification, collisions), candidate sets, prompts."""
from __future__ import annotations

import subprocess
import sys

import pytest

from vlmcls import candidates, labels, prompts

STUDY_PROMPT = (
    "This image represents an object that belongs to one of the following classes: {labels}. "
    "What is the most probable class that the object in the image belongs to, given the provided classes?"
)


def test_first_synonym_over_all_imagenet_names():
    ann = labels.imagenet_annotations()
    thesis = labels.imagenet_labelset("raw")
    assert labels.imagenet_labelset("thesis") == thesis  # the older name of "raw"
    assert len(ann) == 1000 and ann[147].startswith("grey whale, gray whale")
    assert thesis.names == tuple(a.split(",")[0].strip() for a in ann)
    assert thesis.names[147] == "grey whale"


def test_default_labels_are_unique_even_ignoring_case():
    names = labels.imagenet_labelset().names
    assert len({n.casefold() for n in names}) == 1000


def test_collisions_follow_the_documented_rule():
    u = labels.imagenet_labelset()
    assert (u.names[134], u.names[517]) == ("crane (bird)", "crane (machine)")
    assert (u.names[638], u.names[639]) == ("maillot", "tank suit")
    assert (u.names[264], u.names[474]) == ("Cardigan Welsh corgi", "cardigan")
    changed = {i for i in range(1000) if u.names[i] != labels.imagenet_labelset("raw").names[i]}
    assert changed == {134, 517, 639, 264}


def test_raw_mode_keeps_collisions_and_knows_them():
    t = labels.imagenet_labelset("raw")
    assert t.names[134] == t.names[517] == "crane"
    assert t.ambiguous_ids() == {134, 517, 638, 639, 264, 474}
    assert labels.imagenet_labelset().ambiguous_ids() == frozenset()


def test_generic_dataset_collision_gets_class_qualifier():
    ls = labels.simplify(["bat, club", "bat", "bat"])
    assert ls.names == ("club", "bat (class 1)", "bat (class 2)")
    assert (ls.mode, labels.simplify(["bat", "bat"], "thesis").mode) == ("unique", "raw")
    with pytest.raises(ValueError) as info:
        labels.simplify(["a"], "fancy")
    assert str(info.value) == "unknown labels mode 'fancy'; choose 'unique' or 'raw'"


def test_an_alternative_name_goes_to_one_class_only():
    """Two colliding classes with the same second synonym: the first takes it, the other keeps the bare
    name (were both to take it, they would collide again)."""
    assert labels.simplify(["crane, derrick", "crane, derrick"]).names == ("derrick", "crane")


def test_a_qualifier_that_collides_is_an_error_naming_the_classes_never_a_guess():
    with pytest.raises(ValueError) as info:
        labels.simplify(["bat", "bat", "bat (class 1)"])
    assert str(info.value) == "labels still collide after disambiguation: [[1, 2]]"


def test_without_timm_the_imagenet_names_say_how_to_get_them(monkeypatch):
    """timm ships the class-name files (read without importing timm); without it, one line saying so."""
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "timm" else find_spec(name, *a))
    labels.imagenet_synsets.cache_clear()
    try:
        with pytest.raises(RuntimeError) as info:
            labels.imagenet_synsets()
        assert str(info.value) == "ImageNet class names come from timm: pip install timm"
    finally:
        labels.imagenet_synsets.cache_clear()  # the next caller reads the real files again


def test_a_blank_annotation_is_named_by_its_class_id():
    assert labels.simplify(["", "  ", "dog"]).names == ("class 0", "class 1", "dog")


@pytest.mark.parametrize("classes", [600, 1000])
def test_the_curated_qualifiers_are_imagenets_only(classes):
    """Another dataset whose classes 134 and 517 collide gets "(class N)", not ImageNet's "(bird)" /
    "(machine)", even with 1000 classes."""
    annotations = [f"thing {i}" for i in range(classes)]
    annotations[134] = annotations[517] = "crane"
    names = labels.labelset(annotations).names
    assert (names[134], names[517]) == ("crane (class 134)", "crane (class 517)")


@pytest.mark.parametrize("ways", [2, 20, 100, 1000])
def test_candidate_set_shape(ways):
    for sid, true in [("a", 0), ("b", 999), ("c", 517)]:
        cs = candidates.candidate_set(sid, true, ways, 1000, seed=0)
        assert len(cs.class_ids) == ways == len(set(cs.class_ids))
        assert true in cs.class_ids and all(0 <= c < 1000 for c in cs.class_ids)


def test_candidate_set_depends_only_on_seed_sample_and_ways():
    ids = [f"img{i}" for i in range(50)]
    forward = [candidates.candidate_set(s, i % 10, 20, 1000, 3) for i, s in enumerate(ids)]
    backward = [candidates.candidate_set(s, i % 10, 20, 1000, 3) for i, s in reversed(list(enumerate(ids)))][::-1]
    assert forward == backward
    assert candidates.candidate_set("img0", 0, 20, 1000, 4) != forward[0]
    # The true label is not always in the same slot (it is shuffled in).
    assert len({cs.class_ids.index(cs.true_id) for cs in forward}) > 5


def test_candidate_set_is_identical_in_another_process():
    code = ("from vlmcls.candidates import candidate_set as c;"
            "print([c(f's{i}', i, 100, 1000, 7).class_ids for i in range(5)])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""}).stdout
    here = [candidates.candidate_set(f"s{i}", i, 100, 1000, 7).class_ids for i in range(5)]
    assert out.strip() == str(here)


def test_full_way_means_every_class_and_bad_n_is_one_line():
    cs = candidates.candidate_set("x", 5, 106, 106, 0)
    assert sorted(cs.class_ids) == list(range(106))
    with pytest.raises(ValueError, match="N >= 2"):
        candidates.candidate_set("x", 0, 1, 10, 0)
    with pytest.raises(ValueError, match="use --ways 10 or less"):
        candidates.candidate_set("x", 0, 11, 10, 0)


def test_thesis_prompt_is_the_study_prompt_verbatim():
    got = prompts.render(prompts.get_template("thesis"), ["tench", "goldfish", "grey whale"])
    assert got == STUDY_PROMPT.format(labels="tench, goldfish, grey whale")


def test_labels_first_layout_keeps_the_study_sentences():
    prefix, suffix = prompts.render_labels_first(["tench", "goldfish"])
    assert f"{prefix} {suffix}" == STUDY_PROMPT.format(labels="tench, goldfish")


def test_alternative_prompt_and_unknown_name():
    assert "exactly one class name" in prompts.render(prompts.get_template("label-only"), ["a", "b"])
    with pytest.raises(ValueError, match="choose one of: thesis"):
        prompts.get_template("nope")


@pytest.mark.parametrize("name", list(prompts.TEMPLATES))
def test_labels_first_split_keeps_every_template(name):
    template = prompts.get_template(name)
    prefix, suffix = prompts.render_split(template, ["tench", "goldfish"])
    assert "tench" in prefix and "goldfish" in prefix and "tench" not in suffix and suffix
    assert " ".join((prefix + " " + suffix).split()) == " ".join(prompts.render(template, ["tench", "goldfish"]).split())


def test_names_the_resolver_cannot_tell_apart_collide_and_are_settled():
    """Outside ImageNet, "T-shirt" and "t shirt" (or "cafe" and "café") were two names to the
    collision rule, which compared case only, but one phrase to the resolver: an answer naming either
    matched both, and neither class could ever be predicted by a match."""
    from vlmcls.resolve import Resolver

    simplify = labels.simplify
    names = simplify(["T-shirt", "t shirt, jersey", "cafe", "café", "dog"])
    assert names.names == ("T-shirt", "jersey", "cafe (class 2)", "café (class 3)", "dog")
    resolver = Resolver("exact", names)
    assert resolver.resolve("It is a t-shirt.", [0, 1, 4]).class_id == 0
    assert resolver.resolve("A jersey.", [0, 1, 4]).class_id == 1
    raw = simplify(["T-shirt", "t shirt", "dog"], mode="raw")
    assert raw.names == ("T-shirt", "t shirt", "dog") and raw.ambiguous_ids() == {0, 1}
