"""`make run`: the web server plus the background processes the console needs, in one command.

Starts daphne on HOST:PORT, one job worker (`manage.py db_worker`), the housekeeping loop
(expired holds, dead workers' leases, timeouts, retention) and, when no real Stripe key is
configured, the local Stripe stand-in (devtools/stripe_standin). Ctrl-C stops them all; if one
dies, the others are stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

PYTHON = sys.executable


@dataclass
class Process:
    name: str
    argv: list[str]
    env: dict[str, str] | None = None


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def stripe_standin(env: dict[str, str]) -> Process | None:
    """The local Stripe stand-in, when settings would point the SDK at it; else None.

    Mirrors infrai/settings/base.py: with no STRIPE_SECRET_KEY the SDK goes to STRIPE_API_BASE,
    by default http://127.0.0.1:STRIPE_STANDIN_PORT. A real key (or an API base elsewhere)
    means real Stripe, and nothing is started.
    """
    if env.get("STRIPE_SECRET_KEY"):
        return None
    api_base = env.get("STRIPE_API_BASE") or f"http://127.0.0.1:{env.get('STRIPE_STANDIN_PORT') or '8420'}"
    parts = urlsplit(api_base)
    if parts.hostname not in LOCAL_HOSTS or parts.port is None:
        return None
    host = env.get("HOST", "127.0.0.1")
    web_host = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, host)  # noqa: S104
    if ":" in web_host and not web_host.startswith("["):
        web_host = f"[{web_host}]"
    webhook_url = f"http://{web_host}:{env.get('PORT', '8000')}/billing/stripe/webhook/"
    var_dir = env.get("INFRAI_VAR_DIR") or "var"
    return Process(
        "stripe",
        [
            PYTHON,
            "-m",
            "devtools.stripe_standin",
            "--host",
            parts.hostname,
            "--port",
            str(parts.port),
            "--webhook-url",
            webhook_url,
            "--webhook-secret",
            env.get("STRIPE_WEBHOOK_SECRET") or "whsec_standin_local_only",
            "--state-file",
            os.path.join(var_dir, "stripe-standin.pickle"),
        ],
    )


def planned_processes(env: dict[str, str]) -> list[Process]:
    host = env.get("HOST", "127.0.0.1")
    port = env.get("PORT", "8000")
    processes = [
        Process("web", [PYTHON, "-m", "daphne", "-b", host, "-p", port, "infrai.asgi:application"]),
        Process("housekeeping", [PYTHON, "manage.py", "housekeeping", "--loop"]),
        Process("worker", [PYTHON, "manage.py", "db_worker", "--worker-id", f"dev-{os.getpid()}"]),
    ]
    standin = stripe_standin(env)
    if standin is not None:
        processes.append(standin)
    return processes


def supervise(processes: list[Process], env: dict[str, str]) -> int:
    """Run `processes` until Ctrl-C or SIGTERM, or until one exits; then stop the rest.

    Shared by `make run` and `make cluster` (devtools/cluster.py). Returns the exit code of the
    first process that failed, or 0.
    """
    running: list[tuple[Process, subprocess.Popen[bytes]]] = []
    for proc in processes:
        running.append((proc, subprocess.Popen(proc.argv, env={**env, **(proc.env or {})})))

    def stop(*_: object) -> None:
        for _, popen in running:
            if popen.poll() is None:
                popen.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    exit_code = 0
    try:
        while running:
            for proc, popen in list(running):
                code = popen.poll()
                if code is not None:
                    running.remove((proc, popen))
                    if code not in (0, -signal.SIGTERM, -signal.SIGINT):
                        print(f"{proc.name} exited with {code}; stopping the rest", flush=True)
                        exit_code = code or 1
                    stop()
            time.sleep(0.3)
    finally:
        stop()
        deadline = time.time() + 10
        for _, popen in running:
            try:
                popen.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                popen.kill()
    return exit_code


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "infrai.settings.base")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def main() -> int:
    env = base_env()
    host, port = env.get("HOST", "127.0.0.1"), env.get("PORT", "8000")
    print(f"Infrai Console on http://{host}:{port}/  (Ctrl-C stops it)", flush=True)
    return supervise(planned_processes(env), env)


if __name__ == "__main__":
    sys.exit(main())
