"""Model FLOPs per image, the matmul peak of this process and the time inside generate, for the MFU and
breakdown figures of `python -m vlmcls.perf`.
Importing this module never imports torch.
"""
from __future__ import annotations

import time

from .types import Query


def image_shape(backend, query: Query) -> dict:
    """Tokens the vision tower computes for one image (Qwen: patches before the 2x2 merge; others: the
    image tokens the language model sees)."""
    inputs = backend.model_inputs(query)
    if inputs is None:
        return dict(vision_tokens=0)
    pixels = inputs.get("pixel_values")
    if pixels is not None and pixels.dim() == 2:  # Qwen: one row per patch
        return dict(vision_tokens=int(pixels.shape[0]))
    return dict(vision_tokens=int((inputs["input_ids"] == backend.image_token_id).sum()))


def parameter_counts(model) -> dict[str, int]:
    """Parameters of the vision tower (with its projector), the language model's blocks (no embeddings)
    and the output head. bitsandbytes' 4-bit weights count at their unpacked size."""
    def numel(p) -> int:
        state = getattr(p, "quant_state", None)
        return int(state.shape.numel()) if state is not None else p.numel()

    vision = sum(numel(p) for n, p in model.named_parameters()
                 if any(k in n for k in ("visual", "vision_tower", "multi_modal_projector")))
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight if model.get_output_embeddings() is not None else embed
    total = sum(numel(p) for p in model.parameters())
    untied = 0 if head is embed else numel(head)
    return dict(vision=vision, language=total - vision - numel(embed) - untied, head=numel(head))


def flops_per_image(model, prompt_tokens: float, new_tokens: float, vision_tokens: int, cached: int) -> float:
    """Model FLOPs for one image: 2 x parameters x tokens + attention (QK^T and AV, 4 x width x query x key).
    The prefill computes the prompt's tokens but a cached prefix; each of the new tokens after the first
    is one decode step over the whole context; the head runs once per new token."""
    counts = parameter_counts(model)
    text = model.config.get_text_config(decoder=True)
    width = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    width *= text.num_attention_heads
    computed = max(0.0, prompt_tokens - cached)
    steps = max(0.0, new_tokens - 1)
    lm = 2 * counts["language"] * (computed + steps) + 2 * counts["head"] * new_tokens
    keys_prefill = cached + computed / 2  # causal: on average half the new tokens, all the cached ones
    lm += 4 * text.num_hidden_layers * width * (computed * keys_prefill + steps * (prompt_tokens + steps / 2))
    vision_cfg = getattr(model.config, "vision_config", None)
    depth = getattr(vision_cfg, "depth", None) or getattr(vision_cfg, "num_hidden_layers", 0)
    vwidth = getattr(vision_cfg, "embed_dim", None) or getattr(vision_cfg, "hidden_size", 0)
    vision = 2 * counts["vision"] * vision_tokens + 4 * depth * vwidth * vision_tokens ** 2
    return float(lm + vision)


def matmul_peak(device: str) -> dict:
    """The matmul throughput this process gets: bf16 8192^3 products on CUDA (CUDA events), float32
    2048^3 on the CPU. MFU is measured against it, not against a datasheet."""
    import torch

    cuda = device.startswith("cuda")
    n, dtype, reps = (8192, torch.bfloat16, 20) if cuda else (2048, torch.float32, 3)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        for _ in range(reps):
            a @ b
        end.record()
        torch.cuda.synchronize(device)
        seconds = start.elapsed_time(end) / 1000
    else:
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        seconds = time.perf_counter() - t0
    return dict(peak_tflops=round(2 * n ** 3 * reps / seconds / 1e12, 2), peak_dtype=str(dtype).removeprefix("torch."))


def decode_seconds_per_step(full_batches: list[float], one_token: float | None, new_tokens: int) -> float | None:
    """One decode step of a whole batch: (mean seconds of a full-batch generate - seconds of the same size
    generating one token) / (new tokens - 1). None where it cannot be told: no full batch, one new token,
    or a difference not above zero (noise larger than the decode steps, e.g. a tiny model on a busy CPU)."""
    if not full_batches or one_token is None or new_tokens < 2:
        return None
    steps = (sum(full_batches) / len(full_batches) - one_token) / (new_tokens - 1)
    return steps if steps > 0 else None


class GenerateClock:
    """Wall seconds of each `model.generate` call (synchronised on CUDA) while the block runs, with its
    batch size: what the model computes, apart from the host's preparing and post-processing."""

    def __init__(self, model) -> None:
        self.model, self.calls = model, []

    @property
    def total(self) -> float:
        return sum(t for t, _ in self.calls)

    def __enter__(self) -> "GenerateClock":
        import torch

        generate = self.model.generate
        sync = torch.cuda.synchronize if self.model.device.type == "cuda" else (lambda: None)

        def timed(*args, **kwargs):
            sync()
            start = time.perf_counter()
            out = generate(*args, **kwargs)
            sync()
            self.calls.append((time.perf_counter() - start, int(out.shape[0])))
            return out

        self._before = self.model.__dict__.get("generate")  # a spy already set on the instance, if any
        self.model.generate = timed
        return self

    def __exit__(self, *exc) -> None:
        if self._before is None:
            del self.model.generate  # the class's method again
        else:
            self.model.generate = self._before
