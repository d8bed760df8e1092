"""How names compare: the normalised words of a label or an answer (case, accents, apostrophes and
punctuation dropped). One definition for the two places that must agree: the resolver, which finds
a label's words in an answer (vlmcls.match), and the collision rule, which must settle every pair of
names the resolver could not tell apart (vlmcls.labels: "T-shirt" and "t shirt" are one phrase)."""
from __future__ import annotations

import re
import unicodedata

TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")  # words; "_" is markdown, not a letter


def norm_token(token: str) -> str:
    token = token.casefold().replace("'", "").replace("’", "")
    if token.isascii():
        return token
    # "Pokémon" and "Pokemon" are one word to a reader.
    return "".join(c for c in unicodedata.normalize("NFKD", token) if not unicodedata.combining(c))


def phrase(text: str) -> tuple[str, ...]:
    """Normalised words of a label or answer: case, accents, apostrophes and punctuation dropped."""
    return tuple(norm_token(m.group()) for m in TOKEN.finditer(text))


def name_key(name: str) -> tuple[str, ...] | str:
    """What the resolver sees of a class name: two names with one key cannot be told apart in an
    answer ("T-shirt" and "t shirt", "Cafe" and "café", "crane" and "Crane"). A name with no word at
    all is keyed by its case-folded text."""
    return phrase(name) or name.casefold()
