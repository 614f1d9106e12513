"""django-tasks entry points. Several run per batch (settings.BATCH_MAX_PARALLEL_TASKS), on any
number of `manage.py db_worker` processes; each claims items one at a time (batches/batch.py)."""

from __future__ import annotations

from django_tasks import task

from batches import batch


@task()
async def run_batch(batch_id: str) -> dict[str, int]:
    """Run the batch's items until none is left to claim; returns what became of those it ran."""
    return await batch.work(batch_id)
