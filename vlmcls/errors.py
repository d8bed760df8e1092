"""One exception -> one line of text, for error rows, skip reasons and CLI messages."""
from __future__ import annotations

from typing import Any


def one_line(exc: Any, limit: int = 300, with_type: bool = False) -> str:
    """The first line of `exc`'s message (its type's name when empty), at most `limit` characters.
    With `with_type`, "ValueError: message" with the whole message's whitespace collapsed: error
    rows keep the exception's kind, as a reader comparing failures across models wants it."""
    if with_type:
        text = " ".join(str(exc).split()) or type(exc).__name__
        return f"{type(exc).__name__}: {text[:limit]}"
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:limit]


class Unavailable(RuntimeError):
    """What the case asks for is found, while running, not to exist for this model (e.g. --resolver rank on
    an API model whose server gives no logprobs): the case is skipped with this reason, not failed."""
