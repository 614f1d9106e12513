"""A SIMULATED OpenAI video API for tests: a real HTTP server on loopback speaking the wire format
of OpenAI's /v1/videos (Sora): `POST /v1/videos` (JSON, or multipart with `input_reference`),
`GET /v1/videos/{id}`, `GET /v1/videos/{id}/content[?variant=thumbnail]`, `DELETE /v1/videos/{id}`,
and OpenAI's error bodies. Each GET of a video advances it one step along `Script.steps`."""

from __future__ import annotations

import io
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import av
from PIL import Image

from tests.fakes.loopback import JsonHandler, serving


def tiny_mp4(width: int = 64, height: int = 36, frames: int = 8, fps: int = 8) -> bytes:
    """A real, decodable H.264 MP4 (what the simulated Sora returns as content)."""
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            image = Image.new("RGB", (width, height), (i * 30 % 256, 80, 160))
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def tiny_png(colour: tuple[int, int, int] = (200, 120, 40), size: tuple[int, int] = (32, 18)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


# (status, progress) a video passes through, one step per GET; ("failed", error) ends it.
DEFAULT_STEPS: list[tuple[str, Any]] = [("queued", 0), ("in_progress", 30), ("in_progress", 75), ("completed", 100)]


@dataclass
class Script:
    steps: list[tuple[str, Any]] = field(default_factory=lambda: list(DEFAULT_STEPS))
    create_errors: list[int] = field(default_factory=list)  # statuses answered to POSTs before one succeeds
    poll_errors: list[int] = field(default_factory=list)  # statuses answered to GETs before they answer
    content_status: int = 200
    thumbnail_status: int = 200
    video: bytes = field(default_factory=tiny_mp4)
    thumbnail: bytes = field(default_factory=tiny_png)
    requests: list[dict[str, Any]] = field(default_factory=list)
    auth_headers: list[str] = field(default_factory=list)
    videos: dict[str, int] = field(default_factory=dict)  # id -> step index
    deleted: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def paths(self, method: str) -> list[str]:
        return [r["path"] for r in self.requests if r["method"] == method]


def _error(status: int) -> dict[str, Any]:
    kinds = {429: "rate_limit_exceeded", 401: "invalid_api_key", 400: "invalid_request_error"}
    return {
        "error": {
            "message": f"simulated {status}",
            "type": "invalid_request_error" if status < 500 else "server_error",
            "param": None,
            "code": kinds.get(status),
        }
    }


def _multipart_fields(content_type: str, raw: bytes) -> dict[str, Any]:
    """Just enough multipart/form-data parsing for the test: field names, values and file sizes."""
    boundary = content_type.split("boundary=")[-1].strip('"').encode()
    fields: dict[str, Any] = {}
    for part in raw.split(b"--" + boundary):
        head, _, body = part.partition(b"\r\n\r\n")
        if b"name=" not in head:
            continue
        name = head.split(b'name="')[1].split(b'"')[0].decode()
        body = body.removesuffix(b"\r\n")
        if b"filename=" in head:
            fields[name] = {"file_bytes": len(body), "png": body.startswith(b"\x89PNG")}
        else:
            fields[name] = body.decode()
    return fields


def _handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(JsonHandler):
        def _send(self, status: int, data: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _json(self, status: int, body: dict[str, Any]) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _record(self, body: Any) -> None:
            with script.lock:
                script.requests.append({"method": self.command, "path": self.path, "body": body})
                script.auth_headers.append(self.headers.get("Authorization", ""))

        def _video(self, video_id: str) -> dict[str, Any]:
            status, detail = script.steps[min(script.videos[video_id], len(script.steps) - 1)]
            video: dict[str, Any] = {
                "id": video_id,
                "object": "video",
                "model": "sora-2",
                "status": status,
                "progress": detail if status != "failed" else 0,
                "created_at": 1700000000,
                "size": "1280x720",
                "seconds": "4",
                "quality": "standard",
            }
            if status == "failed":
                video["error"] = detail
            return video

        def do_POST(self) -> None:  # noqa: N802
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            content_type = self.headers.get("Content-Type", "")
            body = _multipart_fields(content_type, raw) if "multipart" in content_type else json.loads(raw or b"{}")
            self._record(body)
            if urlsplit(self.path).path != "/v1/videos":
                self._json(404, _error(404))
                return
            with script.lock:
                failure = script.create_errors.pop(0) if script.create_errors else None
            if failure:
                self._json(failure, _error(failure))
                return
            video_id = f"video_{uuid.uuid4().hex[:24]}"
            with script.lock:
                script.videos[video_id] = 0
            self._json(200, self._video(video_id))

        def do_GET(self) -> None:  # noqa: N802
            self._record(None)
            parts = urlsplit(self.path)
            segments = parts.path.strip("/").split("/")  # v1, videos, id[, content]
            if len(segments) < 3 or segments[:2] != ["v1", "videos"] or segments[2] not in script.videos:
                self._json(404, {"error": {"message": "No video found", "type": "invalid_request_error"}})
                return
            video_id = segments[2]
            if len(segments) == 4 and segments[3] == "content":
                variant = parse_qs(parts.query).get("variant", ["video"])[0]
                if variant == "thumbnail":
                    if script.thumbnail_status != 200:
                        self._json(script.thumbnail_status, _error(script.thumbnail_status))
                        return
                    self._send(200, script.thumbnail, "image/png")
                    return
                if script.content_status != 200:
                    self._json(script.content_status, _error(script.content_status))
                    return
                self._send(200, script.video, "video/mp4")
                return
            with script.lock:
                failure = script.poll_errors.pop(0) if script.poll_errors else None
            if failure:
                self._json(failure, _error(failure))
                return
            with script.lock:
                script.videos[video_id] += 1
            self._json(200, self._video(video_id))

        def do_DELETE(self) -> None:  # noqa: N802
            self._record(None)
            video_id = urlsplit(self.path).path.strip("/").split("/")[-1]
            with script.lock:
                script.deleted.append(video_id)
            self._json(200, {"id": video_id, "object": "video.deleted", "deleted": True})

    return Handler


@contextmanager
def simulated_video_upstream(script: Script | None = None) -> Iterator[tuple[str, Script]]:
    """Yield (base_url ending in /v1, script) for a server that runs until the block ends."""
    script = script or Script()
    with serving(_handler(script), "/v1") as url:
        yield url, script
