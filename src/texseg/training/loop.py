"""The training loop: one function, read top to bottom.

Batches come from the trainer's data source (scenes generated on the fly by default);
the run stops at ``iterations`` and/or ``time_budget`` seconds of training (evaluation
time is measured separately and excluded); the model is evaluated in eval mode on a
fixed held-out set drawn from its own seed about 20 times per run (or every ``eval_every``
steps) and at the end.

Every evaluation is also a checkpoint: ``model.safetensors`` (the deliverable),
``resume.pt`` (see :mod:`texseg.checkpoint`), ``metrics.csv`` and ``summary.json``, each
written atomically, so a run killed at any moment can be loaded, read and resumed from
its last checkpoint. A run exists once ``config.json`` is written, after its first
checkpoint; a folder killed before that is started afresh.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from texseg.checkpoint import (
    RESUME_STATE,
    Counters,
    ResumeState,
    load_resume_state,
    save_model,
    save_resume_state,
)
from texseg.errors import CheckpointError, NonFiniteError, RunDirError
from texseg.evaluation import evaluate, predict_labels
from texseg.models import model_spec
from texseg.plots import run_curves_figure, samples_figure, save_figure
from texseg.signals import catch_stop_signals, stop_point
from texseg.training.config import TrainConfig
from texseg.training.engine import (
    Trainer,
    all_finite,
    build_trainer,
    evaluation_due,
    progress_fraction,
    run_summary,
    scheduled_lr,
    train_step,
    validation_set,
)
from texseg.training.progress import Progress
from texseg.training.rundir import CONFIG, RunDir, RunStatus, default_run_dir, read_status
from texseg.training.tensorboard import TensorBoardLogger

EvalCallback = Callable[[int, float, dict[str, float]], bool]


class StorageError(RunDirError):
    """A run's files could not be written (a full disk, say); the last checkpoint is kept."""


@dataclass
class TrainResult:
    """What :func:`train` returns: where the run is and how it ended."""

    run_dir: Path
    status: RunStatus
    summary: dict[str, Any]


@dataclass
class RunState:
    """A run in progress: counters (saved in checkpoints), status and the latest metrics."""

    counters: Counters
    status: RunStatus = RunStatus.RUNNING
    message: str = ""
    last_val: dict[str, float] = field(default_factory=dict)
    last_eval_fraction: float = 0.0  # the run's progress at its last evaluation (for the cadence)
    lr: float = 0.0
    notes: list[str] = field(default_factory=list)

    def stop(self, status: RunStatus, message: str) -> None:
        self.status, self.message = status, message


def train(
    config: TrainConfig,
    run_dir: str | Path | None = None,
    *,
    progress: bool = True,
    resume: bool = False,
    on_eval: EvalCallback | None = None,
) -> TrainResult:
    """Train a model as ``config`` says and write a run directory.

    Args:
        config: the run's settings (validated here).
        run_dir: output folder; default ``runs/<timestamp>-<model>``. It must not already
            hold a run unless ``resume``.
        progress: show a progress bar (loss, latest val IoU, it/s).
        resume: continue the unfinished run in ``run_dir`` from its last checkpoint
            (use :func:`resume_training` to take the config from the run itself).
        on_eval: called as ``on_eval(step, train_seconds, val_metrics)`` after each
            evaluation; returning True stops the run with status ``pruned``.

    Returns:
        A :class:`TrainResult`; ``status`` is ``completed``, ``diverged`` (non-finite loss,
        gradient or output; the last good weights are kept), ``interrupted`` (SIGINT,
        SIGTERM or SIGHUP; resumable) or ``pruned``.

    Raises:
        ValueError: an invalid config. RunDirError: the folder is in use or holds something
        else. StorageError: a file could not be written (the run is resumable once fixed).
        texseg.signals.Interrupted: a stop signal arrived before the run directory was made.
    """
    with catch_stop_signals() as stop:
        # --- set-up: trainer (device, seeds, model, optimizer, data), held-out set ---------
        t = build_trainer(config)
        val_images, val_targets = validation_set(config, t.device)
        if config.tensorboard:
            TensorBoardLogger.writer_class()  # missing package: refused before anything is written
        stop_point()  # stopped during set-up: nothing has been written
        with RunDir(run_dir or default_run_dir(config.model), resume=resume) as run, ExitStack() as stack:
            board = TensorBoardLogger(run.path) if config.tensorboard else None
            if board is not None:
                stack.callback(board.close)
            state = _restore(run, t) if resume else _start(run, t)
            for note in state.notes:
                print(f"warning: {note}", file=sys.stderr)
            c = state.counters
            bar = Progress(config.iterations or config.time_budget,
                           c.step if config.iterations else c.train_seconds,
                           "it" if config.iterations else "s", enabled=progress)

            # --- loop -------------------------------------------------------------------
            while progress_fraction(config, c.step, c.train_seconds) < 1.0:
                if stop.signal is not None:
                    state.stop(RunStatus.INTERRUPTED, f"stopped by {stop.name} after step {c.step}; resumable")
                    break
                state.lr = scheduled_lr(config, progress_fraction(config, c.step, c.train_seconds))
                step = train_step(t, state.lr)
                if step.problem is not None and not config.skip_nonfinite:
                    state.stop(RunStatus.DIVERGED, _diverged(state, step.problem, c.step + 1))
                    break
                _count(state, step.loss, step.problem, step.seconds, bar)
                bar.update(1 if config.iterations else step.seconds, c.step)

                fraction = progress_fraction(config, c.step, c.train_seconds)
                if evaluation_due(config, c.step, fraction, state.last_eval_fraction):
                    state.last_eval_fraction = fraction
                    # --- evaluate and checkpoint (timed apart from training) -------------
                    if not _evaluate(run, t, state, val_images, val_targets):
                        break
                    if board is not None:
                        board.scalars(run.rows[-1])
                    _checkpoint(run, t, state)
                    bar.set(loss=f"{run.rows[-1]['train_loss']:.4f}", val_iou=f"{state.last_val['iou']:.4f}",
                            it_s=f"{c.step / c.train_seconds:.1f}")
                    if on_eval is not None and on_eval(c.step, c.train_seconds, state.last_val):
                        state.stop(RunStatus.PRUNED, f"stopped by the caller after step {c.step}")
                        break
            bar.close()

            # --- finish: final checkpoint, figures, summary ------------------------------
            if state.status == RunStatus.RUNNING:
                state.status = RunStatus.COMPLETED
            if state.status == RunStatus.DIVERGED:
                run.write_summary(_summary(t, state))  # the weights on disk stay the last good ones
            else:
                _checkpoint(run, t, state)  # an interrupted run keeps the steps since its last evaluation
            if config.figures:
                _write_figures(run, t, state, val_images[:4], val_targets[:4], board)
            if board is not None:
                board.hparams(config.to_dict(), state.last_val)
    return TrainResult(run.path, state.status, _summary(t, state))


