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
from contextlib import ExitStack, nullcontext
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
from texseg.errors import CheckpointError, DataError, ImageReadError, NonFiniteError, RunDirError
from texseg.evaluation import evaluate, predict_labels
from texseg.io import read_json
from texseg.models import model_spec
from texseg.plots import run_curves_figure, samples_figure, save_figure
from texseg.signals import StopFlag, catch_stop_signals, stop_point
from texseg.training import distributed
from texseg.training.config import TrainConfig
from texseg.training.defaults import pin_config, sync_interval
from texseg.training.engine import (
    StepTally,
    Trainer,
    Window,
    all_finite,
    build_trainer,
    checkpoint_due,
    cpu_share,
    evaluation_affordable,
    evaluation_due,
    expected_evaluation_seconds,
    interim_images,
    progress_fraction,
    run_summary,
    scheduled_lr,
    train_step,
    validation_set,
)
from texseg.training.progress import Progress
from texseg.training.report import write_report_or_note
from texseg.training.rundir import BEST, CONFIG, RunDir, RunStatus, default_run_dir, read_status
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
    # CPU and wall time of the training windows of this process (not saved: a resumed run measures anew)
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    overhead_seconds: float = 0.0  # evaluating and checkpointing in this process (for the evaluation budget)
    eval_per_image: float | None = None  # what the last evaluation and checkpoint took per held-out image
    checkpointed_at: float | None = None  # perf_counter of this process's last interim checkpoint

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
        # --- set-up: trainer (device, seeds, model, optimizer, data, ranks), held-out set --
        t = build_trainer(config)
        try:
            result = _run(t, run_dir, stop, progress=progress, resume=resume, on_eval=on_eval)
        finally:
            distributed.close(t.dist)
    return result


