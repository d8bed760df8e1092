"""vlmcls.fastimage: the tensor image path must give the HF image processors' pixels.

Reference: transformers' torchvision processors (the default `AutoImageProcessor` class) on the
image `images.decode` returns: equal to the bit on the CPU. Against the PIL processors (PIL's own
resampling) the stated tolerance is 2 grey levels at most, 0.05 levels on average. The CUDA test
(nvJPEG decode, CUDA resize) runs where a GPU is present: nvJPEG's IDCT and chroma upsampling are
not libjpeg's. Measured on an H100: quality-90 baseline JPEGs differ by <= 8 levels (0.5-0.8 on
average per image), quality-75 and progressive ones by <= 23 (1-2.2 on average), images that go
through PIL by 1 (CUDA vs CPU resize rounding). Bound: 28 at most, 3 on average per image.
`image_path = "processes"` is bit-identical on any device, at CPU speed.
"""
from __future__ import annotations

import io
import os
import signal
import time

import pytest

from vlmcls import fastimage, images

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
np = pytest.importorskip("numpy")
from PIL import Image  # noqa: E402

# The three processors the baselines use, configured as their hub checkpoints are.
PROCESSORS = {
    "clip": ("CLIPImageProcessor", {}),  # openai/clip-vit-*: shortest 224, crop 224, bicubic
    "resnet": ("ConvNextImageProcessor", dict(size={"shortest_edge": 224}, crop_pct=0.875, resample=3,
                                               image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])),
    "vit": ("ViTImageProcessor", dict(image_mean=[0.5] * 3, image_std=[0.5] * 3)),  # 224x224 bilinear
}


def _processor(kind: str, pil: bool = False):
    name, kwargs = PROCESSORS[kind]
    return getattr(transformers, name + ("Pil" if pil else ""))(**kwargs)


