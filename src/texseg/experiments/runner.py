"""The one experiment engine: run a list of trials, each an ordinary run directory.

A trial is ``(label, TrainConfig, seed)``; it trains into ``<exp_dir>/runs/<trial-id>``,
a run directory like any other (``texseg eval``, ``texseg.load_model``). Running the same
trials again is safe and cheap:

- a trial whose run has ended (completed, diverged, pruned) is not trained again;
- an interrupted (or killed) run is continued with :func:`resume_training`;
- a run directory without a usable checkpoint is cleared and trained from scratch;
- a run directory trained with a *different* configuration is an error before any work,
  so results of two configurations are never mixed under one id.

A trial that diverges or raises becomes a row with its status and error; the others go
on. ``jobs > 1`` runs trials in spawned processes, each with ``cores // jobs`` torch
threads. Ctrl-C (or SIGTERM) stops cleanly: running trials stop between two steps and
save a resumable checkpoint (the training loop does this), no new trial starts.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import re
import shutil
import signal
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from texseg import signals
from texseg._validate import check_int
from texseg.checkpoint import RESUME_STATE
from texseg.errors import CheckpointError
from texseg.io import exclusive_lock
from texseg.signals import catch_stop_signals
from texseg.threads import ThreadChooser
from texseg.training.config import TrainConfig
from texseg.training.defaults import DEVICE_FIELDS, PINNED_FIELDS
from texseg.training.loop import StorageError, resume_training, train
from texseg.training.memory import estimate_training_bytes
from texseg.training.rundir import CONFIG, SUMMARY, RunStatus, read_status
from texseg.training.summary import RunSummary
from texseg.workers import (
    auto_jobs,
    available_cores,
    send_signal,
    start_worker,
    threads_per_worker,
    worker_setup,
)

COMPLETED, INTERRUPTED = RunStatus.COMPLETED, RunStatus.INTERRUPTED
FAILED = RunStatus.FAILED  # the trial raised an exception
NOT_RUN = "not run"  # the experiment was stopped before the trial started
RUNS = "runs"

Logger = Callable[[str], None]


@dataclass(frozen=True)
class Trial:
    """One training run of an experiment.

    Attributes:
        label: the setting it belongs to (trials of one label differ only by seed).
        config: its configuration (``seed`` and ``threads`` are set by the engine).
        seed: the run's seed (initial weights and training stream).
    """

    label: str
    config: TrainConfig
    seed: int

    @property
    def trial_id(self) -> str:
        """The run directory's name: ``<label as a file name>-seed<seed>``."""
        return f"{slug(self.label)}-seed{self.seed}"

    def run_config(self, threads: int | None = None) -> TrainConfig:
        """The config the run trains with: this trial's seed, and ``threads`` unless set."""
        return dataclasses.replace(self.config, seed=self.seed,
                                   threads=self.config.threads if self.config.threads is not None else threads)


@dataclass
class TrialResult:
    """How a trial ended, and what this invocation did with it.

    ``action`` is ``new``, ``resumed``, ``restarted`` (a run directory without a usable
    checkpoint, trained again from scratch), ``skipped`` (already ended) or ``not run``.
    """

    trial_id: str
    label: str
    seed: int
    status: str
    error: str
    action: str
    run_dir: Path
    summary: RunSummary | None = None  # None: the trial never wrote one (failed or not run)

    def __post_init__(self) -> None:
        if isinstance(self.summary, Mapping):  # a summary.json's contents, as this held before RunSummary
            self.summary = RunSummary.from_dict(self.summary) if self.summary else None


@dataclass
class RunOutcome:
    """The results of :func:`run_trials`, in the order of the trials."""

    results: list[TrialResult]
    interrupted: bool


def slug(text: str) -> str:
    """``text`` as a safe file name (letters, digits and ``.+=-`` kept, the rest ``_``)."""
    s = re.sub(r"[^A-Za-z0-9.+=-]+", "_", text).strip("_.")
    return s or "trial"


