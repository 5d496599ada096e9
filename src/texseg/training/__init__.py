"""Training: typed configuration, the engine's parts, the loop and its callbacks, run directories, summaries."""

from texseg.training.callbacks import Callback, default_callbacks
from texseg.training.config import TrainConfig
from texseg.training.engine import SceneStream, Trainer, build_trainer, train_step
from texseg.training.loop import StorageError, TrainResult, resume_training, train
from texseg.training.rundir import RunDir, RunStatus, read_status
from texseg.training.state import Evaluation, LoopState, Stop
from texseg.training.summary import RunSummary

__all__ = [
    "Callback",
    "Evaluation",
    "LoopState",
    "RunDir",
    "RunStatus",
    "RunSummary",
    "SceneStream",
    "Stop",
    "StorageError",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "build_trainer",
    "default_callbacks",
    "read_status",
    "resume_training",
    "train",
    "train_step",
]
