"""Start the stand-in as a subprocess (for tests): ``with running_standin(...) as base_url: ...``.

Imports nothing of aiohttp or localstripe, so a test process stays free of them.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_standin(
    webhook_url: str, webhook_secret: str, port: int | None = None, timeout: float = 20.0
) -> Iterator[str]:
    """Run ``python -m devtools.stripe_standin`` until the block ends; yields its base URL."""
    port = port or free_port()
    base_url = f"http://127.0.0.1:{port}"
    argv = [
        sys.executable,
        "-m",
        "devtools.stripe_standin",
        "--port",
        str(port),
        "--webhook-url",
        webhook_url,
        "--webhook-secret",
        webhook_secret,
    ]
    with tempfile.TemporaryFile() as output:
        proc = subprocess.Popen(argv, cwd=PROJECT_DIR, stdout=output, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    with urllib.request.urlopen(f"{base_url}/_standin/health", timeout=1):  # noqa: S310
                        break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        output.seek(0)
                        raise RuntimeError(
                            f"the stand-in did not start:\n{output.read().decode(errors='replace')}"
                        ) from None
                    time.sleep(0.1)
            yield base_url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
