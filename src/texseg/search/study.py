"""Running a search: :func:`run_search`, its worker processes and the trial loop.

Each worker asks the study for a trial, samples its config, trains it as an ordinary
texseg run (reporting val IoU to the pruner as it goes) and tells the study how it
ended. Helpers live next door: :mod:`~texseg.search.settings` (SearchSettings),
:mod:`~texseg.search.space` (what is searched), :mod:`~texseg.search.storage` (the
study, its folder, heartbeats and stale trials) and :mod:`~texseg.search.report`
(best.json, trials.csv, plots, summary.md).

One *search* is one Optuna study (maximising the final validation IoU) in one
experiment folder::

    <out>/study.journal     the study (Optuna JournalStorage, file backend), unless --storage
    <out>/search.json       which study and storage this folder belongs to
    <out>/trials/<number>/  one ordinary texseg run directory per trial
    <out>/best.json, trials.csv, history.png, importance.png, summary.md

Design, and why:

- Every trial gets the same training budget (the base config's ``time_budget`` and/or
  ``iterations``) and the same training seed, so trials differ by their parameters only.
- Pruning compares trials at the same *fraction of their budget* (in tenths), not at the
  same step: under a time budget a U-Net with batch 16 does far fewer steps than a CNN
  with batch 2, so equal steps would mean unequal training.
- ``trials`` is the total for the study. Each worker (a process, here or on another
  machine) asks for a trial, then checks that fewer than ``trials`` trials before it are
  finished or running; the storage numbers trials atomically, so concurrent workers
  never exceed the total (a worker that loses the race marks its empty trial
  ``surplus``). Finished trials count; failed ones (a killed process, Ctrl-C, an error)
  do not, so running the same command again completes the study.
- A worker's RUNNING trial carries its host, pid and a heartbeat. A RUNNING trial whose
  process is gone (same host) or whose heartbeat is older than
  :data:`~texseg.search.storage.STALE_AFTER_S` is marked FAIL (status ``stale``) by the
  next worker, so a killed search neither blocks nor counts.
- A diverged trial is recorded as COMPLETE with value 0 (the worst IoU), which tells the
  sampler to avoid that region; the study goes on.
- The sampler of trial ``n`` is a fresh TPE seeded from ``(seed, n)``: reproducible for
  one process, yet two workers never propose the same random start-up points.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from texseg import signals
from texseg.errors import ExitCode
from texseg.search.report import trial_line, write_reports
from texseg.search.settings import SearchSettings
from texseg.search.space import METRIC, SearchSpace, build_space
from texseg.search.storage import (
    COMPLETED,
    DIVERGED,
    ERROR,
    INTERRUPTED,
    PRUNE_STEPS,
    PRUNED,
    STALE,
    SURPLUS,
    TRIALS_DIR,
    Heartbeat,
    check_fingerprint,
    check_folder,
    check_new_study,
    counts_toward_total,
    fail_stale_trials,
    fingerprint,
    make_sampler,
    open_study,
    storage_label,
    trial_state,
    write_folder_file,
)
from texseg.training.callbacks import Callback, default_callbacks
from texseg.training.config import TrainConfig
from texseg.training.engine import progress_fraction
from texseg.training.loop import train
from texseg.training.rundir import RunStatus
from texseg.training.state import Evaluation, LoopState, Stop
from texseg.workers import send_signal, start_worker, threads_per_worker, worker_setup

if TYPE_CHECKING:
    import optuna

__all__ = ["SearchResult", "run_search"]



# ------------------------------------------------------------------- the result
def _work_with(workers: list[Any], study: optuna.Study, settings: SearchSettings, space: SearchSpace,
               base: TrainConfig, log: Callable[[str], None] | None) -> _Outcome:
    """This process's share of the trials beside the worker processes; they are stopped with it and joined."""
    outcome = _Outcome()
    try:
        _work(study, settings, space, base, log or (lambda line: None), outcome)
        if outcome.interrupted:  # a signal to this process alone (SIGTERM): the workers stop too
            for proc in workers:
                send_signal(proc, signal.SIGINT)
    except BaseException:
        for proc in workers:  # stop them as Ctrl-C would: their running trials end as FAIL
            send_signal(proc, signal.SIGINT)
        raise
    finally:
        for proc in workers:
            proc.join()
    return outcome


