"""OpenAI's video API (Sora): POST /videos, poll GET /videos/{id}, GET /videos/{id}/content.

Wire format: `POST {base}/videos` with `{model, prompt, seconds, size}` (multipart with an
`input_reference` file when there is a reference image) answers a video object
`{id, object: "video", status: queued | in_progress | completed | failed, progress, error?}`;
`GET {base}/videos/{id}` answers the same object; `GET {base}/videos/{id}/content` the MP4 and
`?variant=thumbnail` a still. Errors are OpenAI's `{"error": {"message", "type", "code"}}` bodies.
The platform's OPENAI_API_KEY or the caller's BYOK credential is used (Bearer).
"""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any, ClassVar

import httpx
from PIL import Image, ImageOps

from gateway.http import client_for_credential
from gateway.vendors.base import Credential, VendorError, error_for_status, timeout_error
from gateway.vendors.openai_compatible import error_detail
from videos import conf
from videos.vendors.base import (
    Checkpoint,
    JobStopped,
    Rendered,
    VideoCapabilities,
    VideoSpec,
    VideoVendor,
    frame_size,
)

# Consecutive failed polls (429, 5xx, timeouts) tolerated before the run fails.
POLL_FAILURES_TOLERATED = 3
THUMBNAIL_EXTENSIONS = {"image/webp": "webp", "image/png": "png", "image/jpeg": "jpg"}


def size_of(resolution: str, aspect: str) -> str:
    width, height = frame_size(resolution, aspect)
    return f"{width}x{height}"


class OpenAIVideo(VideoVendor):
    name: ClassVar[str] = "openai"
    label: ClassVar[str] = "OpenAI"
    # sora-2: 1280x720 or 720x1280, 4, 8 or 12 seconds.
    capabilities: ClassVar[VideoCapabilities] = VideoCapabilities(
        resolutions=("720p",), aspects=("16:9", "9:16"), durations=(4, 8, 12)
    )

    def _headers(self, credential: Credential) -> dict[str, str]:
        return {"Authorization": f"Bearer {credential.api_key}"} if credential.api_key else {}

    async def _send(self, method: str, url: str, credential: Credential, **kwargs: Any) -> httpx.Response:
        try:
            response = await client_for_credential("openai-video", credential).request(
                method, url, headers=self._headers(credential), **kwargs
            )
        except httpx.TimeoutException as exc:
            raise timeout_error(self.label) from exc
        except httpx.HTTPError as exc:
            raise VendorError(
                f"{self.label} is unreachable: {exc}", code="UPSTREAM_UNREACHABLE", retryable=True
            ) from exc
        if response.status_code >= 400:
            raise error_for_status(self.label, response.status_code, error_detail(response))
        return response

    async def _json(self, method: str, url: str, credential: Credential, **kwargs: Any) -> dict[str, Any]:
        response = await self._send(method, url, credential, **kwargs)
        try:
            body = response.json()
        except ValueError as exc:
            raise VendorError(f"{self.label} sent a body that is not JSON", retryable=True) from exc
        if not isinstance(body, dict):
            raise VendorError(f"{self.label} sent a body that is not a video object", retryable=True)
        return body

    async def create(self, spec: VideoSpec, credential: Credential) -> dict[str, Any]:
        url = credential.base_url.rstrip("/") + "/videos"
        fields = {
            "model": spec.model,
            "prompt": spec.prompt,
            "seconds": str(spec.duration_seconds),
            "size": size_of(spec.resolution, spec.aspect),
        }
        if spec.reference_image is None:
            return await self._json("POST", url, credential, json=fields)
        # OpenAI wants the reference at the video's size.
        with Image.open(io.BytesIO(spec.reference_image)) as reference:
            fitted = ImageOps.fit(reference.convert("RGB"), frame_size(spec.resolution, spec.aspect))
        png = io.BytesIO()
        fitted.save(png, format="PNG")
        files = {"input_reference": ("reference.png", png.getvalue(), "image/png")}
        return await self._json("POST", url, credential, data=fields, files=files)

    async def status(self, vendor_job_id: str, credential: Credential) -> dict[str, Any]:
        return await self._json("GET", f"{credential.base_url.rstrip('/')}/videos/{vendor_job_id}", credential)

    async def content(self, vendor_job_id: str, credential: Credential, variant: str = "video") -> httpx.Response:
        url = f"{credential.base_url.rstrip('/')}/videos/{vendor_job_id}/content"
        return await self._send("GET", url, credential, params={"variant": variant} if variant != "video" else None)

    async def delete(self, vendor_job_id: str, credential: Credential) -> None:
        await self._send("DELETE", f"{credential.base_url.rstrip('/')}/videos/{vendor_job_id}", credential)

    def _failure(self, video: dict[str, Any]) -> VendorError:
        error = video.get("error") if isinstance(video.get("error"), dict) else {}
        message = str(error.get("message") or "no reason given")[:500]
        code = error.get("code")
        return VendorError(
            f"{self.label} could not make the video: {message}" + (f" ({code})" if code else ""),
            status=502,
            code="VIDEO_GENERATION_FAILED",
        )

    async def run(
        self, spec: VideoSpec, credential: Credential, vendor_job_id: str, checkpoint: Checkpoint
    ) -> Rendered:
        if vendor_job_id:
            video = await self.status(vendor_job_id, credential)
        else:
            video = await self.create(spec, credential)
            vendor_job_id = str(video.get("id") or "")
            if not vendor_job_id:
                raise VendorError(f"{self.label} answered without a video id", retryable=True)
            await checkpoint.remember(vendor_job_id)
        try:
            await self._wait(vendor_job_id, video, credential, checkpoint)
        except JobStopped:
            # Cancelled or deleted here: tell the vendor too (best effort, it may have finished).
            try:
                await self.delete(vendor_job_id, credential)
            except VendorError:
                pass
            raise
        mp4 = (await self.content(vendor_job_id, credential)).content
        if not mp4:
            raise VendorError(f"{self.label} sent an empty video", retryable=True)
        thumbnail: bytes | None = None
        extension = "png"
        try:
            still = await self.content(vendor_job_id, credential, "thumbnail")
        except VendorError:
            still = None  # the video is what was paid for; a missing still does not fail the job
        if still is not None and still.content:
            mime = still.headers.get("content-type", "").split(";")[0].strip()
            extension = THUMBNAIL_EXTENSIONS.get(mime, "png")
            thumbnail = still.content
        return Rendered(video=mp4, thumbnail=thumbnail, thumbnail_extension=extension)

    async def _wait(
        self, vendor_job_id: str, video: dict[str, Any], credential: Credential, checkpoint: Checkpoint
    ) -> None:
        deadline = time.monotonic() + conf.get("VIDEO_VENDOR_TIMEOUT_SECONDS")
        failures = 0
        while True:
            status = video.get("status")
            if status == "completed":
                return
            if status == "failed":
                raise self._failure(video)
            if status not in ("queued", "in_progress"):
                raise VendorError(f"{self.label} reported an unknown video status {status!r}")
            try:
                progress = int(float(video.get("progress") or 0))
            except (TypeError, ValueError):
                progress = 0
            await checkpoint.progress(max(0, min(99, progress)))
            if time.monotonic() > deadline:
                raise VendorError(f"{self.label} did not finish the video in time", status=504, code="UPSTREAM_TIMEOUT")
            await asyncio.sleep(conf.get("VIDEO_POLL_SECONDS"))
            try:
                video = await self.status(vendor_job_id, credential)
                failures = 0
            except VendorError as exc:
                failures += 1
                if not exc.retryable or failures > POLL_FAILURES_TOLERATED:
                    raise