# ----------------------------------------------------------------------------- planning
def _comparable(config: TrainConfig | dict[str, Any]) -> dict[str, Any]:
    """A config as a dict without the fields that do not change results' meaning."""
    d = config.to_dict() if isinstance(config, TrainConfig) else dict(config)
    d.pop("threads", None)  # the thread count follows --jobs and may change between runs
    if d.get("early_stop") is None:  # then how often a run is scored does not change what it trains
        d.pop("evals", None)  # (and runs of an older texseg lack the key)
    return d


def plan_trial(trial: Trial, run_dir: Path) -> str:
    """What to do with a trial's run directory: ``new``, ``skip``, ``resume`` or ``restart``.

    Raises:
        ValueError: the directory holds a run of a different configuration.
    """
    if not (run_dir / CONFIG).is_file():
        return "new"
    try:
        stored = TrainConfig.from_json_file(run_dir / CONFIG)
    except ValueError:
        return "restart"  # unreadable config: nothing in it can be trusted or resumed
    wanted, have = _comparable(trial.run_config()), _comparable(stored)
    for name in DEVICE_FIELDS:  # left to the device: whatever the device chose when the run began
        if wanted[name] is None:
            wanted[name] = have.get(name)
    for name, undecided in PINNED_FIELDS.items():  # likewise what the machine decided (config.json pins it)
        if name in wanted and wanted[name] == undecided:
            wanted[name] = have.get(name)
    if wanted != have:
        diff = ", ".join(f"{k} {have[k]!r} (now {wanted[k]!r})" for k in wanted if wanted[k] != have.get(k))
        raise ValueError(f"{run_dir} was trained with a different configuration: {diff}; "
                         "use another `out`, or delete that run to train it again")
    status = read_status(run_dir)
    if status is not None and status.ended:
        return "skip"
    return "resume" if (run_dir / RESUME_STATE).is_file() else "restart"


def _ended_result(trial: Trial, run_dir: Path) -> TrialResult:
    summary = RunSummary.from_file(run_dir / SUMMARY)
    status = summary.status
    return TrialResult(trial.trial_id, trial.label, trial.seed, status,
                       "" if status == COMPLETED else summary.message, "skipped", run_dir, summary)


# ---------------------------------------------------------------------------- executing
def execute_trial(trial: Trial, run_dir: Path, plan: str, threads: int | None,
                  progress: bool = False) -> TrialResult:
    """Train (or resume) one trial; any exception becomes a ``failed`` result.

    Args:
        trial: the trial.
        run_dir: its run directory.
        plan: from :func:`plan_trial` (``new``, ``resume`` or ``restart``).
        threads: torch threads for a new run (a resumed run keeps its own config's).
        progress: show the training progress bar.
    """
    action = {"new": "new", "resume": "resumed", "restart": "restarted"}[plan]
    try:
        result = None
        if plan == "resume":
            try:
                result = resume_training(run_dir, progress=progress)
            except CheckpointError:
                action = "restarted"  # a damaged resume state: start again rather than fail
        if result is None:
            if run_dir.exists():
                shutil.rmtree(run_dir)  # only this trial's own, unusable run directory
            result = train(trial.run_config(threads), run_dir, progress=progress)
    except StorageError:
        raise  # a full disk fails every later trial too: stop the experiment, keep what is saved
    except Exception as e:  # a failing trial is a row of the results, not the end of the experiment
        message = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        return TrialResult(trial.trial_id, trial.label, trial.seed, FAILED, message, action, run_dir)
    status = result.status
    error = "" if status == COMPLETED else result.summary.message
    return TrialResult(trial.trial_id, trial.label, trial.seed, status, error, action, run_dir, result.summary)


def _not_run(trial: Trial, run_dir: Path) -> TrialResult:
    return TrialResult(trial.trial_id, trial.label, trial.seed, NOT_RUN, "the experiment was stopped first",
                       NOT_RUN, run_dir)


@contextmanager
def _experiment_lock(exp_dir: Path) -> Iterator[None]:
    """Hold ``<exp_dir>/.lock`` so two processes never run one experiment at once."""
    exp_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(exp_dir / ".lock", f"{exp_dir} is in use by another texseg experiment"):
        yield