@dataclass
class SearchResult:
    """What :func:`run_search` returns: what ran, the best trial, the files written.

    Attributes:
        out: the search folder (best.json, trials.csv, result.json, summary.md, figures; the CLI adds report.html).
        study_name, storage: the Optuna study and where it lives (credentials redacted).
        ran: trials this call ran (all its workers); counted: finished trials of the study that count
            toward ``trials``; running: trials other workers are still running.
        trials: the study's target number of finished trials.
        interrupted: a stop signal ended it (run it again to continue).
        best: the best trial (``number``, ``value``, ``params``, ``run_dir``, ...; as best.json), or None.
        files: the files written; notes: why a plot was left out, failed workers.
    """

    out: Path
    study_name: str
    storage: str  # redacted
    ran: int  # trials this call ran (all its workers)
    counted: int  # finished trials of the study that count toward ``trials``
    running: int  # trials other workers are still running
    trials: int
    interrupted: bool
    best: dict[str, Any] | None
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ the search
def run_search(
    settings: SearchSettings,
    fixed: Mapping[str, Any] | None = None,
    *,
    log: Callable[[str], None] | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> SearchResult:
    """Run (or continue) a search until its study holds ``settings.trials`` finished trials.

    Args:
        settings: how to search.
        fixed: TrainConfig fields given by the user, passed to every trial and never searched (e.g.
            ``{"image_size": 64, "time_budget": 10}``); ``seed`` is ignored (``settings.seed`` is every trial's).
        log: called with one line per finished trial (default: silent).
        pruner: overrides ``settings.pruner`` in this process (extra ``jobs`` workers use ``settings.pruner``).

    Returns:
        A :class:`SearchResult`; the files in ``settings.out`` are up to date.

    Raises:
        ValueError: a bad setting or option, or a study made with other settings.
        TexsegError: the storage cannot be opened, or the folder belongs to another study.
    """
    settings.validate()
    fixed = {k: v for k, v in (fixed or {}).items() if k != "seed"}
    base = TrainConfig.from_dict({**fixed, "seed": settings.seed}).validate()
    space = build_space(base, fixed, settings.models)
    check_folder(settings)
    with _quiet_optuna():
        study, created = open_study(settings, pruner)
        check_new_study(settings, created)
        check_fingerprint(study, fingerprint(base, space))
        write_folder_file(settings)
        first = len(study.get_trials(deepcopy=False))  # trials numbered from here on are this call's
        workers = _start_workers(settings, fixed, settings.jobs - 1, verbose=log is not None)
        if settings.jobs > 1 and base.threads is None:
            base = replace(base, threads=threads_per_worker(settings.jobs))
        outcome = _work_with(workers, study, settings, space, base, log)
        ids = {_worker_id(os.getpid())} | {_worker_id(proc.pid) for proc in workers}
        trials = study.get_trials(deepcopy=False)
        ran = sum(1 for t in trials if t.number >= first and t.user_attrs.get("worker") in ids
                  and t.user_attrs.get("status") != SURPLUS)
        interrupted = outcome.interrupted or any(proc.exitcode == ExitCode.INTERRUPTED for proc in workers)
        files, notes, best = write_reports(study, settings, base, space)
        notes += [f"worker process {proc.pid} failed (exit code {proc.exitcode}); see its message above"
                  for proc in workers if proc.exitcode not in (0, ExitCode.INTERRUPTED)]
    return SearchResult(settings.out, settings.study_name, storage_label(settings), ran,
                        sum(1 for t in trials if counts_toward_total(t)),
                        sum(1 for t in trials if t.state.name == "RUNNING"), settings.trials, interrupted, best,
                        files, notes)


@dataclass
class _Outcome:
    interrupted: bool = False


def _worker_id(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}"


def _work(study: optuna.Study, settings: SearchSettings, space: SearchSpace, base: TrainConfig,
          log: Callable[[str], None], outcome: _Outcome) -> None:
    """One worker: run trials until the study has enough, or the user stops it."""
    while True:
        fail_stale_trials(study)
        if _slots_taken(study.get_trials(deepcopy=False)) >= settings.trials:
            return
        trial = study.ask()
        try:
            # Who runs it, first: a trial whose process dies from here on is recognisably stale.
            for key, value in (("host", socket.gethostname()), ("pid", os.getpid()),
                               ("worker", _worker_id(os.getpid())), ("heartbeat", time.time())):
                trial.set_user_attr(key, value)
            before = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number]
            if _slots_taken(before) >= settings.trials:  # another worker took the last slot first
                _finish(study, trial, SURPLUS, state="FAIL")
                return
            study.sampler = make_sampler(settings.seed, trial.number)  # consulted lazily by suggest_*
            status = _run_trial(study, trial, space, base, settings.out, log)
        except BaseException as e:
            stopped = isinstance(e, (KeyboardInterrupt, signals.Interrupted))
            _tag_failed(study, trial, INTERRUPTED if stopped else ERROR, e)
            raise
        if status == INTERRUPTED:
            outcome.interrupted = True
            return


def _slots_taken(trials: Sequence[optuna.trial.FrozenTrial]) -> int:
    return sum(1 for t in trials if counts_toward_total(t) or t.state.name == "RUNNING")


