from __future__ import annotations

import io

import pytest
from PIL import Image

from gateway.sandbox import images
from gateway.sandbox.errors import SandboxInvalidImage, SandboxInvalidRequest

PROMPT = "A lighthouse on a cliff at sunset, oil painting"


def _open(data):
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize("size", ["256x256", "512x512", "1024x1024", "1792x1024", "1024x1792", "1536x1024"])
def test_generate_renders_a_png_of_the_requested_size(size):
    data = images.generate(PROMPT, size)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = _open(data)
    assert image.format == "PNG"
    assert f"{image.width}x{image.height}" == size
    # Not a flat fill: shapes and the caption produce many colours.
    assert len(image.convert("RGB").getcolors(maxcolors=1_000_000)) > 50


def test_generate_is_deterministic_and_prompt_dependent():
    a = images.generate(PROMPT, "256x256")
    assert a == images.generate(PROMPT, "256x256")
    assert a != images.generate("A bowl of fruit", "256x256")
    assert a != images.generate(PROMPT, "256x256", variant=1)


def test_prompt_caption_is_drawn():
    image = _open(images.generate(PROMPT, "512x512")).convert("RGB")
    # The caption band is dark with white text in it.
    band = image.crop((0, 440, 512, 512))
    colours = {rgb for _count, rgb in band.getcolors(maxcolors=1_000_000)}
    assert any(min(rgb) > 230 for rgb in colours)


def test_auto_and_tuple_sizes():
    assert images.parse_size("auto") == (1024, 1024)
    assert images.parse_size(None) == (1024, 1024)
    assert images.parse_size((1792, 1024)) == (1792, 1024)


@pytest.mark.parametrize("size", ["100x100", "1024", "bigxbig", "4096x4096", "1024x1024x3"])
def test_invalid_sizes_are_rejected(size):
    with pytest.raises(SandboxInvalidRequest):
        images.generate(PROMPT, size)


def test_empty_prompt_is_rejected():
    with pytest.raises(SandboxInvalidRequest):
        images.generate("  ", "256x256")


@pytest.mark.parametrize("factor", [2, 4])
def test_upscale_multiplies_sizes(factor):
    source = images.generate(PROMPT, "256x256")
    result = images.upscale(source, factor)
    assert (result.original_width, result.original_height) == (256, 256)
    assert (result.width, result.height) == (256 * factor, 256 * factor)
    big = _open(result.png)
    assert big.format == "PNG"
    assert big.size == (256 * factor, 256 * factor)
    # A real resampler, not pixel repetition: Lanczos creates in-between values on edges.
    small = _open(source).convert("RGB")
    nearest = small.resize(big.size, Image.Resampling.NEAREST)
    assert big.convert("RGB").tobytes() != nearest.tobytes()
    # And the content is preserved: shrinking back gives nearly the original.
    back = big.convert("RGB").resize(small.size, Image.Resampling.BOX)
    diff = sum(abs(a - b) for a, b in zip(back.tobytes(), small.tobytes(), strict=True)) / len(small.tobytes())
    assert diff < 6


def test_upscale_keeps_non_square_and_other_formats():
    buffer = io.BytesIO()
    Image.new("RGB", (30, 20), (10, 200, 30)).save(buffer, format="JPEG")
    result = images.upscale(buffer.getvalue(), 2)
    assert (result.width, result.height) == (60, 40)
    assert _open(result.png).format == "PNG"


def test_upscale_rejects_bad_input():
    with pytest.raises(SandboxInvalidRequest):
        images.upscale(images.generate(PROMPT, "256x256"), 3)
    with pytest.raises(SandboxInvalidImage):
        images.upscale(b"definitely not a png", 2)
    with pytest.raises(SandboxInvalidRequest):
        images.upscale(images.generate(PROMPT, "1792x1024"), 8)
