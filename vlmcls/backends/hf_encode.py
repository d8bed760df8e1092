"""Prompts and images to model tensors for the hf-vlm backend (runs in its prefetch thread): the chat
template per family, the pixel budget, and the processor call.

`PromptEncoder` is a mixin of the backend; it uses the backend's `model`, `processor`, `tokenizer`,
`settings`, `family`, `image_device` and keeps `_adds_bos` (asked of the tokenizer once).
Importing this module never imports torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .prefix_cache import prepend

if TYPE_CHECKING:  # pragma: no cover
    from ..types import Query

# Families whose processor has no pixel budget of its own get images shrunk to this before processing
# (LLaVA-NeXT's largest grid is 672x1008; anything far above only costs resize time).
DEFAULT_MAX_PIXELS = 1344 * 1344


class PromptEncoder:
    """The chat-templated text of a query and the processor's tensors for a batch."""

    def render(self, query: "Query") -> str:
        """The chat-templated prompt text for one query (image placeholder included)."""
        if not self.family.chat_template:  # plain text after the image (PaliGemma: the processor adds the rest)
            text = f"{query.prefix}\n{query.prompt}" if query.prefix else query.prompt
            return f"{self.family.image_placeholder}{text}"
        if self.family.string_content:
            text = f"{query.prefix}\n{self.family.image_placeholder}{query.prompt}" if query.prefix else \
                f"{self.family.image_placeholder}{query.prompt}"
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
        content: list[dict] = [{"type": "image"}, {"type": "text", "text": query.prompt}]
        if query.prefix:  # labels-first: the constant label list comes before the image
            content.insert(0, {"type": "text", "text": query.prefix})
        text = self.processor.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)
        return self._without_template_bos(text)

    def _without_template_bos(self, text: str) -> str:
        """Gemma's template writes <bos> and its tokenizer adds one too: keep the tokenizer's only."""
        bos = self.tokenizer.bos_token
        if not bos or not text.startswith(bos):
            return text
        if self._adds_bos is None:
            self._adds_bos = self.tokenizer("")["input_ids"][:1] == [self.tokenizer.bos_token_id]
        return text[len(bos):] if self._adds_bos else text

    def _image_kwargs(self) -> dict:
        kwargs: dict[str, Any] = {}
        if self.image_device is not None:  # torchvision-backed: resize and normalise on the model's device
            kwargs["device"] = self.image_device
        extra = self.settings.extra
        if self.family.pixel_budget and ("min_pixels" in extra or "max_pixels" in extra):
            size = dict(self.processor.image_processor.size)
            if "min_pixels" in extra:
                size["shortest_edge"] = int(extra["min_pixels"])
            if "max_pixels" in extra:
                size["longest_edge"] = int(extra["max_pixels"])
            kwargs["size"] = size
        return {"images_kwargs": kwargs} if kwargs else {}

    def _bound(self, image):
        """Shrink huge images for families without a pixel budget of their own (keeps aspect ratio)."""
        if self.family.pixel_budget:
            return image
        limit = int(self.settings.extra.get("max_pixels", DEFAULT_MAX_PIXELS))
        w, h = image.size
        if w * h <= limit:
            return image
        scale = (limit / (w * h)) ** 0.5
        return image.resize((max(1, int(w * scale)), max(1, int(h * scale))))

    def _encode(self, texts: list[str], images: list, prefix: tuple[int, ...] | None):
        if self.family.max_batch == 1:  # one-prompt processors (Phi-3-vision) take a string, not a list
            texts, images = texts[0], images[:1]  # type: ignore[assignment]
        else:  # one image per prompt, said explicitly: Gemma 3 reads a flat list as all images of one prompt
            images = [[image] for image in images]
        # with a cached prefix only the rest is tokenized: its special tokens are in the prefix already
        text_kwargs = {} if prefix is None else {"add_special_tokens": False}
        inputs = self.processor(text=texts, images=images, return_tensors="pt", padding=True,
                                **text_kwargs, **self._image_kwargs())
        inputs.pop("labels", None)  # PaliGemma's processor adds training labels: the model would compute a loss
        if prefix is not None:
            prepend(inputs, prefix)
        inputs = inputs.to(self.model.device)
        for key, value in inputs.items():  # pixel values in the compute dtype (bf16 on GPU)
            if value.is_floating_point():
                inputs[key] = value.to(self.model.dtype)
        return inputs
