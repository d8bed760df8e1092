"""Image decoding and normalisation. A bad image raises ImageError (one line); the runner turns it
into an error row and the run goes on."""
from __future__ import annotations

import io
from pathlib import Path

MAX_SIDE = 4096  # decoded images are bounded here; backends bound further per model family
MIN_SIDE = 28  # tiny images (1x1) are upscaled: several vision towers reject a side below a patch


class ImageError(ValueError):
    """A sample's image cannot be used."""


def _open(source: bytes | str):
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else Path(source))
        img.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode huge images at reduced scale
        img.load()
        return img
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image too large to decode safely: {exc}".split(". ")[0]) from None
    except FileNotFoundError:
        raise ImageError(f"image file not found: {source}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot decode image: {exc}") from None


def _to_rgb(img):
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit / float: rescale, don't clip to 255
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(arr.astype("uint8"), "L")
    if img.mode == "P" and "transparency" in img.info or img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def _bound(img):
    from PIL import Image

    w, h = img.size
    if max(w, h) > MAX_SIDE:
        img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BICUBIC)
    if min(img.size) < MIN_SIDE:
        scale = MIN_SIDE / min(img.size)
        img = img.resize((max(MIN_SIDE, round(img.width * scale)), max(MIN_SIDE, round(img.height * scale))), Image.Resampling.NEAREST)
    return img


def decode(source: bytes | str):
    """Encoded bytes or a path -> an RGB PIL image, EXIF-rotated, sides within [MIN_SIDE, MAX_SIDE]."""
    from PIL import ImageOps

    img = _open(source)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a malformed EXIF block must not cost the image
        pass
    try:
        return _bound(_to_rgb(img))
    except (OSError, ValueError) as exc:
        raise ImageError(f"cannot convert image ({img.mode}, {img.size[0]}x{img.size[1]}): {exc}") from None
