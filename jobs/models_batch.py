"""Batch jobs and their items (see jobs/batch.py for the rules)."""

__all__: list[str] = []