def _run(t: Trainer, run_dir: str | Path | None, stop: StopFlag, *, progress: bool, resume: bool,
         on_eval: EvalCallback | None) -> TrainResult:
    """The body of :func:`train` once the trainer exists; rank 0 alone writes the run directory."""
    config, main = t.config, t.dist.is_main
    val_images, val_targets = validation_set(config, t.device) if main else (None, None)
    if config.tensorboard:
        TensorBoardLogger.writer_class()  # missing package: refused before anything is written
    stop_point()  # stopped during set-up: nothing has been written
    path = Path(run_dir) if run_dir is not None else default_run_dir(config.model)
    with (RunDir(path, resume=resume) if main else nullcontext()) as run, ExitStack() as stack:
        board = TensorBoardLogger(run.path) if config.tensorboard and main else None
        if board is not None:
            stack.callback(board.close)
        state = _restore(run, t) if resume else _start(run, t)
        state.checkpointed_at = time.perf_counter()  # the start's checkpoint (or the one resumed from)
        for note in state.notes if main else []:
            print(f"warning: {note}", file=sys.stderr)
        c = state.counters
        bar = Progress(config.iterations or config.time_budget, c.step if config.iterations else c.train_seconds,
                       "it" if config.iterations else "s", enabled=progress and main)

        # --- loop: steps are queued on the device and read back every few (see StepTally) --
        tally, every = StepTally(t.device), sync_interval(t.profile, config, None)
        while progress_fraction(config, c.step, c.train_seconds) < 1.0:
            if not t.dist.active and stop.signal is not None:  # ranks agree on a stop when they read
                if tally.steps and not _read_and_count(t, tally, stop, state, bar):
                    break
                state.stop(RunStatus.INTERRUPTED, f"stopped by {stop.name} after step {c.step}; resumable")
                break
            state.lr = scheduled_lr(config, _ahead(t, tally, state), t.lr_factor)
            try:
                queued = train_step(t, state.lr, guard=config.skip_nonfinite)
            except (ImageReadError, DataError) as e:  # a data file broke after it was checked
                bar.close()
                _data_failure(run, t, state, e, c.step + tally.steps + 1)
            tally.add(queued, c.step + tally.steps + 1)
            if not _read_due(t, tally, every, state, stop):
                continue
            if not _read_and_count(t, tally, stop, state, bar):
                break
            every = sync_interval(t.profile, config, c.train_seconds / max(c.step, 1))

            fraction = progress_fraction(config, c.step, c.train_seconds)
            n = interim_images(config, config.val_size, fraction >= 1.0)
            # This evaluation, plus the full one the end will need: the share covers both (issue 20).
            expected = expected_evaluation_seconds(n + config.val_size, state.eval_per_image,
                                                   state.wall_seconds / max(c.step, 1), config.batch_size)
            if evaluation_due(config, c.step, fraction, state.last_eval_fraction) and (
                    fraction >= 1.0 or t.dist.active  # ranks decide alike: on steps alone
                    or evaluation_affordable(config, state.overhead_seconds, state.wall_seconds, expected)):
                state.last_eval_fraction = fraction
                # --- evaluate and checkpoint (rank 0; timed apart from training) ---------
                started = time.perf_counter()
                verdict = _evaluate_and_checkpoint(run, t, state, val_images[:n] if main else None,
                                                   val_targets[:n] if main else None, board, on_eval)
                state.overhead_seconds += time.perf_counter() - started
                state.eval_per_image = (time.perf_counter() - started) / n
                if verdict is not None:
                    state.stop(*verdict)
                    break
                if main:
                    bar.set(loss=f"{run.rows[-1]['train_loss']:.4f}", val_iou=f"{state.last_val['iou']:.4f}",
                            it_s=f"{c.step / c.train_seconds:.1f}")
                tally.restart_clock()  # evaluation time is not training time
        bar.close()

        # --- finish: final checkpoint, figures, summary ----------------------------------
        if state.status == RunStatus.RUNNING:
            state.status = RunStatus.COMPLETED
        if state.status == RunStatus.DIVERGED:
            if main:
                run.write_summary(_summary(t, state))  # the weights on disk stay the last good ones
        else:
            _checkpoint(run, t, state)  # an interrupted run keeps the steps since its last evaluation
        if config.figures and main:
            _write_figures(run, t, state, val_images[:4], val_targets[:4], board)
        if board is not None:
            board.hparams(config.to_dict(), state.last_val)
        if main and state.status in (RunStatus.COMPLETED, RunStatus.PRUNED):
            run.file(RESUME_STATE).unlink(missing_ok=True)  # ended for good: nothing to resume, MBs saved
        if config.figures and main:
            _write_report(run, t, state)
    return TrainResult(path, state.status, _summary(t, state))


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
def _start(run: RunDir | None, t: Trainer) -> RunState:
    """A new run: a loadable, resumable checkpoint of step 0, then ``config.json`` (the run now exists)."""
    state = RunState(Counters(), lr=t.config.lr, notes=_notes(t))
    _checkpoint(run, t, state)
    if run is not None:
        run.write_config(t.config.to_dict())
    return state


def _restore(run: RunDir | None, t: Trainer) -> RunState:
    """Load the run's resume state (rank 0 reads it, every rank gets it); metrics.csv back to its rows."""
    saved = load_resume_state(run.file(RESUME_STATE), _saved_config(run, t)) if run is not None else None
    saved = t.dist.broadcast(saved)
    if saved.world_size != t.dist.world_size:
        raise CheckpointError(f"this run was trained on {saved.world_size} rank(s); resume it with as many "
                              f"(here: {t.dist.world_size}), so that every scene stream continues")
    try:
        t.module.load_state_dict(saved.model)
        t.optimizer.load_state_dict(saved.optimizer)
        torch.set_rng_state(saved.rng_cpu)
        t.data.set_state(saved.rng_data.chunk(t.dist.world_size)[t.dist.rank])
        if saved.rng_cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved.rng_cuda)
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        detail = (str(e).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"cannot resume from {RESUME_STATE}: it does not fit this run "
                              f"({type(e).__name__}: {detail})") from None
    if run is not None:
        run.rows = saved.rows
        if saved.rows:
            run.rewrite_metrics()  # metrics.csv as of the checkpoint, dropping rows written after it
    last = {k[4:]: v for k, v in saved.rows[-1].items() if k.startswith("val_")} if saved.rows else {}
    at = progress_fraction(t.config, int(saved.rows[-1]["step"]), saved.rows[-1]["train_seconds"]) \
        if saved.rows else 0.0
    return RunState(saved.counters, last_val=last, last_eval_fraction=at, lr=t.config.lr, notes=_notes(t))


