"""The video vendor registry, apart from the gateway's (see base.py for why)."""

from __future__ import annotations

from videos.vendors.base import VideoVendor
from videos.vendors.openai import OpenAIVideo
from videos.vendors.sandbox import SandboxVideo

VIDEO_VENDORS: dict[str, VideoVendor] = {vendor.name: vendor for vendor in (SandboxVideo(), OpenAIVideo())}


def get_video_vendor(name: str) -> VideoVendor | None:
    return VIDEO_VENDORS.get(name)
