"""Count and time the SQL statements of one `/v1/ai/chat` and `/v1/chat/completions` call.

In-process: Django's test client drives the real views against PostgreSQL (`infrai_bench`) and
the SIMULATED upstream, with `CaptureQueriesContext` recording every statement (the view's
`sync_to_async` work runs on the calling thread here, so nothing escapes the capture). Also
times each synchronous step of the hot path called directly (authenticate, plan, reserve,
settle), wall and CPU time, with its statement count.

    .venv/bin/python bench/hot_path_queries.py --calls 200
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import siblings as `bench.*`, not shadowing PyPI names
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

BODY: dict[str, Any] = {
    "model": "deepseek-chat",
    "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
    "max_tokens": 64,
}


def shorten(sql: str) -> str:
    """A statement's shape: its verb and table, values elided."""
    sql = re.sub(r"\s+", " ", sql).strip()
    verb = sql.split(" ", 1)[0].upper()
    table = re.search(r'(?:FROM|INTO|UPDATE)\s+"?([a-z_]+)"?', sql, re.I)
    where = re.search(r"WHERE (.{0,110})", sql)
    text = f"{verb} {table.group(1) if table else ''}".strip()
    if verb == "SELECT" and where:
        text += " WHERE " + re.sub(r"'[^']*'|\b\d+\b", "?", where.group(1))
    if verb == "UPDATE":
        sets = re.search(r"SET (.{0,80}?) WHERE", sql)
        if sets:
            text += " SET " + re.sub(r"'[^']*'|\b\d+\b|%s", "?", sets.group(1))
    return text


async def drain(chunks: Any) -> None:
    async for _ in chunks:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200, help="calls to time per route and step")
    parser.add_argument("--database", default=common.DEFAULT_DB)
    args = parser.parse_args()

    url = common.ensure_database(args.database)
    port = common.free_port()
    env = common.django_env(url)
    email = f"queries-{int(time.time())}@bench.invalid"
    key = common.create_account_with_key(env, email)
    with common.processes() as procs:
        procs.start(
            [common.PYTHON, "bench/fake_upstream.py", "--port", str(port), "--chunk-interval-ms", "0"], port=port
        )
        os.environ.update(
            {k: v for k, v in env.items() if k in ("DJANGO_SETTINGS_MODULE", "DEBUG", "DATABASE_URL", "REDIS_URL")}
        )
        os.environ["ALLOWED_HOSTS"] = "testserver,127.0.0.1"
        os.environ["OPENAI_COMPATIBLE_BASE_URL"] = f"http://127.0.0.1:{port}/v1"
        os.environ["OPENAI_COMPATIBLE_API_KEY"] = "simulated-key"
        os.environ["API_RATE_LIMIT_PER_KEY_PER_MINUTE"] = str(10**9)  # the limiter runs, never refuses
        report = measure(key, args.calls)
    report["machine"] = common.machine()
    common.save_json("hot_path_queries", report)
    common.write_section("hot_path_queries", render(report))
    print(render(report))


def measure(key: str, calls: int) -> dict[str, Any]:
    import django

    django.setup()
    import logging

    from asgiref.sync import async_to_sync
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    logging.getLogger("httpx").setLevel(logging.WARNING)  # keep the report readable; see the daphne runs
    # The test client runs each async view on a fresh event loop; pooled sessions of finished
    # loops are closed by gateway.http but asyncio reports them first. A server keeps one loop.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    # A server runs the ledger's statements on its event loop's own pool (infrai/db_async.py);
    # here they run on Django's connection, the same SQL, so that CaptureQueriesContext sees them.
    from infrai import db_async

    db_async.available = lambda: False
    client = Client()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    routes = {
        "POST /v1/ai/chat": ("/v1/ai/chat", BODY),
        "POST /v1/chat/completions": ("/v1/chat/completions", BODY),
        "POST /v1/chat/completions (stream)": ("/v1/chat/completions", {**BODY, "stream": True}),
    }
    report: dict[str, Any] = {"routes": {}}
    for name, (path, body) in routes.items():
        payload = json.dumps(body)

        def call(path: str = path, payload: str = payload) -> None:
            response = client.post(path, payload, content_type="application/json", **headers)
            if response.status_code != 200:
                raise RuntimeError(f"{path}: {response.status_code} {response.content[:300]!r}")
            if response.streaming:
                async_to_sync(drain)(response.streaming_content)

        call()  # warm: connections, catalog, token encoder
        call()
        # The key's last_used_at is touched at most once a minute: one call in this run pays it.
        with CaptureQueriesContext(connection) as captured:
            call()
        statements = [{"sql": shorten(q["sql"]), "ms": float(q["time"]) * 1000} for q in captured.captured_queries]
        per_shape: dict[str, list[float]] = defaultdict(list)
        sql_ms = 0.0
        for _ in range(calls):
            with CaptureQueriesContext(connection) as captured:
                call()
            for q in captured.captured_queries:
                per_shape[shorten(q["sql"])].append(float(q["time"]) * 1000)
                sql_ms += float(q["time"]) * 1000
        report["routes"][name] = {
            "statements": statements,
            "count": len(statements),
            "mean_ms_by_shape": {k: sum(v) / len(v) for k, v in per_shape.items()},
            "calls_by_shape": {k: len(v) / calls for k, v in per_shape.items()},
            "sql_ms_per_call": sql_ms / calls,
        }

    report["steps"] = time_steps(key, calls)
    return report


