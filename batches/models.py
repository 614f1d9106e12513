"""A batch of prepared calls (ai.batch.submit), its items and its exports.

Each item has its own credit hold, taken for every item at submit. Whoever closes that hold
(settle, release) decides the item's final state in the same transaction, so an item is
charged at most once however many workers touch it. See batches/batch.py for the rules.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from billing.models import Hold
from console.models import Account, Project, ProjectKey
from infrai.lib.ids import public_id


class BatchState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class ItemState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_BATCH_STATES = (BatchState.QUEUED, BatchState.RUNNING)
UNFINISHED_ITEM_STATES = (ItemState.QUEUED, ItemState.RUNNING)


def _batch_id() -> str:
    return public_id("batch")


def _export_id() -> str:
    return public_id("bexp")


class Batch(models.Model):
    public_id = models.CharField(max_length=40, unique=True, default=_batch_id, editable=False)
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="batches")
    project = models.ForeignKey(Project, on_delete=models.SET_NULL, null=True, related_name="+")
    key = models.ForeignKey(ProjectKey, on_delete=models.SET_NULL, null=True, related_name="+")
    state = models.CharField(max_length=10, choices=BatchState.choices, default=BatchState.QUEUED)
    total_count = models.PositiveIntegerField()
    completed_count = models.PositiveIntegerField(default=0)
    failed_count = models.PositiveIntegerField(default=0)
    cancelled_count = models.PositiveIntegerField(default=0)
    estimated_cost_nano = models.BigIntegerField(default=0, help_text="Sum of the items' holds (worst case)")
    total_cost_nano = models.BigIntegerField(default=0, help_text="Sum of what the items were charged")
    metadata = models.JSONField(default=dict, blank=True)
    error = models.JSONField(null=True, blank=True)
    batch_timeout = models.CharField(max_length=20, help_text='As submitted, e.g. "24h"')
    deadline_at = models.DateTimeField()
    retention_days = models.PositiveSmallIntegerField()
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Results are purged after this")
    purged_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "batches"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["account", "-created_at", "-id"], name="batch_account_time"),
            models.Index(fields=["state", "deadline_at"], name="batch_state_deadline"),
            models.Index(fields=["expires_at"], name="batch_expiry"),
        ]

    def __str__(self) -> str:
        return f"{self.public_id} ({self.state})"

    @property
    def finished_count(self) -> int:
        return self.completed_count + self.failed_count + self.cancelled_count


class BatchItem(models.Model):
    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="items")
    index = models.PositiveIntegerField()
    capability = models.CharField(max_length=20)
    body = models.JSONField()
    conversation_id = models.CharField(max_length=200, blank=True)
    state = models.CharField(max_length=10, choices=ItemState.choices, default=ItemState.QUEUED)
    result = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    files = models.JSONField(default=list, blank=True, help_text="Stored names of generated files")
    cost_nano = models.BigIntegerField(default=0)
    vendor = models.CharField(max_length=40, blank=True)
    model = models.CharField(max_length=120, blank=True)
    request_id = models.CharField(max_length=36, unique=True, help_text="The usage record's request id")
    hold = models.OneToOneField(Hold, on_delete=models.SET_NULL, null=True, related_name="+")
    hold_nano = models.BigIntegerField(default=0)
    attempts = models.PositiveSmallIntegerField(default=0)
    lease_owner = models.CharField(max_length=120, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["batch", "index"]
        constraints = [models.UniqueConstraint(fields=["batch", "index"], name="batch_item_index_unique")]
        indexes = [
            models.Index(fields=["batch", "state", "index"], name="batch_item_claim"),
            models.Index(fields=["state", "lease_until"], name="batch_item_lease"),
        ]

    def __str__(self) -> str:
        return f"{self.batch_id}#{self.index} ({self.state})"


class BatchExport(models.Model):
    """A JSONL or CSV file of a batch's results, in Django storage until the batch's retention ends."""

    public_id = models.CharField(max_length=40, unique=True, default=_export_id, editable=False)
    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="exports")
    format = models.CharField(max_length=5)
    conversation_id = models.CharField(max_length=200, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    file_name = models.CharField(max_length=300)
    item_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.public_id} ({self.format})"
