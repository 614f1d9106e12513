"""The video settings, each read from Django settings when set there, else from the environment.

| name | default | meaning |
|---|---|---|
| VIDEO_SANDBOX_RENDER_FPS | 24 | frames the sandbox renders per second of wall time (0: as fast as it can) |
| VIDEO_SANDBOX_OUTPUT_FPS | 24 | frames per second of the sandbox's MP4 |
| VIDEO_POLL_SECONDS | 5 | how often a remote vendor's job is polled |
| VIDEO_VENDOR_TIMEOUT_SECONDS | 3600 | how long one run waits for a remote vendor before failing the job |
| VIDEO_MAX_ATTEMPTS | 3 | runs of a job (dead workers, vendor 429/5xx) before it fails |
| VIDEO_RETRY_BASE_SECONDS | 10 | backoff before re-running after a retryable vendor error (doubles per attempt) |
| VIDEO_JOB_DEADLINE_SECONDS | 21600 | a job not finished this long after it was created fails and its hold is released |
| VIDEO_DEFAULT_RETENTION_DAYS | 7 | days a job and its files are kept after creation unless set_retention says otherwise |
"""

from __future__ import annotations

from django.conf import settings

from infrai.lib.env import env_int

DEFAULTS: dict[str, int] = {
    "VIDEO_SANDBOX_RENDER_FPS": 24,
    "VIDEO_SANDBOX_OUTPUT_FPS": 24,
    "VIDEO_POLL_SECONDS": 5,
    "VIDEO_VENDOR_TIMEOUT_SECONDS": 3600,
    "VIDEO_MAX_ATTEMPTS": 3,
    "VIDEO_RETRY_BASE_SECONDS": 10,
    "VIDEO_JOB_DEADLINE_SECONDS": 6 * 3600,
    "VIDEO_DEFAULT_RETENTION_DAYS": 7,
}
MAX_RETENTION_DAYS = 90


def get(name: str) -> float:
    """A video setting: Django's setting if defined (tests override those), else the environment."""
    value = getattr(settings, name, None)
    if value is not None:
        return float(value)
    return float(env_int(name, DEFAULTS[name]))


def get_int(name: str) -> int:
    return int(get(name))
