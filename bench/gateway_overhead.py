"""What the gateway adds to an upstream call: direct vs raw pass-through floor vs gateway, interleaved.

One command sets everything up on loopback and writes the figures to bench/RESULTS.md:

    .venv/bin/python bench/gateway_overhead.py --duration 10

- PostgreSQL database `infrai_bench` (created and migrated with manage.py), Redis db 12, an
  account with credit and a project key (manage.py create_account / create_project_key);
- the SIMULATED upstream (bench/fake_upstream.py) and the load generators on core 1;
- the raw pass-through floor (bench/raw_floor.py under daphne) and the gateway
  (`daphne infrai.asgi:application`, DEBUG=false, the shipped settings) each pinned to core 0;
- for each upstream latency (default 0 and 50 ms), non-streamed then streamed, R rounds: in
  every round, at 1, 10 and 100 clients, the same request goes direct / through the floor /
  through the gateway for duration/R seconds each, the order rotating between rounds. Non-streamed
  load is `wrk` (Debian package, bench/wrk_post.lua); streamed load is bench/stream_client.py
  (aiohttp), which measures time to first token.
- an ablation at 1 and 10 clients (0 ms upstream, non-streamed): the gateway with one thing
  changed (its hot routes through Django's handler; no fsync at COMMIT), and `/v1/ai/chat`;
- a yappi profile of the gateway under 10 clients (bench/profiled_daphne.py), when yappi is installed.

Figures are medians over the rounds; "added" is the gateway's (or floor's) p50/p99 minus the
direct p50/p99 of the same round. Nothing is asserted: the targets are printed next to the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import siblings as `bench.*`, not shadowing PyPI names
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

SERVER_CPU = "0"
LOAD_CPU = "1"
BODY: dict[str, Any] = {
    "model": "deepseek-chat",
    "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
    "max_tokens": 64,
}
STREAM_BODY: dict[str, Any] = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
# (name, ASGI application, BENCH_VARIANT for bench/settings_variant.py): the shipped gateway with
# one thing changed. The Redis client kept per process, the httpx log line and the console
# middleware on /v1, measured here before, are in the shipped gateway since.
ABLATIONS = [
    ("gw, hot routes via Django's handler", "bench.asgi_variant:django_handler_application", ""),
    ("gw -fsync", "infrai.asgi:application", "async_commit"),
]
# (name, MONEY_FLOOR_STEPS): the raw floor plus only the per-call key check and ledger steps
# (bench/money_floor.py), the ceiling of any gateway that keeps the money guarantees per call.
MONEY_FLOORS = [
    ("raw floor + key check", "key"),
    ("raw floor + key check + hold + settle", "key,ledger"),
]


@dataclass
class Target:
    name: str
    url: str
    pid: int | None = None
    auth: str = ""
    database: str | None = None  # charge these PostgreSQL backends' CPU to the target


@dataclass
class Cell:
    slices: list[dict[str, Any]] = field(default_factory=list)


def http_json(url: str, body: dict[str, Any] | None = None, auth: str = "") -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")  # noqa: S310 (loopback)
    request.add_header("Content-Type", "application/json")
    if auth:
        request.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (loopback)
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def check_target(target: Target) -> None:
    """One plain and one streamed call: both must answer from the SIMULATED upstream."""
    status, raw = http_json(target.url, BODY, target.auth)
    if status != 200 or b"SIMULATED" not in raw:
        raise RuntimeError(f"{target.name}: {status} {raw[:400]!r}")
    if target.auth and not target.name.startswith("raw floor"):
        vendor = json.loads(raw).get("_metadata", {}).get("vendor")
        if vendor != "openai_compatible":
            raise RuntimeError(f"{target.name} routed to {vendor!r}, not the simulated openai_compatible upstream")
    status, raw = http_json(target.url, STREAM_BODY, target.auth)
    if status != 200 or b"[DONE]" not in raw or b"SIMULATED" not in raw:
        raise RuntimeError(f"{target.name} (stream): {status} {raw[:400]!r}")


def proc_stat_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return float(sum(values) - idle), float(sum(values))


def one_slice(target: Target, mode: str, clients: int, seconds: float, wrk: str) -> dict[str, Any]:
    backends = common.backend_pids(target.database) if target.database else []
    cpu_before = (common.cpu_seconds(target.pid) if target.pid else 0.0) + sum(map(common.cpu_seconds, backends))
    server_before = common.cpu_seconds(target.pid) if target.pid else 0.0
    busy_before = proc_stat_busy()
    load = os.getloadavg()[0]
    if mode == "plain":
        env = {**os.environ, "BENCH_BODY": json.dumps(BODY), "BENCH_AUTH": target.auth}
        argv = [
            wrk,
            "-t1",
            f"-c{clients}",
            f"-d{seconds:g}s",
            "--timeout",
            "10s",
            "-s",
            str(common.BENCH_DIR / "wrk_post.lua"),
            target.url,
        ]
    else:
        env = dict(os.environ)
        argv = [
            common.PYTHON,
            str(common.BENCH_DIR / "stream_client.py"),
            "--url",
            target.url,
            "--body",
            json.dumps(STREAM_BODY),
            "--auth",
            target.auth,
            "--clients",
            str(clients),
            "--duration",
            f"{seconds:g}",
        ]
    done = subprocess.run(common.pinned(LOAD_CPU, argv), env=env, capture_output=True, text=True, timeout=seconds + 120)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"load generator failed for {target.name}: {done.stdout[-500:]} {done.stderr[-1500:]}")
    result: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
    if mode == "plain":
        result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
        result["errors"] = sum(
            result[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
        )
    cpu_after = (common.cpu_seconds(target.pid) if target.pid else 0.0) + sum(map(common.cpu_seconds, backends))
    busy_after = proc_stat_busy()
    requests = max(result["requests"], 1)
    result["cpu_ms_per_request"] = (cpu_after - cpu_before) * 1000 / requests if target.pid else float("nan")
    server_cpu = (common.cpu_seconds(target.pid) - server_before) if target.pid else 0.0
    result["server_cpu_ms_per_request"] = server_cpu * 1000 / requests if target.pid else float("nan")
    result["server_core_busy"] = server_cpu / seconds if target.pid else float("nan")
    result["machine_busy"] = (busy_after[0] - busy_before[0]) / max(busy_after[1] - busy_before[1], 1)
    result["loadavg"] = load
    result["target"] = target.name
    return result


def control(fake_port: int, **settings: Any) -> None:
    status, raw = http_json(f"http://127.0.0.1:{fake_port}/_control", settings)
    if status != 200:
        raise RuntimeError(f"fake upstream refused {settings}: {raw!r}")


def run_matrix(
    targets: list[Target],
    modes: list[str],
    concurrencies: list[int],
    rounds: int,
    seconds: float,
    wrk: str,
    label: str,
) -> dict[tuple[str, int, str], Cell]:
    cells: dict[tuple[str, int, str], Cell] = defaultdict(Cell)
    for mode in modes:
        for target in targets:  # warm-up: pools, connections, caches
            one_slice(target, mode, 10, 1, wrk)
        for rnd in range(rounds):
            for clients in concurrencies:
                shift = rnd % len(targets)
                order = targets[shift:] + targets[:shift]
                for target in order:
                    result = one_slice(target, mode, clients, seconds, wrk)
                    cells[(mode, clients, target.name)].slices.append({**result, "round": rnd})
                    print(
                        f"[{label} {mode} c={clients} r={rnd}] {target.name:34} "
                        f"p50 {result['p50_us'] / 1000:8.2f} ms  p99 {result['p99_us'] / 1000:8.2f} ms  "
                        f"{result['rps']:8.1f} req/s  err {result['errors']}  load {result['loadavg']:.1f}",
                        flush=True,
                    )
    return cells


def summarize(cells: dict[tuple[str, int, str], Cell], direct: str) -> dict[str, Any]:
    """Medians over rounds; added latency is paired with the direct run of the same round."""
    out: dict[str, Any] = {}
    for (mode, clients, name), cell in cells.items():
        base = {s["round"]: s for s in cells[(mode, clients, direct)].slices}

        def med(key: str, slices: list[dict[str, Any]] = cell.slices) -> float:
            return common.median(s[key] for s in slices)

        def added(key: str, slices: list[dict[str, Any]] = cell.slices, base: dict[int, Any] = base) -> float:
            return common.median((s[key] - base[s["round"]][key]) / 1000 for s in slices if s["round"] in base)

        def ratio(slices: list[dict[str, Any]] = cell.slices, base: dict[int, Any] = base) -> float:
            return common.median(
                s["rps"] / base[s["round"]]["rps"] for s in slices if s["round"] in base and base[s["round"]]["rps"]
            )

        summary: dict[str, Any] = {
            "p50_ms": med("p50_us") / 1000,
            "p99_ms": med("p99_us") / 1000,
            "rps": med("rps"),
            "errors": sum(s["errors"] for s in cell.slices),
            "requests": sum(s["requests"] for s in cell.slices),
            "added_p50_ms": added("p50_us"),
            "added_p99_ms": added("p99_us"),
            "rps_vs_direct": ratio(),
            "cpu_ms_per_request": med("cpu_ms_per_request"),
            "server_cpu_ms_per_request": med("server_cpu_ms_per_request"),
            "server_core_busy": med("server_core_busy"),
            "machine_busy": med("machine_busy"),
            "loadavg": med("loadavg"),
            "slices": len(cell.slices),
        }
        if mode == "stream":
            summary["ttft_p50_ms"] = med("ttft_p50_us") / 1000
            summary["ttft_p99_ms"] = med("ttft_p99_us") / 1000
            summary["added_ttft_p50_ms"] = added("ttft_p50_us")
            summary["added_ttft_p99_ms"] = added("ttft_p99_us")
        out[f"{mode}|{clients}|{name}"] = summary
    return out


def rps_vs(cells: dict[tuple[str, int, str], Cell], mode: str, clients: int, name: str, other: str) -> float:
    base = {s["round"]: s for s in cells[(mode, clients, other)].slices}
    return common.median(
        s["rps"] / base[s["round"]]["rps"]
        for s in cells[(mode, clients, name)].slices
        if s["round"] in base and base[s["round"]]["rps"]
    )


# --- Profile ---------------------------------------------------------------------------------

CATEGORIES = [
    ("PostgreSQL driver (psycopg, psycopg_pool)", ("psycopg", "psycopg_pool")),
    ("Django ORM (query building, compiling, model instances)", ("django/db",)),
    ("Django request handling, middleware, URL routing", ("django",)),
    (
        "thread hand-offs (asgiref, threading, concurrent.futures, queue)",
        ("asgiref", "threading", "concurrent", "queue"),
    ),
    ("HTTP server (daphne, twisted, autobahn)", ("daphne", "twisted", "autobahn", "zope")),
    ("event loop (asyncio, selectors)", ("asyncio", "selectors")),
    (
        "upstream client (httpx, httpx_aiohttp, aiohttp, yarl, multidict)",
        ("httpx", "httpx_aiohttp", "aiohttp", "yarl", "multidict", "httpcore"),
    ),
    ("logging", ("logging",)),
    ("JSON", ("json",)),
    ("token counting (tiktoken, regex)", ("tiktoken", "regex")),
    ("app code (gateway, billing, console, infrai)", ("gateway", "billing", "console", "infrai")),
]
# Calls counted per request: (label, file suffix, function name).
COUNTED = [
    ("SQL statements executed (CursorWrapper._execute)", "django/db/backends/utils.py", "CursorWrapper._execute"),
    ("sync_to_async hand-offs (SyncToAsync.__call__)", "asgiref/sync.py", "SyncToAsync.__call__"),
    ("async_to_sync hand-offs (AsyncToSync.__call__)", "asgiref/sync.py", "AsyncToSync.__call__"),
    ("threads started (Thread.start)", "threading.py", "Thread.start"),
    ("log records emitted (Handler.handle)", "logging/__init__.py", "Handler.handle"),
    ("SELECTs compiled by the ORM (SQLCompiler.as_sql)", "django/db/models/sql/compiler.py", "SQLCompiler.as_sql"),
    ("DB connections taken from the pool (ConnectionPool.getconn)", "psycopg_pool/pool.py", "ConnectionPool.getconn"),
    ("SQL statements on the event loop (AsyncCursor.execute)", "psycopg/cursor_async.py", "AsyncCursor.execute"),
    ("Redis commands from the event loop (Redis.execute_command)", "redis/asyncio/client.py", "Redis.execute_command"),
]


def relative(path: str) -> str:
    """A module path relative to site-packages, the stdlib or the project root."""
    path = path.replace("\\", "/")
    if "/site-packages/" in path:
        return path.split("/site-packages/", 1)[1]
    root = str(common.ROOT) + "/"
    if path.startswith(root):
        return path[len(root) :]
    match = re.search(r"/lib/python3\.\d+/(.+)$", path)
    return match.group(1) if match else path


def categorize(path: str) -> str:
    for name, prefixes in CATEGORIES:
        for prefix in prefixes:
            if path == prefix + ".py" or path.startswith(prefix + "/"):
                return name
    return "other (stdlib, builtins, C extensions)"


def profile_gateway(
    procs: common.Processes, gateway_env: dict[str, str], yappi_path: str, auth: str, seconds: float, wrk: str
) -> dict[str, Any]:
    """The shipped gateway under yappi (CPU clock, all threads) at 10 clients: own CPU by category."""
    out = common.OUT_DIR / "gateway_profile.json"
    out.unlink(missing_ok=True)
    port = common.free_port()
    env = {
        **gateway_env,
        "PYTHONPATH": os.pathsep.join(p for p in (yappi_path, gateway_env.get("PYTHONPATH", "")) if p),
        "BENCH_PROFILE_OUT": str(out),
    }
    proc = procs.start(
        [common.PYTHON, "bench/profiled_daphne.py", "-b", "127.0.0.1", "-p", str(port), "infrai.asgi:application"],
        env=env,
        cpus=SERVER_CPU,
        port=port,
        log=common.OUT_DIR / "gateway-profiled.log",
    )
    target = Target("gateway (yappi)", f"http://127.0.0.1:{port}/v1/chat/completions", proc.pid, auth)
    check_target(target)
    one_slice(target, "plain", 10, 3, wrk)  # warm-up outside the profile
    proc.send_signal(signal.SIGUSR1)
    time.sleep(0.5)
    result = one_slice(target, "plain", 10, seconds, wrk)
    proc.send_signal(signal.SIGUSR2)
    deadline = time.monotonic() + 60
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    rows = json.loads(out.read_text()) if out.exists() else []
    requests = max(result["requests"], 1)
    by_category: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    counted: dict[str, float] = {label: 0.0 for label, _, _ in COUNTED}
    total = 0.0
    for module, name, _line, ncall, tsub, _ttot in rows:
        path = relative(module)
        by_category[categorize(path)] += tsub
        by_function[f"{name} ({path})"] += tsub
        total += tsub
        for label, suffix, function in COUNTED:
            if path.endswith(suffix) and name == function:
                counted[label] += ncall / requests
    return {
        "requests": result["requests"],
        "rps_under_profiler": result["rps"],
        "cpu_ms_per_request": total * 1000 / requests,
        "by_category_ms": {k: v * 1000 / requests for k, v in by_category.most_common()},
        "top_functions_ms": {k: v * 1000 / requests for k, v in by_function.most_common(20)},
        "calls_per_request": counted,
    }


def find_yappi(explicit: str | None) -> str | None:
    """A directory holding yappi (or "" when the venv has it), or None."""
    try:
        import yappi  # noqa: F401

        return ""
    except ImportError:
        pass
    for candidate in (explicit, os.environ.get("BENCH_YAPPI_PATH"), "/tmp/yappi"):  # noqa: S108 (documented)
        if candidate and (Path(candidate) / "yappi.py").exists():
            return candidate
    return None


# --- Report -----------------------------------------------------------------------------------


def render(report: dict[str, Any]) -> str:
    f = common.fmt
    args = report["args"]
    lines = [
        "## Gateway overhead (`bench/gateway_overhead.py`)",
        "",
        f"Measured {common.machine_line(report['machine'])}.",
        f"Command: `.venv/bin/python bench/gateway_overhead.py {args['argv']}`. "
        f"{args['rounds']} interleaved rounds of {f(args['slice'], 1)} s per target and cell; medians over rounds. "
        "Servers (raw floor, gateway) pinned to core 0; the SIMULATED upstream and the load generators "
        "(`wrk` for plain calls, bench/stream_client.py for streams) on core 1; PostgreSQL and Redis "
        "unpinned. Request: `POST /v1/chat/completions`, model `deepseek-chat` (vendor openai_compatible "
        f"→ the simulated upstream), ~1 KB reply; streams are {args['chunks']} chunks "
        f"{args['chunk_interval_ms']:g} ms apart. Median load average during the slices: "
        f"{f(report['loadavg_median'], 1)} (other work on the machine shows up in p99s).",
        "",
        "Targets (not asserted): added p50 < 3 ms and p99 < 10 ms at 10 clients; throughput ≥ 80 % of the raw floor.",
        "",
    ]
    summary = report["summary"]
    for latency in report["latencies"]:
        key = f"{latency:g}ms"
        for mode in report["modes"]:
            title = "non-streamed" if mode == "plain" else "streamed"
            lines += [f"### Upstream latency {latency:g} ms, {title}", ""]
            if mode == "plain":
                lines += [
                    "| clients | target | p50 ms | p99 ms | added p50 ms | added p99 ms | req/s | × direct | × raw floor "
                    "| server CPU ms/req | + PostgreSQL | errors |",
                    "|---|---|---|---|---|---|---|---|---|---|---|---|",
                ]
            else:
                lines += [
                    "| clients | target | TTFT p50 ms | TTFT p99 ms | added TTFT p50 | added TTFT p99 | stream p50 ms "
                    "| added stream p50 | req/s | × direct | × raw floor | server CPU ms/req | errors |",
                    "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
                ]
            for clients in report["concurrencies"]:
                for name in ("direct", "raw floor", "gateway"):
                    s = summary[key].get(f"{mode}|{clients}|{name}")
                    if s is None:
                        continue
                    vs_raw = report["vs_raw"][key].get(f"{mode}|{clients}|{name}", float("nan"))
                    is_direct = name == "direct"
                    dash = "—"
                    if mode == "plain":
                        pg = s["cpu_ms_per_request"] - s["server_cpu_ms_per_request"]
                        lines.append(
                            f"| {clients} | {name} | {f(s['p50_ms'])} | {f(s['p99_ms'])} | "
                            f"{dash if is_direct else f(s['added_p50_ms'])} | {dash if is_direct else f(s['added_p99_ms'])} | "
                            f"{f(s['rps'], 0)} | {dash if is_direct else f(s['rps_vs_direct'], 3)} | "
                            f"{dash if name != 'gateway' else f(vs_raw, 2)} | {f(s['server_cpu_ms_per_request'])} | "
                            f"{f(pg) if name == 'gateway' else dash} | {s['errors']} |"
                        )
                    else:
                        lines.append(
                            f"| {clients} | {name} | {f(s['ttft_p50_ms'])} | {f(s['ttft_p99_ms'])} | "
                            f"{dash if is_direct else f(s['added_ttft_p50_ms'])} | "
                            f"{dash if is_direct else f(s['added_ttft_p99_ms'])} | {f(s['p50_ms'])} | "
                            f"{dash if is_direct else f(s['added_p50_ms'])} | {f(s['rps'], 0)} | "
                            f"{dash if is_direct else f(s['rps_vs_direct'], 3)} | "
                            f"{dash if name != 'gateway' else f(vs_raw, 2)} | {f(s['server_cpu_ms_per_request'])} | "
                            f"{s['errors']} |"
                        )
            lines.append("")
            at10 = summary[key].get(f"{mode}|10|gateway")
            if at10:
                added_p50 = at10["added_ttft_p50_ms"] if mode == "stream" else at10["added_p50_ms"]
                added_p99 = at10["added_ttft_p99_ms"] if mode == "stream" else at10["added_p99_ms"]
                share = report["vs_raw"][key].get(f"{mode}|10|gateway", float("nan"))
                what = "TTFT " if mode == "stream" else ""
                lines += [
                    f"Against the targets at 10 clients: added {what}p50 {f(added_p50)} ms "
                    f"({'met' if added_p50 < 3 else 'missed'}), added {what}p99 {f(added_p99)} ms "
                    f"({'met' if added_p99 < 10 else 'missed'}), throughput {f(share * 100, 0)} % of the raw floor "
                    f"({'met' if share >= 0.8 else 'missed'}).",
                    "",
                ]
    ablation = report.get("ablation")
    if ablation:
        lines += [
            "### Ablation: where the gateway's time goes (0 ms upstream, non-streamed)",
            "",
            "Each row changes one thing of the shipped gateway (bench-only; the app is unchanged): "
            "`hot routes via Django's handler` serves `/v1/chat/completions` through Django's ASGI handler "
            "(bench/asgi_variant.py: a thread-sensitive context, a thread and the request signals per call) "
            "instead of infrai/asgi.py's HotApiHandler; `-fsync` sets `synchronous_commit=off` on the gateway's "
            "connections (bench/settings_variant.py; measures the two COMMITs' disk flushes, not a "
            "recommendation). `gateway /v1/ai/chat` is the other hot route. The `raw floor + ...` rows are not "
            "the gateway: they are the raw floor plus only the key check in Redis, then plus the hold and the "
            "settlement with its usage record, each done by the gateway's own code (bench/money_floor.py): the "
            "most a gateway that keeps the money guarantees per call can reach here. Same interleaving; "
            "added = minus direct in the same round.",
            "",
            "| clients | target | p50 ms | added p50 ms | added p99 ms | req/s | × raw floor | server CPU ms/req "
            "| + PostgreSQL | errors |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for clients in ablation["concurrencies"]:
            for name in ablation["names"]:
                s = ablation["summary"].get(f"plain|{clients}|{name}")
                if s is None:
                    continue
                vs_raw = ablation["vs_raw"].get(f"plain|{clients}|{name}", float("nan"))
                pg = s["cpu_ms_per_request"] - s["server_cpu_ms_per_request"]
                lines.append(
                    f"| {clients} | {name} | {f(s['p50_ms'])} | {f(s['added_p50_ms'])} | {f(s['added_p99_ms'])} | "
                    f"{f(s['rps'], 0)} | {f(vs_raw, 2)} | {f(s['server_cpu_ms_per_request'])} | "
                    f"{f(pg) if name.startswith(('gw', 'gateway')) or 'hold' in name else '—'} | {s['errors']} |"
                )
        lines.append("")
    profile = report.get("profile")
    if profile:
        lines += [
            f"### Where the gateway's CPU goes (yappi, CPU clock, all threads; {profile['requests']} requests at 10 "
            f"clients, 0 ms upstream; {f(profile['cpu_ms_per_request'])} ms of profiled CPU per request)",
            "",
            "The profiler slows everything about 2-3x; read the shares and the call counts, not the absolute times.",
            "",
            "| category (own CPU time) | ms per request | share |",
            "|---|---|---|",
        ]
        total = profile["cpu_ms_per_request"] or float("nan")
        lines += [f"| {k} | {f(v, 3)} | {f(v / total * 100, 1)} % |" for k, v in profile["by_category_ms"].items()]
        lines += ["", "| calls per request | count |", "|---|---|"]
        lines += [f"| {k} | {f(v, 1)} |" for k, v in profile["calls_per_request"].items()]
        lines += ["", "| top functions (own CPU) | ms per request |", "|---|---|"]
        lines += [f"| `{k}` | {f(v, 3)} |" for k, v in profile["top_functions_ms"].items()]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10, help="seconds per target and cell (split over rounds)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", default="1,10,100", help="concurrent clients, comma-separated")
    parser.add_argument("--latencies", default="0,50", help="upstream latencies in ms, comma-separated")
    parser.add_argument("--modes", default="plain,stream", help="plain and/or stream")
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--chunk-interval-ms", type=float, default=1.0)
    parser.add_argument("--no-ablation", action="store_true")
    parser.add_argument("--profile-seconds", type=float, default=10, help="0 to skip the yappi profile")
    parser.add_argument("--yappi-path", default=None, help="directory holding yappi (default: /tmp/yappi)")
    parser.add_argument("--database", default=common.DEFAULT_DB)
    parser.add_argument("--fresh-db", action="store_true", help="drop and re-create the database first")
    args = parser.parse_args()

    wrk = shutil.which("wrk")
    if wrk is None:
        parser.error("wrk is needed for non-streamed load: apt-get install -y wrk")
    concurrencies = [int(c) for c in args.clients.split(",")]
    latencies = [float(x) for x in args.latencies.split(",")]
    modes = [m for m in args.modes.split(",") if m in ("plain", "stream")]
    seconds = args.duration / args.rounds
    common.pin_self(LOAD_CPU)

    print(f"database {args.database}: create/migrate", flush=True)
    db_url = common.ensure_database(args.database, fresh=args.fresh_db)
    fake_port, raw_port, gw_port = common.free_port(), common.free_port(), common.free_port()
    upstream = f"http://127.0.0.1:{fake_port}/v1"
    gateway_env = common.django_env(
        db_url,
        OPENAI_COMPATIBLE_BASE_URL=upstream,
        OPENAI_COMPATIBLE_API_KEY="simulated-key",
        # One key carries all the load: a per-key limit would answer 429s. The limiter still runs.
        API_RATE_LIMIT_PER_KEY_PER_MINUTE=str(10**9),
    )
    email = f"bench-{int(time.time())}@bench.invalid"
    key = common.create_account_with_key(gateway_env, email)
    auth = f"Bearer {key}"
    common.OUT_DIR.mkdir(exist_ok=True)
    report: dict[str, Any] = {
        "args": {
            **vars(args),
            "argv": " ".join(sys.argv[1:]),
            "slice": seconds,
        },
        "latencies": latencies,
        "modes": modes,
        "concurrencies": concurrencies,
        "summary": {},
        "vs_raw": {},
    }
    with common.processes() as procs:
        procs.start(
            [common.PYTHON, "bench/fake_upstream.py", "--port", str(fake_port)]
            + ["--chunks", str(args.chunks), "--chunk-interval-ms", str(args.chunk_interval_ms)],
            cpus=LOAD_CPU,
            port=fake_port,
            log=common.OUT_DIR / "fake_upstream.log",
        )
        raw = procs.start(
            common.daphne_argv("bench.raw_floor:application", raw_port),
            env={**os.environ, "RAW_FLOOR_UPSTREAM": f"http://127.0.0.1:{fake_port}"},
            cpus=SERVER_CPU,
            port=raw_port,
            log=common.OUT_DIR / "raw_floor.log",
        )
        gateway = procs.start(
            common.daphne_argv("infrai.asgi:application", gw_port),
            env=gateway_env,
            cpus=SERVER_CPU,
            port=gw_port,
            log=common.OUT_DIR / "gateway.log",
        )
        direct_t = Target("direct", f"{upstream}/chat/completions")
        raw_t = Target("raw floor", f"http://127.0.0.1:{raw_port}/v1/chat/completions", raw.pid)
        gw_t = Target("gateway", f"http://127.0.0.1:{gw_port}/v1/chat/completions", gateway.pid, auth, args.database)
        targets = [direct_t, raw_t, gw_t]
        for target in targets:
            check_target(target)
        loads: list[float] = []
        for latency in latencies:
            control(fake_port, latency_ms=latency)
            cells = run_matrix(targets, modes, concurrencies, args.rounds, seconds, wrk, f"{latency:g}ms")
            key_ = f"{latency:g}ms"
            report["summary"][key_] = summarize(cells, "direct")
            report["vs_raw"][key_] = {
                f"{mode}|{c}|gateway": rps_vs(cells, mode, c, "gateway", "raw floor")
                for mode in modes
                for c in concurrencies
            }
            loads += [s["loadavg"] for cell in cells.values() for s in cell.slices]
        control(fake_port, latency_ms=0)

        if not args.no_ablation:
            variants: list[Target] = []
            for name, app, variant in ABLATIONS:
                port = common.free_port()
                proc = procs.start(
                    common.daphne_argv(app, port),
                    env={**gateway_env, "DJANGO_SETTINGS_MODULE": "bench.settings_variant", "BENCH_VARIANT": variant}
                    if variant
                    else gateway_env,
                    cpus=SERVER_CPU,
                    port=port,
                    log=common.OUT_DIR / f"gateway-{app.rsplit(':', 1)[-1]}-{variant.replace(',', '-')}.log",
                )
                variants.append(
                    Target(name, f"http://127.0.0.1:{port}/v1/chat/completions", proc.pid, auth, args.database)
                )
            for name, steps in MONEY_FLOORS:
                port = common.free_port()
                proc = procs.start(
                    common.daphne_argv("bench.money_floor:application", port),
                    env={**gateway_env, "MONEY_FLOOR_STEPS": steps, "RAW_FLOOR_UPSTREAM": upstream.rsplit("/v1", 1)[0]},
                    cpus=SERVER_CPU,
                    port=port,
                    log=common.OUT_DIR / f"money_floor-{steps.replace(',', '-')}.log",
                )
                database = args.database if "ledger" in steps else None
                variants.append(Target(name, f"http://127.0.0.1:{port}/v1/chat/completions", proc.pid, auth, database))
            ai_chat = Target(
                "gateway /v1/ai/chat", f"http://127.0.0.1:{gw_port}/v1/ai/chat", gateway.pid, auth, args.database
            )
            ablation_targets = [direct_t, raw_t, gw_t, ai_chat, *variants]
            for target in (ai_chat, *variants):
                check_target(target)
            ablation_clients = [c for c in concurrencies if c <= 10] or concurrencies[:1]
            cells = run_matrix(ablation_targets, ["plain"], ablation_clients, args.rounds, seconds, wrk, "ablation")
            report["ablation"] = {
                "names": [t.name for t in ablation_targets],
                "concurrencies": ablation_clients,
                "summary": summarize(cells, "direct"),
                "vs_raw": {
                    f"plain|{c}|{t.name}": rps_vs(cells, "plain", c, t.name, "raw floor")
                    for c in ablation_clients
                    for t in ablation_targets
                },
            }
            loads += [s["loadavg"] for cell in cells.values() for s in cell.slices]

        yappi_path = find_yappi(args.yappi_path)
        if args.profile_seconds > 0 and yappi_path is not None:
            print("profiling the gateway with yappi", flush=True)
            report["profile"] = profile_gateway(procs, gateway_env, yappi_path, auth, args.profile_seconds, wrk)
        elif args.profile_seconds > 0:
            print("yappi not found: no profile (see bench/README.md)", flush=True)
        status, stats = http_json(f"http://127.0.0.1:{fake_port}/_stats")
        report["upstream_requests"] = json.loads(stats).get("requests") if status == 200 else None

    report["loadavg_median"] = common.median(loads)
    report["machine"] = common.machine()
    common.save_json("gateway_overhead", report)
    common.write_section("gateway_overhead", render(report))
    print(render(report))


if __name__ == "__main__":
    main()
