"""Batch and video jobs. Each kind's models live in its own module; Django finds them here."""

from jobs.models_batch import *  # noqa: F403
from jobs.models_video import *  # noqa: F403