def _run_trial(study: optuna.Study, trial: optuna.Trial, space: SearchSpace, base: TrainConfig,
               out: Path, log: Callable[[str], None]) -> str:
    """Train one trial in ``<out>/trials/<number>`` and tell the study how it ended."""
    run_dir = out / TRIALS_DIR / str(trial.number)
    t0 = time.monotonic()
    with Heartbeat(trial):
        config = space.suggest(trial, base)
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        result = train(config, run_dir, [OptunaPruning(trial), *default_callbacks(config)], progress=False)
        s = result.summary
        value = float(s.val.get(METRIC, math.nan))
        trial.set_user_attr("train_seconds", s.train_seconds)
        trial.set_user_attr("iterations", s.iterations)
        trial.set_user_attr("warning", "; ".join(s.warnings))
    if result.status == RunStatus.COMPLETED and math.isfinite(value):
        status, told = _finish(study, trial, COMPLETED, value=value)
    elif result.status == RunStatus.PRUNED:
        status, told = _finish(study, trial, PRUNED, state="PRUNED")
    elif result.status in (RunStatus.DIVERGED, RunStatus.COMPLETED):  # diverged, or a NaN IoU: the worst value
        status, told = _finish(study, trial, DIVERGED, value=0.0)
    else:  # interrupted (Ctrl-C / SIGTERM): does not count; the next run replaces it
        status, told = _finish(study, trial, INTERRUPTED, state="FAIL")
    log(trial_line(trial.number, status, told, time.monotonic() - t0, run_dir))
    return status


def _finish(study: optuna.Study, trial: optuna.Trial, status: str, *, value: float | None = None,
            state: str | None = None) -> tuple[str, optuna.trial.FrozenTrial]:
    """Record the texseg status, then tell the study; ``stale`` if another worker gave up on us."""
    try:
        trial.set_user_attr("status", status)  # attributes are frozen once the trial is told
        told = study.tell(trial, value, state=None if state is None else trial_state(state))
    except optuna.exceptions.UpdateFinishedTrialError:  # marked stale (heartbeat too late)
        return STALE, study.get_trials(deepcopy=False)[trial.number]
    return status, told


def _tag_failed(study: optuna.Study, trial: optuna.Trial, status: str, error: BaseException) -> None:
    """Mark a trial that raised as FAIL (best effort: the original error matters more).

    A no-op for a trial already told (e.g. Ctrl-C while its result line was printed).
    """
    try:
        trial.set_user_attr("status", status)
        trial.set_user_attr("message", f"{type(error).__name__}: {error}"[:300])
        study.tell(trial, state=trial_state("FAIL"), skip_if_finished=True)
    except Exception:  # noqa: BLE001 - the storage may be what failed
        pass


class OptunaPruning(Callback):
    """A search's pruning as a training callback: report the val IoU of the first evaluation in each tenth
    of the budget to the Optuna trial and stop the run (status ``pruned``) when its pruner says so."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.reported: set[int] = set()

    def on_evaluation(self, state: LoopState, evaluation: Evaluation) -> Stop | None:
        done = progress_fraction(state.config, evaluation.step, evaluation.train_seconds)
        if done >= 1.0:
            return None  # the run has finished anyway: keep it as a completed trial
        bucket = int(done * PRUNE_STEPS)
        value = evaluation.metrics.get(METRIC, math.nan)
        if bucket in self.reported or not math.isfinite(value):
            return None  # Optuna keeps one value per step: the first eval in each tenth
        self.reported.add(bucket)
        self.trial.report(value, bucket)
        if self.trial.should_prune():
            return Stop(f"stopped by the caller after step {evaluation.step}", RunStatus.PRUNED)
        return None


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna's INFO lines would interleave with ours; restore its verbosity after."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


# ------------------------------------------------------------ worker processes
def _start_workers(settings: SearchSettings, fixed: Mapping[str, Any], n: int,
                   verbose: bool) -> list[mp.process.BaseProcess]:
    """Start ``n`` extra worker processes on the same study (see :mod:`texseg.workers`)."""
    spec = json.dumps({"settings": {**asdict(settings), "out": str(settings.out)}, "fixed": dict(fixed),
                       "verbose": verbose})
    return [start_worker(_worker_main, spec) for _ in range(n)]


def _worker_main(spec_json: str) -> None:
    """Entry point of a worker process started by :func:`_start_workers`."""
    worker_setup()  # from here on a stop signal stops the running trial cleanly
    spec = json.loads(spec_json)
    d = spec["settings"]
    settings = SearchSettings(**{**d, "out": Path(d["out"]),
                                 "models": tuple(d["models"]) if d["models"] is not None else None})
    fixed = spec["fixed"]
    base = TrainConfig.from_dict({**fixed, "seed": settings.seed}).validate()
    if base.threads is None:
        base = replace(base, threads=threads_per_worker(settings.jobs))
    space = build_space(base, fixed, settings.models)
    outcome = _Outcome()
    log = (lambda line: print(line, flush=True)) if spec["verbose"] else (lambda line: None)
    try:
        with _quiet_optuna():
            study, _ = open_study(settings, None)
            _work(study, settings, space, base, log, outcome)
    except (KeyboardInterrupt, signals.Interrupted):
        outcome.interrupted = True
    sys.exit(ExitCode.INTERRUPTED if outcome.interrupted else ExitCode.OK)
