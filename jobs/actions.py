"""Row actions of the Jobs pages: what each asks before it runs, which jobs allow it, and the
one rule of batches/batch.py or videos/video.py it calls. The views only show and submit them.

A batch has no delete in /v1; here "Delete results" purges its results and export files now
(what retention would do later) and keeps the batch's row, so its charges stay explained."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django import forms

from batches import batch as batch_rules
from batches.models import ACTIVE_BATCH_STATES, Batch
from videos import conf as video_conf
from videos import video as video_rules
from videos.models import UNFINISHED, VideoJob


class BatchRetentionForm(forms.Form):
    days = forms.IntegerField(
        label="Keep results for (days after it finishes)",
        min_value=batch_rules.RETENTION_BOUNDS[0],
        max_value=batch_rules.RETENTION_BOUNDS[1],
    )


class VideoRetentionForm(forms.Form):
    days = forms.IntegerField(
        label="Keep the video for (days after it was created)", min_value=1, max_value=video_conf.MAX_RETENTION_DAYS
    )


class ExportForm(forms.Form):
    format = forms.ChoiceField(
        label="Format", choices=[("jsonl", "JSON Lines"), ("csv", "CSV")], initial="jsonl", widget=forms.RadioSelect
    )


Job = Batch | VideoJob


@dataclass(frozen=True)
class Action:
    name: str
    label: str
    question: str  # "{id}" is the job's id
    explanation: str
    confirm_label: str
    danger: bool
    perform: Callable[[Any, dict[str, Any], str], str]  # (job, cleaned form data, base URL) -> flash message
    form: type[forms.Form] | None = None

    def initial(self, job: Job) -> dict[str, Any]:
        return {"days": job.retention_days} if self.form and "days" in self.form.base_fields else {}


# --- What each action does ----------------------------------------------------------------------


def _cancel_batch(batch: Batch, data: dict[str, Any], base_url: str) -> str:
    batch = batch_rules.cancel(batch)
    return (
        f"Batch {batch.public_id} cancelled: {batch.completed_count} finished item(s) stay billed, "
        f"{batch.cancelled_count} were cancelled and their credit released."
    )


def _export_batch(batch: Batch, data: dict[str, Any], base_url: str) -> str:
    made = batch_rules.create_export(batch, data["format"], "", {}, base_url)
    return (
        f"Export {made.public_id} ready ({made.format.upper()}, {made.item_count} items): Download on its row or page."
    )


def _retain_batch(batch: Batch, data: dict[str, Any], base_url: str) -> str:
    batch = batch_rules.set_retention(batch, data["days"])
    when = f"until {batch.expires_at:%Y-%m-%d}" if batch.expires_at else "after it finishes"
    return f"Batch {batch.public_id} keeps its results {batch.retention_days} days ({when})."


def _purge_batch(batch: Batch, data: dict[str, Any], base_url: str) -> str:
    batch_rules.purge(batch)
    return f"Results and exports of batch {batch.public_id} deleted; its record and charges stay."


def _cancel_video(job: VideoJob, data: dict[str, Any], base_url: str) -> str:
    job = video_rules.cancel(job)
    return f"Video job {job.public_id} cancelled; its held credit was released."


def _retain_video(job: VideoJob, data: dict[str, Any], base_url: str) -> str:
    job = video_rules.set_retention(job, data["days"])
    return f"Video job {job.public_id} is kept until {job.expires_at:%Y-%m-%d}."


def _delete_video(job: VideoJob, data: dict[str, Any], base_url: str) -> str:
    video_rules.delete(job)
    return f"Video job {job.public_id} and its files deleted."


BATCH_ACTIONS = {
    action.name: action
    for action in (
        Action(
            "cancel",
            "Cancel",
            "Cancel batch {id}?",
            "Items not finished yet are cancelled and their held credit released; finished items stay billed.",
            "Cancel the batch",
            True,
            _cancel_batch,
        ),
        Action(
            "export",
            "Export",
            "Export the results of batch {id}?",
            "Makes a file of every item's result, error and cost; it is kept as long as the batch's results.",
            "Export",
            False,
            _export_batch,
            ExportForm,
        ),
        Action(
            "retention",
            "Set retention",
            "How long should batch {id} keep its results?",
            "Results and exports are deleted this many days after the batch finishes.",
            "Save retention",
            False,
            _retain_batch,
            BatchRetentionForm,
        ),
        Action(
            "delete",
            "Delete results",
            "Delete the results of batch {id}?",
            "Every item's result and every export file is deleted now and cannot be recovered. The batch's "
            "record (counts, cost) stays, as the API has no way to delete a batch itself.",
            "Delete results",
            True,
            _purge_batch,
        ),
    )
}

VIDEO_ACTIONS = {
    action.name: action
    for action in (
        Action(
            "cancel",
            "Cancel",
            "Cancel video job {id}?",
            "The video stops being made and the credit held for it is released; you are not charged.",
            "Cancel the job",
            True,
            _cancel_video,
        ),
        Action(
            "retention",
            "Set retention",
            "How long should video job {id} be kept?",
            "The job and its files are deleted this many days after it was created.",
            "Save retention",
            False,
            _retain_video,
            VideoRetentionForm,
        ),
        Action(
            "delete",
            "Delete",
            "Delete video job {id}?",
            "The job and its video are deleted now and cannot be recovered; an unfinished job is cancelled "
            "first and not charged.",
            "Delete the job",
            True,
            _delete_video,
        ),
    )
}


def batch_action_names(batch: Batch) -> list[str]:
    """The actions a batch allows now (what /v1/ai/batch/* would accept, plus deleting results)."""
    if batch.purged_at is not None:
        return []
    active = batch.state in ACTIVE_BATCH_STATES
    return ["cancel", "export", "retention"] if active else ["export", "retention", "delete"]


def video_action_names(job: VideoJob) -> list[str]:
    return ["cancel", "retention", "delete"] if job.state in UNFINISHED else ["retention", "delete"]


def allowed(job: Job, action: Action) -> bool:
    names = batch_action_names(job) if isinstance(job, Batch) else video_action_names(job)
    return action.name in names


def refusal(job: Job, action: Action) -> str:
    kind = "Batch" if isinstance(job, Batch) else "Video job"
    if isinstance(job, Batch) and job.purged_at is not None:
        return f"{kind} {job.public_id}'s results were deleted; there is nothing left to {action.label.lower()}."
    return f"{kind} {job.public_id} is {job.state}: it cannot be {_past(action)} now."


def _past(action: Action) -> str:
    return {"cancel": "cancelled", "export": "exported", "delete": "deleted"}.get(action.name, "changed")
