"""Video jobs: one row per `video.generate` call, from queued to a finished state.

The worker owns a running job through its lease (`lease_token` until `lease_expires_at`); every
change a worker makes is a conditional UPDATE on that token, so a worker that lost its lease (it
was presumed dead and the job was requeued, or the job was cancelled) changes nothing.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from billing.models import Hold
from console.models import Account, Project, ProjectKey
from infrai.lib.ids import public_id


class VideoState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


UNFINISHED = (VideoState.QUEUED, VideoState.RUNNING)
FINISHED = (VideoState.SUCCEEDED, VideoState.FAILED, VideoState.CANCELLED)


def _video_id() -> str:
    return public_id("vid")


class VideoJob(models.Model):
    public_id = models.CharField(max_length=40, unique=True, default=_video_id, editable=False)
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="video_jobs")
    project = models.ForeignKey(Project, on_delete=models.SET_NULL, null=True, related_name="+")
    key = models.ForeignKey(ProjectKey, on_delete=models.SET_NULL, null=True, related_name="+")
    request_id = models.CharField(max_length=36, unique=True, help_text="The generate call's id; its usage record's")

    prompt = models.TextField()
    reference_image_url = models.URLField(max_length=2048, blank=True)
    duration_seconds = models.PositiveSmallIntegerField()
    aspect = models.CharField(max_length=5)
    resolution = models.CharField(max_length=8)
    vendor = models.CharField(max_length=40)
    model = models.CharField(max_length=120)
    byok = models.BooleanField(default=False)

    state = models.CharField(max_length=10, choices=VideoState.choices, default=VideoState.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    video = models.CharField(max_length=300, blank=True, help_text="Stored name of the MP4")
    thumbnail = models.CharField(max_length=300, blank=True, help_text="Stored name of the thumbnail")
    error_code = models.CharField(max_length=60, blank=True)
    error = models.TextField(blank=True)

    cost_nano = models.BigIntegerField(default=0, help_text="Held at generate, charged on success")
    hold = models.ForeignKey(Hold, on_delete=models.SET_NULL, null=True, related_name="+")
    vendor_job_id = models.CharField(max_length=200, blank=True, help_text="The remote vendor's id, once submitted")
    task_id = models.CharField(max_length=64, blank=True, help_text="The latest django-tasks result id")
    attempts = models.PositiveSmallIntegerField(default=0)
    lease_token = models.CharField(max_length=32, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)

    retention_days = models.PositiveSmallIntegerField()
    expires_at = models.DateTimeField()
    deleted_at = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["account", "-id"], name="video_account_newest"),
            models.Index(fields=["state", "lease_expires_at"], name="video_state_lease"),
            models.Index(fields=["expires_at"], name="video_expiry"),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(progress__lte=100), name="video_progress_at_most_100"),
        ]

    def __str__(self) -> str:
        return f"{self.public_id} ({self.state})"

    @property
    def finished(self) -> bool:
        return self.state in FINISHED
