"""Periodic upkeep that keeps jobs and credit honest, run by `manage.py housekeeping --loop`.

Apps register their chores in AppConfig.ready(): releasing expired holds, requeueing work whose
worker died (its lease ran out), failing batches past their timeout, purging what is past its
retention. Each chore is idempotent and safe to run from several processes at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

Chore = Callable[[], int]
_chores: dict[str, Chore] = {}


def register(name: str, chore: Chore) -> None:
    _chores[name] = chore


def run_all() -> dict[str, int]:
    """Run every chore once; a failing chore is logged and does not stop the others."""
    done: dict[str, int] = {}
    for name, chore in list(_chores.items()):
        try:
            done[name] = chore()
        except Exception:
            log.exception("housekeeping chore %s failed", name)
            done[name] = -1
    return done
