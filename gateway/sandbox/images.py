"""Real PNG images rendered with Pillow from a prompt, and LANCZOS upscaling.

:func:`generate` is deterministic: a BLAKE2b hash of the prompt (and the variant number, for
``n > 1``) seeds the palette, the background gradient and the shapes; the prompt itself is drawn in
a caption box. The same prompt, size and variant give byte-identical PNGs.
"""

from __future__ import annotations

import colorsys
import io
import random
import textwrap
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from gateway.sandbox._text import stable_hash
from gateway.sandbox.errors import SandboxInvalidImage, SandboxInvalidRequest

# The sizes OpenAI's image models accept (dall-e-2, dall-e-3 and gpt-image-1).
SUPPORTED_SIZES: tuple[tuple[int, int], ...] = (
    (256, 256),
    (512, 512),
    (1024, 1024),
    (1792, 1024),
    (1024, 1792),
    (1536, 1024),
    (1024, 1536),
)
DEFAULT_SIZE = (1024, 1024)
UPSCALE_FACTORS = (2, 4)
MAX_UPSCALED_SIDE = 8192
MAX_PROMPT_CHARS = 32_000


@dataclass(frozen=True)
class UpscaleResult:
    png: bytes
    width: int
    height: int
    original_width: int
    original_height: int


def parse_size(size: str | tuple[int, int] | None) -> tuple[int, int]:
    """Validate a requested size (``"1024x1024"``, ``"auto"``, ``None`` or ``(w, h)``)."""
    if size is None or size == "auto":
        return DEFAULT_SIZE
    if isinstance(size, str):
        try:
            w_str, h_str = size.lower().split("x")
            parsed = (int(w_str), int(h_str))
        except ValueError:
            raise SandboxInvalidRequest(f"Invalid size {size!r}: expected WIDTHxHEIGHT such as 1024x1024") from None
    else:
        parsed = (int(size[0]), int(size[1]))
    if parsed not in SUPPORTED_SIZES:
        supported = ", ".join(f"{w}x{h}" for w, h in SUPPORTED_SIZES)
        raise SandboxInvalidRequest(f"Unsupported size {parsed[0]}x{parsed[1]}; supported: {supported}, auto")
    return parsed


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's bundled default font is scalable when Pillow has FreeType (all PyPI wheels do).
    return ImageFont.load_default(size=size)


def _colour(
    rng: random.Random, lightness: tuple[float, float], saturation: tuple[float, float]
) -> tuple[int, int, int]:
    r, g, b = colorsys.hls_to_rgb(rng.random(), rng.uniform(*lightness), rng.uniform(*saturation))
    return round(r * 255), round(g * 255), round(b * 255)