def resume_training(run_dir: str | Path, *, progress: bool = True,
                    on_eval: EvalCallback | None = None) -> TrainResult:
    """Continue an interrupted, failed or killed run from its last checkpoint, with its own config.

    An iteration-bounded run on CPU ends exactly as if it had never stopped; a
    time-budgeted run gets the training time it had left.

    Raises:
        RunDirError: ``run_dir`` holds no run, or a finished one.
        CheckpointError: its resume state is missing, unusable or not its own.
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise RunDirError(f"{run_dir} holds no run to resume ({CONFIG} is missing)")
    try:
        config = TrainConfig.from_json_file(run_dir / CONFIG)
    except ValueError as e:
        raise RunDirError(f"cannot resume {run_dir}: {e}") from None
    status = read_status(run_dir)
    if status is not None and status.ended:
        raise RunDirError(f"{run_dir} has already ended (status {status}); nothing to resume")
    return train(config, run_dir, progress=progress, resume=True, on_eval=on_eval)


# ------------------------------------------------------------------------------ helpers
def _start(run: RunDir, t: Trainer) -> RunState:
    """A new run: a loadable, resumable checkpoint of step 0, then ``config.json`` (the run now exists)."""
    state = RunState(Counters(), lr=t.config.lr, notes=_notes(t.config))
    _checkpoint(run, t, state)
    run.write_config(t.config.to_dict())
    return state


def _restore(run: RunDir, t: Trainer) -> RunState:
    """Load the run's resume state into the trainer; metrics.csv goes back to the checkpoint's rows."""
    saved = load_resume_state(run.file(RESUME_STATE), t.config.to_dict())
    try:
        t.model.load_state_dict(saved.model)
        t.optimizer.load_state_dict(saved.optimizer)
        torch.set_rng_state(saved.rng_cpu)
        t.data.set_state(saved.rng_data)
        if saved.rng_cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved.rng_cuda)
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        detail = (str(e).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"cannot resume from {run.file(RESUME_STATE)}: it does not fit this run "
                              f"({type(e).__name__}: {detail})") from None
    run.rows = saved.rows
    if saved.rows:
        run.rewrite_metrics()  # metrics.csv as of the checkpoint, dropping rows written after it
    last = {k[4:]: v for k, v in saved.rows[-1].items() if k.startswith("val_")} if saved.rows else {}
    at = progress_fraction(t.config, int(saved.rows[-1]["step"]), saved.rows[-1]["train_seconds"]) \
        if saved.rows else 0.0
    return RunState(saved.counters, last_val=last, last_eval_fraction=at, lr=t.config.lr, notes=_notes(t.config))


def _notes(config: TrainConfig) -> list[str]:
    """Caveats a reader of the run must know (the notebook model's eval-mode problem)."""
    warning = model_spec(config.model).warning
    return [f"model {config.model!r}: {warning}"] if warning else []


def _count(state: RunState, loss: float, problem: str | None, seconds: float, bar: Progress) -> None:
    """Account for one step taken (or skipped because it was not finite)."""
    c = state.counters
    c.step, c.train_seconds = c.step + 1, c.train_seconds + seconds
    if problem is None:
        c.window_loss, c.window_steps = c.window_loss + loss, c.window_steps + 1
    else:
        c.skipped_steps += 1
        bar.write(f"warning: skipped step {c.step}: {problem}")


def _diverged(state: RunState, problem: str, step: int) -> str:
    return f"{problem} at step {step} (lr {state.lr:.3g}); kept the weights of step {state.counters.saved_step}"


def _evaluate(run: RunDir, t: Trainer, state: RunState, images: torch.Tensor, targets: torch.Tensor) -> bool:
    """Score the held-out set and append a metrics row; False (and status diverged) if the model broke."""
    c = state.counters
    start = time.perf_counter()
    if not all_finite(t.model):  # a finite step can still overflow the weights
        state.stop(RunStatus.DIVERGED, _diverged(state, "weights became non-finite", c.step))
        return False
    try:
        state.last_val = evaluate(t.model, images, targets, t.num_regions, loss_fn=t.loss_fn)
    except NonFiniteError:
        state.stop(RunStatus.DIVERGED, _diverged(state, "the model's outputs became NaN", c.step))
        return False
    run.append_metrics({
        "step": c.step, "train_seconds": c.train_seconds, "lr": state.lr,
        "train_loss": c.window_loss / c.window_steps if c.window_steps else float("nan"),
        **{f"val_{name}": v for name, v in state.last_val.items()},
    })
    c.window_loss, c.window_steps = 0.0, 0
    c.eval_seconds += time.perf_counter() - start
    return True


def _summary(t: Trainer, state: RunState) -> dict[str, Any]:
    return run_summary(t, state.counters, state.status, state.message, state.last_val, state.notes)


def _checkpoint(run: RunDir, t: Trainer, state: RunState) -> None:
    """Save weights, resume state and summary; on a write failure record it and raise StorageError."""
    c = state.counters
    previous = c.saved_step
    c.saved_step = c.step
    try:
        save_model(t.model, run.path, name=t.config.model,
                   kwargs={**t.config.model_kwargs, "num_classes": t.config.model_num_classes},
                   num_regions=t.num_regions, scene=t.config.scene().to_dict())
        save_resume_state(run.file(RESUME_STATE), ResumeState(
            model=t.model.state_dict(), optimizer=t.optimizer.state_dict(), rng_cpu=torch.get_rng_state(),
            rng_data=t.data.get_state(),
            rng_cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            counters=c, rows=run.rows, config=t.config.to_dict()))
        run.write_summary(_summary(t, state))
    except OSError as e:
        c.saved_step = previous
        why = f"{e.strerror or e} while writing {e.filename}" if e.filename else str(e.strerror or e)
        state.stop(RunStatus.FAILED, f"{why}; stopped after step {c.step}, the last complete checkpoint "
                                     f"(step {previous}) is kept; resumable once the problem is fixed")
        run.write_summary_best_effort(_summary(t, state))
        raise StorageError(f"{run.path}: {state.message}") from None


def _write_figures(run: RunDir, t: Trainer, state: RunState, images: torch.Tensor, targets: torch.Tensor,
                   board: TensorBoardLogger | None = None) -> None:
    """samples.png (input | truth | eval-mode prediction) and curves.png; a failure is a note, not an error."""
    if not run.rows:
        return
    try:
        # No prediction panel from diverged weights: they are not what is saved.
        if state.status != RunStatus.DIVERGED:
            t.model.eval()
            with torch.no_grad():
                pred = predict_labels(t.model(images))
            t.model.train()
            truth = targets if t.num_regions > 2 else targets.long()
            fig = samples_figure(images.cpu(), truth.cpu(), pred.cpu(), num_regions=t.num_regions,
                                 suptitle=f"{t.config.model}: validation samples (eval mode)")
            save_figure(fig, run.file("samples.png"))
            if board is not None:
                board.figure("samples", fig, state.counters.step)
        save_figure(run_curves_figure(run.rows, t.config.model), run.file("curves.png"))
    except OSError as e:  # the run itself is saved; its pictures are a convenience
        note = f"figures not written: {e.strerror or e}" + (f": {e.filename}" if e.filename else "")
        print(f"warning: {note}", file=sys.stderr)
        state.notes.append(note)
        run.write_summary_best_effort(_summary(t, state))
