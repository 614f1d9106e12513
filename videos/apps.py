from django.apps import AppConfig


class VideosConfig(AppConfig):
    """Video jobs (`/v1/video/...`): generation on the task worker, retention, signed downloads."""

    name = "videos"
    verbose_name = "Video jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from jobs import housekeeping
        from videos import video

        housekeeping.register("requeue video jobs whose worker died", video.requeue_abandoned_jobs)
        housekeeping.register("fail video jobs past their deadline", video.fail_overdue_jobs)
        housekeeping.register("purge video jobs past their retention", video.purge_expired_jobs)
