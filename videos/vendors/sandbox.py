"""The offline sandbox video vendor: a real H.264 MP4 drawn from the prompt.

Each frame is drawn with Pillow (a gradient and palette seeded by the prompt, the prompt's words,
moving lights, a timecode and a progress bar; a reference image, when given, is the backdrop)
and encoded with PyAV (its wheels carry FFmpeg and libx264). Rendering is paced at
VIDEO_SANDBOX_RENDER_FPS frames per second of wall time (24 by default, so a 4 s clip takes
about 4 s) with progress reported as it goes; 0 renders as fast as the machine can.
"""

from __future__ import annotations

import asyncio
import colorsys
import hashlib
import io
import math
import textwrap
import time
from typing import ClassVar

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from gateway.vendors.base import Credential
from videos import conf
from videos.vendors.base import (
    ASPECTS,
    Checkpoint,
    Rendered,
    VideoCapabilities,
    VideoSpec,
    VideoVendor,
    frame_size,
)

THUMBNAIL_MAX_SIDE = 640
ORBS = 4


def _palette(prompt: str) -> list[tuple[int, int, int]]:
    digest = hashlib.sha256(prompt.encode()).digest()
    colours = []
    for i in range(ORBS + 2):
        hue = digest[i] / 255
        light = 0.25 + digest[i + 8] / 255 * 0.35 if i < 2 else 0.55 + digest[i + 8] / 255 * 0.25
        r, g, b = colorsys.hls_to_rgb(hue, light, 0.65)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return colours


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _backdrop(spec: VideoSpec, width: int, height: int) -> Image.Image:
    """The still part of every frame: gradient (or the reference image) and the prompt's words."""
    top, bottom = _palette(spec.prompt)[:2]
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    gradient = (np.array(top, np.float32) * (1 - ramp) + np.array(bottom, np.float32) * ramp).astype(np.uint8)
    image = Image.fromarray(np.broadcast_to(gradient, (height, width, 3)).copy(), "RGB")
    if spec.reference_image:
        with Image.open(io.BytesIO(spec.reference_image)) as reference:
            fitted = ImageOps.fit(reference.convert("RGB"), (width, height))
        image = Image.blend(fitted, image, 0.35)
    draw = ImageDraw.Draw(image)
    short = min(width, height)
    font = _font(max(18, short // 18))
    columns = max(12, int(width / (short / 18) * 1.6))
    lines = textwrap.wrap(spec.prompt, columns)[:5]
    if lines:
        text = "\n".join(lines)
        box = draw.multiline_textbbox((0, 0), text, font=font, align="center", spacing=short // 60)
        x = (width - (box[2] - box[0])) / 2
        y = (height - (box[3] - box[1])) / 2
        shadow = max(2, short // 300)
        draw.multiline_text(
            (x + shadow, y + shadow), text, font=font, fill=(0, 0, 0), align="center", spacing=short // 60
        )
        draw.multiline_text((x, y), text, font=font, fill=(255, 255, 255), align="center", spacing=short // 60)
    return image


def _frame(backdrop: Image.Image, spec: VideoSpec, index: int, total: int, fps: int) -> Image.Image:
    image = backdrop.copy()
    width, height = image.size
    short = min(width, height)
    draw = ImageDraw.Draw(image)
    t = index / fps
    for i, colour in enumerate(_palette(spec.prompt)[2:]):
        phase = i * math.pi / 2
        cx = width / 2 + math.sin(t * (0.7 + 0.2 * i) + phase) * width * 0.38
        cy = height / 2 + math.cos(t * (0.5 + 0.15 * i) + phase) * height * 0.36
        radius = short * (0.05 + 0.015 * math.sin(t * 2 + i))
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
    bar = max(4, short // 120)
    draw.rectangle((0, height - bar, int(width * (index + 1) / total), height), fill=(255, 255, 255))
    stamp = f"{int(t // 60):02d}:{t % 60:05.2f}  {spec.resolution}  {spec.aspect}  sandbox"
    draw.text((short // 40, short // 40), stamp, font=_font(max(12, short // 40)), fill=(255, 255, 255))
    return image


def _png(image: Image.Image) -> bytes:
    thumbnail = image.copy()
    thumbnail.thumbnail((THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE))
    out = io.BytesIO()
    thumbnail.save(out, format="PNG", optimize=True)
    return out.getvalue()


async def render(
    spec: VideoSpec, checkpoint: Checkpoint, *, output_fps: int = 24, render_fps: float = 24.0
) -> Rendered:
    """Encode the clip, reporting progress after every frame (the checkpoint throttles writes)."""
    import av  # PyAV (FFmpeg inside its wheel); imported here so the app loads without it

    width, height = frame_size(spec.resolution, spec.aspect)
    total = spec.duration_seconds * output_fps
    backdrop = _backdrop(spec, width, height)
    out = io.BytesIO()
    thumbnail: bytes | None = None
    started = time.monotonic()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=output_fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "26", "tune": "animation"}
        for index in range(total):
            image = _frame(backdrop, spec, index, total, output_fps)
            if index == total // 2:
                thumbnail = _png(image)
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
            await checkpoint.progress(min(99, (index + 1) * 100 // total))
            if render_fps > 0:
                delay = started + (index + 1) / render_fps - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
        for packet in stream.encode(None):
            container.mux(packet)
    return Rendered(
        video=out.getvalue(),
        thumbnail=thumbnail,
        thumbnail_extension="png",
        details={"width": width, "height": height, "fps": output_fps, "frames": total},
    )


class SandboxVideo(VideoVendor):
    name: ClassVar[str] = "sandbox"
    label: ClassVar[str] = "Sandbox video (offline)"
    capabilities: ClassVar[VideoCapabilities] = VideoCapabilities(
        resolutions=("720p", "1080p"), aspects=ASPECTS, durations=tuple(range(1, 11))
    )

    async def run(
        self, spec: VideoSpec, credential: Credential, vendor_job_id: str, checkpoint: Checkpoint
    ) -> Rendered:
        return await render(
            spec,
            checkpoint,
            output_fps=conf.get_int("VIDEO_SANDBOX_OUTPUT_FPS"),
            render_fps=conf.get("VIDEO_SANDBOX_RENDER_FPS"),
        )
