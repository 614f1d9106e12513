"""`make cluster`: the multi-process deployment on one machine, behind one port.

Starts 2 daphne processes, 2 job workers (`manage.py db_worker`), the housekeeping loop, the
Stripe stand-in (when no real Stripe key is set) and a round-robin TCP balancer
(devtools/balancer.py) on HOST:PORT in front of the daphne processes. Ctrl-C stops them all; if
one dies, the others are stopped (the supervision of `make run`, infrai/devserver.py).

Several processes need a shared database and a shared channel layer, so the cluster uses
PostgreSQL and Redis: `DATABASE_URL` and `REDIS_URL` when they are set, otherwise it starts a
private PostgreSQL (initdb in a temporary directory, from the local PostgreSQL binaries) and a
private `redis-server`, each on a free loopback port, and removes them when it stops.

    make cluster                                   # private PostgreSQL + Redis
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/infrai REDIS_URL=redis://127.0.0.1:6379/0 make cluster
    python -m devtools.cluster --port 8000 --web-ports 8001,8002 --workers 2
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from infrai.devserver import PYTHON, Process, base_env, stripe_standin, supervise

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing answers on {host}:{port} after {timeout:.0f} s") from None
            time.sleep(0.1)


# --- Private PostgreSQL and Redis ---------------------------------------------------------------


def postgres_binary(name: str) -> str:
    """`initdb`/`pg_ctl`/`postgres` from PATH or Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed")
    return found


@dataclass
class PrivatePostgres:
    """A throw-away PostgreSQL instance on a loopback port. As root it runs as the OS user
    `postgres` (PostgreSQL refuses to run as root); trust authentication, loopback only."""

    data_dir: Path
    port: int
    log_file: Path

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/infrai"

    def _run(self, *argv: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *argv], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def pg_ctl(self, action: str, *extra: str) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.data_dir} "
            "-c fsync=off -c synchronous_commit=off -c max_connections=200"
        )
        self._run(
            postgres_binary("pg_ctl"), action, "-w", "-D", str(self.data_dir), "-l", str(self.log_file), "-o", options,
            *extra,
        )  # fmt: skip

    def start(self) -> None:
        self.pg_ctl("start")

    def stop(self) -> None:
        self.pg_ctl("stop", "-m", "fast")

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: every session is cut, then the server comes back."""
        self.pg_ctl("restart", "-m", "fast")


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    base = Path(tempfile.mkdtemp(prefix="infrai-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    server = PrivatePostgres(base / "data", free_port(), base / "postgres.log")
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    try:
        subprocess.run(
            [*prefix, postgres_binary("initdb"), "-D", str(server.data_dir), "-U", "postgres", "-A", "trust"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        server.start()
        subprocess.run(
            [
                *prefix,
                postgres_binary("createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(server.port),
                "-U",
                "postgres",
                "infrai",
            ],
            check=True,
        )
        yield server
    finally:
        try:
            server.stop()
        except subprocess.CalledProcessError:
            pass  # never started, or already stopped
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class PrivateRedis:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = PrivateRedis(port, process)
    try:
        wait_for_port("127.0.0.1", port)
        yield server
    finally:
        server.kill()


# --- The cluster ----------------------------------------------------------------------------------


def planned_processes(env: dict[str, str], port: int, web_ports: Sequence[int], workers: int) -> list[Process]:
    host = env.get("HOST", "127.0.0.1")
    processes = [
        Process(f"web-{i}", [PYTHON, "-m", "daphne", "-b", host, "-p", str(web_port), "infrai.asgi:application"])
        for i, web_port in enumerate(web_ports, 1)
    ]
    processes += [
        Process(f"worker-{i}", [PYTHON, "manage.py", "db_worker", "--no-reload", "--worker-id", f"cluster-{i}"])
        for i in range(1, workers + 1)
    ]
    processes.append(Process("housekeeping", [PYTHON, "manage.py", "housekeeping", "--loop"]))
    backends = [arg for web_port in web_ports for arg in ("--backend", f"{host}:{web_port}")]
    processes.append(Process("balancer", [PYTHON, "-m", "devtools.balancer", "--listen", f"{host}:{port}", *backends]))
    standin = stripe_standin({**env, "PORT": str(port)})
    if standin is not None:
        processes.append(standin)
    return processes


def main(argv: Sequence[str] | None = None) -> int:
    env = base_env()
    parser = argparse.ArgumentParser(description="2 daphne + 2 workers + housekeeping behind one balancer port")
    parser.add_argument("--port", type=int, default=int(env.get("PORT", "8000")), help="the balancer's port")
    parser.add_argument("--web-ports", default="", help="daphne ports, comma-separated (default: PORT+1, PORT+2)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-migrate", action="store_true", help="skip `manage.py migrate` (already done)")
    args = parser.parse_args(argv)
    web_ports = [int(p) for p in args.web_ports.split(",") if p] or [args.port + 1, args.port + 2]

    with ExitStack() as services:
        if not env.get("DATABASE_URL"):
            env["DATABASE_URL"] = services.enter_context(private_postgres()).url
            print(f"private PostgreSQL: {env['DATABASE_URL']}", flush=True)
        if not env.get("REDIS_URL"):
            env["REDIS_URL"] = services.enter_context(private_redis()).url
            print(f"private Redis: {env['REDIS_URL']}", flush=True)
        if not args.no_migrate:
            subprocess.run([PYTHON, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True)
        host = env.get("HOST", "127.0.0.1")
        print(f"Infrai Console cluster on http://{host}:{args.port}/  (Ctrl-C stops it)", flush=True)
        return supervise(planned_processes(env, args.port, web_ports, args.workers), env)


if __name__ == "__main__":
    sys.exit(main())