def _saved_config(run: RunDir, t: Trainer) -> dict[str, Any]:
    """The configuration the run's resume state must hold: this run's, or, for a run begun before
    config.json pinned what the machine decided (``precision: auto`` ...), its config.json as
    written, where pinning that here gives this run's configuration."""
    ours = t.config.to_dict()
    try:
        written = read_json(run.file(CONFIG))
        if written != ours and pin_config(TrainConfig.from_dict(written), t.device) == t.config:
            return written
    except ValueError:
        pass  # unreadable or foreign: the resume state is checked against this run's own configuration
    return ours


def _notes(t: Trainer) -> list[str]:
    """Caveats a reader of the run must know: the notebook model's eval-mode problem, scoring on training
    data, and what of a pinned config this machine runs differently."""
    config = t.config
    warning = model_spec(config.model).warning
    notes = [f"model {config.model!r}: {warning}"] if warning else []
    if config.data is not None and config.val_data is not None and Path(config.val_data).resolve() == \
            Path(config.data).resolve():
        notes.append("the held-out folder val_data is the training folder data itself: validation scores are "
                     "measured on training images and say nothing about new ones")
    return notes + list(t.notes)


def _read_due(t: Trainer, tally: StepTally, every: int, state: RunState, stop: StopFlag) -> bool:
    """Whether to read the queued steps now: every ``every`` steps, at the run's last step and
    at evaluation steps; in one process also whenever the host's clock (which the device can
    only be behind) says the budget or an evaluation may be reached, or a stop signal arrived.
    Ranks of a distributed run decide from step counts alone, so they all read at the same step."""
    config, c = t.config, state.counters
    step = c.step + tally.steps
    if tally.steps >= every or (config.iterations and step >= config.iterations) or \
            (config.eval_every and step % config.eval_every == 0):
        return True
    if t.dist.active:
        return False
    ahead = _ahead(t, tally, state)
    return stop.signal is not None or ahead >= 1.0 or evaluation_due(config, step, ahead, state.last_eval_fraction)


def _ahead(t: Trainer, tally: StepTally, state: RunState) -> float:
    """The run's progress including the queued steps; the host's clock counts in one process only
    (ranks must agree on everything that depends on progress, the learning rate first)."""
    c = state.counters
    seconds = c.train_seconds if t.dist.active else c.train_seconds + tally.elapsed()
    return progress_fraction(t.config, c.step + tally.steps, seconds)


def _read(t: Trainer, tally: StepTally, stop: StopFlag, steps_before: int) -> tuple[Window, str | None]:
    """Read the queued steps (one synchronisation); in a distributed run the ranks agree on the
    window's time (their mean: one clock for the budget), loss, non-finite steps and stop."""
    window = tally.read()
    if not t.dist.active:
        return window, None
    w = t.dist.world_size
    seconds, loss_sum, finite, bad, stopped = t.dist.sum(
        [window.seconds, window.loss_sum, window.finite_steps, float(window.first_bad > 0),
         float(stop.signal is not None)])
    problem = window.problem or ("a value became non-finite on another rank" if bad else None)
    # A rank that saw nothing wrong names the window's last step (the other rank's first bad one is <= it).
    agreed = Window(window.steps, seconds / w, window.cpu_seconds, loss_sum / w, round(finite / w),
                    window.first_bad or (steps_before + window.steps if bad else 0), problem)
    return agreed, (stop.name or "a signal to another rank") if stopped else None


