"""What an API backend sends and reads back, per API: OpenAI chat completions (and compatible
servers, with vLLM's choice list for constrained decoding, and the first token's log-probabilities
for ranking) and Anthropic messages; the image as a base64 JPEG. A body that is not the expected
shape raises Malformed, which the backend retries.
"""
from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING, Any, NamedTuple, Sequence

from ..smoke.api_model import STUB_REPLY_IDS
from ..types import Query
from .api_rank import MAX_TOKENS, TOP_LOGPROBS, FirstToken, first_token

if TYPE_CHECKING:  # pragma: no cover
    from PIL.Image import Image

    from ..catalog import ModelEntry
    from ..settings import BackendSettings

JPEG_QUALITY = 90
CHOICE_FIELDS = ("structured_outputs", "guided_choice")


# ---------------------------------------------------------------------- images
def encode_jpeg(image: "Image", max_side: int, quality: int = JPEG_QUALITY) -> bytes:
    """RGB JPEG with the long side at most `max_side`; never upscales, never mutates `image`."""
    from PIL import Image as PILImage

    if image.mode != "RGB":
        image = image.convert("RGB")
    w, h = image.size
    scale = max_side / max(w, h)
    if scale < 1:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = image.resize(size, PILImage.Resampling.LANCZOS)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


class Reply(NamedTuple):
    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    first: FirstToken | None = None  # the first token's distribution, when asked for (ranking) and sent
    stand_in: bool = False  # the reply came from vlmcls's stub server (vlmcls.smoke.api_server): chance, not a model


def _from_stub(response: object) -> bool:
    """A reply of vlmcls's own loopback stub server, told by its reply id (api_model.STUB_REPLY_IDS)."""
    return getattr(response, "id", None) in STUB_REPLY_IDS


class Malformed(ValueError):
    """A 200 response whose body is not the expected shape (retried by our own layer)."""


def _greedy(settings: "BackendSettings") -> bool:
    """Send temperature 0, unless the catalog says `greedy = false` (models that reject sampling
    parameters: OpenAI reasoning models, Claude models newer than Opus 4.6)."""
    return bool(settings.extra.get("greedy", True))


def _image_b64(query: Query, settings: "BackendSettings") -> str:
    return base64.b64encode(encode_jpeg(query.image, settings.max_image_side)).decode("ascii")


class OpenAIProtocol:
    """Chat completions. Constrained requests (openai-compatible only) carry vLLM's choice list as
    `extra_body={"structured_outputs": {"choice": [...]}}` — the field current vLLM reads; the old
    `guided_choice` was removed in vLLM 0.12. For an older server set the catalog option
    `choice_field = "guided_choice"`. Ranking requests (--resolver rank) ask for the first token's
    top-20 log-probabilities and a short reply (vlmcls.backends.api_rank)."""

    def __init__(self, entry: "ModelEntry", settings: "BackendSettings") -> None:
        self.model, self.settings = entry.weights, settings
        self.constrained = settings.constrained and entry.backend == "openai-compatible"
        self.rank = bool(settings.rank)
        self.choice_field = str(settings.extra.get("choice_field", CHOICE_FIELDS[0]))
        if self.choice_field not in CHOICE_FIELDS:
            raise ValueError(f"choice_field must be one of {CHOICE_FIELDS}, not {self.choice_field!r}")
        # OpenAI's current name for the limit; compatible servers have long known only max_tokens.
        self.limit_field = "max_tokens" if entry.backend == "openai-compatible" else "max_completion_tokens"

    def request(self, query: Query) -> dict[str, Any]:
        url = f"data:image/jpeg;base64,{_image_b64(query, self.settings)}"
        image = {"type": "image_url", "image_url": {"url": url}}
        content = [{"type": "text", "text": query.prefix}] if query.prefix else []
        content += [image, {"type": "text", "text": query.prompt}]
        kwargs: dict[str, Any] = {"model": self.model, "messages": [{"role": "user", "content": content}],
                                  self.limit_field: self.settings.max_new_tokens}
        if _greedy(self.settings):
            kwargs["temperature"] = 0
        if self.constrained:
            kwargs["extra_body"] = self._choice_body(query.labels)
        if self.rank:
            kwargs.update(logprobs=True, top_logprobs=TOP_LOGPROBS)
            kwargs[self.limit_field] = min(self.settings.max_new_tokens, MAX_TOKENS)
        return kwargs

    def _choice_body(self, labels: Sequence[str]) -> dict[str, Any]:
        choices = list(dict.fromkeys(labels))  # a label shown twice is still one choice
        if self.choice_field == "guided_choice":
            return {"guided_choice": choices}
        return {"structured_outputs": {"choice": choices}}

    def send(self, client: Any, kwargs: dict[str, Any]) -> Reply:
        response = client.chat.completions.create(**kwargs)
        try:
            choice = response.choices[0]
            message, usage = choice.message, response.usage
            text = message.content if message.content is not None else (getattr(message, "refusal", None) or "")
            tokens = getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None)
            return Reply(text, *tokens, first_token(choice) if self.rank else None, _from_stub(response))
        except (AttributeError, TypeError, IndexError, KeyError) as exc:
            raise Malformed(f"unexpected response shape ({type(exc).__name__})") from None


class AnthropicProtocol:
    """Messages API: a base64 image block, then the prompt text."""

    def __init__(self, entry: "ModelEntry", settings: "BackendSettings") -> None:
        self.model, self.settings = entry.weights, settings
        self.constrained = self.rank = False  # no choice list, no log-probabilities in this API

    def request(self, query: Query) -> dict[str, Any]:
        source = {"type": "base64", "media_type": "image/jpeg", "data": _image_b64(query, self.settings)}
        content = [{"type": "text", "text": query.prefix}] if query.prefix else []
        content += [{"type": "image", "source": source}, {"type": "text", "text": query.prompt}]
        kwargs: dict[str, Any] = {"model": self.model, "max_tokens": self.settings.max_new_tokens,
                                  "messages": [{"role": "user", "content": content}]}
        if _greedy(self.settings):
            # anthropic>=1.0 dropped the `temperature` keyword; the API still takes the field.
            kwargs["extra_body"] = {"temperature": 0}
        return kwargs

    def send(self, client: Any, kwargs: dict[str, Any]) -> Reply:
        response = client.messages.create(**kwargs)
        try:
            text = "".join(b.text for b in response.content if getattr(b, "type", None) == "text")
            usage = response.usage
            return Reply(text, getattr(usage, "input_tokens", None), getattr(usage, "output_tokens", None),
                         stand_in=_from_stub(response))
        except (AttributeError, TypeError, IndexError, KeyError) as exc:
            raise Malformed(f"unexpected response shape ({type(exc).__name__})") from None
