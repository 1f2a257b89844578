"""Training: one loop for every model family (``loop.py``), its callbacks, logs and schedules."""

from .callbacks import EMA, Callback, LatentPictures, ProgressGrid, default_callbacks
from .logs import Averager, MetricsLog
from .loop import Interrupted, Trainer, TrainResult, keep_freed_memory, train
from .schedule import lr_factor

__all__ = [
    "EMA",
    "Averager",
    "Callback",
    "Interrupted",
    "LatentPictures",
    "MetricsLog",
    "ProgressGrid",
    "TrainResult",
    "Trainer",
    "default_callbacks",
    "keep_freed_memory",
    "lr_factor",
    "train",
]
