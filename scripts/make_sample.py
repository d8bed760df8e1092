"""Generate the bundled offline sample: vlmcls/data/sample.parquet.

No real ImageNet image may be shipped or downloaded here, so the images are SYNTHETIC: for each
class a seeded pattern (background gradient, a few shapes, noise) in class-specific colours,
3 images per class. They carry real ImageNet-1k class ids (every 10th class, plus the classes
whose names collide: crane 134/517, maillot 638/639, Cardigan 264 / cardigan 474), so every stage of
the pipeline runs on genuine label names. No model can recognise the "object": accuracy on this
sample measures nothing but plumbing, and the reports say so.

    python scripts/make_sample.py   # deterministic: same bytes every run
"""
from __future__ import annotations

import io
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFilter

CLASSES = sorted(set(range(0, 1000, 10)) | {134, 517, 638, 639, 264, 474})
PER_CLASS = 3
SIDE = 96
OUT = Path(__file__).resolve().parents[1] / "vlmcls" / "data" / "sample.parquet"


def draw(class_id: int, k: int) -> bytes:
    rng = random.Random(class_id * 1000 + k)
    base = random.Random(class_id)  # class-specific palette, shared by the class's images
    c1, c2 = [tuple(base.randrange(256) for _ in range(3)) for _ in range(2)]
    img = Image.new("RGB", (SIDE, SIDE))
    px = img.load()
    for y in range(SIDE):
        t = y / (SIDE - 1)
        row = tuple(int(a * (1 - t) + b * t) for a, b in zip(c1, c2))
        for x in range(SIDE):
            px[x, y] = row
    pen = ImageDraw.Draw(img)
    for _ in range(3 + base.randrange(4)):
        x0, y0 = rng.randrange(SIDE - 20), rng.randrange(SIDE - 20)
        box = (x0, y0, x0 + 10 + rng.randrange(40), y0 + 10 + rng.randrange(40))
        fill = tuple(base.randrange(256) for _ in range(3))
        (pen.ellipse if base.random() < 0.5 else pen.rectangle)(box, fill=fill)
    img = img.filter(ImageFilter.GaussianBlur(0.8))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=70, optimize=True)
    return buf.getvalue()


def main() -> None:
    rows = [(f"sample-{c:04d}-{k}", c, draw(c, k)) for c in CLASSES for k in range(PER_CLASS)]
    table = pa.table({
        "sample_id": [r[0] for r in rows],
        "label": pa.array([r[1] for r in rows], pa.int64()),
        "image": pa.array([r[2] for r in rows], pa.binary()),
    })
    OUT.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, OUT, compression="zstd")
    print(f"{OUT}: {len(rows)} images over {len(CLASSES)} classes, {OUT.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