def _read_and_count(t: Trainer, tally: StepTally, stop: StopFlag, state: RunState, bar: Progress) -> bool:
    """Read the queued steps and account for them; False when the run must end (diverged, or a
    stop agreed by the ranks of a distributed run)."""
    window, stopped = _read(t, tally, stop, state.counters.step)
    if window.problem is not None and not t.config.skip_nonfinite:
        state.stop(RunStatus.DIVERGED, _diverged(state, window.problem, window.first_bad))
        return False
    c = state.counters
    first = c.step + 1
    c.step, c.train_seconds = c.step + window.steps, c.train_seconds + window.seconds
    state.cpu_seconds, state.wall_seconds = state.cpu_seconds + window.cpu_seconds, state.wall_seconds + window.seconds
    c.window_loss, c.window_steps = c.window_loss + window.loss_sum, c.window_steps + window.finite_steps
    if window.problem is not None:  # skip_nonfinite: those steps were not applied
        c.skipped_steps += window.steps - window.finite_steps
        bar.write(f"warning: skipped step {window.first_bad or first}: {window.problem}")
    bar.update(window.steps if bar.unit == "it" else window.seconds, c.step)
    if stopped is not None:
        state.stop(RunStatus.INTERRUPTED, f"stopped by {stopped} after step {c.step}; resumable")
        return False
    return True


def _diverged(state: RunState, problem: str, step: int) -> str:
    return f"{problem} at step {step} (lr {state.lr:.3g}); kept the weights of step {state.counters.saved_step}"


def _evaluate_and_checkpoint(run: RunDir | None, t: Trainer, state: RunState, images: torch.Tensor | None,
                             targets: torch.Tensor | None, board: TensorBoardLogger | None,
                             on_eval: EvalCallback | None) -> tuple[RunStatus, str] | None:
    """Rank 0 evaluates and saves a checkpoint; every rank gets its verdict (None: carry on)."""
    data_states = t.dist.gather(t.data.get_state())  # every rank's stream position, for the checkpoint
    verdict = None
    if run is not None:
        if not _evaluate(run, t, state, images, targets):
            verdict = (state.status, state.message)
        else:
            if board is not None:
                board.scalars(run.rows[-1])
            if checkpoint_due(t.config, None if state.checkpointed_at is None
                              else time.perf_counter() - state.checkpointed_at):
                _checkpoint(run, t, state, data_states)
                state.checkpointed_at = time.perf_counter()
            c = state.counters
            if on_eval is not None and on_eval(c.step, c.train_seconds, state.last_val):
                verdict = (RunStatus.PRUNED, f"stopped by the caller after step {c.step}")
            elif t.config.early_stop is not None and c.stale_evals >= t.config.early_stop:
                verdict = (RunStatus.COMPLETED, f"stopped early after step {c.step}: no better held-out IoU in "
                                                f"{c.stale_evals} evaluations (best {c.best_iou:.4f} at step "
                                                f"{c.best_step})")
    return t.dist.broadcast(verdict)


def _evaluate(run: RunDir, t: Trainer, state: RunState, images: torch.Tensor, targets: torch.Tensor) -> bool:
    """Score the held-out set and append a metrics row; False (and status diverged) if the model broke."""
    c = state.counters
    start = time.perf_counter()
    if not all_finite(t.module):  # a finite step can still overflow the weights
        state.stop(RunStatus.DIVERGED, _diverged(state, "weights became non-finite", c.step))
        return False
    try:
        state.last_val = evaluate(t.module, images, targets, t.num_regions, batch_size=t.profile.eval_batch,
                                  loss_fn=t.loss_fn, matching=t.matching)
    except NonFiniteError:
        state.stop(RunStatus.DIVERGED, _diverged(state, "the model's outputs became NaN", c.step))
        return False
    run.append_metrics({
        "step": c.step, "train_seconds": c.train_seconds, "lr": state.lr,
        "train_loss": c.window_loss / c.window_steps if c.window_steps else float("nan"),
        **{f"val_{name}": v for name, v in state.last_val.items()},
    })
    c.window_loss, c.window_steps = 0.0, 0
    if state.last_val["iou"] > c.best_iou or c.best_step == 0:
        c.best_iou, c.best_step, c.stale_evals = state.last_val["iou"], c.step, 0
        if t.config.keep_best:
            run.file(BEST).mkdir(exist_ok=True)
            save_model(t.module, run.file(BEST), name=t.config.model, kwargs=_model_kwargs(t),
                       num_regions=t.num_regions, scene=t.config.scene().to_dict())
    else:
        c.stale_evals += 1
    c.eval_seconds += time.perf_counter() - start
    return True


