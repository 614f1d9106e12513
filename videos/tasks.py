"""The video tasks, run by `manage.py db_worker` (django-tasks with its database backend)."""

from __future__ import annotations

from django_tasks import task

from videos import video


@task()
def run_video_job(job_id: str) -> str:
    """Make one video job's clip; what happened ("succeeded", "failed", "retrying", "stopped",
    "not queued") is the task's return value. Every failure is recorded on the job itself."""
    return video.run_job(job_id)