def run_trials(trials: Sequence[Trial], exp_dir: str | os.PathLike[str], *, jobs: int | str = 1,
               progress: bool = False, log: Logger | None = None) -> RunOutcome:
    """Run every trial that has not ended yet; return all trials' results.

    Args:
        trials: the experiment; trial ids must be unique.
        exp_dir: the experiment folder; runs go to ``<exp_dir>/runs/<trial-id>``.
        jobs: trials trained at once (separate processes when > 1), or ``"auto"``: one per
            core, as many as fit in memory (:func:`texseg.workers.auto_jobs`).
        progress: a progress bar per trial (only with ``jobs == 1``).
        log: called with one line per finished trial.

    Returns:
        A :class:`RunOutcome`; ``interrupted`` when Ctrl-C/SIGTERM stopped it.

    Raises:
        ValueError: bad ``jobs``, duplicate trial ids, an invalid config, or a run
            directory of another configuration (all checked before any training).
    """
    exp_dir = Path(exp_dir)
    jobs = _check_trials(trials, jobs)
    dirs = [exp_dir / RUNS / t.trial_id for t in trials]
    record = _Recorder(len(trials), log)
    with _experiment_lock(exp_dir):
        plans = [plan_trial(t, d) for t, d in zip(trials, dirs)]  # may refuse: nothing has run yet
        (exp_dir / RUNS).mkdir(exist_ok=True)
        for t, d, p in zip(trials, dirs, plans):
            if p == "skip":
                record(_ended_result(t, d))
        todo = [(t, d, p) for t, d, p in zip(trials, dirs, plans) if p != "skip"]
        workers = max(1, min(jobs, len(todo)))
        if workers == 1:  # each trial takes every core, or one on a busy machine (measured every 30 s)
            _run_serial(todo, ThreadChooser(), progress, record)
        else:
            _run_parallel(todo, workers, threads_per_worker(workers), record)
    # Interrupted means work is left: a stop signal after the last trial ended changes nothing.
    ordered = [record.results[t.trial_id] for t in trials]
    return RunOutcome(ordered, any(r.action == NOT_RUN or r.status == INTERRUPTED for r in ordered))


def _check_trials(trials: Sequence[Trial], jobs: int | str) -> int:
    """The number of jobs (``"auto"`` resolved), once the trials' ids and configs are checked.

    Raises:
        ValueError: bad ``jobs``, duplicate trial ids, or an invalid config.
    """
    if jobs == "auto":
        jobs = auto_jobs(max((estimate_training_bytes(t.run_config()) for t in trials), default=0), len(trials))
    check_int("jobs", jobs, minimum=1, maximum=256)
    ids = [t.trial_id for t in trials]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"two trials share the id {dupes[0]!r}: labels must differ once made file names")
    for t in trials:
        t.run_config().validate()
    return int(jobs)


class _Recorder:
    """Keeps each trial's result and logs one line per finished trial (``[3/8] adam seed 1: completed ...``)."""

    def __init__(self, total: int, log: Logger | None) -> None:
        self.results: dict[str, TrialResult] = {}
        self.total, self.log, self.done = total, log, 0

    def __call__(self, r: TrialResult) -> None:
        self.results[r.trial_id] = r
        if r.action == NOT_RUN:
            return
        self.done += 1
        if self.log is not None:
            iou = r.summary.val.get("iou") if r.summary else None
            score = f", val IoU {iou:.4f}" if isinstance(iou, float) else ""
            warn = " - TRIVIAL: " + "; ".join(r.summary.warnings) if r.summary and r.summary.warnings else ""
            self.log(f"[{self.done}/{self.total}] {r.label} seed {r.seed}: {r.status}{score} ({r.action})"
                     + (f" - {r.error}" if r.error and r.status != COMPLETED else "") + warn)


def _run_serial(todo: list[tuple[Trial, Path, str]], threads: Callable[[int], int], progress: bool,
                record: Callable[[TrialResult], None]) -> None:
    """Trials one after another in this process, until a stop signal (the rest are recorded as not run).

    Args:
        threads: the torch threads of a new trial, given the cores (a :class:`~texseg.threads.ThreadChooser`).
    """
    queue = deque(todo)
    with catch_stop_signals() as stop:
        while queue and not stop.count:
            trial, run_dir, plan = queue.popleft()
            # A signal inside training stops the run (status interrupted); one during a
            # trial's set-up stops it before its run directory exists (not run).
            try:
                r = execute_trial(trial, run_dir, plan, threads(available_cores()), progress)
            except signals.Interrupted:
                queue.appendleft((trial, run_dir, plan))
                break
            record(r)
            if r.status == INTERRUPTED:
                stop.count += 1
    for trial, run_dir, _ in queue:
        record(_not_run(trial, run_dir))


