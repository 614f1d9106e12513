from __future__ import annotations

import base64
import io

import pytest
from PIL import Image, ImageDraw

from gateway.sandbox import images, vision
from gateway.sandbox.errors import SandboxInvalidImage, SandboxInvalidRequest


def _encode(image, fmt="PNG"):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_red_image_is_named_red():
    text = vision.describe(_encode(Image.new("RGB", (64, 48), (221, 34, 34))), "What is in this image?")
    assert "PNG" in text
    assert "64x48" in text
    assert "red (#d22)" in text
    facts = vision.analyze(_encode(Image.new("RGB", (64, 48), (221, 34, 34))))
    assert facts.dominant_colours[0].name == "red"
    assert facts.dominant_colours[0].share == 1.0
    assert facts.orientation == "landscape"


def test_three_dominant_colours_in_order_of_area():
    image = Image.new("RGB", (200, 100), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 99, 99), fill=(20, 40, 200))  # 50% blue
    draw.rectangle((100, 0, 159, 99), fill=(30, 160, 40))  # 30% green, 20% white left
    facts = vision.analyze(_encode(image, "JPEG"))
    assert facts.format == "JPEG"
    assert [c.name for c in facts.dominant_colours] == ["blue", "green", "white"]
    assert [round(c.share, 1) for c in facts.dominant_colours] == [0.5, 0.3, 0.2]
    text = vision.describe(_encode(image), "which colours dominate?")
    assert text.startswith("Its dominant colours are blue")


@pytest.mark.parametrize(
    ("rgb", "name"),
    [
        ((0, 0, 0), "black"),
        ((255, 255, 255), "white"),
        ((128, 128, 128), "gray"),
        ((230, 30, 30), "red"),
        ((30, 200, 40), "green"),
        ((30, 60, 220), "blue"),
        ((240, 220, 30), "yellow"),
        ((250, 140, 20), "orange"),
        ((120, 70, 20), "brown"),
        ((140, 40, 200), "purple"),
        ((250, 180, 200), "pink"),
        ((20, 200, 220), "cyan"),
        ((10, 20, 90), "dark blue"),
    ],
)
def test_colour_names(rgb, name):
    assert vision.colour_name(rgb) == name


def test_short_hex():
    assert vision.short_hex((221, 34, 34)) == "#d22"
    assert vision.short_hex((255, 255, 255)) == "#fff"
    assert vision.short_hex((0, 0, 0)) == "#000"


def test_brightness():
    dark = vision.analyze(_encode(Image.new("L", (10, 10), 20)))
    bright = vision.analyze(_encode(Image.new("L", (10, 10), 240)))
    assert dark.brightness == pytest.approx(20 / 255, abs=0.01)
    assert dark.brightness_label == "very dark"
    assert bright.brightness_label == "very bright"
    assert "very bright" in vision.describe(_encode(Image.new("L", (10, 10), 240)), "how bright is it?")


def test_transparency_and_animation():
    transparent = vision.describe(_encode(Image.new("RGBA", (8, 8), (0, 0, 0, 0))))
    assert "transparency" in transparent
    assert "fully transparent" in transparent
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    facts = vision.analyze(buffer.getvalue())
    assert facts.format == "GIF"
    assert facts.frames == 2


def test_generated_image_is_described_with_its_real_size():
    text = vision.describe(images.generate("a forest", "1792x1024"))
    assert "1792x1024" in text
    assert "landscape" in text


@pytest.mark.parametrize("data", [b"", b"hello, I am text", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, b"%PDF-1.4 ..."])
def test_non_images_are_refused(data):
    with pytest.raises(SandboxInvalidImage):
        vision.describe(data, "what is this?")


def test_data_urls():
    png = _encode(Image.new("RGB", (4, 4), (0, 0, 255)))
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    assert vision.image_bytes_from_data_url(url) == png
    with pytest.raises(SandboxInvalidRequest):
        vision.image_bytes_from_data_url("https://example.com/cat.png")


def test_sixteen_bit_images_are_scaled_not_clipped():
    import numpy as np

    gradient = Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16))
    assert gradient.mode == "I;16"
    facts = vision.analyze(_encode(gradient))
    assert facts.brightness == pytest.approx(0.5, abs=0.05)
    assert len(facts.dominant_colours) == 3
    assert "16-bit grayscale" in vision.describe(_encode(gradient))
    upscaled = Image.open(io.BytesIO(images.upscale(_encode(gradient), 2).png))
    assert upscaled.size == (128, 128)
    assert upscaled.getextrema()[0] < 10 and upscaled.getextrema()[1] > 245
