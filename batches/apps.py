from django.apps import AppConfig


class BatchesConfig(AppConfig):
    """ai.batch.*: batches of prepared calls run by django-tasks workers (see batches/batch.py)."""

    name = "batches"
    verbose_name = "Batches"

    def ready(self) -> None:
        from batches import batch
        from jobs import housekeeping

        housekeeping.register("requeue batch items of dead workers", batch.recover_stalled)
        housekeeping.register("fail batches past their timeout", batch.fail_timed_out)
        housekeeping.register("purge batch results past retention", batch.purge_expired)
