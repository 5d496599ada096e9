"""Training: typed configuration, the engine's parts, the loop, run directories."""

from texseg.training.config import TrainConfig
from texseg.training.engine import SceneStream, Trainer, build_trainer, train_step
from texseg.training.loop import StorageError, TrainResult, resume_training, train
from texseg.training.rundir import RunDir, RunStatus, read_status

__all__ = [
    "RunDir",
    "RunStatus",
    "SceneStream",
    "StorageError",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "build_trainer",
    "read_status",
    "resume_training",
    "train",
    "train_step",
]
