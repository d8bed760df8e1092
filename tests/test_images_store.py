"""Bad images become normalised images or one-line errors; the store survives concurrent writers."""
from __future__ import annotations

import io
import multiprocessing as mp

import numpy as np
import pytest
from PIL import Image

from vlmcls.images import MAX_SIDE, MIN_SIDE, ImageError, decode
from vlmcls.store import Store, case_key
from vlmcls.types import Prediction


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_truncated_and_garbage_bytes_are_one_line_errors():
    good = encoded(Image.new("RGB", (64, 64), "red"), "JPEG")
    for bad in (good[: len(good) // 3], b"not an image at all", b""):
        with pytest.raises(ImageError, match="cannot decode image") as exc:
            decode(bad)
        assert "\n" not in str(exc.value)


def test_cmyk_sixteen_bit_and_palette_with_transparency_become_rgb():
    cmyk = decode(encoded(Image.new("CMYK", (40, 40), (0, 255, 255, 0)), "JPEG"))
    assert cmyk.mode == "RGB" and cmyk.getpixel((20, 20))[0] > 200  # red stays red
    ramp = Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 15).astype(np.uint16))
    sixteen = decode(encoded(ramp, "PNG"))
    assert sixteen.mode == "RGB" and sixteen.getpixel((0, 0))[0] == 0 and sixteen.getpixel((63, 63))[0] == 255
    pal = Image.new("P", (32, 32), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.info["transparency"] = 0
    rgb = decode(encoded(pal, "PNG", transparency=0))
    assert rgb.mode == "RGB" and rgb.getpixel((5, 5)) == (255, 255, 255)  # transparent -> white


def test_tiny_and_huge_images():
    one = decode(encoded(Image.new("RGB", (1, 1), "blue"), "PNG"))
    assert min(one.size) >= MIN_SIDE
    big = decode(encoded(Image.new("RGB", (6000, 300), "green"), "JPEG"))
    assert max(big.size) <= MAX_SIDE
    bomb = encoded(Image.new("1", (20000, 20000)), "PNG")  # 400 M pixels: a decompression bomb
    with pytest.raises(ImageError, match="too large"):
        decode(bomb)


def test_exif_rotation_is_applied():
    img = Image.new("RGB", (90, 30), "red")
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees when displayed
    out = decode(encoded(img, "JPEG", exif=exif.tobytes()))
    assert out.size == (30, 90)


def pred(i: int, error: str | None = None) -> Prediction:
    return Prediction(f"s{i}", i % 7, "x", ("x", "y"), "x", i % 7, "x", "match", error=error)


def _writer(path: str, worker: int) -> None:
    store = Store(path)
    for batch in range(20):
        store.put(f"case{worker}", [pred(worker * 10_000 + batch * 10 + k) for k in range(10)], now=0.0)


def test_concurrent_writers_lose_nothing(tmp_path):
    path = str(tmp_path / "s.sqlite")
    Store(path)
    procs = [mp.get_context("spawn").Process(target=_writer, args=(path, w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = Store(path)
    assert [store.count(f"case{w}") for w in range(4)] == [200] * 4
    assert store.get("case2")["s20005"] == pred(20005)


def test_case_key_changes_with_what_changes_answers():
    base = {"model": "m", "ways": 20, "seed": 0, "prompt": "p"}
    assert case_key(base) == case_key(dict(reversed(list(base.items()))))
    assert len({case_key({**base, k: "other"}) for k in base}) == len(base)


def _opener(path: str, barrier, rounds: int) -> None:
    for r in range(rounds):
        barrier.wait()  # every process opens the same new file at the same moment
        Store(f"{path}.{r}").put("k", [pred(1)], now=0.0)


def test_many_processes_opening_a_new_store_at_once(tmp_path):
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(6)
    path = str(tmp_path / "fresh.sqlite")  # not created beforehand: every process races to set WAL
    procs = [ctx.Process(target=_opener, args=(path, barrier, 20)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 6 and Store(f"{path}.19").count("k") == 1
