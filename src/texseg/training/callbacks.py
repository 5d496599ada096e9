"""Callbacks: what a run writes or decides besides training, told of its start, evaluations and end.

The loop (:func:`texseg.training.train`) writes only the run itself: ``config.json``, the
checkpoint (``model.json``, ``model.safetensors``, ``resume.pt``), ``metrics.csv`` and
``summary.json``. Everything else is a :class:`Callback`; :func:`default_callbacks` gives
the ones a config asks for (``figures``, ``tensorboard``, ``keep_best``, ``early_stop``).

Callbacks run on rank 0 of a distributed run only, in the order given; a :class:`Stop`
from any of them after an evaluation ends the run (the first one's reason is recorded).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from texseg.evaluation import predict_labels
from texseg.plots import run_curves_figure, samples_figure, save_figure
from texseg.training.config import TrainConfig
from texseg.training.report import write_report_or_note
from texseg.training.rundir import BEST, RunStatus
from texseg.training.state import Evaluation, LoopState, Stop, TrainResult
from texseg.training.tensorboard import TensorBoardLogger

EvalCallback = Callable[[int, float, dict[str, float]], bool]


class Callback:
    """Base class of the loop's callbacks; override what you need (each default does nothing).

    Callbacks must not change the model, optimizer or counters: they read the state and
    write their own files.
    """

    def on_start(self, state: LoopState) -> None:
        """The run directory exists (``config.json`` written; a resumed run restored), training begins."""

    def on_evaluation(self, state: LoopState, evaluation: Evaluation) -> Stop | None:
        """After each evaluation, before its checkpoint is saved.

        Returns:
            A :class:`Stop` to end the run now (it is still checkpointed), or None to carry on.
        """
        return None

    def on_end(self, state: LoopState, result: TrainResult) -> list[str]:
        """The run has ended and its final checkpoint and ``summary.json`` are written (``result.status``
        says how it ended). Not called when training raised.

        Returns:
            Notes for the run's reader (e.g. a file that could not be written): printed as warnings
            and added to ``summary.json``'s ``notes``.
        """
        return []

    def close(self) -> None:
        """Release what the callback holds (files, writers); called last, also when training raised."""


class KeepBest(Callback):
    """``keep_best``: the weights of the best held-out IoU so far in ``RUN/best/`` (a loadable model folder)."""

    def on_evaluation(self, state: LoopState, evaluation: Evaluation) -> Stop | None:
        if evaluation.improved and state.run is not None:
            state.run.file(BEST).mkdir(exist_ok=True)
            state.save_weights(state.run.file(BEST))
        return None


class EarlyStopping(Callback):
    """``early_stop``: stop (status ``completed``) once the held-out IoU has not improved for ``patience``
    evaluations."""

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def on_evaluation(self, state: LoopState, evaluation: Evaluation) -> Stop | None:
        c = state.counters
        if c.stale_evals < self.patience:
            return None
        return Stop(f"stopped early after step {c.step}: no better held-out IoU in {c.stale_evals} evaluations "
                    f"(best {c.best_iou:.4f} at step {c.best_step})")


class EvalHook(Callback):
    """A plain function ``fn(step, train_seconds, val_metrics) -> bool`` as a callback (``train(on_eval=...)``):
    True stops the run with status ``pruned``."""

    def __init__(self, fn: EvalCallback) -> None:
        self.fn = fn

    def on_evaluation(self, state: LoopState, evaluation: Evaluation) -> Stop | None:
        if self.fn(evaluation.step, evaluation.train_seconds, evaluation.metrics):
            return Stop(f"stopped by the caller after step {evaluation.step}", RunStatus.PRUNED)
        return None


class Figures(Callback):
    """``figures``: ``samples.png`` (input | truth | eval-mode prediction of 4 held-out images) and
    ``curves.png`` when the run ends; a failure to write them is a note, not an error."""

    def on_end(self, state: LoopState, result: TrainResult) -> list[str]:
        run = state.run
        if run is None or not run.rows:
            return []
        try:
            if state.status != RunStatus.DIVERGED:  # no prediction panel from diverged weights: not what is saved
                state.figures["samples"] = fig = self._samples(state)
                save_figure(fig, run.file("samples.png"))
            save_figure(run_curves_figure(run.rows, state.config.model), run.file("curves.png"))
        except OSError as e:  # the run itself is saved; its pictures are a convenience
            return [f"figures not written: {e.strerror or e}" + (f": {e.filename}" if e.filename else "")]
        return []

    @staticmethod
    def _samples(state: LoopState) -> object:
        t = state.trainer
        images, targets = state.val_images[:4], state.val_targets[:4]
        t.module.eval()
        with torch.no_grad():
            pred = predict_labels(t.module(images))
        t.module.train()
        truth = targets if t.num_regions > 2 else targets.long()
        return samples_figure(images.cpu(), truth.cpu(), pred.cpu(), num_regions=t.num_regions,
                              suptitle=f"{t.config.model}: validation samples (eval mode)", masks=t.num_regions == 2)


class TensorBoard(Callback):
    """``tensorboard``: event files in the run directory: each evaluation's metrics row as scalars,
    the figures other callbacks drew (``samples``) and the settings against the final metrics.

    Raises:
        ValueError: the ``tensorboard`` package is not installed (when the callback is made, before
            anything is written).
    """

    def __init__(self) -> None:
        TensorBoardLogger.writer_class()  # a missing package is refused before anything is written
        self.board: TensorBoardLogger | None = None

    def on_start(self, state: LoopState) -> None:
        self.board = TensorBoardLogger(state.path)

    def on_evaluation(self, state: LoopState, evaluation: Evaluation) -> Stop | None:
        if self.board is not None:
            self.board.scalars(evaluation.row)
        return None

    def on_end(self, state: LoopState, result: TrainResult) -> list[str]:
        if self.board is not None:
            for name, fig in state.figures.items():
                self.board.figure(name, fig, state.step)
            self.board.hparams(state.config.to_dict(), state.last_val)
        return []

    def close(self) -> None:
        if self.board is not None:
            self.board.close()
            self.board = None


class RunReport(Callback):
    """``figures``: ``report.html``, the run on one page (:mod:`texseg.report`), written when it ends (put it
    last: it shows what the others wrote); a failure is a note, not an error."""

    def on_end(self, state: LoopState, result: TrainResult) -> list[str]:
        note = write_report_or_note(state.path)
        return [] if note is None else [note]


def default_callbacks(config: TrainConfig) -> list[Callback]:
    """The callbacks ``config`` asks for, in the order they run: :class:`KeepBest` (``keep_best``),
    :class:`EarlyStopping` (``early_stop``), :class:`Figures` (``figures``), :class:`TensorBoard`
    (``tensorboard``), :class:`RunReport` (``figures``).

    Raises:
        ValueError: ``tensorboard`` without the tensorboard package.
    """
    out: list[Callback] = []
    if config.keep_best:
        out.append(KeepBest())
    if config.early_stop is not None:
        out.append(EarlyStopping(config.early_stop))
    if config.figures:
        out.append(Figures())
    if config.tensorboard:
        out.append(TensorBoard())
    if config.figures:
        out.append(RunReport())
    return out

