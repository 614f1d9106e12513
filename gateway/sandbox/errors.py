"""Typed exceptions raised by the sandbox engines.

The vendor adapter maps these onto HTTP responses: ``status`` is the status code a real upstream
would have answered with.
"""

from __future__ import annotations


class SandboxError(Exception):
    """Base class of every error raised by the sandbox engines."""

    status: int = 500
    code: str = "sandbox_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SandboxInvalidRequest(SandboxError):
    """The request itself is invalid (bad size, empty input, unsupported format...)."""

    status = 400
    code = "invalid_request"


class SandboxInvalidImage(SandboxInvalidRequest):
    """The bytes given as an image are not a decodable image."""

    code = "invalid_image"


class SandboxInvalidAudio(SandboxInvalidRequest):
    """The bytes given as audio are not decodable audio."""

    code = "invalid_audio"


class SandboxUnavailable(SandboxError):
    """An engine's native dependency (espeak-ng, pocketsphinx) is missing on this machine."""

    status = 503
    code = "engine_unavailable"


class SandboxUpstreamError(SandboxError):
    """Base class of the failures injected on purpose to exercise the gateway's error handling."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class SandboxRateLimited(SandboxUpstreamError):
    """Injected 429: the simulated upstream is rate limiting."""

    code = "rate_limited"

    def __init__(self, message: str = "Sandbox rate limit reached (injected)", retry_after: float = 1.0) -> None:
        super().__init__(message, status=429)
        self.retry_after = retry_after


class SandboxClientError(SandboxUpstreamError):
    """Injected 4xx other than 429."""

    code = "upstream_client_error"


class SandboxServerError(SandboxUpstreamError):
    """Injected 5xx: the simulated upstream failed."""

    code = "upstream_server_error"


class SandboxTimeout(SandboxError):
    """Injected timeout: the simulated upstream never answered."""

    status = 504
    code = "upstream_timeout"


class SandboxStreamCut(SandboxError):
    """Injected broken stream: the connection dropped after ``deltas_sent`` deltas."""

    status = 502
    code = "stream_cut"

    def __init__(self, deltas_sent: int, partial_text: str) -> None:
        super().__init__(f"Sandbox stream cut after {deltas_sent} deltas (injected)")
        self.deltas_sent = deltas_sent
        self.partial_text = partial_text
