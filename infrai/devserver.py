"""`make run`: the web server plus the background processes the console needs, in one command.

Starts daphne on HOST:PORT and the hold sweeper; later pieces (the local Stripe stand-in, the
job worker) register here too. Ctrl-C stops them all; if one dies, the others are stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

PYTHON = sys.executable


@dataclass
class Process:
    name: str
    argv: list[str]
    env: dict[str, str] | None = None


def planned_processes(env: dict[str, str]) -> list[Process]:
    host = env.get("HOST", "127.0.0.1")
    port = env.get("PORT", "8000")
    return [
        Process("web", [PYTHON, "-m", "daphne", "-b", host, "-p", port, "infrai.asgi:application"]),
        Process("sweeper", [PYTHON, "manage.py", "sweep_holds", "--loop"]),
    ]


def main() -> int:
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "infrai.settings.base")
    env.setdefault("PYTHONUNBUFFERED", "1")
    host, port = env.get("HOST", "127.0.0.1"), env.get("PORT", "8000")
    print(f"Infrai Console on http://{host}:{port}/  (Ctrl-C stops it)", flush=True)
    running: list[tuple[Process, subprocess.Popen[bytes]]] = []
    for proc in planned_processes(env):
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


if __name__ == "__main__":
    sys.exit(main())