def _model_kwargs(t: Trainer) -> dict[str, Any]:
    return t.config.model_init_kwargs


def _summary(t: Trainer, state: RunState) -> dict[str, Any]:
    share = cpu_share(state.cpu_seconds, state.wall_seconds, torch.get_num_threads())
    return run_summary(t, state.counters, state.status, state.message, state.last_val, state.notes, share)


def _checkpoint(run: RunDir | None, t: Trainer, state: RunState, data_states: list[torch.Tensor] | None = None) -> None:
    """Save weights, resume state and summary (rank 0); on a write failure record it and raise StorageError.

    A collective in a distributed run: every rank calls it (its data stream's position is saved too).
    """
    if data_states is None:
        data_states = t.dist.gather(t.data.get_state())
    c = state.counters
    previous = c.saved_step
    c.saved_step = c.step
    if run is None:
        return
    try:
        save_model(t.module, run.path, name=t.config.model, kwargs=_model_kwargs(t), num_regions=t.num_regions,
                   scene=t.config.scene().to_dict())
        save_resume_state(run.file(RESUME_STATE), ResumeState(
            model=t.module.state_dict(), optimizer=t.optimizer.state_dict(), rng_cpu=torch.get_rng_state(),
            rng_data=torch.cat(data_states), world_size=t.dist.world_size,
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


def _data_failure(run: RunDir | None, t: Trainer, state: RunState, error: Exception, step: int) -> None:
    """A training file that could not be read mid-run: the run ends ``failed`` at ``step``, resumable, like a full disk.

    Raises:
        DataError: naming the run, the file and the step (one line).
    """
    c = state.counters
    why = str(error).splitlines()[0] if str(error) else type(error).__name__
    state.stop(RunStatus.FAILED, f"{why}; stopped at step {step}, the last complete checkpoint (step "
                                 f"{c.saved_step}) is kept; resumable once the file is fixed")
    if run is None:
        raise DataError(state.message) from None
    run.write_summary_best_effort(_summary(t, state))
    raise DataError(f"{run.path}: {state.message}") from None


def _write_figures(run: RunDir, t: Trainer, state: RunState, images: torch.Tensor, targets: torch.Tensor,
                   board: TensorBoardLogger | None = None) -> None:
    """samples.png (input | truth | eval-mode prediction) and curves.png; a failure is a note, not an error."""
    if not run.rows:
        return
    try:
        # No prediction panel from diverged weights: they are not what is saved.
        if state.status != RunStatus.DIVERGED:
            t.module.eval()
            with torch.no_grad():
                pred = predict_labels(t.module(images))
            t.module.train()
            truth = targets if t.num_regions > 2 else targets.long()
            fig = samples_figure(images.cpu(), truth.cpu(), pred.cpu(), num_regions=t.num_regions,
                                 suptitle=f"{t.config.model}: validation samples (eval mode)",
                                 masks=t.num_regions == 2)
            save_figure(fig, run.file("samples.png"))
            if board is not None:
                board.figure("samples", fig, state.counters.step)
        save_figure(run_curves_figure(run.rows, t.config.model), run.file("curves.png"))
    except OSError as e:  # the run itself is saved; its pictures are a convenience
        note = f"figures not written: {e.strerror or e}" + (f": {e.filename}" if e.filename else "")
        print(f"warning: {note}", file=sys.stderr)
        state.notes.append(note)
        run.write_summary_best_effort(_summary(t, state))


def _write_report(run: RunDir, t: Trainer, state: RunState) -> None:
    """report.html, written last (it shows the finished run); a failure is a note, not an error."""
    note = write_report_or_note(run.path)
    if note is not None:
        print(f"warning: {note}", file=sys.stderr)
        state.notes.append(note)
        run.write_summary_best_effort(_summary(t, state))