def time_steps(key: str, calls: int) -> dict[str, dict[str, float]]:
    """Each synchronous step of the hot path called directly, `calls` times: wall and CPU ms, statements."""
    from datetime import timedelta

    from django.conf import settings
    from django.db import connection
    from django.test import RequestFactory
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from billing import ledger
    from billing.models import HoldState
    from console import keys
    from gateway import api, byok, chat, metering, routing
    from gateway.vendors.base import Usage
    from infrai.lib.ids import uuid7

    factory = RequestFactory()
    request = factory.post(
        "/v1/chat/completions", BODY, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}"
    )
    caller = api.authenticate(request)
    params = chat.parse_chat_params(BODY, request)
    the_plan = chat.plan(caller, params)
    candidate = the_plan.chain[0]
    usage = Usage(12, 200)

    def timed(fn: Any) -> dict[str, float]:
        fn()  # warm
        with CaptureQueriesContext(connection) as captured:
            wall0, cpu0 = time.perf_counter(), time.thread_time()
            for _ in range(calls):
                fn()
            wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
        return {
            "wall_ms": wall * 1000 / calls,
            "cpu_ms": cpu * 1000 / calls,
            "statements": len(captured.captured_queries) / calls,
        }

    holds: list[Any] = []

    def reserve() -> None:
        holds.append(
            ledger.reserve(
                caller.account.pk, the_plan.hold_nano, str(uuid7()), ttl=timedelta(seconds=settings.HOLD_TTL_SECONDS)
            )
        )

    def settle() -> None:
        hold = holds.pop()
        cost = chat.actual_cost_nano(candidate, usage, params)
        facts = metering.UsageFacts("chat", "deepseek-chat", "openai_compatible", 12, 200)
        ledger.settle(hold, cost, usage=metering.usage_record(caller, hold.reference, cost, facts))

    step_holds: list[Any] = []

    def reserve_in_steps() -> None:
        step_holds.append(
            ledger._reserve_in_steps(  # noqa: SLF001
                caller.account.pk,
                the_plan.hold_nano,
                str(uuid7()),
                timezone.now(),
                timedelta(seconds=settings.HOLD_TTL_SECONDS),
                "chat",
            )
        )

    def settle_in_steps() -> None:
        hold = step_holds.pop()
        cost = chat.actual_cost_nano(candidate, usage, params)
        facts = metering.UsageFacts("chat", "deepseek-chat", "openai_compatible", 12, 200)
        record = metering.usage_record(caller, hold.reference, cost, facts)
        ledger._close_hold_in_steps(hold, HoldState.SETTLED, cost, None, record)  # noqa: SLF001

    steps = {
        "authenticate (key from the cache, rate limiter; last_used touched once a minute)": timed(
            lambda: api.authenticate(request)
        ),
        "hash_key (HMAC-SHA256 of the key)": timed(lambda: keys.hash_key(key)),
        "parse_chat_params": timed(lambda: chat.parse_chat_params(BODY, request)),
        "plan (routing, token count)": timed(lambda: chat.plan(caller, params)),
        "↳ routing.candidates (catalog and BYOK vendors from this process's copy)": timed(
            lambda: routing.candidates(caller.account, "chat", model="deepseek-chat")
        ),
        "↳ byok.credential_for called directly (the BYOK SELECT routing now skips)": timed(
            lambda: byok.credential_for(caller.account, "openai_compatible")
        ),
        "↳ prompt_tokens_of (tiktoken)": timed(lambda: chat.prompt_tokens_of(params)),
        "reserve (hold; one statement on PostgreSQL)": timed(reserve),
        "settle (charge + release + usage record; one statement on PostgreSQL)": timed(settle),
        "reserve in steps (the ledger's portable path; shipped on PostgreSQL before)": timed(reserve_in_steps),
        "settle in steps (the ledger's portable path; shipped on PostgreSQL before)": timed(settle_in_steps),
    }
    try:
        from infrai import ratelimit
    except ImportError:  # not every version of the app has a rate limiter
        return steps
    steps["rate limiter hit (infrai.ratelimit, Django cache on Redis)"] = timed(
        lambda: ratelimit.hit("bench", "key", 10**9, 60)
    )
    return steps


def render(report: dict[str, Any]) -> str:
    lines = [
        "## SQL statements per call on the hot path (`bench/hot_path_queries.py`)",
        "",
        f"Measured {common.machine_line(report['machine'])}.",
        "In-process (Django test client, PostgreSQL `infrai_bench`, SIMULATED upstream, no idempotency key,",
        "no cache strategy). Times are `connection.queries` wall times (client round trip included).",
        "",
    ]
    for name, data in report["routes"].items():
        lines += [
            f"### {name}: {data['count']} statements, {common.fmt(data['sql_ms_per_call'])} ms of SQL per call",
            "",
            "| # | statement | ms (this call) |",
            "|---|---|---|",
        ]
        for i, stmt in enumerate(data["statements"], 1):
            lines.append(f"| {i} | `{stmt['sql']}` | {stmt['ms']:.2f} |")
        lines += ["", "Mean per statement shape over the timed calls:", "", "| statement | per call | mean ms |"]
        lines.append("|---|---|---|")
        for shape, ms in sorted(
            data["mean_ms_by_shape"].items(), key=lambda kv: -kv[1] * data["calls_by_shape"][kv[0]]
        ):
            lines.append(f"| `{shape}` | {data['calls_by_shape'][shape]:.2f} | {ms:.3f} |")
        lines.append("")
    lines += [
        "### Each synchronous step called directly (one thread, no HTTP; mean of the timed calls)",
        "",
        "| step | statements | wall ms | CPU ms (this process) |",
        "|---|---|---|---|",
    ]
    for name, step in report["steps"].items():
        lines.append(f"| {name} | {step['statements']:.1f} | {step['wall_ms']:.3f} | {step['cpu_ms']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
