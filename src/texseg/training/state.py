"""What the training loop holds and tells its callbacks: :class:`LoopState`, :class:`Evaluation`, :class:`Stop`.

The loop (:mod:`texseg.training.loop`) keeps a run in one :class:`LoopState`; a callback
(:mod:`texseg.training.callbacks`) reads it at the start, after each evaluation and at the
end, and may answer an evaluation with a :class:`Stop`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from texseg.checkpoint import Counters, save_model
from texseg.training.engine import Trainer, cpu_share, run_summary
from texseg.training.rundir import RunDir, RunStatus
from texseg.training.summary import RunSummary


@dataclass(frozen=True)
class Stop:
    """A callback's answer to an evaluation: end the run now, and why.

    Attributes:
        reason: what ``summary.json``'s ``message`` says, e.g. ``"stopped early after step 400: ..."``.
        status: the run's status: ``completed`` (the run is done, as for early stopping) or
            ``pruned`` (given up, as a search's pruner does).
    """

    reason: str
    status: RunStatus = RunStatus.COMPLETED


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of the held-out set, as the loop hands it to :meth:`Callback.on_evaluation`.

    Attributes:
        step: steps trained when it was taken.
        train_seconds: training time so far (evaluations excluded).
        metrics: the held-out metrics (``iou``, ``accuracy``, ``loss``...).
        row: the row it added to ``metrics.csv`` (``step``, ``train_seconds``, ``lr``, ``train_loss``, ``val_*``).
        improved: whether its IoU is the best of the run so far.
        images: held-out images it scored (interim evaluations may score a subset).
    """

    step: int
    train_seconds: float
    metrics: dict[str, float]
    row: dict[str, float]
    improved: bool
    images: int


@dataclass
class TrainResult:
    """What :func:`texseg.training.train` returns: where the run is and how it ended."""

    run_dir: Path
    status: RunStatus
    summary: RunSummary


@dataclass
class Timings:
    """CPU and wall time of this process (not saved: a resumed run measures anew)."""

    cpu_seconds: float = 0.0  # of the training windows
    wall_seconds: float = 0.0  # of the training windows
    thread_seconds: float = 0.0  # wall time x torch threads of the training windows (threads may change)
    thread_changes: list[tuple[int, int]] = field(default_factory=list)  # (step, threads from then on)
    overhead_seconds: float = 0.0  # evaluating and checkpointing (for the evaluation budget)
    eval_per_image: float | None = None  # what the last evaluation and checkpoint took per held-out image
    checkpointed_at: float | None = None  # perf_counter of this process's last interim checkpoint

    def add_evaluation(self, seconds: float, images: int) -> None:
        self.overhead_seconds += seconds
        self.eval_per_image = seconds / images


@dataclass(frozen=True)
class Best:
    """The run's best held-out IoU so far and the step it was reached at (step 0: none yet)."""

    iou: float
    step: int


@dataclass
class LoopState:
    """A run in progress: the trainer, the run folder, counters (saved in checkpoints), status and metrics.

    Attributes:
        trainer: model, optimizer, data and device (:func:`texseg.training.build_trainer`).
        path: the run directory.
        run: the open run directory (None on the ranks of a distributed run other than 0).
        val_images, val_targets: the fixed held-out set (rank 0 only).
        counters: step, training time, best IoU...: what a checkpoint saves.
        status, message: how the run stands (``running`` until it ends) and why it stopped.
        last_val: the latest held-out metrics.
        last_eval_fraction: the run's progress at its last evaluation (for the cadence).
        lr: the learning rate of the latest step.
        notes: caveats for the run's reader (written to ``summary.json``).
        timings: this process's CPU, wall and evaluation time.
        figures: figures callbacks drew this run, by name, for other callbacks to log (``samples``).
    """

    trainer: Trainer
    path: Path
    run: RunDir | None = None
    val_images: Tensor | None = None
    val_targets: Tensor | None = None
    counters: Counters = field(default_factory=Counters)
    status: RunStatus = RunStatus.RUNNING
    message: str = ""
    last_val: dict[str, float] = field(default_factory=dict)
    last_eval_fraction: float = 0.0
    lr: float = 0.0
    notes: list[str] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> Any:
        """The run's :class:`~texseg.training.TrainConfig`, the device's defaults filled in."""
        return self.trainer.config

    @property
    def step(self) -> int:
        return self.counters.step

    @property
    def model(self) -> nn.Module:
        """The model itself (what is saved and evaluated), without a DDP wrapper."""
        return self.trainer.module

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.trainer.optimizer

    @property
    def best(self) -> Best:
        return Best(self.counters.best_iou, self.counters.best_step)

    @property
    def history(self) -> list[dict[str, Any]]:
        """The rows of ``metrics.csv`` so far (empty on ranks other than 0)."""
        return self.run.rows if self.run is not None else []

    def stop(self, status: RunStatus, message: str) -> None:
        self.status, self.message = status, message

    def summary(self) -> RunSummary:
        """The run's ``summary.json`` as it stands."""
        share = cpu_share(self.timings.cpu_seconds, self.timings.thread_seconds, 1)  # thread-seconds: threads vary
        c = self.counters
        return run_summary(self.trainer, c, self.status, self.message, self.last_val, self.notes, share)

    def result(self) -> TrainResult:
        return TrainResult(self.path, self.status, self.summary())

    def model_kwargs(self) -> dict[str, Any]:
        """The model's constructor arguments, as ``model.json`` records them."""
        config = self.trainer.config
        return config.model_init_kwargs

    def save_weights(self, folder: Path) -> None:
        """Save the model as a loadable model folder (``model.json`` + ``model.safetensors``) in ``folder``."""
        t = self.trainer
        save_model(t.module, folder, name=t.config.model, kwargs=self.model_kwargs(), num_regions=t.num_regions,
                   scene=t.config.scene().to_dict())
