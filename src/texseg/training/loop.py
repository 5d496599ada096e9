"""The training loop: one function, read top to bottom.

Batches come from the trainer's data source (scenes generated on the fly by default);
the run stops at ``iterations`` and/or ``time_budget`` seconds of training (evaluation
time is measured separately and excluded); the model is evaluated in eval mode on a
fixed held-out set drawn from its own seed about ``evals`` (20) times per run (or every ``eval_every``
steps) and at the end.

Every evaluation is also a checkpoint: ``model.safetensors`` (the deliverable),
``resume.pt`` (see :mod:`texseg.checkpoint`), ``metrics.csv`` and ``summary.json``, each
written atomically, so a run killed at any moment can be loaded, read and resumed from
its last checkpoint. A run exists once ``config.json`` is written, after its first
checkpoint; a folder killed before that is started afresh.

The loop writes nothing else: figures, ``report.html``, TensorBoard events, the best
weights, early stopping and a search's pruning are callbacks (:mod:`texseg.training.callbacks`),
told of the run's start, each evaluation and its end through one :class:`LoopState`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import Any

import torch

from texseg.checkpoint import RESUME_STATE, ResumeState, load_resume_state, save_resume_state
from texseg.errors import CheckpointError, DataError, ImageReadError, NonFiniteError, RunDirError
from texseg.evaluation import evaluate
from texseg.io import read_json
from texseg.models import model_spec
from texseg.signals import StopFlag, catch_stop_signals, stop_point
from texseg.threads import thread_changes_note
from texseg.training import distributed
from texseg.training.callbacks import Callback, EvalCallback, EvalHook, default_callbacks
from texseg.training.config import TrainConfig
from texseg.training.defaults import pin_config, sync_interval
from texseg.training.engine import (
    StepTally,
    Trainer,
    Window,
    all_finite,
    build_trainer,
    checkpoint_due,
    evaluation_affordable,
    evaluation_due,
    expected_evaluation_seconds,
    interim_images,
    progress_fraction,
    scheduled_lr,
    train_step,
    validation_set,
)
from texseg.training.progress import Progress
from texseg.training.rundir import CONFIG, RunDir, RunStatus, default_run_dir, read_status
from texseg.training.state import Evaluation, LoopState, Stop, TrainResult

__all__ = ["EvalCallback", "LoopState", "StorageError", "TrainResult", "resume_training", "train"]


class StorageError(RunDirError):
    """A run's files could not be written (a full disk, say); the last checkpoint is kept."""


