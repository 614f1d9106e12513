"""Shared plumbing for the benchmarks: databases, processes, CPU pinning, statistics, RESULTS.md.

Everything here targets 127.0.0.1 only. Databases are named `infrai_bench*`, Redis uses db 12.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
RESULTS = BENCH_DIR / "RESULTS.md"
OUT_DIR = BENCH_DIR / "out"

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_USER = "postgres"
REDIS_URL = "redis://127.0.0.1:6379/12"
DEFAULT_DB = "infrai_bench"


# --- Databases --------------------------------------------------------------------------------


def database_url(name: str) -> str:
    return f"postgres://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"


def _admin_connection() -> Any:
    import psycopg

    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True)


def ensure_database(name: str = DEFAULT_DB, fresh: bool = False) -> str:
    """Create (or with `fresh`, re-create) the database `name`, migrate it; return its URL."""
    if not name.startswith("infrai_bench"):
        raise ValueError("benchmark databases are named infrai_bench*")
    from psycopg import sql

    with _admin_connection() as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None
        if exists and fresh:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            exists = False
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = database_url(name)
    manage(["migrate", "--noinput"], django_env(url))
    return url


def django_env(db_url: str, **extra: str) -> dict[str, str]:
    """The environment for manage.py and daphne: PostgreSQL, Redis db 12, DEBUG off."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "infrai.settings.base",
        "DEBUG": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
        "DATABASE_URL": db_url,
        "REDIS_URL": REDIS_URL,
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env


def manage(args: Sequence[str], env: dict[str, str]) -> str:
    """Run `manage.py args` and return its stdout; raise with its stderr if it fails."""
    done = subprocess.run(
        [PYTHON, str(ROOT / "manage.py"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def create_account_with_key(env: dict[str, str], email: str, credit_usd: str = "100000") -> str:
    """An account with credit and a project key, through the operator commands; returns the key."""
    manage(["create_account", email, "--credit-usd", credit_usd], env)
    out = manage(["create_project_key", email, "--label", "bench"], env)
    return out.strip().splitlines()[-1].strip()


# --- Processes --------------------------------------------------------------------------------


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))


def pinned(cpus: str | None, argv: Sequence[str]) -> list[str]:
    """`argv` under `taskset -c cpus` when taskset exists and the machine has 2+ cores."""
    taskset = shutil.which("taskset")
    if cpus is None or taskset is None or (os.cpu_count() or 1) < 2:
        return list(argv)
    return [taskset, "-c", cpus, *argv]


def pin_self(cpus: str) -> None:
    """Move this process (the load generator's orchestrator) to `cpus` when possible."""
    wanted = {int(c) for c in cpus.split(",")}
    if (os.cpu_count() or 1) >= 2 and wanted <= set(range(os.cpu_count() or 1)):
        os.sched_setaffinity(0, wanted)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class Processes:
    """Subprocesses started by a benchmark; all of them are stopped (by pid) on exit."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cpus: str | None = None,
        log: Path | None = None,
        port: int | None = None,
    ) -> subprocess.Popen[bytes]:
        OUT_DIR.mkdir(exist_ok=True)
        stderr = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 (kept open for the child)
        proc = subprocess.Popen(pinned(cpus, argv), cwd=ROOT, env=env or dict(os.environ), stdout=stderr, stderr=stderr)
        self.procs.append(proc)
        if port is not None:
            wait_for_port(port, proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()


@contextmanager
def processes() -> Iterator[Processes]:
    procs = Processes()
    try:
        yield procs
    finally:
        procs.stop_all()


def daphne_argv(app: str, port: int) -> list[str]:
    return [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), app]


# --- /proc readings ---------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` (its threads included), in seconds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def thread_count(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def backend_pids(dbname: str) -> list[int]:
    """PostgreSQL backend processes connected to `dbname` (to charge their CPU to a run)."""
    with _admin_connection() as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [dbname]
        ).fetchall()
    return [int(row[0]) for row in rows]


# --- Statistics -------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) with linear interpolation; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Iterable[float]) -> float:
    data = [v for v in values if v == v]  # drop nan
    return statistics.median(data) if data else float("nan")


def fmt(value: float, digits: int = 2) -> str:
    if value != value:  # nan
        return "n/a"
    return f"{value:,.{digits}f}"


# --- Machine and results ----------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    mhz = re.search(r"^cpu MHz\s*:\s*(.+)$", cpuinfo, re.M)
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    mem = re.search(r"^MemTotal:\s*(\d+) kB", meminfo, re.M)
    info: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu_model": model.group(1).strip() if model else platform.processor(),
        "cpu_mhz": mhz.group(1).strip() if mhz else "",
        "memory_gib": round(int(mem.group(1)) / 1024 / 1024, 1) if mem else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    try:
        with _admin_connection() as conn:
            info["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
    except Exception:  # noqa: BLE001 (informational only)
        info["postgresql"] = "?"
    try:
        import redis

        info["redis"] = redis.Redis.from_url(REDIS_URL).info("server")["redis_version"]
    except Exception:  # noqa: BLE001 (informational only)
        info["redis"] = "?"
    return info


def machine_line(info: dict[str, Any]) -> str:
    return (
        f"{info['date']}; {info['nproc']} cores ({info['cpu_model']}{', ' + info['cpu_mhz'] + ' MHz' if info['cpu_mhz'] else ''}), "
        f"{info['memory_gib']} GiB RAM, Linux {info['kernel']}, Python {info['python']}, "
        f"PostgreSQL {info['postgresql']}, Redis {info['redis']}"
    )


SECTION_ORDER = ["gateway_overhead", "hot_path_queries", "ledger", "websockets"]


def write_section(name: str, markdown: str) -> None:
    """Replace (or add) the section `name` of bench/RESULTS.md, keeping the other sections."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    text = RESULTS.read_text() if RESULTS.exists() else ""
    block = f"{start}\n{markdown.rstrip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n" + block + "\n" if text else block + "\n"
    RESULTS.write_text(_ordered(text))


def _ordered(text: str) -> str:
    """Keep the sections in SECTION_ORDER after any free text at the top."""
    blocks: dict[str, str] = {}
    head = text
    for name in SECTION_ORDER:
        start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
        if start in head and end in head:
            before, rest = head.split(start, 1)
            inner, after = rest.split(end, 1)
            blocks[name] = f"{start}{inner}{end}"
            head = before.rstrip() + "\n\n" + after.lstrip()
    parts = [head.strip()] + [blocks[n] for n in SECTION_ORDER if n in blocks]
    return "\n\n".join(p for p in parts if p) + "\n"


def save_json(name: str, data: Any) -> Path:
    OUT_DIR.mkdir(exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str))
    return path
