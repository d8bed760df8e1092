"""What an HF image processor does, as data (`Spec`, read by `spec_of`), and the same arithmetic as
batched tensor ops: resize and centre crop (torchvision, antialiased, uint8 in and out, images grouped
by shape) and the fused rescale + normalise, bit-identical to transformers' torchvision ("fast")
processors. vlmcls.fastimage decodes images and feeds them through these. torch is imported inside
functions so `import vlmcls` stays light.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

# ---------------------------------------------------------------- what a processor does


@dataclass(frozen=True)
class Spec:
    """The arithmetic of one HF image processor, as data. `resize`: an int resizes the shortest side
    to it (aspect kept, the long side truncated as transformers does), a pair resizes to (h, w);
    `crops` are centre crops applied in order; `mean`/`std` None means no normalisation."""

    resize: int | tuple[int, int] | None
    interpolation: str  # a torchvision InterpolationMode value: "bicubic", "bilinear", "nearest-exact"
    crops: tuple[tuple[int, int], ...]
    rescale: float | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    source: str = ""  # the processor's class name, for notes

    @property
    def out_size(self) -> tuple[int, int]:
        return self.crops[-1] if self.crops else self.resize  # type: ignore[return-value]


_GENERIC = ("TorchvisionBackend._preprocess", "PilBackend._preprocess")
_GENERIC_RESIZE = ("TorchvisionBackend.resize", "PilBackend.resize")


def spec_of(processor) -> Spec | None:
    """The Spec of an HF image processor, or None where this module would not reproduce it exactly
    (custom preprocessing, padding, longest-edge or pixel-budget sizes, LANCZOS, variable output)."""
    cls = type(processor)
    convnext = cls.__name__.startswith("ConvNextImageProcessor")
    if not convnext and (cls._preprocess.__qualname__ not in _GENERIC or cls.resize.__qualname__ not in _GENERIC_RESIZE):
        return None
    if getattr(processor, "do_pad", None):
        return None
    resize, crops = _geometry(processor, convnext)
    if resize == "unsupported":
        return None
    interpolation = _interpolation(getattr(processor, "resample", None))
    if interpolation is None or not (crops or isinstance(resize, tuple)):
        return None  # no fixed output size: the batch could not be stacked
    rescale = float(processor.rescale_factor) if getattr(processor, "do_rescale", False) else None
    normalise = bool(getattr(processor, "do_normalize", False))
    return Spec(resize=resize, interpolation=interpolation, crops=tuple(crops), rescale=rescale,
                mean=tuple(map(float, processor.image_mean)) if normalise else None,
                std=tuple(map(float, processor.image_std)) if normalise else None, source=cls.__name__)


def _geometry(processor, convnext: bool):
    size = _size(getattr(processor, "size", None)) if getattr(processor, "do_resize", False) else {}
    crops: list[tuple[int, int]] = []
    if not size:
        resize = None
    elif convnext and size.get("shortest_edge"):
        # ConvNext (microsoft/resnet-50 ships one): below 384, resize to side/crop_pct, crop to side.
        side = size["shortest_edge"]
        if side < 384:
            resize = int(side / processor.crop_pct)
            crops.append((side, side))
        else:
            resize = (side, side)
    elif size.get("shortest_edge") and not size.get("longest_edge"):
        resize = size["shortest_edge"]
    elif size.get("height") and size.get("width") and not size.get("shortest_edge"):
        resize = (size["height"], size["width"])
    else:
        return "unsupported", crops
    if getattr(processor, "do_center_crop", False):
        crop = _size(processor.crop_size)
        if not (crop.get("height") and crop.get("width")):
            return "unsupported", crops
        crops.append((crop["height"], crop["width"]))
    return resize, crops


def _size(size) -> dict[str, int]:
    if size is None:
        return {}
    if isinstance(size, int):
        return {"shortest_edge": size}
    items = size.items() if hasattr(size, "items") else vars(size).items()
    return {k: v for k, v in items if v}


def _interpolation(resample) -> str | None:
    from transformers.image_utils import pil_torch_interpolation_mapping

    mode = pil_torch_interpolation_mapping.get(resample, resample) if resample is not None else None
    value = getattr(mode, "value", mode) or "bilinear"  # transformers' default when resample is None
    return value if value in ("bicubic", "bilinear", "nearest-exact", "nearest") else None


# ---------------------------------------------------------------- tensor ops


def resize_crop(images: Sequence["Any"], spec: Spec) -> "Any":
    """uint8 (3, H, W) tensors of any sizes, one device -> uint8 (N, 3, h, w), in input order.
    Images of one shape are resized together (one kernel, as transformers groups them)."""
    import torch

    groups: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(tuple(im.shape[-2:]), []).append(i)
    out: list[Any] = [None] * len(images)
    for idx in groups.values():
        batch = _resize(torch.stack([images[i] for i in idx]), spec)
        for crop in spec.crops:
            batch = center_crop(batch, crop)
        out_idx = iter(batch)
        for i in idx:
            out[i] = next(out_idx)
    return torch.stack(out)


def _resize(batch, spec: Spec):
    from torchvision.transforms.v2 import functional as tvF

    if spec.resize is None:
        return batch
    if isinstance(spec.resize, int):
        h, w = batch.shape[-2:]
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(spec.resize * long / short)  # transformers' get_resize_output_image_size
        size = [new_long, spec.resize] if w <= h else [spec.resize, new_long]
    else:
        size = list(spec.resize)
    return tvF.resize(batch, size, interpolation=tvF.InterpolationMode(spec.interpolation), antialias=True)


def center_crop(batch, size: tuple[int, int]):
    """transformers' TorchvisionBackend.center_crop: zero-pad a side shorter than the crop, then crop."""
    from torchvision.transforms.v2 import functional as tvF

    ch, cw = size
    h, w = batch.shape[-2:]
    if cw > w or ch > h:
        pad = [(cw - w) // 2 if cw > w else 0, (ch - h) // 2 if ch > h else 0,
               (cw - w + 1) // 2 if cw > w else 0, (ch - h + 1) // 2 if ch > h else 0]
        batch = tvF.pad(batch, pad, fill=0)
        h, w = batch.shape[-2:]
        if (h, w) == (ch, cw):
            return batch
    return batch[..., int((h - ch) / 2.0):int((h - ch) / 2.0) + ch, int((w - cw) / 2.0):int((w - cw) / 2.0) + cw]


def normalise(batch, spec: Spec):
    """uint8 (N, 3, h, w) -> float32, fused as transformers fuses rescale and normalise (bit-identical)."""
    import torch
    from torchvision.transforms.v2 import functional as tvF

    if spec.mean is not None:
        scale = 1.0 / spec.rescale if spec.rescale else 1.0
        mean = torch.tensor(spec.mean, device=batch.device) * scale
        std = torch.tensor(spec.std, device=batch.device) * scale
        return tvF.normalize(batch.to(torch.float32), mean, std, inplace=True)
    if spec.rescale:
        return batch * spec.rescale
    return batch.to(torch.float32)