def train(
    config: TrainConfig,
    run_dir: str | Path | None = None,
    callbacks: Sequence[Callback] | None = None,
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
        callbacks: what the run writes or decides besides its checkpoint, ``metrics.csv`` and
            ``summary.json`` (:mod:`texseg.training.callbacks`); default
            :func:`~texseg.training.callbacks.default_callbacks` of the config; ``[]``: nothing else.
        progress: show a progress bar (loss, latest val IoU, it/s).
        resume: continue the unfinished run in ``run_dir`` from its last checkpoint
            (use :func:`resume_training` to take the config from the run itself).
        on_eval: called as ``on_eval(step, train_seconds, val_metrics)`` after each
            evaluation; returning True stops the run with status ``pruned`` (run before ``callbacks``;
            a shorthand for :class:`~texseg.training.callbacks.EvalHook`).

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
        # --- set-up: trainer (device, seeds, model, optimizer, data, ranks), callbacks -----
        t = build_trainer(config)
        try:
            chosen = default_callbacks(t.config) if callbacks is None else list(callbacks)
            hooks = ([EvalHook(on_eval)] if on_eval is not None else []) + chosen
            result = _run(t, run_dir, stop, hooks, progress=progress, resume=resume)
        finally:
            distributed.close(t.dist)
    return result


def _run(t: Trainer, run_dir: str | Path | None, stop: StopFlag, callbacks: list[Callback], *, progress: bool,
         resume: bool) -> TrainResult:
    """The body of :func:`train` once the trainer exists; rank 0 alone writes the run directory and
    calls the callbacks."""
    config, main = t.config, t.dist.is_main
    val_images, val_targets = validation_set(config, t.device) if main else (None, None)
    stop_point()  # stopped during set-up: nothing has been written
    path = Path(run_dir) if run_dir is not None else default_run_dir(config.model)
    hooks = callbacks if main else []
    with (RunDir(path, resume=resume) if main else nullcontext()) as run, ExitStack() as stack:
        # --- start: a new run's first checkpoint and config.json, or a resumed run restored --
        for hook in reversed(hooks):
            stack.callback(hook.close)
        state = LoopState(t, path, run, val_images, val_targets, lr=config.lr, notes=_notes(t))
        if resume:
            _restore(state)
        else:
            _start(state)
        state.timings.checkpointed_at = time.perf_counter()  # the start's checkpoint (or the one resumed from)
        for note in state.notes if main else []:
            print(f"warning: {note}", file=sys.stderr)
        for hook in hooks:
            hook.on_start(state)
        c = state.counters
        bar = Progress(config.iterations or config.time_budget, c.step if config.iterations else c.train_seconds,
                       "it" if config.iterations else "s", enabled=progress and main)
        # --- train, evaluating and checkpointing as the cadence says -----------------------
        _loop(state, stop, hooks, bar)
        bar.close()
        # --- finish: final checkpoint and summary, then the callbacks' outputs ------------
        return _finish(state, hooks)


def _loop(state: LoopState, stop: StopFlag, hooks: list[Callback], bar: Progress) -> None:
    """Train until the budget is spent or the run must stop (``state.status`` then says why)."""
    t, config, c = state.trainer, state.config, state.counters
    # Steps are queued on the device and read back every few (see StepTally).
    tally, every = StepTally(t.device), sync_interval(t.profile, config, None)
    while progress_fraction(config, c.step, c.train_seconds) < 1.0:
        if not t.dist.active and stop.signal is not None:  # ranks agree on a stop when they read
            if tally.steps and not _read_and_count(state, tally, stop, bar):
                break
            state.stop(RunStatus.INTERRUPTED, f"stopped by {stop.name} after step {c.step}; resumable")
            break
        # --- one step (not waited for) --------------------------------------------------
        state.lr = scheduled_lr(config, _ahead(state, tally), t.lr_factor)
        try:
            queued = train_step(t, state.lr, guard=config.skip_nonfinite)
        except (ImageReadError, DataError) as e:  # a data file broke after it was checked
            bar.close()
            _data_failure(state, e, c.step + tally.steps + 1)
        tally.add(queued, c.step + tally.steps + 1)
        # --- read the queued steps back when due ------------------------------------------
        if not _read_due(state, tally, every, stop):
            continue
        if not _read_and_count(state, tally, stop, bar):
            break
        every = sync_interval(t.profile, config, c.train_seconds / max(c.step, 1))
        # --- evaluate and checkpoint (rank 0; timed apart from training) ---------------------
        n = _evaluation_images(state)
        if not n:
            continue
        started = time.perf_counter()
        verdict = _evaluate_and_checkpoint(state, n, hooks)
        state.timings.add_evaluation(time.perf_counter() - started, n)
        if verdict is not None:
            state.stop(*verdict)
            break
        if state.run is not None:
            bar.set(loss=f"{state.history[-1]['train_loss']:.4f}", val_iou=f"{state.last_val['iou']:.4f}",
                    it_s=f"{c.step / c.train_seconds:.1f}")
        tally.restart_clock()  # evaluation time is not training time


def _finish(state: LoopState, hooks: list[Callback]) -> TrainResult:
    """The final checkpoint (or, diverged, the summary alone), then each callback's ``on_end``."""
    run = state.run
    if state.status == RunStatus.RUNNING:
        state.status = RunStatus.COMPLETED
    if state.timings.thread_changes:
        state.notes.append(thread_changes_note(state.config.threads, state.timings.thread_changes))
    if state.status == RunStatus.DIVERGED:
        if run is not None:
            run.write_summary(state.summary())  # the weights on disk stay the last good ones
    else:
        _checkpoint(state)  # an interrupted run keeps the steps since its last evaluation
    if run is not None and state.status in (RunStatus.COMPLETED, RunStatus.PRUNED):
        run.file(RESUME_STATE).unlink(missing_ok=True)  # ended for good: nothing to resume, MBs saved
    for hook in hooks:
        notes = hook.on_end(state, state.result())
        for note in notes:
            print(f"warning: {note}", file=sys.stderr)
        if notes and run is not None:
            state.notes.extend(notes)
            run.write_summary_best_effort(state.summary())
    return state.result()


def resume_training(run_dir: str | Path, callbacks: Sequence[Callback] | None = None, *, progress: bool = True,
                    on_eval: EvalCallback | None = None) -> TrainResult:
    """Continue an interrupted, failed or killed run from its last checkpoint, with its own config.

    An iteration-bounded run on CPU ends exactly as if it had never stopped; a
    time-budgeted run gets the training time it had left.

    Args:
        run_dir: the run.
        callbacks: as for :func:`train` (default: those its config asks for).
        progress: show a progress bar.
        on_eval: as for :func:`train`.

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
    return train(config, run_dir, callbacks, progress=progress, resume=True, on_eval=on_eval)


# ------------------------------------------------------------------------------ helpers
def _start(state: LoopState) -> None:
    """A new run: a loadable, resumable checkpoint of step 0, then ``config.json`` (the run now exists)."""
    _checkpoint(state)
    if state.run is not None:
        state.run.write_config(state.config.to_dict())


def _restore(state: LoopState) -> None:
    """Load the run's resume state (rank 0 reads it, every rank gets it); metrics.csv back to its rows."""
    t, run = state.trainer, state.run
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
    state.counters = saved.counters
    if saved.rows:
        last = saved.rows[-1]
        state.last_val = {k[4:]: v for k, v in last.items() if k.startswith("val_")}
        state.last_eval_fraction = progress_fraction(t.config, int(last["step"]), last["train_seconds"])


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


def _read_due(state: LoopState, tally: StepTally, every: int, stop: StopFlag) -> bool:
    """Whether to read the queued steps now: every ``every`` steps, at the run's last step and
    at evaluation steps; in one process also whenever the host's clock (which the device can
    only be behind) says the budget or an evaluation may be reached, or a stop signal arrived.
    Ranks of a distributed run decide from step counts alone, so they all read at the same step."""
    t, config, c = state.trainer, state.config, state.counters
    step = c.step + tally.steps
    if tally.steps >= every or (config.iterations and step >= config.iterations) or \
            (config.eval_every and step % config.eval_every == 0):
        return True
    if t.dist.active:
        return False
    ahead = _ahead(state, tally)
    return stop.signal is not None or ahead >= 1.0 or evaluation_due(config, step, ahead, state.last_eval_fraction)


def _ahead(state: LoopState, tally: StepTally) -> float:
    """The run's progress including the queued steps; the host's clock counts in one process only
    (ranks must agree on everything that depends on progress, the learning rate first)."""
    c = state.counters
    seconds = c.train_seconds if state.trainer.dist.active else c.train_seconds + tally.elapsed()
    return progress_fraction(state.config, c.step + tally.steps, seconds)


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


def _read_and_count(state: LoopState, tally: StepTally, stop: StopFlag, bar: Progress) -> bool:
    """Read the queued steps and account for them; False when the run must end (diverged, or a
    stop agreed by the ranks of a distributed run)."""
    window, stopped = _read(state.trainer, tally, stop, state.counters.step)
    if window.problem is not None and not state.config.skip_nonfinite:
        state.stop(RunStatus.DIVERGED, _diverged(state, window.problem, window.first_bad))
        return False
    c, tm = state.counters, state.timings
    first = c.step + 1
    c.step, c.train_seconds = c.step + window.steps, c.train_seconds + window.seconds
    tm.cpu_seconds, tm.wall_seconds = tm.cpu_seconds + window.cpu_seconds, tm.wall_seconds + window.seconds
    tm.thread_seconds += window.seconds * torch.get_num_threads()
    governor = state.trainer.governor
    if governor is not None and governor.observe(window.cpu_seconds, window.seconds, window.steps):
        tm.thread_changes.append((c.step, torch.get_num_threads()))
    c.window_loss, c.window_steps = c.window_loss + window.loss_sum, c.window_steps + window.finite_steps
    if window.problem is not None:  # skip_nonfinite: those steps were not applied
        c.skipped_steps += window.steps - window.finite_steps
        bar.write(f"warning: skipped step {window.first_bad or first}: {window.problem}")
    bar.update(window.steps if bar.unit == "it" else window.seconds, c.step)
    if stopped is not None:
        state.stop(RunStatus.INTERRUPTED, f"stopped by {stopped} after step {c.step}; resumable")
        return False
    return True


def _diverged(state: LoopState, problem: str, step: int) -> str:
    return f"{problem} at step {step} (lr {state.lr:.3g}); kept the weights of step {state.counters.saved_step}"


def _evaluation_images(state: LoopState) -> int:
    """Held-out images to score now (0: no evaluation yet): when one is due by the cadence and, in one process
    before the end, affordable (ranks decide alike: on steps alone)."""
    t, config, c, tm = state.trainer, state.config, state.counters, state.timings
    fraction = progress_fraction(config, c.step, c.train_seconds)
    n = interim_images(config, config.val_size, fraction >= 1.0)
    if not evaluation_due(config, c.step, fraction, state.last_eval_fraction):
        return 0
    # This evaluation, plus the full one the end will need: the share covers both (issue 20).
    expected = expected_evaluation_seconds(n + config.val_size, tm.eval_per_image, tm.wall_seconds / max(c.step, 1),
                                           config.batch_size)
    if not (fraction >= 1.0 or t.dist.active
            or evaluation_affordable(config, tm.overhead_seconds, tm.wall_seconds, expected)):
        return 0
    state.last_eval_fraction = fraction
    return n


def _evaluate_and_checkpoint(state: LoopState, images: int, hooks: list[Callback]) -> tuple[RunStatus, str] | None:
    """Rank 0 evaluates ``images`` held-out images, tells the callbacks and saves a checkpoint; every rank
    gets the verdict (None: carry on)."""
    t = state.trainer
    data_states = t.dist.gather(t.data.get_state())  # every rank's stream position, for the checkpoint
    verdict = None
    if state.run is not None:
        evaluation = _evaluate(state, images)
        if evaluation is None:
            verdict = (state.status, state.message)
        else:
            stops: list[Stop] = [s for s in (h.on_evaluation(state, evaluation) for h in hooks) if s is not None]
            last = state.timings.checkpointed_at
            since = None if last is None else time.perf_counter() - last
            if checkpoint_due(state.config, since):
                _checkpoint(state, data_states)
                state.timings.checkpointed_at = time.perf_counter()
            if stops:
                verdict = (stops[0].status, stops[0].reason)
    return t.dist.broadcast(verdict)


def _evaluate(state: LoopState, images: int) -> Evaluation | None:
    """Score the first ``images`` held-out images and append a metrics row; None (and status diverged) if
    the model broke."""
    t, c, run = state.trainer, state.counters, state.run
    start = time.perf_counter()
    if not all_finite(t.module):  # a finite step can still overflow the weights
        state.stop(RunStatus.DIVERGED, _diverged(state, "weights became non-finite", c.step))
        return None
    try:
        state.last_val = evaluate(t.module, state.val_images[:images], state.val_targets[:images], t.num_regions,
                                  batch_size=t.profile.eval_batch, loss_fn=t.loss_fn, matching=t.matching)
    except NonFiniteError:
        state.stop(RunStatus.DIVERGED, _diverged(state, "the model's outputs became NaN", c.step))
        return None
    run.append_metrics({
        "step": c.step, "train_seconds": c.train_seconds, "lr": state.lr,
        "train_loss": c.window_loss / c.window_steps if c.window_steps else float("nan"),
        **{f"val_{name}": v for name, v in state.last_val.items()},
    })
    c.window_loss, c.window_steps = 0.0, 0
    improved = state.last_val["iou"] > c.best_iou or c.best_step == 0
    if improved:
        c.best_iou, c.best_step, c.stale_evals = state.last_val["iou"], c.step, 0
    else:
        c.stale_evals += 1
    c.eval_seconds += time.perf_counter() - start
    return Evaluation(c.step, c.train_seconds, state.last_val, run.rows[-1], improved, images)


def _checkpoint(state: LoopState, data_states: list[torch.Tensor] | None = None) -> None:
    """Save weights, resume state and summary (rank 0); on a write failure record it and raise StorageError.

    A collective in a distributed run: every rank calls it (its data stream's position is saved too).
    """
    t, c, run = state.trainer, state.counters, state.run
    if data_states is None:
        data_states = t.dist.gather(t.data.get_state())
    previous = c.saved_step
    c.saved_step = c.step
    if run is None:
        return
    try:
        state.save_weights(run.path)
        save_resume_state(run.file(RESUME_STATE), ResumeState(
            model=t.module.state_dict(), optimizer=t.optimizer.state_dict(), rng_cpu=torch.get_rng_state(),
            rng_data=torch.cat(data_states), world_size=t.dist.world_size,
            rng_cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            counters=c, rows=run.rows, config=t.config.to_dict()))
        run.write_summary(state.summary())
    except OSError as e:
        c.saved_step = previous
        why = f"{e.strerror or e} while writing {e.filename}" if e.filename else str(e.strerror or e)
        state.stop(RunStatus.FAILED, f"{why}; stopped after step {c.step}, the last complete checkpoint "
                                     f"(step {previous}) is kept; resumable once the problem is fixed")
        run.write_summary_best_effort(state.summary())
        raise StorageError(f"{run.path}: {state.message}") from None


def _data_failure(state: LoopState, error: Exception, step: int) -> None:
    """A training file that could not be read mid-run: the run ends ``failed`` at ``step``, resumable, like a full disk.

    Raises:
        DataError: naming the run, the file and the step (one line).
    """
    why = str(error).splitlines()[0] if str(error) else type(error).__name__
    state.stop(RunStatus.FAILED, f"{why}; stopped at step {step}, the last complete checkpoint (step "
                                 f"{state.counters.saved_step}) is kept; resumable once the file is fixed")
    if state.run is None:
        raise DataError(state.message) from None
    state.run.write_summary_best_effort(state.summary())
    raise DataError(f"{state.run.path}: {state.message}") from None
