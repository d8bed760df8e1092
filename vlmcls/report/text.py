"""Text helpers every report file shares: atomic file writes and escaping of untrusted text.

Model answers, labels and even case ids are untrusted: every table cell goes through `cell()`, so
`|`, newlines or HTML cannot break a table.
"""
from __future__ import annotations

import html
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, text: str) -> None:
    """Write via a temp file in the same folder + os.replace: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; reports are for reading, like the plots beside them
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def usd(amount: float) -> str:
    """A dollar amount to 4 decimals, more where it needs them for 2 significant digits: one
    gpt-4o-mini image costs about 0.0002 USD, and a few at 4 fixed decimals printed as 0.0000."""
    if amount == 0 or not math.isfinite(amount):
        return f"{amount:.4f}"
    return f"{amount:.{max(4, 1 - math.floor(math.log10(abs(amount))))}f}"


def cell(value: Any) -> str:
    """Render untrusted text into one markdown table cell."""
    return prose(value).replace("`", "\\`")


def plain(value: Any) -> str:
    """`cell` for a terminal: the text as printed (no HTML entities, so a column is sized on what it
    shows), without control characters (an answer's escape sequence must not drive the terminal)."""
    text = "" if value is None else str(value)
    text = "".join(c for c in " ".join(text.split()) if c.isprintable())
    return text.replace("|", "\\|")


def prose(value: Any) -> str:
    """`cell` without the backtick escape: for our own text, whose `code` spans must render."""
    text = "" if value is None else str(value)
    text = html.escape(" ".join(text.split()), quote=False)  # newlines and runs of spaces -> one space
    return text.replace("|", "\\|")


def plural(n: int, thing: str) -> str:
    """"1 image", "3 images": a count a reader takes as a sentence."""
    return f"{n} {thing}{'' if n == 1 else 's'}"
