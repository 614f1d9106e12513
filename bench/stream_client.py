"""A small asyncio + aiohttp load client for streamed chat: time to first token, whole stream, rate.

N clients, each on its own keep-alive connection, POST the same body again and again for a
fixed time. For every stream it records the time to the first body bytes holding `data:` (the
first token) and to the end of the stream, and checks that the stream ended with `[DONE]`.
Prints one JSON line (times in microseconds).

    .venv/bin/python bench/stream_client.py --url http://127.0.0.1:9100/v1/chat/completions \
        --body '{"model": "deepseek-chat", "messages": [...], "stream": true}' --clients 10 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import siblings as `bench.*`, not shadowing PyPI names
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402

from bench.common import percentile  # noqa: E402


async def run(url: str, body: bytes, auth: str, clients: int, duration: float) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = auth
    ttft: list[float] = []
    total: list[float] = []
    errors = 0
    error_samples: list[str] = []
    connector = aiohttp.TCPConnector(limit=clients, limit_per_host=clients)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + duration

        async def client() -> None:
            nonlocal errors
            while loop.time() < deadline:
                started = time.perf_counter()
                first: float | None = None
                tail = b""
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        async for chunk in response.content.iter_any():
                            if first is None and b"data:" in chunk:
                                first = time.perf_counter()
                            tail = (tail + chunk)[-64:]
                        ended = time.perf_counter()
                        ok = response.status == 200 and b"[DONE]" in tail and first is not None
                        if not ok and len(error_samples) < 3:
                            error_samples.append(f"status {response.status}, tail {tail!r}")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    ok = False
                    ended = time.perf_counter()
                    if len(error_samples) < 3:
                        error_samples.append(repr(exc))
                if not ok or first is None:
                    errors += 1
                    continue
                ttft.append((first - started) * 1e6)
                total.append((ended - started) * 1e6)

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - began
    return {
        "requests": len(total),
        "errors": errors,
        "error_samples": error_samples,
        "duration_us": elapsed * 1e6,
        "rps": len(total) / elapsed if elapsed else 0.0,
        "ttft_p50_us": percentile(ttft, 50),
        "ttft_p99_us": percentile(ttft, 99),
        "p50_us": percentile(total, 50),
        "p99_us": percentile(total, 99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", required=True, help="the JSON request body")
    parser.add_argument("--auth", default="", help="the Authorization header value")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    if not args.url.startswith(("http://127.0.0.1:", "http://localhost:")):
        parser.error("the benchmarks only load 127.0.0.1")
    result = asyncio.run(run(args.url, args.body.encode(), args.auth, args.clients, args.duration))
    print("BENCH_JSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
