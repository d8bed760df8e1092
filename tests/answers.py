"""Realistic VLM answers with their candidates and the expected resolution, for tests/test_resolve.py.

Labels are ImageNet-1k's, read from timm's files (raw label mode, the study's: the first synonym of each
annotation is the prompt label, so "crane" and "maillot" each name two classes).
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from vlmcls import labels
from vlmcls.types import LabelSet


@lru_cache(maxsize=1)
def imagenet_labels() -> LabelSet:
    """ImageNet-1k's labels as the study used them: raw first synonyms, collisions included."""
    return labels.imagenet_labelset("thesis")


class Case(NamedTuple):
    """One answer: candidates by prompt label (an int where two classes share one), the expected
    label (or class id, or None) in `exact` mode, the deciding stage, and whether it is ambiguous."""

    answer: str | None
    candidates: tuple[str | int, ...]
    expected: str | int | None
    stage: str
    ambiguous: bool = False


CATS = ("tabby", "tiger cat", "Egyptian cat")
BIG_CATS = ("leopard", "jaguar", "cheetah")
HOUNDS = ("whippet", "Italian greyhound", "Weimaraner")

ANSWERS: tuple[Case, ...] = (
    # bare labels, case, punctuation, markdown, quotes, articles
    Case("tabby", CATS, "tabby", "match"),
    Case("Tabby.", CATS, "tabby", "match"),
    Case('"tiger cat"', CATS, "tiger cat", "match"),
    Case("**Egyptian cat**", CATS, "Egyptian cat", "match"),
    Case("`Persian cat`", ("Siamese cat", "Persian cat", "tabby"), "Persian cat", "match"),
    Case("# Siamese cat", ("Siamese cat", "Persian cat", "tabby"), "Siamese cat", "match"),
    Case("_lynx_", ("cougar", "lynx", "leopard"), "lynx", "match"),
    Case("*Cougar*", ("cougar", "lynx", "leopard"), "cougar", "match"),
    Case("an ostrich", ("hen", "ostrich", "cock"), "ostrich", "match"),
    Case("The goldfinch", ("house finch", "brambling", "goldfinch"), "goldfinch", "match"),
    Case("GOLDFINCH!", ("house finch", "brambling", "goldfinch"), "goldfinch", "match"),
    Case("  junco\n", ("robin", "junco", "jay"), "junco", "match"),
    Case("Answer: Pekinese", ("pug", "Maltese dog", "Pekinese"), "Pekinese", "match"),
    Case("Class: pug", ("pug", "Maltese dog", "Pekinese"), "pug", "match"),
    Case("'espresso'", ("cup", "espresso", "coffee mug"), "espresso", "match"),
    Case("“coffee mug”", ("cup", "espresso", "coffee mug"), "coffee mug", "match"),
    Case("**Answer:** Granny Smith", ("banana", "pizza", "Granny Smith"), "Granny Smith", "match"),
    Case("- **Prediction**: banana\n- Confidence: high", ("banana", "pizza", "Granny Smith"), "banana", "match"),
    Case("### Final answer\n\n`pizza`", ("banana", "pizza", "Granny Smith"), "pizza", "match"),
    Case("Jack o lantern", ("jack-o'-lantern", "acorn", "banana"), "jack-o'-lantern", "match"),
    Case("A Shih Tzu.", ("pug", "Shih-Tzu", "Pekinese"), "Shih-Tzu", "match"),
    # the answer sentence repeats the question
    Case('The most probable class that the object in the image belongs to is "Italian greyhound."',
         HOUNDS, "Italian greyhound", "match"),
    Case("The most probable class that the object in the image belongs to is the golden retriever.",
         ("Labrador retriever", "golden retriever", "Saint Bernard"), "golden retriever", "match"),
    Case("Based on the provided classes, the most probable class is **Siberian husky**.",
         ("malamute", "Eskimo dog", "Siberian husky"), "Siberian husky", "match"),
    Case("This image represents an object that belongs to one of the following classes: beagle, basset, "
         "whippet. The most probable class is basset.", ("beagle", "basset", "whippet"), "basset", "match"),
    # simple English plurals
    Case("goldfishes", ("tench", "goldfish", "tiger shark"), "goldfish", "match"),
    Case("These are tiger sharks.", ("great white shark", "tiger shark", "hammerhead"), "tiger shark", "match"),
    Case("strawberries", ("orange", "lemon", "strawberry"), "strawberry", "match"),
    Case("Two dalmatians on a lawn.", ("dalmatian", "Great Dane", "beagle"), "dalmatian", "match"),
    Case("school buses", ("minibus", "school bus", "trolleybus"), "school bus", "match"),
    Case("A field of daisies.", ("daisy", "corn", "hip"), "daisy", "match"),  # consonant + y -> ies
    Case("Tabby cats", CATS, "tabby", "synonym"),  # "tabby cat" is the annotation's second name
    # other names of the full annotation
    Case("gray whale", ("killer whale", "grey whale", "dugong"), "grey whale", "synonym"),
    Case("It's a taxi.", ("minivan", "cab", "police van"), "cab", "synonym"),
    Case("taxicab", ("minivan", "cab", "police van"), "cab", "synonym"),
    Case("A carriage dog", ("dalmatian", "Great Dane", "beagle"), "dalmatian", "synonym"),
    Case("St. Bernard", ("Labrador retriever", "golden retriever", "Saint Bernard"), "Saint Bernard", "synonym"),
    Case("It's an orange tabby cat.", ("orange", "tabby", "lemon"), "tabby", "synonym"),
    Case("tank suit", (638, 639, "bikini"), 639, "synonym"),  # two "maillot" classes; only 639 is a tank suit
    Case("Cardigan Welsh corgi", ("cardigan", "Cardigan", "Pembroke"), "Cardigan", "synonym"),
    # several candidates: the structure decides, not the list order
    Case("It's a tiger cat, not a tabby.", CATS, "tiger cat", "match"),
    Case("Not a tabby, this is a tiger cat.", CATS, "tiger cat", "match"),
    Case("This looks like a lynx rather than a cougar.", ("cougar", "lynx", "leopard"), "lynx", "match"),
    Case("It's a cheetah instead of a leopard.", BIG_CATS, "cheetah", "match"),
    Case("It does not look like a jaguar; it is a leopard.", BIG_CATS, "leopard", "match"),
    Case("leopard (not jaguar)", BIG_CATS, "leopard", "match"),
    Case("Between jaguar and leopard, the answer is leopard.", BIG_CATS, "leopard", "match"),
    Case("The image shows a laptop on a desk next to a tabby. Answer: tabby", ("desk", "laptop", "tabby"),
         "tabby", "match"),
    Case("Tabby and Egyptian cat are close, but **tiger cat** fits best.", CATS, "tiger cat", "match"),
    Case("While the ears resemble a Weimaraner's, the object is a **whippet**.", HOUNDS, "whippet", "match"),
    Case("I think it's a **lion**. Tigers have stripes, which this animal lacks.", ("tiger", "cheetah", "lion"),
         "lion", "match"),
    Case("Lion.\nReasoning: the mane rules out a tiger or a cheetah.", ("tiger", "cheetah", "lion"), "lion", "match"),
    Case("Is it a tiger cat? I think not. **Tabby**.", CATS, "tabby", "match"),
    Case("The animal is a tiger cat, a kind of tabby.", CATS, "tiger cat", "match"),
    Case("tiger cat\n\nThe tabby pattern is less likely here.", CATS, "tiger cat", "match"),
    # one structure rule alone decides (no cue word or first-sentence rule to fall back on)
    Case("It does not look like a jaguar. Leopard.", BIG_CATS, "leopard", "match"),  # "look like" bridges "not"
    Case("Tiger cat, not tabby.", CATS, "tiger cat", "match"),  # a comma before "not" does not end its reach
    # contracted and other negations, and what may stand between one and the label
    Case("It cannot be a jaguar, so leopard.", BIG_CATS, "leopard", "match"),
    Case("It can't be a jaguar; a cheetah.", BIG_CATS, "cheetah", "match"),
    Case("It wasn't a jaguar. Leopard.", BIG_CATS, "leopard", "match"),
    Case("I do not think it is a jaguar. Leopard.", BIG_CATS, "leopard", "match"),
    Case("The image does not show a jaguar; it shows a cheetah.", BIG_CATS, "cheetah", "match"),
    Case("It is unlikely to be a jaguar; a leopard.", BIG_CATS, "leopard", "match"),
    Case("It couldn't be a jaguar.", BIG_CATS, None, "unresolved"),
    # "its" is a possessive, not "it's": no cue (both classes named, nothing chooses: ambiguous)
    Case("A goldfish, known for its orange color.", ("goldfish", "orange", "lemon"), None, "unresolved", True),
    Case("A lemon on a plate; it's an orange, in fact.", ("lemon", "orange", "goldfish"), "orange", "match"),
    # a name does not run across a sentence, a comma or a line ("tiger" then "cat", not "tiger cat")
    Case("It is a tiger. Cat lovers would disagree.", ("tiger", "tiger cat", "lion"), "tiger", "match"),
    Case("Tiger, cat family.", ("tiger", "tiger cat", "lion"), "tiger", "match"),
    Case("Tiger\n\nCat", ("tiger", "lion", "cheetah"), "tiger", "match"),  # a blank line parts them
    Case("- Tiger\n- Cat", ("tiger", "lion", "cheetah"), "tiger", "match"),  # so does a list mark
    Case("The answer is: Egyptian\ncat", CATS, "Egyptian cat", "match"),  # one line break: wrapped text
    Case("The answer is: Egyptian-\ncat", CATS, "Egyptian cat", "match"),  # a hyphen before the break, too
    Case("A red fox. Squirrels flee from it.", ("red fox", "fox squirrel", "lion"), "red fox", "match"),  # no abbreviation
    # a "No" or a question before "it is X" does not negate X; "I don't think it's X" does
    Case("No it is a jaguar", BIG_CATS, "jaguar", "match"),
    Case("Isn't it a jaguar?", BIG_CATS, "jaguar", "match"),
    Case("Doesn't it look like a jaguar?", BIG_CATS, "jaguar", "match"),
    Case("I don't think it's a jaguar; leopard.", BIG_CATS, "leopard", "match"),
    Case("I don’t believe that is a jaguar. Cheetah.", BIG_CATS, "cheetah", "match"),
    Case("Answer: tabby (tiger cat is close)", CATS, "tabby", "match"),  # a cue that is the answer's first word
    Case("Options: Persian cat, Siamese cat, tabby.\n## Siamese cat", ("Siamese cat", "Persian cat", "tabby"),
         "Siamese cat", "match"),  # a heading emphasises up to its line's end
    # apostrophes: straight, curly or left out, the same word
    Case("A potter’s wheel.", ("potter's wheel", "vase", "pot"), "potter's wheel", "match"),
    Case("potters wheel", ("potter's wheel", "vase", "pot"), "potter's wheel", "match"),
    # longest match, word boundaries
    Case("The answer is: **snow leopard**", ("leopard", "snow leopard", "jaguar"), "snow leopard", "match"),
    Case("A leopard.", ("leopard", "snow leopard", "jaguar"), "leopard", "match"),
    Case("A tiger shark.", ("tiger", "tiger shark", "lion"), "tiger shark", "match"),
    Case("A tiger.", ("tiger", "tiger shark", "lion"), "tiger", "match"),
    Case("An ox pulling a plow.", ("ox", "water buffalo", "bison"), "ox", "match"),
    Case("sunglasses", ("sunglass", "sunglasses", "bikini"), "sunglasses", "match"),
    Case("sunglass", ("sunglass", "sunglasses", "bikini"), "sunglass", "match"),
    Case("A sea lion basking on a rock.", ("lion", "tiger", "brown bear"), None, "unresolved"),
    Case("There is a box on the table.", ("ox", "tiger", "lion"), None, "unresolved"),
    Case("A snow leopard on the rocks.", BIG_CATS, None, "unresolved"),  # another class, not "leopard"
    # ambiguous: several candidates and nothing in the answer to choose between them
    Case("It could be a tabby or a tiger cat.", CATS, None, "unresolved", True),
    Case("Labrador retriever or golden retriever", ("Labrador retriever", "golden retriever", "Saint Bernard"),
         None, "unresolved", True),
    Case("tabby, tiger cat, Egyptian cat", CATS, None, "unresolved", True),
    Case("Either a cougar or a lynx; hard to tell.", ("cougar", "lynx", "leopard"), None, "unresolved", True),
    Case("**jaguar** or **leopard**", BIG_CATS, None, "unresolved", True),
    Case("panda", ("lesser panda", "giant panda", "brown bear"), None, "unresolved", True),
    Case("Cardigan", ("cardigan", "Cardigan", "Pembroke"), None, "unresolved", True),
    Case("crane", (134, 517, "tiger"), None, "unresolved", True),  # two classes named "crane"
    Case("A maillot.", (639, "bikini", 638), None, "unresolved", True),
    # nothing to match: non-English, refusals, generic words, negation only, empty
    Case("Es un gato atigrado.", CATS, None, "unresolved"),
    Case("これはトラです", ("tiger", "lion", "cheetah"), None, "unresolved"),
    Case("I cannot determine the class from this image.", CATS, None, "unresolved"),
    Case("cat", CATS, None, "unresolved"),
    Case("Not a tabby.", ("tabby", "tiger cat"), None, "unresolved"),
    Case("", CATS, None, "unresolved"),
    Case("   \n", CATS, None, "unresolved"),
    Case(None, CATS, None, "unresolved"),
)
