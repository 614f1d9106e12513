"""Factual image descriptions for the sandbox vision model.

:func:`analyze` measures the image (format, size, colour mode, frames, dominant colours after
median-cut quantisation, mean brightness) and :func:`describe` turns those facts into a short answer
to the user's prompt. Nothing is invented: every statement comes from the pixels.
"""

from __future__ import annotations

import base64
import binascii
import colorsys
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image

from gateway.sandbox._text import words
from gateway.sandbox.errors import SandboxInvalidImage, SandboxInvalidRequest
from gateway.sandbox.images import open_image, to_display_mode

ANALYSIS_SIDE = 128
QUANTIZE_COLOURS = 12
TOP_COLOURS = 3

_DATA_URL_RE = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[^,;]*)*?);base64,(?P<data>.*)$", re.S)


@dataclass(frozen=True)
class ColourShare:
    name: str
    hex: str
    share: float  # fraction of the (opaque) pixels, 0..1

    def __str__(self) -> str:
        return f"{self.name} ({self.hex})"


@dataclass(frozen=True)
class ImageFacts:
    format: str
    width: int
    height: int
    mode: str
    frames: int
    has_alpha: bool
    dominant_colours: list[ColourShare]
    brightness: float  # mean luma, 0 (black) .. 1 (white)

    @property
    def orientation(self) -> str:
        if self.width == self.height:
            return "square"
        return "landscape" if self.width > self.height else "portrait"

    @property
    def brightness_label(self) -> str:
        for limit, label in ((0.2, "very dark"), (0.4, "dark"), (0.6, "medium"), (0.8, "bright")):
            if self.brightness < limit:
                return label
        return "very bright"


def image_bytes_from_data_url(url: str) -> bytes:
    """Bytes of a ``data:image/...;base64,...`` URL (the form vision requests inline images in)."""
    match = _DATA_URL_RE.match(url.strip())
    if not match:
        raise SandboxInvalidRequest("the sandbox only accepts images inline as base64 data URLs")
    try:
        return base64.b64decode(match.group("data"), validate=False)
    except (binascii.Error, ValueError) as exc:
        raise SandboxInvalidImage(f"invalid base64 image data: {exc}") from exc


def colour_name(rgb: tuple[int, int, int]) -> str:
    """A rough English name for an RGB colour ("red", "dark blue", "light gray"...)."""
    r, g, b = (c / 255.0 for c in rgb)
    hue, lightness, _ = colorsys.rgb_to_hls(r, g, b)
    chroma = max(r, g, b) - min(r, g, b)
    if lightness < 0.1:
        return "black"
    if chroma < 0.1 or (chroma < 0.16 and (lightness < 0.2 or lightness > 0.85)):
        if lightness > 0.9:
            return "white"
        if lightness > 0.7:
            return "light gray"
        if lightness < 0.3:
            return "dark gray"
        return "gray"
    deg = hue * 360.0
    if deg < 15 or deg >= 345:
        base = "pink" if lightness > 0.72 else "red"
    elif deg < 40:
        base = "brown" if lightness < 0.4 else ("peach" if lightness > 0.8 else "orange")
    elif deg < 68:
        base = "olive" if lightness < 0.3 else "yellow"
    elif deg < 160:
        base = "green"
    elif deg < 195:
        base = "teal" if lightness < 0.35 else "cyan"
    elif deg < 255:
        base = "blue"
    elif deg < 290:
        base = "purple"
    elif deg < 330:
        base = "magenta" if lightness <= 0.72 else "pink"
    else:
        base = "pink" if lightness > 0.6 else "crimson"
    if base in ("brown", "olive", "teal", "peach", "pink"):
        return base
    if lightness < 0.25:
        return f"dark {base}"
    if lightness > 0.78:
        return f"light {base}"
    return base


def short_hex(rgb: tuple[int, int, int]) -> str:
    """Three-digit hex of a colour quantised to 4 bits per channel (``#d22``)."""
    return "#" + "".join(f"{min(15, round(c / 17)):x}" for c in rgb)


