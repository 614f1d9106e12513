"""Live-event websockets: memory per socket and messages delivered per second.

One command:

    .venv/bin/python bench/websockets.py --sockets 1000 --messages 20000

- `infrai_bench` (PostgreSQL) + Redis db 12 with the shipped channel layer
  (RedisPubSubChannelLayer); accounts created with console.accounts and signed in the way
  `Client.force_login` does (a database session holding the user id, backend and auth hash);
- the console under daphne (`infrai.asgi:application`, DEBUG=false) pinned to core 0;
- this process opens N authenticated sockets on `/ws/events/` (session cookie + Origin) with
  aiohttp on core 1 and waits for each socket's `hello`; RSS of the daphne process is read before
  and after (per-socket memory = delta / N);
- a publisher process (core 1) sends M events through the channel layer to the accounts'
  groups, as jobs/live.py does (`group_send(account.<id>, {"type": "job.event", ...})`), as
  fast as the layer takes them; this process counts what arrives: delivered messages per second
  (first send to last receipt), send-to-receive latency p50/p99, losses.

Two layouts: `distinct` (one account per socket: M group sends, each reaching one socket) and
`fan-out` (every socket on one account: M/N group sends, each reaching all N sockets).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import siblings as `bench.*`, not shadowing PyPI names
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

SERVER_CPU = "0"
LOAD_CPU = "1"


def make_sessions(db_url: str, distinct: int) -> dict[str, Any]:
    """`distinct` accounts + one shared account, each with a signed-in session; returns
    {"distinct": [(account public id, session key)], "shared": (public id, [session keys])}."""
    os.environ.update(common.django_env(db_url))
    import django

    django.setup()
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    from console.accounts import create_account

    def session_for(user: Any) -> str:
        store = SessionStore()
        store[SESSION_KEY] = str(user.pk)
        store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        store[HASH_SESSION_KEY] = user.get_session_auth_hash()
        store.create()
        assert store.session_key is not None
        return store.session_key

    stamp = int(time.time())
    out: dict[str, Any] = {"distinct": []}
    for i in range(distinct):
        account = create_account(f"ws-{stamp}-{i}@bench.invalid")
        out["distinct"].append((account.public_id, session_for(account.owner)))
    shared = create_account(f"ws-{stamp}-shared@bench.invalid")
    out["shared"] = (shared.public_id, [session_for(shared.owner) for _ in range(distinct)])
    return out


PUBLISHER = r"""
import asyncio, json, os, sys, time
import django
django.setup()
from channels.layers import get_channel_layer
from jobs.live import account_group

async def main():
    groups = json.loads(sys.stdin.readline())
    sends = int(sys.argv[1])
    layer = get_channel_layer()
    await layer.group_send(account_group(groups[0]), {"type": "job.event", "event": "warm", "payload": {}})
    print("READY", flush=True)
    sys.stdin.readline()
    started = time.time()
    for i in range(sends):
        group = account_group(groups[i % len(groups)])
        await layer.group_send(group, {"type": "job.event", "event": "bench", "payload": {"i": i, "t": time.time()}})
    print(json.dumps({"sent": sends, "started": started, "seconds": time.time() - started}), flush=True)

