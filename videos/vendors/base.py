"""The video vendor interface. Video is asynchronous (submit, poll, download), which the
gateway's `Vendor` interface does not model, so video vendors have their own small one.

A vendor's `run` makes one clip and returns its bytes. It reports progress through the
`Checkpoint`, which also renews the worker's lease and raises `JobStopped` when the job is no
longer the worker's (cancelled, deleted, or requeued after the lease ran out): the vendor then
stops. A remote vendor records its own job id with `Checkpoint.remember`, so a re-run after a dead
worker resumes polling that job instead of paying for a second one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from gateway.vendors.base import Credential

ASPECTS = ("16:9", "9:16", "1:1")
RESOLUTIONS = ("720p", "1080p", "4k")
# The short side of each resolution; the long side follows from the aspect.
SHORT_SIDE = {"720p": 720, "1080p": 1080, "4k": 2160}


def frame_size(resolution: str, aspect: str) -> tuple[int, int]:
    """(width, height) in pixels: 720p 16:9 is 1280x720, 9:16 is 720x1280, 1:1 is 720x720."""
    short = SHORT_SIDE[resolution]
    long = short * 16 // 9
    if aspect == "16:9":
        return long, short
    if aspect == "9:16":
        return short, long
    return short, short


class JobStopped(Exception):
    """The job is no longer this worker's: stop without storing or charging anything."""


class Checkpoint(Protocol):
    async def progress(self, percent: int) -> None:
        """Record progress (0..100) and renew the lease; raises JobStopped."""

    async def remember(self, vendor_job_id: str) -> None:
        """Record the remote vendor's job id; raises JobStopped."""


@dataclass(frozen=True)
class VideoSpec:
    prompt: str
    duration_seconds: int
    aspect: str
    resolution: str
    model: str
    reference_image: bytes | None = None


@dataclass
class Rendered:
    video: bytes
    thumbnail: bytes | None = None
    thumbnail_extension: str = "png"
    details: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class VideoCapabilities:
    resolutions: tuple[str, ...]
    aspects: tuple[str, ...]
    durations: tuple[int, ...]  # every allowed clip length, in seconds
    supports_extend: bool = False
    supports_upscale: bool = False

    @property
    def max_duration_seconds(self) -> int:
        return max(self.durations)


class VideoVendor:
    """One video vendor. `name` is the catalog's vendor name (and the BYOK provider name)."""

    name: ClassVar[str]
    label: ClassVar[str]
    capabilities: ClassVar[VideoCapabilities]

    def platform_credential(self) -> Credential | None:
        return None

    async def run(
        self, spec: VideoSpec, credential: Credential, vendor_job_id: str, checkpoint: Checkpoint
    ) -> Rendered:
        raise NotImplementedError
