"""Video jobs (see jobs/video.py for the rules)."""

__all__: list[str] = []
