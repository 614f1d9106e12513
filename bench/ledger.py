"""Holds + settlements per second on PostgreSQL: one hot account vs spread over many accounts.

N worker processes (each its own connection) loop "reserve a hold, then settle it with its usage
record" for a fixed time, either all on ONE account (every pair locks the same balance row) or
each on its own account. Two implementations of the same rows, interleaved:

- `shipped`: billing.ledger.reserve and settle with gateway.metering's usage record, the same
  statements the hot path runs (it runs them on the event loop's pool): on PostgreSQL one data-modifying CTE per step in autocommit (2 statements per pair, the
  usage record written by the settling statement).
- `in steps`: the ledger's portable path (what SQLite uses, and what shipped on PostgreSQL too
  before the one-statement path): 2 transactions of several statements each.
- `grouped`: NOT SHIPPED, a measurement of group commit: the shipped statements for `--group`
  pairs at a time, their holds pipelined in one transaction, then their settlements in another
  (one round trip and one commit per group instead of per statement; a pair's latency is its
  group's). What a ledger that batched the calls in flight in one process could gain.

After the run the ledger of every benchmark account is checked (balance = sum of entries, held =
open holds) with billing.ledger.check_consistency, so both implementations are shown correct.

    .venv/bin/python bench/ledger.py --duration 5 --workers 1,4,16
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import siblings as `bench.*`, not shadowing PyPI names
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

HOLD_NANO = 9_000_000  # ~ the hold of a 64-token deepseek-chat call, in nano-USD
COST_NANO = 223_240


def worker(conn: Connection, db_url: str) -> None:
    """A worker process: set Django up once, then run the commands sent over `conn`."""
    os.environ.update(common.django_env(db_url))
    os.environ["DB_POOL_MAX_SIZE"] = "1"
    import django

    django.setup()
    from django.conf import settings
    from django.utils import timezone

    from billing import ledger
    from billing.models import HoldState
    from console.models import Account
    from gateway import api, metering
    from infrai.lib.ids import uuid7

    callers: dict[int, api.Caller] = {}
    grouped_conn: Any = None
    conn.send("ready")
    while True:
        command = conn.recv()
        if command is None:
            break
        impl, account_id, project_id, start_at, duration, group = command
        if account_id not in callers:
            account = Account.objects.get(pk=account_id)
            callers[account_id] = api.Caller(key=None, project=account.projects.get(is_default=True), account=account)
        caller = callers[account_id]
        facts = metering.UsageFacts("chat", "deepseek-chat", "openai_compatible", 12, 200, latency_ms=5)
        latencies: list[float] = []
        errors = 0
        time.sleep(max(0.0, start_at - time.time()))
        end = start_at + duration
        while time.time() < end:
            began = time.perf_counter()
            reference = str(uuid7())
            try:
                if impl == "grouped":
                    if grouped_conn is None:
                        import psycopg

                        grouped_conn = psycopg.connect(db_url.replace("postgres://", "postgresql://"), autocommit=True)
                    settle_group(grouped_conn, caller, account_id, group, facts, ledger, metering, settings)
                    latencies += [(time.perf_counter() - began) * 1000] * group
                    continue
                if impl == "shipped":
                    hold = ledger.reserve(account_id, HOLD_NANO, reference, ttl=settings_ttl(settings), memo="chat")
                    if not ledger.settle(
                        hold, COST_NANO, usage=metering.usage_record(caller, reference, COST_NANO, facts)
                    ):
                        raise RuntimeError("settle closed nothing")
                else:
                    hold = ledger._reserve_in_steps(  # noqa: SLF001
                        account_id, HOLD_NANO, reference, timezone.now(), settings_ttl(settings), "chat"
                    )
                    usage = metering.usage_record(caller, reference, COST_NANO, facts)
                    if not ledger._close_hold_in_steps(hold, HoldState.SETTLED, COST_NANO, None, usage):  # noqa: SLF001
                        raise RuntimeError("settle closed nothing")
            except Exception:  # noqa: BLE001 (counted and reported)
                errors += 1
                continue
            latencies.append((time.perf_counter() - began) * 1000)
        conn.send({"latencies": latencies, "errors": errors})


def settle_group(
    db: Any, caller: Any, account_id: int, group: int, facts: Any, ledger: Any, metering: Any, settings: Any
) -> None:
    """`group` pairs with the shipped statements: the holds in one pipelined transaction, then
    the settlements with their usage records in another."""
    from billing.models import HoldState
    from infrai.lib.ids import uuid7

    reserves = [
        ledger._reserve_statement(account_id, HOLD_NANO, str(uuid7()), settings_ttl(settings), "chat")  # noqa: SLF001
        for _ in range(group)
    ]
    with db.transaction(), db.pipeline():
        cursors = [db.execute(ledger.RESERVE_SQL, params) for _, params in reserves]
    holds = []
    for (hold, _), cursor in zip(reserves, cursors, strict=True):
        row = cursor.fetchone()
        if row is None:
            raise RuntimeError("hold refused")
        holds.append(ledger._reserved(hold, row[0]))  # noqa: SLF001
    settles = [
        ledger._close_statement(  # noqa: SLF001
            hold, HoldState.SETTLED, COST_NANO, metering.usage_record(caller, hold.reference, COST_NANO, facts)
        )
        for hold in holds
    ]
    with db.transaction(), db.pipeline():
        cursors = [db.execute(sql, params) for sql, params, _ in settles]
    if any(cursor.fetchone() is None for cursor in cursors):
        raise RuntimeError("settle closed nothing")


def settings_ttl(settings: Any) -> Any:
    from datetime import timedelta

    return timedelta(seconds=settings.HOLD_TTL_SECONDS)


def setup_accounts(db_url: str, count: int) -> list[tuple[int, int]]:
    """`count` accounts with plenty of credit: [(account id, default project id)]."""
    os.environ.update(common.django_env(db_url))
    import django

    django.setup()
    from billing import ledger
    from billing.models import EntryKind
    from console.accounts import create_account, default_project
    from infrai.lib.ids import uuid7

    stamp = int(time.time())
    accounts = []
    for i in range(count):
        account = create_account(f"ledger-{stamp}-{i}@bench.invalid")
        ledger.credit(account, 10**15, EntryKind.ADJUSTMENT, f"adjustment:bench:{uuid7()}", memo="bench credit")
        accounts.append((account.pk, default_project(account).pk))
    return accounts


def check(account_ids: set[int]) -> list[Any]:
    from billing import ledger

    return [d for d in ledger.check_consistency() if d.account_id in account_ids]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5, help="seconds per run")
    parser.add_argument("--workers", default="1,4,16", help="worker processes, comma-separated")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions of the whole matrix")
    parser.add_argument("--database", default=common.DEFAULT_DB)
    parser.add_argument("--group", type=int, default=8, help="pairs per group in the (unshipped) grouped run")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    most = max(counts)

    db_url = common.ensure_database(args.database)
    accounts = setup_accounts(db_url, most + 1)
    hot, spread = accounts[0], accounts[1:]
    ctx = mp.get_context("spawn")
    pipes: list[Connection] = []
    procs = []
    for _ in range(most):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=worker, args=(child, db_url), daemon=True)
        proc.start()
        pipes.append(parent)
        procs.append(proc)
    for pipe in pipes:
        pipe.recv()

    runs: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    try:
        for rnd in range(args.rounds):
            for n in counts:
                for layout in ("one account", "spread"):
                    impls = ["shipped", "in steps", "grouped"]
                    impls = impls[rnd % 3 :] + impls[: rnd % 3]
                    for impl in impls:
                        start_at = time.time() + 0.3
                        for i in range(n):
                            account_id, project_id = hot if layout == "one account" else spread[i]
                            pipes[i].send((impl, account_id, project_id, start_at, args.duration, args.group))
                        results = [pipes[i].recv() for i in range(n)]
                        latencies = [x for r in results for x in r["latencies"]]
                        run = {
                            "pairs": len(latencies),
                            "pairs_per_s": len(latencies) / args.duration,
                            "p50_ms": common.percentile(latencies, 50),
                            "p99_ms": common.percentile(latencies, 99),
                            "errors": sum(r["errors"] for r in results),
                            "loadavg": os.getloadavg()[0],
                        }
                        runs.setdefault((impl, layout, n), []).append(run)
                        print(
                            f"[r{rnd}] {impl:13} {layout:11} workers={n:3}: {run['pairs_per_s']:8.1f} pairs/s  "
                            f"p50 {run['p50_ms']:6.2f} ms  p99 {run['p99_ms']:7.2f} ms  errors {run['errors']}",
                            flush=True,
                        )
    finally:
        for pipe in pipes:
            pipe.send(None)
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()

    problems = check({a for a, _ in accounts})
    summary = {
        f"{impl}|{layout}|{n}": {
            "pairs_per_s": common.median(r["pairs_per_s"] for r in rs),
            "p50_ms": common.median(r["p50_ms"] for r in rs),
            "p99_ms": common.median(r["p99_ms"] for r in rs),
            "errors": sum(r["errors"] for r in rs),
            "loadavg": common.median(r["loadavg"] for r in rs),
        }
        for (impl, layout, n), rs in runs.items()
    }
    report = {
        "args": vars(args),
        "summary": summary,
        "consistency_problems": [str(p) for p in problems],
        "machine": common.machine(),
        "commit_ms": commit_latency(db_url),
    }
    common.save_json("ledger", report)
    common.write_section("ledger", render(report, counts))
    print(render(report, counts))


def commit_latency(db_url: str) -> float:
    """Mean ms of one INSERT + COMMIT on this PostgreSQL (the disk's flush time shows here)."""
    import psycopg

    with psycopg.connect(db_url.replace("postgres://", "postgresql://")) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_commit_probe (x int)")
        conn.commit()
        began = time.perf_counter()
        for i in range(100):
            conn.execute("INSERT INTO bench_commit_probe VALUES (%s)", [i])
            conn.commit()
        elapsed = (time.perf_counter() - began) * 1000 / 100
        conn.execute("DROP TABLE bench_commit_probe")
        conn.commit()
    return elapsed


def render(report: dict[str, Any], counts: list[int]) -> str:
    f = common.fmt
    args = report["args"]
    summary = report["summary"]
    problems = report["consistency_problems"]
    lines = [
        "## Ledger: holds + settlements per second (`bench/ledger.py`)",
        "",
        f"Measured {common.machine_line(report['machine'])}.",
        f"Command: `.venv/bin/python bench/ledger.py --duration {args['duration']:g} --workers {args['workers']} "
        f"--rounds {args['rounds']}`; {args['duration']:g} s per run, medians over {args['rounds']} interleaved rounds. "
        "A pair = reserve a hold, then settle it with its usage record (what every billed call does). "
        "Workers are processes with one connection each; the Python workers share the 2 cores with PostgreSQL. "
        f"One INSERT + COMMIT on this PostgreSQL takes {f(report['commit_ms'])} ms (fsync on; the disk's flush "
        "bounds every commit).",
        "",
        "| workers | layout | shipped (one statement per step) pairs/s | p50 ms | p99 ms | in steps pairs/s | p50 ms | p99 ms | shipped ÷ in steps "
        f"| grouped ×{args.get('group', 8)} (not shipped) pairs/s | p50 ms | p99 ms | grouped ÷ shipped |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in counts:
        for layout in ("one account", "spread"):
            a = summary.get(f"shipped|{layout}|{n}")
            b = summary.get(f"in steps|{layout}|{n}")
            if not a or not b:
                continue
            g = summary.get(f"grouped|{layout}|{n}") or {
                "pairs_per_s": float("nan"),
                "p50_ms": float("nan"),
                "p99_ms": float("nan"),
            }
            gain = a["pairs_per_s"] / b["pairs_per_s"] if b["pairs_per_s"] else float("nan")
            grouped_gain = g["pairs_per_s"] / a["pairs_per_s"] if a["pairs_per_s"] else float("nan")
            lines.append(
                f"| {n} | {layout} | {f(a['pairs_per_s'], 0)} | {f(a['p50_ms'])} | {f(a['p99_ms'])} | "
                f"{f(b['pairs_per_s'], 0)} | {f(b['p50_ms'])} | {f(b['p99_ms'])} | ×{f(gain)} | "
                f"{f(g['pairs_per_s'], 0)} | {f(g['p50_ms'])} | {f(g['p99_ms'])} | ×{f(grouped_gain)} |"
            )
    errors = sum(s["errors"] for s in summary.values())
    lines += [
        "",
        f"Errors: {errors}. Ledger check of the benchmark accounts after the run: "
        + ("consistent (balance = sum of entries, held = open holds)." if not problems else f"PROBLEMS: {problems}"),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