def _photo(w: int, h: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """Smooth colour fields with grain: JPEG-like content whose resizing is not trivial."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray((rng.random((max(2, h // 16), max(2, w // 16), 3)) * 255).astype("uint8"))
    grain = rng.integers(-15, 15, (h, w, 3))
    arr = np.clip(np.asarray(coarse.resize((w, h), Image.BICUBIC)).astype(int) + grain, 0, 255).astype("uint8")
    return Image.fromarray(arr).convert(mode)


def _encode(img: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: images.decode turns it upright, a plain JPEG decode would not
    return _encode(_photo(120, 80, seed=4), exif=exif)


@pytest.fixture(scope="module")
def sources() -> list[bytes]:
    """ImageNet-like variety: landscape, portrait, grey, larger, small, progressive, CMYK, PNG with
    alpha, EXIF-rotated, tiny (upscaled by images.decode)."""
    return [
        _encode(_photo(500, 375), quality=90), _encode(_photo(375, 500, seed=1), quality=90),
        _encode(_photo(333, 500, "L", seed=2)), _encode(_photo(640, 480, seed=3)), _encode(_photo(200, 180, seed=5)),
        _encode(_photo(300, 260, seed=6), progressive=True), _encode(_photo(260, 300, "CMYK", seed=7)),
        _encode(_photo(150, 120, "RGBA", seed=8), "PNG"), _rotated_jpeg(), _encode(_photo(12, 9, seed=9)),
    ]


def _reference(processor, sources) -> "torch.Tensor":
    return processor(images=[images.decode(s) for s in sources], return_tensors="pt")["pixel_values"]


def _levels(a, b, spec) -> "torch.Tensor":
    """|a - b| in grey levels (0..255) of the un-normalised image."""
    std = torch.tensor(spec.std, device=a.device).view(1, 3, 1, 1) * 255
    return (a - b.to(a.device)).abs() * std


@pytest.fixture(scope="module")
def pipelines():
    made = []

    def make(kind, device="cpu", path="processes", workers=2):
        p = fastimage.ImagePipeline(fastimage.spec_of(_processor(kind)), device, path, workers)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def _run(pipeline, sources):
    return pipeline.pixels(pipeline.submit(sources))


# ---------------------------------------------------------------- specs read from the processors


def test_specs_follow_the_processor_configs():
    clip, resnet, vit = (fastimage.spec_of(_processor(k)) for k in ("clip", "resnet", "vit"))
    assert (clip.resize, clip.crops, clip.interpolation) == (224, ((224, 224),), "bicubic")
    assert clip.mean == pytest.approx(transformers.image_utils.OPENAI_CLIP_MEAN)
    # ConvNext at 224: shortest side to int(224 / 0.875) = 256, then the 224 centre crop
    assert (resnet.resize, resnet.crops, resnet.interpolation) == (256, ((224, 224),), "bicubic")
    assert (vit.resize, vit.crops, vit.interpolation, vit.out_size) == ((224, 224), (), "bilinear", (224, 224))
    assert all(s.rescale == pytest.approx(1 / 255) for s in (clip, resnet, vit))


def test_the_pil_variants_have_the_same_spec():
    for kind in PROCESSORS:
        a, b = fastimage.spec_of(_processor(kind)), fastimage.spec_of(_processor(kind, pil=True))
        assert (a.resize, a.crops, a.interpolation, a.rescale, a.mean, a.std) == \
               (b.resize, b.crops, b.interpolation, b.rescale, b.mean, b.std)


def test_processors_it_cannot_reproduce_have_no_spec():
    assert fastimage.spec_of(transformers.ViTImageProcessor(do_pad=True, pad_size={"height": 230, "width": 230})) is None
    assert fastimage.spec_of(transformers.CLIPImageProcessor(do_center_crop=False)) is None  # output size varies
    assert fastimage.spec_of(transformers.ViTImageProcessor(resample=1)) is None  # LANCZOS
    assert fastimage.spec_of(transformers.Qwen2VLImageProcessor()) is None  # its own preprocessing


def test_convnext_at_384_warps_without_crop():
    spec = fastimage.spec_of(transformers.ConvNextImageProcessor(size={"shortest_edge": 384}))
    assert (spec.resize, spec.crops) == ((384, 384), ())


# ---------------------------------------------------------------- pixels equal the processors'


@pytest.mark.parametrize("kind", list(PROCESSORS))
def test_cpu_pixels_equal_the_torchvision_processor(kind, sources, pipelines):
    pixels, errors = _run(pipelines(kind), sources)
    assert errors == [None] * len(sources)
    torch.testing.assert_close(pixels, _reference(_processor(kind), sources), atol=0, rtol=0)


@pytest.mark.parametrize("kind", list(PROCESSORS))
def test_cpu_pixels_within_two_levels_of_the_pil_processor(kind, sources, pipelines):
    pipeline = pipelines(kind)
    pixels, _ = _run(pipeline, sources)
    diff = _levels(pixels, _reference(_processor(kind, pil=True), sources), pipeline.spec)
    assert diff.max() <= 2.001 and diff.mean() < 0.05


def test_one_worker_runs_in_a_thread_and_agrees(sources, pipelines):
    many, _ = _run(pipelines("clip"), sources)
    one, _ = _run(pipelines("clip", workers=1), sources)
    assert torch.equal(many, one)


def test_paths_and_pil_images_are_accepted(tmp_path, sources, pipelines):
    files = []
    for i, data in enumerate(sources[:3]):
        files.append(tmp_path / f"{i}.jpg")
        files[-1].write_bytes(data)
    mixed = [str(files[0]), files[1], images.decode(sources[2])]
    pixels, errors = _run(pipelines("resnet"), mixed)
    assert errors == [None] * 3
    torch.testing.assert_close(pixels, _reference(_processor("resnet"), sources[:3]), atol=0, rtol=0)


def test_each_broken_image_is_one_error_and_the_rest_are_unchanged(tmp_path, sources, pipelines):
    broken = [b"not an image", sources[0][: len(sources[0]) // 3], str(tmp_path / "missing.jpg"), None]
    mixed = [sources[0], broken[0], sources[1], broken[1], broken[2], sources[2], broken[3]]
    pixels, errors = _run(pipelines("vit"), mixed)
    assert [e is None for e in errors] == [True, False, True, False, False, True, False]
    assert "missing.jpg" in errors[4] and "NoneType" in errors[6]
    assert all("\n" not in e for e in errors if e)
    torch.testing.assert_close(pixels, _reference(_processor("vit"), [sources[0], sources[1], sources[2]]), atol=0, rtol=0)


def test_plain_jpeg_routes_only_what_a_plain_decode_gets_right(sources):
    plain = [fastimage.plain_jpeg(s) for s in sources]
    # landscape, portrait, grey, large, small, progressive: plain; CMYK, PNG, EXIF-rotated, tiny: PIL
    assert plain == [True] * 6 + [False] * 4


def test_decode_many_gives_tensors_or_errors(sources):
    out = fastimage.decode_many([sources[0], b"junk", sources[7]])
    assert out[0].shape == (3, 375, 500) and out[0].dtype == torch.uint8
    assert isinstance(out[1], images.ImageError)
    assert torch.equal(out[2], fastimage.to_tensor(images.decode(sources[7])))


def test_bad_path_option():
    spec = fastimage.spec_of(_processor("vit"))
    with pytest.raises(ValueError, match="image path"):
        fastimage.ImagePipeline(spec, "cpu", "nvjpeg")
    with pytest.raises(ValueError, match="CUDA"):
        fastimage.ImagePipeline(spec, "cpu", "gpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (nvJPEG)")
@pytest.mark.parametrize("kind", list(PROCESSORS))
def test_gpu_pixels_within_the_nvjpeg_tolerance_of_the_processor(kind, sources, pipelines):
    pipeline = pipelines(kind, device="cuda", path="gpu")
    pixels, errors = _run(pipeline, sources)
    assert errors == [None] * len(sources) and pixels.device.type == "cuda"
    diff = _levels(pixels, _reference(_processor(kind), sources), pipeline.spec)
    assert diff.max() <= 28.001 and diff.mean(dim=(1, 2, 3)).max() < 3.0


def test_importing_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, vlmcls.fastimage; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_pixels_from_its_own_pool(sources, pipelines):
    """The parent's pool (threads, pipes) does not survive a fork: a child that reused it waited forever."""
    pipeline = pipelines("clip", workers=1)
    parent, _ = _run(pipeline, sources[:2])  # the pool exists now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: say whether its pixels equal the parent's, and leave at once
        try:
            torch.set_num_threads(1)  # as a DataLoader worker does: OpenMP's threads do not survive a fork
            pixels, _ = _run(pipeline, sources[:2])
            os.write(write, b"equal" if torch.equal(pixels, parent) else b"different")
        finally:
            os._exit(0)
    os.close(write)
    deadline = time.monotonic() + 60
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child's pipeline hung")
        time.sleep(0.05)
    got = os.read(read, 64).decode()
    os.close(read)
    assert got == "equal"
