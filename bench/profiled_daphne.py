"""daphne under yappi (CPU clock, every thread), for bench/gateway_overhead.py's profile.

`kill -USR1 <pid>` starts profiling (so warm-up stays out), `kill -USR2 <pid>` stops it and
writes one JSON row per function to $BENCH_PROFILE_OUT: [file, function, line, calls, own
CPU seconds, inclusive CPU seconds]. yappi is not a project dependency: install it beside the
project (`.venv/bin/pip install --target /tmp/yappi yappi`) and put that directory on PYTHONPATH.

    PYTHONPATH=/tmp/yappi BENCH_PROFILE_OUT=bench/out/profile.json \
        .venv/bin/python bench/profiled_daphne.py -b 127.0.0.1 -p 9300 infrai.asgi:application
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from types import FrameType

if __package__ in (None, ""):  # run as a script: import siblings as `bench.*`, not shadowing PyPI names
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yappi  # noqa: E402


def start(signum: int, frame: FrameType | None) -> None:
    yappi.stop()
    yappi.clear_stats()
    yappi.set_clock_type("cpu")
    yappi.start(builtins=True, profile_threads=True)


def dump(signum: int, frame: FrameType | None) -> None:
    yappi.stop()
    rows = [[s.module, s.name, s.lineno, s.ncall, s.tsub, s.ttot] for s in yappi.get_func_stats()]
    out = Path(os.environ.get("BENCH_PROFILE_OUT", "bench/out/gateway_profile.json"))
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows))
    tmp.replace(out)


def main() -> None:
    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, dump)
    from daphne.cli import CommandLineInterface

    sys.argv = ["daphne", *sys.argv[1:]]
    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