def _dominant_colours(image: Image.Image) -> tuple[list[ColourShare], float]:
    rgba = to_display_mode(image).convert("RGBA")
    rgba.thumbnail((ANALYSIS_SIDE, ANALYSIS_SIDE), Image.Resampling.BOX)
    # Transparent pixels carry no colour: analyse the opaque ones, flattened onto white.
    flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    flat.alpha_composite(rgba)
    rgb = flat.convert("RGB")
    opaque = np.asarray(rgba.getchannel("A")).reshape(-1) >= 16
    if not opaque.any():
        return [], 0.0
    pixels = np.asarray(rgb, dtype=np.int64).reshape(-1, 3)[opaque]
    luma = np.asarray(rgb.convert("L"), dtype=np.float64).reshape(-1)[opaque]
    brightness = float(luma.mean() / 255.0)

    quantised = rgb.quantize(colors=QUANTIZE_COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    indices = np.asarray(quantised).reshape(-1)[opaque]
    palette = quantised.getpalette() or []
    # Merge palette entries that get the same name; each name's colour is the mean of its pixels.
    groups: dict[str, list[int]] = {}
    for idx in np.unique(indices).tolist():
        name = colour_name((palette[3 * idx], palette[3 * idx + 1], palette[3 * idx + 2]))
        groups.setdefault(name, []).append(idx)
    total = len(indices)
    shares = []
    for name, members in groups.items():
        mask = np.isin(indices, members)
        mean = pixels[mask].mean(axis=0)
        shares.append(
            ColourShare(
                name=name,
                hex=short_hex((round(mean[0]), round(mean[1]), round(mean[2]))),
                share=int(mask.sum()) / total,
            )
        )
    shares.sort(key=lambda c: (-c.share, c.name))
    return shares[:TOP_COLOURS], brightness


def analyze(image_bytes: bytes) -> ImageFacts:
    """Measure an image; raises :class:`SandboxInvalidImage` when the bytes are not an image."""
    image = open_image(image_bytes)
    fmt = image.format or "unknown"
    frames = int(getattr(image, "n_frames", 1) or 1)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    mode = image.mode
    colours, brightness = _dominant_colours(image)
    return ImageFacts(
        format=fmt,
        width=image.width,
        height=image.height,
        mode=mode,
        frames=frames,
        has_alpha=has_alpha,
        dominant_colours=colours,
        brightness=brightness,
    )


_MODE_NAMES = {
    "1": "black-and-white",
    "L": "grayscale",
    "LA": "grayscale",
    "P": "palette",
    "PA": "palette",
    "RGB": "RGB",
    "RGBA": "RGB",
    "CMYK": "CMYK",
    "YCbCr": "YCbCr",
    "I;16": "16-bit grayscale",
    "I;16B": "16-bit grayscale",
    "I;16L": "16-bit grayscale",
    "I": "32-bit grayscale",
    "F": "floating-point grayscale",
}


def _percent(x: float) -> str:
    return f"{round(x * 100)}%"


def describe(image_bytes: bytes, prompt: str = "") -> str:
    """A short factual description of the image, ordered by what the prompt asks about."""
    facts = analyze(image_bytes)
    kind = _MODE_NAMES.get(facts.mode, facts.mode)
    size = f"{facts.width}x{facts.height} pixels ({facts.orientation}, {kind}"
    size += ", with transparency)" if facts.has_alpha else ")"
    if facts.frames > 1:
        size += f", {facts.frames} frames"
    format_sentence = f"This is a {facts.format} image, {size}."
    colours = ", ".join(f"{c} at {_percent(c.share)}" for c in facts.dominant_colours)
    colour_sentence = f"Its dominant colours are {colours}."
    brightness_sentence = (
        f"Overall it is {facts.brightness_label}, with a mean brightness of {_percent(facts.brightness)}."
    )
    if not facts.dominant_colours:
        colour_sentence = "It is fully transparent, so it has no visible colours."
        brightness_sentence = ""
    elif facts.dominant_colours[0].share >= 0.9:
        top = facts.dominant_colours[0]
        colour_sentence = f"It is almost uniformly {top}, covering {_percent(top.share)} of the pixels."

    asked = set(words(prompt))
    sentences = [format_sentence, colour_sentence, brightness_sentence]
    if asked & {"colour", "colours", "color", "colors", "dominant", "palette", "hue"}:
        sentences = [colour_sentence, format_sentence, brightness_sentence]
    elif asked & {"bright", "brightness", "dark", "light", "lighting", "exposure"}:
        sentences = [brightness_sentence, format_sentence, colour_sentence]
    text = " ".join(s for s in sentences if s)
    return text + " (Sandbox vision: measured from the pixels, no objects are recognised.)"
