"""The smoke model behind the loopback API server (vlmcls.smoke.api_server): which answer it gives,
and with which log-probabilities.

The answer names one candidate, picked by a hash of the request -- chance-level and deterministic --
in a sentence, or bare when the request asks for `logprobs` (ranking: a model told to name only the
class). Log-probabilities come in the real OpenAI shape: `choices[0].logprobs = {"content": [{token,
logprob, bytes, top_logprobs: [{token, logprob, bytes}]}], "refusal": null}`, one entry per reply
token, the first with up to `top_logprobs` alternatives.

Tokens are made up (no tokenizer): a word is cut every five letters, a space sticks to the token after
it, punctuation stands alone -- so labels sharing their first five letters ("Afric") share a first
token, as real tokenizers make "great white shark" and "great grey owl" do. The first token's
distribution covers the candidates' first tokens: the answer's own first, then the others, each with a
weight hashed from the request, 10% of the mass left to tokens not shown.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Sequence

# The candidate list in every prompt template of vlmcls.prompts: "... classes: a, b, c. What is ..."
# (or "... classes are: ...", or one "N. label" per line for the numbered template).
_LIST = re.compile(r"classes(?: are)?:\s*(.+?)(?:\.\s+(?:What|Answer)\b|\n\n|\Z)", re.S)
_NUMBERED = re.compile(r"^\s*\d+\.\s+(.+?)\s*$", re.M)
_TOKEN = re.compile(r" ?[^\W\d_]{1,5}| ?\d{1,3}| ?[^\w\s]| ?_|\s")
MAX_TOP = 20
# The ids of the loopback server's replies (vlmcls.smoke.api_server): the API backend recognises a reply
# from vlmcls's stub server by them, and marks its answers as a stand-in's (chance-level), never a model's.
OPENAI_REPLY_ID = "chatcmpl-smoke"
ANTHROPIC_REPLY_ID = "msg_smoke"
STUB_REPLY_IDS = (OPENAI_REPLY_ID, ANTHROPIC_REPLY_ID)
SHOWN_MASS = 0.9
NEXT_LOGPROB = -0.01  # tokens after the first: the smoke model is sure how a label goes on


def tokens(text: str) -> list[str]:
    """The reply cut into tokens; they join back into `text`."""
    return _TOKEN.findall(text)


def wanted(request: dict) -> bool:
    return bool(request.get("logprobs"))


def _entry(token: str, logprob: float) -> dict:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def block(request: dict, text: str, labels: Sequence[str], first: Sequence[tuple[str, float]] | None = None) -> dict:
    """The choice's `logprobs` field for reply `text`; `first` (token, logprob) pairs replace the made-up
    distribution of the first token (scripted replies in tests)."""
    k = max(0, min(MAX_TOP, int(request.get("top_logprobs") or 0)))
    reply = tokens(text)
    if first:  # greedy: the reply starts with the likeliest scripted token
        head = max(first, key=lambda e: e[1])[0]
        reply = [head, *tokens(text[len(head):])] if text.startswith(head) else reply
    firsts = sorted(first, key=lambda e: -e[1]) if first else distribution(request, text, labels)
    content = []
    for i, token in enumerate(reply):
        top = firsts if i == 0 else [(token, NEXT_LOGPROB)]
        own = dict(top).get(token, min((lp for _, lp in top), default=NEXT_LOGPROB))
        content.append({**_entry(token, own), "top_logprobs": [_entry(t, lp) for t, lp in top[:k]]})
    return {"content": content, "refusal": None}


def distribution(request: dict, text: str, labels: Sequence[str]) -> list[tuple[str, float]]:
    """The first token's alternatives, likeliest first: the candidates' first tokens (the reply's own
    boosted), and the reply's first token in the other case."""
    head = (tokens(text) or [""])[0]
    firsts = list(dict.fromkeys(t[0] for t in map(tokens, labels) if t))
    weights = {t: _hashed(request, t) for t in firsts}
    weights[head] = max(weights.values(), default=0.0) + 4.0
    swapped = head.swapcase()[:1] + head[1:]
    if swapped != head:
        weights.setdefault(swapped, weights[head] - 2.5)
    norm = math.log(sum(math.exp(w) for w in weights.values()) / SHOWN_MASS)
    return sorted(((t, w - norm) for t, w in weights.items()), key=lambda e: -e[1])


def _hashed(request: dict, token: str) -> float:
    """A weight in [0, 2) from the request's messages and the token (same request, same weights)."""
    digest = hashlib.sha256(repr((request.get("messages"), token)).encode()).digest()
    return 2.0 * int.from_bytes(digest[:8], "big") / 2**64


# ---------------------------------------------------------------------- the answer
def _parts(request: dict) -> list[dict]:
    parts: list[dict] = []
    for message in request.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append({"type": "text", "text": content})
        elif isinstance(content, list):
            parts.extend(p for p in content if isinstance(p, dict))
    return parts


def prompt_texts(request: dict) -> list[str]:
    return [p.get("text", "") for p in _parts(request) if p.get("type") == "text"]


def _count_images(request: dict) -> int:
    return sum(1 for p in _parts(request) if p.get("type") in ("image", "image_url"))


def parse_candidates(text: str) -> list[str]:
    """The candidate labels named in a prompt, [] when it names none."""
    match = _LIST.search(text)
    if not match:
        return []
    listed = match.group(1).strip()
    numbered = _NUMBERED.findall(listed)
    if numbered:
        return numbered
    return [label.strip() for label in listed.split(", ") if label.strip()]


def _choices(request: dict) -> list[str]:
    """A constrained request's choice list (current vLLM field, then the pre-0.12 one)."""
    structured = request.get("structured_outputs")
    if isinstance(structured, dict) and structured.get("choice"):
        return [str(c) for c in structured["choice"]]
    return [str(c) for c in request.get("guided_choice") or []]


def smoke_answer(request: dict) -> str:
    """A deterministic chance-level answer: one candidate, picked by a hash of the whole request."""
    digest = int(hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest(), 16)
    choices = _choices(request)
    if choices:  # constrained decoding: exactly one of the choices, nothing around it
        return choices[digest % len(choices)]
    labels = parse_candidates("\n\n".join(prompt_texts(request)))
    if not labels:
        return "I cannot tell which class this is."
    if wanted(request):  # ranking: the first token must be the label's
        return labels[digest % len(labels)]
    return f'The most probable class is "{labels[digest % len(labels)]}".'


def first_listed(request: dict) -> str:
    """A scripted model with the strongest position bias: always the first candidate of the list."""
    labels = parse_candidates("\n\n".join(prompt_texts(request)))
    return f'The answer is "{labels[0]}".' if labels else "I cannot tell which class this is."