def _worker_main(conn: Connection, threads: int) -> None:
    """A spawned worker: run the trials it receives until told to stop (``None``).

    One process runs many trials so that importing torch and warming up is paid once per
    worker, not once per trial.
    """
    # Signals are recorded from here on (the worker started with them ignored, so none
    # could raise during its imports); the training loop acts on them between two steps.
    stop = worker_setup()
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):  # the parent has gone
            return
        if task is None:
            return
        trial, run_dir, plan = task
        try:
            result = execute_trial(trial, run_dir, plan, threads, progress=False) if not stop.count \
                else _not_run(trial, run_dir)
        except signals.Interrupted:
            result = _not_run(trial, run_dir)
        except StorageError as e:  # a full disk: this trial's run records it; report it as failed
            result = TrialResult(trial.trial_id, trial.label, trial.seed, FAILED, str(e)[:300], plan, run_dir)
        try:
            conn.send(result)
        except OSError:  # the parent has gone: the trial's own run directory holds its state
            return


@dataclass
class _Worker:
    """A worker process, its pipe, and the trial it is running (None when idle)."""

    proc: mp.process.BaseProcess
    conn: Connection
    task: tuple[Trial, Path, str] | None = None


def _start_worker(threads: int) -> _Worker:
    conn, child = mp.Pipe(duplex=True)
    proc = start_worker(_worker_main, child, threads)
    child.close()
    return _Worker(proc, conn)


def _run_parallel(todo: list[tuple[Trial, Path, str]], jobs: int, threads: int,
                  record: Callable[[TrialResult], None]) -> None:
    """Trials on ``jobs`` spawned worker processes, until a stop signal."""
    queue = deque(todo)
    workers = [_start_worker(threads) for _ in range(jobs)]
    with catch_stop_signals() as stop:
        try:
            while queue or any(w.task for w in workers):
                if stop.count:
                    while queue:
                        trial, run_dir, _ = queue.popleft()
                        record(_not_run(trial, run_dir))
                    # Repeated until they end: a worker between receiving its trial and
                    # the loop installing its handler would miss a single signal.
                    for w in workers:
                        if w.task:
                            send_signal(w.proc, signal.SIGINT)
                for i, w in enumerate(workers):
                    if w.task is None and queue and not stop.count:
                        if w.proc.exitcode is not None:  # it crashed earlier: replace it
                            w = workers[i] = _start_worker(threads)
                        w.task = queue.popleft()
                        w.conn.send(w.task)
                busy = [w for w in workers if w.task]
                wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=0.5)
                for w in busy:
                    result = _collect(w)
                    if result is not None:
                        w.task = None
                        record(result)
                        if result.status == INTERRUPTED:
                            stop.count += 1  # a worker stopped by a signal sent to the whole group
        finally:
            for w in workers:
                if w.task:  # only after an unexpected error in this loop
                    send_signal(w.proc, signal.SIGINT)
                elif w.proc.exitcode is None:
                    try:
                        w.conn.send(None)
                    except OSError:  # it died meanwhile
                        pass
            for w in workers:
                w.proc.join(timeout=60)
                w.conn.close()


def _collect(w: _Worker) -> TrialResult | None:
    """The worker's result if its trial has ended (a crashed worker: a failed result), else None."""
    assert w.task is not None
    trial, run_dir, _ = w.task
    if w.conn.poll():
        try:
            return w.conn.recv()
        except EOFError:
            pass  # the worker died without reporting; its exit code follows
    if w.proc.exitcode is None:
        return None
    return TrialResult(trial.trial_id, trial.label, trial.seed, FAILED,
                       f"the worker process exited with code {w.proc.exitcode} while running this trial", "new",
                       run_dir)