def _gradient(width: int, height: int, top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image.Image:
    column = Image.new("RGB", (1, 256))
    column.putdata([tuple(round(top[c] + (bottom[c] - top[c]) * y / 255) for c in range(3)) for y in range(256)])
    return column.resize((width, height), Image.Resampling.BILINEAR)


def _to_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def generate(prompt: str, size: str | tuple[int, int] | None = "1024x1024", variant: int = 0) -> bytes:
    """Render a PNG for ``prompt`` at ``size``; ``variant`` distinguishes the images of one request."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise SandboxInvalidRequest("prompt must be a non-empty string")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise SandboxInvalidRequest(f"prompt is longer than {MAX_PROMPT_CHARS} characters")
    width, height = parse_size(size)
    rng = random.Random(stable_hash(f"{variant}\x00{prompt}", person=b"sandbox-image", digest_size=16))

    image = _gradient(
        width,
        height,
        _colour(rng, (0.55, 0.8), (0.35, 0.8)),
        _colour(rng, (0.15, 0.4), (0.35, 0.8)),
    ).convert("RGBA")
    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    unit = min(width, height)
    for _ in range(rng.randint(6, 12)):
        fill = (*_colour(rng, (0.3, 0.75), (0.5, 1.0)), rng.randint(110, 210))
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        radius = rng.uniform(0.06, 0.28) * unit
        shape = rng.choice(("ellipse", "rectangle", "polygon"))
        if shape == "ellipse":
            draw.ellipse((cx - radius, cy - radius * rng.uniform(0.5, 1.0), cx + radius, cy + radius), fill=fill)
        elif shape == "rectangle":
            draw.rounded_rectangle(
                (cx - radius, cy - radius * 0.7, cx + radius, cy + radius * 0.7), radius=radius * 0.15, fill=fill
            )
        else:
            draw.regular_polygon((cx, cy, radius), n_sides=rng.randint(3, 7), rotation=rng.uniform(0, 360), fill=fill)
    image = Image.alpha_composite(image, layer)

    # Caption: the prompt, wrapped, on a translucent band along the bottom.
    font_size = max(12, unit // 28)
    font = _font(font_size)
    chars_per_line = max(10, int(width / (font_size * 0.55)))
    lines = textwrap.wrap(" ".join(prompt.split()), width=chars_per_line)[:4] or [""]
    if len(textwrap.wrap(" ".join(prompt.split()), width=chars_per_line)) > 4:
        lines[-1] = lines[-1][: max(0, chars_per_line - 1)].rstrip() + "…"
    line_height = int(font_size * 1.3)
    band_height = line_height * len(lines) + font_size
    band = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    band_draw = ImageDraw.Draw(band)
    band_draw.rectangle((0, height - band_height, width, height), fill=(0, 0, 0, 150))
    y = height - band_height + font_size // 2
    for line in lines:
        band_draw.text((font_size, y), line, font=font, fill=(255, 255, 255, 255))
        y += line_height
    return _to_png(Image.alpha_composite(image, band).convert("RGB"))


def open_image(data: bytes) -> Image.Image:
    """Decode image bytes fully, raising :class:`SandboxInvalidImage` for anything that is not an image."""
    if not isinstance(data, bytes | bytearray | memoryview) or not data:
        raise SandboxInvalidImage("image data is empty")
    try:
        image = Image.open(io.BytesIO(bytes(data)))
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise SandboxInvalidImage(f"not a decodable image ({type(exc).__name__})") from exc
    return image


_HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def to_display_mode(image: Image.Image) -> Image.Image:
    """The image in an 8-bit mode (L, LA, RGB or RGBA), scaling 16-bit, 32-bit and float samples.

    Plain ``convert("RGB")`` clips those to 0..255, which turns most 16-bit images white.
    """
    if image.mode in ("L", "LA", "RGB", "RGBA"):
        return image
    if image.mode in _HIGH_DEPTH_MODES:
        values = np.asarray(image, dtype=np.float64)
        if image.mode == "F" and values.size and float(np.nanmax(values)) <= 1.0:
            values = values * 255.0  # float images in 0..1
        elif image.mode != "F" and values.size and float(values.max()) > 255.0:
            values = values / 257.0  # 16-bit range 0..65535
        return Image.fromarray(np.nan_to_num(values).clip(0, 255).astype(np.uint8), mode="L")
    has_alpha = image.mode.endswith("A") or image.mode == "PA" or "transparency" in image.info
    return image.convert("RGBA" if has_alpha else "RGB")


def upscale(png_bytes: bytes, factor: int = 2) -> UpscaleResult:
    """Upscale an image by ``factor`` (2 or 4) with Lanczos resampling; returns PNG bytes and sizes."""
    if factor not in UPSCALE_FACTORS:
        raise SandboxInvalidRequest(f"factor must be one of {UPSCALE_FACTORS}")
    image = open_image(png_bytes)
    width, height = image.size
    if max(width, height) * factor > MAX_UPSCALED_SIDE:
        raise SandboxInvalidRequest(f"upscaled image would exceed {MAX_UPSCALED_SIDE} pixels per side")
    image = to_display_mode(image)
    big = image.resize((width * factor, height * factor), Image.Resampling.LANCZOS)
    return UpscaleResult(
        png=_to_png(big),
        width=big.width,
        height=big.height,
        original_width=width,
        original_height=height,
    )