asyncio.run(main())
"""


async def run_layout(
    base: str,
    port: int,
    pid: int,
    cookies: list[str],
    groups: list[str],
    expected: int,
    sends: int,
    env: dict[str, str],
) -> dict[str, Any]:
    import aiohttp

    origin = f"http://127.0.0.1:{port}"
    latencies: list[float] = []
    received = 0
    last_receipt = 0.0
    done = asyncio.Event()
    rss_before = common.rss_bytes(pid)
    threads_before = common.thread_count(pid)
    connector = aiohttp.TCPConnector(limit=0)
    session = aiohttp.ClientSession(connector=connector)
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    semaphore = asyncio.Semaphore(50)
    failures: list[str] = []

    async def connect(cookie: str) -> None:
        async with semaphore:
            try:
                ws = await session.ws_connect(
                    f"{base}/ws/events/", headers={"Cookie": f"sessionid={cookie}", "Origin": origin}, heartbeat=None
                )
                hello = await ws.receive(timeout=30)
                if hello.type != aiohttp.WSMsgType.TEXT or json.loads(hello.data).get("event") != "hello":
                    failures.append(f"no hello: {hello.type} {str(hello.data)[:100]}")
                    await ws.close()
                    return
                sockets.append(ws)
            except Exception as exc:  # noqa: BLE001 (reported)
                failures.append(repr(exc)[:200])

    began = time.perf_counter()
    await asyncio.gather(*(connect(c) for c in cookies))
    connect_seconds = time.perf_counter() - began
    await asyncio.sleep(1.0)
    rss_after = common.rss_bytes(pid)
    threads_after = common.thread_count(pid)

    async def reader(ws: aiohttp.ClientWebSocketResponse) -> None:
        nonlocal received, last_receipt
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            if data.get("event") != "bench":
                continue
            now = time.time()
            latencies.append((now - data["payload"]["t"]) * 1000)
            received += 1
            last_receipt = now
            if received >= expected:
                done.set()

    readers = [asyncio.create_task(reader(ws)) for ws in sockets]
    publisher = await asyncio.create_subprocess_exec(
        *common.pinned(LOAD_CPU, [common.PYTHON, "-c", PUBLISHER, str(sends)]),
        cwd=common.ROOT,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert publisher.stdin is not None and publisher.stdout is not None
    publisher.stdin.write((json.dumps(groups) + "\n").encode())
    await publisher.stdin.drain()
    ready = await asyncio.wait_for(publisher.stdout.readline(), 60)
    if not ready.startswith(b"READY"):
        raise RuntimeError(f"publisher did not start: {ready!r}")
    await asyncio.sleep(0.5)
    publisher.stdin.write(b"go\n")
    await publisher.stdin.drain()
    summary = json.loads(await asyncio.wait_for(publisher.stdout.readline(), 600))
    await publisher.wait()
    try:
        await asyncio.wait_for(done.wait(), timeout=60)
    except TimeoutError:
        pass
    rss_loaded = common.rss_bytes(pid)
    for task in readers:
        task.cancel()
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    await session.close()
    await asyncio.sleep(1.0)
    elapsed = (last_receipt - summary["started"]) if received else float("nan")
    return {
        "sockets": len(sockets),
        "failures": len(failures),
        "failure_samples": failures[:3],
        "connect_seconds": connect_seconds,
        "rss_before_mib": rss_before / 2**20,
        "rss_after_mib": rss_after / 2**20,
        "rss_loaded_mib": rss_loaded / 2**20,
        "rss_closed_mib": common.rss_bytes(pid) / 2**20,
        "threads_before": threads_before,
        "threads_after": threads_after,
        "kib_per_socket": (rss_after - rss_before) / 1024 / max(len(sockets), 1),
        "group_sends": summary["sent"],
        "publish_seconds": summary["seconds"],
        "expected": expected,
        "received": received,
        "delivered_per_s": received / elapsed if received and elapsed > 0 else float("nan"),
        "latency_p50_ms": common.percentile(latencies, 50),
        "latency_p99_ms": common.percentile(latencies, 99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=20000, help="messages to deliver per layout")
    parser.add_argument("--database", default=common.DEFAULT_DB)
    args = parser.parse_args()
    common.pin_self(LOAD_CPU)

    db_url = common.ensure_database(args.database)
    print(f"creating {args.sockets} accounts and sessions", flush=True)
    made = make_sessions(db_url, args.sockets)
    port = common.free_port()
    env = common.django_env(db_url)
    base = f"http://127.0.0.1:{port}"
    results: dict[str, Any] = {}
    layouts = {
        "distinct": ([s for _, s in made["distinct"]], [p for p, _ in made["distinct"]], args.messages),
        "fan-out": (made["shared"][1], [made["shared"][0]], max(1, args.messages // args.sockets)),
    }
    for name, (cookies, groups, sends) in layouts.items():
        # A fresh server per layout: memory freed by one layout's sockets would hide the next one's.
        with common.processes() as procs:
            proc = procs.start(
                common.daphne_argv("infrai.asgi:application", port),
                env=env,
                cpus=SERVER_CPU,
                port=port,
                log=common.OUT_DIR / "websockets-daphne.log",
            )
            # Warm the code paths with a few sockets first, so the measured sockets do not pay imports.
            warm = made["distinct"][:5]
            asyncio.run(run_layout(base, port, proc.pid, [c for _, c in warm], [p for p, _ in warm], 50, 50, env))
            expected = sends if name == "distinct" else sends * len(cookies)
            print(f"{name}: {len(cookies)} sockets, {sends} group sends, {expected} deliveries", flush=True)
            results[name] = asyncio.run(run_layout(base, port, proc.pid, cookies, groups, expected, sends, env))
            print(json.dumps(results[name], indent=1), flush=True)
    report = {"args": vars(args), "results": results, "machine": common.machine()}
    common.save_json("websockets", report)
    common.write_section("websockets", render(report))
    print(render(report))


def render(report: dict[str, Any]) -> str:
    f = common.fmt
    args = report["args"]
    lines = [
        "## Websockets: memory per socket and delivery rate (`bench/websockets.py`)",
        "",
        f"Measured {common.machine_line(report['machine'])}.",
        f"Command: `.venv/bin/python bench/websockets.py --sockets {args['sockets']} --messages {args['messages']}`. "
        "daphne (`infrai.asgi:application`, RedisPubSubChannelLayer on Redis db 12) pinned to core 0; the sockets "
        "(aiohttp, one process) and the publisher (channel layer `group_send`, one process) on core 1; a fresh "
        "daphne per layout. The publisher sends as fast as the layer takes messages, faster than daphne delivers "
        "them, so delivered/s is the server's capacity and the latency is mostly queueing behind it.",
        "",
        "| layout | sockets open | connect time s | RSS before → after MiB | KiB per socket | group sends "
        "| sent in s | delivered | delivered/s | latency p50 ms | p99 ms | failures |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["results"].items():
        lines.append(
            f"| {name} | {r['sockets']} | {f(r['connect_seconds'])} | {f(r['rss_before_mib'], 1)} → "
            f"{f(r['rss_after_mib'], 1)} | {f(r['kib_per_socket'], 1)} | {r['group_sends']} | "
            f"{f(r['publish_seconds'], 3)} | "
            f"{r['received']}/{r['expected']} | {f(r['delivered_per_s'], 0)} | {f(r['latency_p50_ms'])} | "
            f"{f(r['latency_p99_ms'])} | {r['failures']} |"
        )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
