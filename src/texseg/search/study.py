"""Hyperparameter search over texseg training runs with Optuna.

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
  process is gone (same host) or whose heartbeat is older than :data:`STALE_AFTER_S` is
  marked FAIL (status ``stale``) by the next worker, so a killed search neither blocks
  nor counts.
- A diverged trial is recorded as COMPLETE with value 0 (the worst IoU), which tells the
  sampler to avoid that region; the study goes on.
- The sampler of trial ``n`` is a fresh TPE seeded from ``(seed, n)``: reproducible for
  one process, yet two workers never propose the same random start-up points.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import texseg
from texseg._validate import check_choice, check_int
from texseg.errors import TexsegError
from texseg.io import atomic_write_json, atomic_write_text, read_json
from texseg.training.config import OPTIMIZERS, SCHEDULES, TrainConfig

if TYPE_CHECKING:
    import optuna

__all__ = [
    "SearchResult",
    "SearchSettings",
    "SearchSpace",
    "build_space",
    "run_search",
    "write_reports",
]

METRIC = "iou"  # the objective: final validation IoU (eval mode, held-out set)
JOURNAL_FILE = "study.journal"
SEARCH_FILE = "search.json"
TRIALS_DIR = "trials"
DEFAULT_STUDY = "texseg"
PRUNERS = ("median", "none")
# seed-cnn's shared BatchNorm makes its eval-mode predictions broken (see README), so
# searching it wastes trials; it can still be named with ``models``.
EXCLUDED_MODELS = ("seed-cnn",)
WIDTHS = (8, 16, 32)
WIDTH_ARGS = {"unet": "base_width", "cnn": "num_channels", "seed-cnn": "num_channels"}
LOSSES = {2: ("bce", "dice", "bce+dice", "mse"), 3: ("ce", "dice", "ce+dice", "mse")}  # 3: any K > 2
BATCH_SIZES = (2, 4, 8, 16)
LR_RANGE = (1e-4, 1e-1)
SEARCHABLE = ("model", "width", "loss", "optimizer", "lr", "schedule", "batch_size")
PRUNE_STEPS = 10  # intermediate values are reported per tenth of the budget
HEARTBEAT_S = 15.0
STALE_AFTER_S = 120.0
RDB_DIALECTS = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")
# Fields that may differ between the workers of one study (they do not change the problem).
WORKER_FIELDS = ("device", "threads")

# texseg status of a trial (its user attribute "status")
COMPLETED, PRUNED, DIVERGED = "completed", "pruned", "diverged"
INTERRUPTED, STALE, SURPLUS, ERROR = "interrupted", "stale", "surplus", "error"


# ----------------------------------------------------------------------- settings
@dataclass(frozen=True)
class SearchSettings:
    """How to search (the trials' own settings are a :class:`TrainConfig`).

    Attributes:
        out: experiment folder (trials, reports and, by default, the study itself).
        trials: total number of trials of the study, over all runs and workers.
        storage: Optuna storage URL (``sqlite:///f.db``, ``postgresql://...``) or a journal
            file path; default ``<out>/study.journal``.
        study_name: name of the study in the storage.
        seed: seed of the sampler and the training seed of every trial.
        jobs: worker processes started by this call (they share the study).
        pruner: ``median`` (median stopping rule on intermediate val IoU) or ``none``.
        models: models to search; default every registered model but seed-cnn.
    """

    out: Path
    trials: int = 20
    storage: str | None = None
    study_name: str = DEFAULT_STUDY
    seed: int = 0
    jobs: int = 1
    pruner: str = "median"
    models: tuple[str, ...] | None = None

    def validate(self) -> SearchSettings:
        """Check every field; raise ValueError naming the first bad one. Returns self."""
        from texseg.models import list_models

        if not isinstance(self.out, Path):
            raise ValueError(f"out must be a path, got {self.out!r}")
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"out must be a folder, but {self.out} is a file")
        check_int("trials", self.trials, minimum=1, maximum=1_000_000)
        if self.storage is not None:
            storage_kind(self.storage)
        if not isinstance(self.study_name, str) or not self.study_name.strip():
            raise ValueError(f"study_name must be a non-empty string, got {self.study_name!r}")
        check_int("seed", self.seed, minimum=0, maximum=2**32 - 1)
        check_int("jobs", self.jobs, minimum=1, maximum=256)
        check_choice("pruner", self.pruner, PRUNERS)
        if self.models is not None:
            if not self.models:
                raise ValueError("models must name at least one model")
            for name in self.models:
                check_choice("models", name, list_models())
        return self


def storage_kind(url: str) -> str:
    """``"rdb"`` or ``"journal"`` for a storage URL; ValueError for anything else."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"storage must be a URL or a file path, got {url!r}")
    if "://" not in url:
        return "journal"  # a plain path: a journal file (works for processes on one machine)
    scheme = url.split("://", 1)[0].lower()
    if scheme.split("+", 1)[0] in RDB_DIALECTS:
        return "rdb"
    raise ValueError(
        f"storage has an unknown scheme {scheme!r}; use a journal file path, sqlite:///FILE, "
        f"postgresql://... or mysql://..."
    )


def redact(url: str) -> str:
    """The URL without its password (it is written to files and printed)."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


# --------------------------------------------------------------------- the space
@dataclass(frozen=True)
class SearchSpace:
    """What is searched: each dimension is searched unless the user fixed it."""

    models: tuple[str, ...]
    losses: tuple[str, ...]
    searched: tuple[str, ...]  # names from SEARCHABLE

    def suggest(self, trial: optuna.Trial, base: TrainConfig) -> TrainConfig:
        """The trial's training config: ``base`` with the searched fields sampled."""
        s = self.searched
        model = trial.suggest_categorical("model", self.models) if "model" in s else base.model
        kwargs = dict(base.model_kwargs)
        width_arg = WIDTH_ARGS.get(model)
        if "width" in s and width_arg is not None and width_arg not in kwargs:
            kwargs[width_arg] = trial.suggest_categorical("width", WIDTHS)
        return replace(
            base,
            model=model,
            model_kwargs=kwargs,
            loss=trial.suggest_categorical("loss", self.losses) if "loss" in s else base.loss,
            optimizer=trial.suggest_categorical("optimizer", OPTIMIZERS) if "optimizer" in s else base.optimizer,
            lr=trial.suggest_float("lr", *LR_RANGE, log=True) if "lr" in s else base.lr,
            schedule=trial.suggest_categorical("schedule", SCHEDULES) if "schedule" in s else base.schedule,
            batch_size=trial.suggest_categorical("batch_size", BATCH_SIZES) if "batch_size" in s
            else base.batch_size,
        )

    def describe(self) -> dict[str, Any]:
        """JSON description (stored with the study and shown in summary.md)."""
        all_dims: dict[str, Any] = {
            "model": list(self.models),
            "width": {m: [WIDTH_ARGS[m], list(WIDTHS)] for m in self.models if m in WIDTH_ARGS},
            "loss": list(self.losses),
            "optimizer": list(OPTIMIZERS),
            "lr": f"log-uniform {LR_RANGE[0]:g}..{LR_RANGE[1]:g}",
            "schedule": list(SCHEDULES),
            "batch_size": list(BATCH_SIZES),
        }
        return {k: v for k, v in all_dims.items() if k in self.searched}


def build_space(base: TrainConfig, fixed: Mapping[str, Any], models: Sequence[str] | None = None) -> SearchSpace:
    """The search space for ``base``, leaving out what the user fixed.

    Args:
        base: the validated base config (scene, budget, evaluation, ...).
        fixed: the TrainConfig fields the user gave explicitly; those are not searched
            (``model_kwargs`` fixes the width when it holds the model's width argument).
        models: candidate models; default every registered model but seed-cnn.

    Raises:
        ValueError: ``models`` together with a fixed model, a candidate model that rejects
            the given model arguments, or nothing left to search.
    """
    from texseg.models import list_models

    if "model" in fixed and models is not None:
        raise ValueError("models and model exclude each other: give the candidates or fix one model")
    if "model" in fixed:
        candidates: tuple[str, ...] = (base.model,)
    else:
        candidates = tuple(models) if models else tuple(m for m in list_models() if m not in EXCLUDED_MODELS)
    widths = any(WIDTH_ARGS.get(m) not in (None, *base.model_kwargs) for m in candidates)
    searched = [name for name in SEARCHABLE if name not in fixed
                and not (name == "model" and len(candidates) < 2) and not (name == "width" and not widths)]
    if not searched:
        raise ValueError("nothing to search: the given options fix every searched parameter")
    losses = LOSSES[2] if base.regions == 2 else LOSSES[3]
    for name in candidates:  # every candidate must accept the given model arguments
        _check_model_args(name, base, searched)
    return SearchSpace(candidates, losses, tuple(searched))


def _check_model_args(name: str, base: TrainConfig, searched: Sequence[str]) -> None:
    """Build ``name`` with the given kwargs (and the widest width) on the meta device."""
    import torch

    from texseg.models import create_model

    kwargs = dict(base.model_kwargs)
    width_arg = WIDTH_ARGS.get(name)
    if "width" in searched and width_arg is not None and width_arg not in kwargs:
        kwargs[width_arg] = max(WIDTHS)
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore", UserWarning)  # seed-cnn's warning is for training time
        create_model(name, num_classes=base.model_num_classes, **kwargs)


# ------------------------------------------------------------------- the result
@dataclass
class SearchResult:
    """What :func:`run_search` returns."""

    out: Path
    study_name: str
    storage: str  # redacted
    ran: int  # trials this call ran (all its workers)
    counted: int  # finished trials of the study that count toward ``trials``
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
        fixed: TrainConfig fields given by the user, passed to every trial and never
            searched (e.g. ``{"image_size": 64, "time_budget": 10}``). ``seed`` is ignored:
            ``settings.seed`` is the training seed of every trial.
        log: called with one line per finished trial (default: silent).
        pruner: overrides ``settings.pruner`` in this process (extra ``jobs`` workers use
            ``settings.pruner``).

    Returns:
        A :class:`SearchResult`; the reports in ``settings.out`` are up to date.

    Raises:
        ValueError: a bad setting or option, or a study made with other settings.
        TexsegError: the storage cannot be opened, or the folder belongs to another study.
    """
    settings.validate()
    fixed = {k: v for k, v in (fixed or {}).items() if k != "seed"}
    base = TrainConfig.from_dict({**fixed, "seed": settings.seed}).validate()
    space = build_space(base, fixed, settings.models)
    settings.out.mkdir(parents=True, exist_ok=True)
    with _quiet_optuna():
        study, created = _open_study(settings, pruner)
        _check_folder(settings, created)
        _check_fingerprint(study, _fingerprint(base, space))
        workers = _start_workers(settings, fixed, settings.jobs - 1, verbose=log is not None)
        if settings.jobs > 1 and base.threads is None:
            base = replace(base, threads=_threads_per_worker(settings.jobs))
        outcome = _Outcome()
        try:
            _work(study, settings, space, base, log or (lambda line: None), outcome)
        finally:
            for proc in workers:
                proc.wait()
        ids = {_worker_id(os.getpid())} | {_worker_id(proc.pid) for proc in workers}
        trials = study.get_trials(deepcopy=False)
        ran = sum(1 for t in trials if t.user_attrs.get("worker") in ids and t.number >= outcome.first_number)
        interrupted = outcome.interrupted or any(proc.returncode != 0 for proc in workers)
        files, notes, best = write_reports(study, settings, base, space)
    counted = sum(1 for t in trials if _counts(t))
    return SearchResult(settings.out, settings.study_name, _storage_label(settings), ran, counted,
                        settings.trials, interrupted, best, files, notes)


@dataclass
class _Outcome:
    first_number: int = 0  # trials numbered below it existed before this call
    interrupted: bool = False


def _worker_id(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}"


def _work(study: optuna.Study, settings: SearchSettings, space: SearchSpace, base: TrainConfig,
          log: Callable[[str], None], outcome: _Outcome) -> None:
    """One worker: run trials until the study has enough, or the user stops it."""
    outcome.first_number = len(study.get_trials(deepcopy=False))
    while True:
        _fail_stale_trials(study)
        if _slots_taken(study.get_trials(deepcopy=False)) >= settings.trials:
            return
        trial = study.ask()
        before = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number]
        if _slots_taken(before) >= settings.trials:  # another worker took the last slot first
            trial.set_user_attr("status", SURPLUS)
            study.tell(trial, state=_state("FAIL"), skip_if_finished=True)
            return
        study.sampler = _sampler(settings.seed, trial.number)  # consulted lazily by suggest_*
        if _run_trial(study, trial, space, base, settings.out, log) == INTERRUPTED:
            outcome.interrupted = True
            return


def _run_trial(study: optuna.Study, trial: optuna.Trial, space: SearchSpace, base: TrainConfig,
               out: Path, log: Callable[[str], None]) -> str:
    """Train one trial in ``<out>/trials/<number>`` and tell the study how it ended."""
    from texseg.training.loop import COMPLETED as RUN_COMPLETED, DIVERGED as RUN_DIVERGED, PRUNED as RUN_PRUNED
    from texseg.training.loop import train

    run_dir = out / TRIALS_DIR / str(trial.number)
    t0 = time.monotonic()
    try:
        with _Heartbeat(trial):
            config = space.suggest(trial, base)
            trial.set_user_attr("run_dir", str(run_dir.resolve()))
            result = train(config, run_dir, progress=False, on_eval=_PruningCallback(trial, config))
            s = result.summary
            value = float(s["val"].get(METRIC, math.nan))
            for key in ("train_seconds", "iterations"):
                trial.set_user_attr(key, s[key])
    except BaseException as e:
        _tag_failed(study, trial, INTERRUPTED if isinstance(e, KeyboardInterrupt) else ERROR, e)
        raise
    if result.status == RUN_COMPLETED and math.isfinite(value):
        status, told = _finish(study, trial, COMPLETED, value=value)
    elif result.status == RUN_PRUNED:
        status, told = _finish(study, trial, PRUNED, state="PRUNED")
    elif result.status in (RUN_DIVERGED, RUN_COMPLETED):  # diverged, or a NaN IoU: the worst value
        status, told = _finish(study, trial, DIVERGED, value=0.0)
    else:  # interrupted (Ctrl-C / SIGTERM): does not count; the next run replaces it
        status, told = _finish(study, trial, INTERRUPTED, state="FAIL")
    log(_trial_line(trial.number, status, told, time.monotonic() - t0, run_dir))
    return status


def _finish(study: optuna.Study, trial: optuna.Trial, status: str, *, value: float | None = None,
            state: str | None = None) -> tuple[str, optuna.trial.FrozenTrial]:
    """Record the texseg status, then tell the study; ``stale`` if another worker gave up on us."""
    import optuna

    try:
        trial.set_user_attr("status", status)  # attributes are frozen once the trial is told
        told = study.tell(trial, value, state=None if state is None else _state(state))
    except optuna.exceptions.UpdateFinishedTrialError:  # marked stale (heartbeat too late)
        return STALE, study.get_trials(deepcopy=False)[trial.number]
    return status, told


def _tag_failed(study: optuna.Study, trial: optuna.Trial, status: str, error: BaseException) -> None:
    """Mark a trial that raised as FAIL (best effort: the original error matters more)."""
    try:
        trial.set_user_attr("status", status)
        trial.set_user_attr("message", f"{type(error).__name__}: {error}"[:300])
        study.tell(trial, state=_state("FAIL"), skip_if_finished=True)
    except Exception:  # noqa: BLE001 - the storage may be what failed
        pass


class _PruningCallback:
    """``on_eval`` hook: report val IoU per tenth of the budget, ask the pruner."""

    def __init__(self, trial: optuna.Trial, config: TrainConfig) -> None:
        self.trial, self.config = trial, config
        self.reported: set[int] = set()

    def progress(self, step: int, train_seconds: float) -> float:
        """Fraction of the run done, as the training loop measures it."""
        fractions = []
        if self.config.iterations:
            fractions.append(step / self.config.iterations)
        if self.config.time_budget:
            fractions.append(train_seconds / self.config.time_budget)
        return max(fractions)

    def __call__(self, step: int, train_seconds: float, metrics: dict[str, float]) -> bool:
        done = self.progress(step, train_seconds)
        if done >= 1.0:
            return False  # the run has finished anyway: keep it as a completed trial
        bucket = int(done * PRUNE_STEPS)
        value = metrics.get(METRIC, math.nan)
        if bucket in self.reported or not math.isfinite(value):
            return False  # Optuna keeps one value per step: the first eval in each tenth
        self.reported.add(bucket)
        self.trial.report(value, bucket)
        return self.trial.should_prune()


class _Heartbeat:
    """Records host, pid and a periodic heartbeat on a running trial (see module doc)."""

    def __init__(self, trial: optuna.Trial, interval: float = HEARTBEAT_S) -> None:
        self.trial, self.interval = trial, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="texseg-heartbeat", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self.trial.set_user_attr("host", socket.gethostname())
        self.trial.set_user_attr("pid", os.getpid())
        self.trial.set_user_attr("worker", _worker_id(os.getpid()))
        self.trial.set_user_attr("heartbeat", time.time())
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.trial.set_user_attr("heartbeat", time.time())
            except Exception:  # noqa: BLE001 - finished (e.g. marked stale) or storage gone: stop beating
                return

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _fail_stale_trials(study: optuna.Study) -> None:
    """Mark RUNNING trials whose worker is gone as FAIL with status ``stale``."""
    now, host = time.time(), socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(_state("RUNNING"),)):
        if not _is_stale(t, now, host):
            continue
        try:
            study._storage.set_trial_user_attr(t._trial_id, "status", STALE)
            study.tell(t.number, state=_state("FAIL"), skip_if_finished=True)
        except Exception:  # noqa: BLE001 - another worker finished or marked it first
            pass


def _is_stale(t: optuna.trial.FrozenTrial, now: float, host: str) -> bool:
    attrs = t.user_attrs
    pid = attrs.get("pid")
    if attrs.get("host") == host and isinstance(pid, int) and not _pid_alive(pid):
        return True  # same machine, process gone: no need to wait for the heartbeat
    beat = attrs.get("heartbeat")
    if not isinstance(beat, (int, float)):  # just asked for; host/pid not written yet
        beat = t.datetime_start.timestamp() if t.datetime_start else now
    return now - beat > STALE_AFTER_S


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:  # a killed process not yet reaped by its parent is a zombie: dead for us
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _counts(t: optuna.trial.FrozenTrial) -> bool:
    """Finished trials that count toward the total (COMPLETE includes diverged ones)."""
    return t.state.name in ("COMPLETE", "PRUNED")


def _slots_taken(trials: Sequence[optuna.trial.FrozenTrial]) -> int:
    return sum(1 for t in trials if _counts(t) or t.state.name == "RUNNING")


def _state(name: str) -> optuna.trial.TrialState:
    from optuna.trial import TrialState

    return TrialState[name]


def _sampler(seed: int, number: int) -> optuna.samplers.BaseSampler:
    """A TPE sampler for trial ``number``, seeded from ``(seed, number)`` (see module doc)."""
    import optuna

    trial_seed = int(np.random.SeedSequence([seed, number]).generate_state(1)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # multivariate: models lr x optimizer-like interactions; constant_liar: running
        # trials of other workers count as bad, so workers spread out.
        return optuna.samplers.TPESampler(seed=trial_seed, multivariate=True, constant_liar=True)


def _make_pruner(name: str) -> optuna.pruners.BasePruner:
    import optuna

    if name == "none":
        return optuna.pruners.NopPruner()
    # 3 finished trials before pruning anything, and never before 30 % of the budget.
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=3)


# ----------------------------------------------------------- storage and study
def _open_storage(settings: SearchSettings) -> optuna.storages.BaseStorage:
    import optuna

    url = settings.storage
    try:
        if url is None or storage_kind(url) == "journal":
            path = str(settings.out / JOURNAL_FILE) if url is None else url
            try:
                from optuna.storages.journal import JournalFileBackend
            except ImportError:  # optuna < 4.0
                from optuna.storages import JournalFileStorage as JournalFileBackend
            return optuna.storages.JournalStorage(JournalFileBackend(path))
        return optuna.storages.RDBStorage(url)
    except ValueError:
        raise
    except Exception as e:  # missing driver, unreachable server, bad file: one line
        text = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        raise TexsegError(f"cannot open storage {redact(url or str(settings.out / JOURNAL_FILE))}: {text}") \
            from None


def _open_study(settings: SearchSettings, pruner: optuna.pruners.BasePruner | None) -> tuple[optuna.Study, bool]:
    """Load the study, or create it; returns ``(study, created)``."""
    import optuna

    storage = _open_storage(settings)
    existed = settings.study_name in optuna.get_all_study_names(storage)
    study = optuna.create_study(study_name=settings.study_name, storage=storage, direction="maximize",
                                sampler=_sampler(settings.seed, 0), pruner=pruner or _make_pruner(settings.pruner),
                                load_if_exists=True)
    if study.direction.name != "MAXIMIZE":
        raise TexsegError(f"study {settings.study_name!r} in {_storage_label(settings)} minimises; "
                          "it was not made by texseg search")
    return study, not existed


def _storage_label(settings: SearchSettings) -> str:
    return redact(settings.storage) if settings.storage else str(settings.out / JOURNAL_FILE)


def _check_folder(settings: SearchSettings, created: bool) -> None:
    """One folder holds one study: refuse to mix trial directories of two studies."""
    path = settings.out / SEARCH_FILE
    mine = {"study_name": settings.study_name, "storage": redact(settings.storage) if settings.storage else None}
    if path.is_file():
        saved = read_json(path)
        if not isinstance(saved, dict):
            raise TexsegError(f"{path} is not a texseg search file")
        for key, option in (("study_name", "--study-name"), ("storage", "--storage")):
            if saved.get(key) != mine[key]:
                raise TexsegError(f"{settings.out} holds the search {key} {saved.get(key)!r}, not {mine[key]!r}; "
                                  f"give the same {option} or another --out")
        return
    trials_dir = settings.out / TRIALS_DIR
    if created and trials_dir.is_dir() and any(trials_dir.iterdir()):
        raise TexsegError(f"{trials_dir} holds trials of another search; choose another --out")
    atomic_write_json(path, {**mine, "created": datetime.now().isoformat(timespec="seconds"),
                             "texseg": texseg.__version__})


def _fingerprint(base: TrainConfig, space: SearchSpace) -> dict[str, Any]:
    """What defines the problem: trials of one study must share it."""
    config = {k: v for k, v in base.to_dict().items() if k not in WORKER_FIELDS}
    return {"version": 1, "metric": f"val {METRIC}", "base": config, "space": space.describe()}


def _check_fingerprint(study: optuna.Study, mine: dict[str, Any]) -> None:
    key = "texseg_search"
    theirs = study.user_attrs.get(key)
    if theirs is None:
        if study.get_trials(deepcopy=False):
            raise TexsegError(f"study {study.study_name!r} has trials but was not made by texseg search")
        study.set_user_attr(key, mine)
        return
    if theirs == mine:
        return
    diffs = [f"{k}: {theirs['base'].get(k)!r} -> {v!r}" for k, v in mine["base"].items()
             if theirs.get("base", {}).get(k) != v]
    if theirs.get("space") != mine["space"]:
        diffs.append("the searched parameters")
    raise ValueError(f"study {study.study_name!r} was started with other options ({'; '.join(diffs) or 'version'}); "
                     "give the same options, or another --out / --study-name")


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna's INFO lines would interleave with ours; restore its verbosity after."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


# ------------------------------------------------------------ worker processes
def _threads_per_worker(jobs: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // jobs)


def _start_workers(settings: SearchSettings, fixed: Mapping[str, Any], n: int,
                   verbose: bool) -> list[subprocess.Popen[bytes]]:
    """Start ``n`` extra worker processes on the same study.

    Fresh interpreters (not fork: torch's threads do not survive it; not multiprocessing's
    spawn: it re-runs ``python -m`` main modules).
    """
    spec = json.dumps({"settings": {**asdict(settings), "out": str(settings.out)}, "fixed": dict(fixed),
                       "verbose": verbose})
    code = "import sys, texseg.search.study as s; s._worker_main(sys.argv[1])"
    return [subprocess.Popen([sys.executable, "-c", code, spec]) for _ in range(n)]


def _worker_main(spec_json: str) -> None:
    """Entry point of a worker process started by :func:`_start_workers`."""
    spec = json.loads(spec_json)
    d = spec["settings"]
    settings = SearchSettings(**{**d, "out": Path(d["out"]),
                                 "models": tuple(d["models"]) if d["models"] is not None else None})
    fixed = spec["fixed"]
    base = TrainConfig.from_dict({**fixed, "seed": settings.seed}).validate()
    if base.threads is None:
        base = replace(base, threads=_threads_per_worker(settings.jobs))
    space = build_space(base, fixed, settings.models)
    outcome = _Outcome()
    log = (lambda line: print(line, flush=True)) if spec["verbose"] else (lambda line: None)
    try:
        with _quiet_optuna():
            study, _ = _open_study(settings, None)
            _work(study, settings, space, base, log, outcome)
    except KeyboardInterrupt:
        outcome.interrupted = True
    sys.exit(130 if outcome.interrupted else 0)


# ------------------------------------------------------------------- reports
def _trial_line(number: int, status: str, t: optuna.trial.FrozenTrial, seconds: float, run_dir: Path) -> str:
    value = "" if t.value is None else f"IoU {t.value:.4f}  "
    return f"trial {number:>3}  {status:<11} {value}{_params_text(t.params)}  ({seconds:.1f} s, {run_dir})"


def _params_text(params: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in params.items())


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _trial_status(t: optuna.trial.FrozenTrial) -> str:
    status = t.user_attrs.get("status")
    if isinstance(status, str):
        return status
    return {"RUNNING": "running", "COMPLETE": COMPLETED, "PRUNED": PRUNED}.get(t.state.name, t.state.name.lower())


def _seconds(t: optuna.trial.FrozenTrial) -> float | None:
    if t.datetime_start is None or t.datetime_complete is None:
        return None
    return (t.datetime_complete - t.datetime_start).total_seconds()


def write_reports(study: optuna.Study, settings: SearchSettings, base: TrainConfig,
                  space: SearchSpace) -> tuple[list[Path], list[str], dict[str, Any] | None]:
    """Write best.json, trials.csv, history.png, importance.png and summary.md.

    Returns:
        ``(files written, notes, best)``; a note says why a plot was left out.
    """
    out = settings.out
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    best = _best(trials, settings)
    atomic_write_json(out / "best.json", best or {"value": None, "message": "no completed trial yet"})
    atomic_write_text(out / "trials.csv", _trials_csv(trials))
    files = [out / "best.json", out / "trials.csv"]
    notes: list[str] = []
    from texseg.plots import save_figure

    save_figure(_history_figure(trials, settings.study_name), out / "history.png")
    files.append(out / "history.png")
    importances, why = _importances(study, trials)
    if importances:
        save_figure(_importance_figure(importances), out / "importance.png")
        files.append(out / "importance.png")
    else:
        (out / "importance.png").unlink(missing_ok=True)  # never leave an outdated picture
        notes.append(f"no parameter-importance plot: {why}")
    atomic_write_text(out / "summary.md", _summary_md(trials, settings, base, space, best, importances, why))
    files.append(out / "summary.md")
    return files, notes, best


def _best(trials: Sequence[optuna.trial.FrozenTrial], settings: SearchSettings) -> dict[str, Any] | None:
    done = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None]
    if not done:
        return None
    t = max(done, key=lambda t: (t.value, -t.number))  # ties: the earlier trial
    return {
        "value": t.value, "metric": f"val {METRIC}", "number": t.number, "params": t.params,
        "run_dir": t.user_attrs.get("run_dir"), "host": t.user_attrs.get("host"),
        "status": _trial_status(t), "seconds": _seconds(t), "study_name": settings.study_name,
        "storage": _storage_label(settings),
    }


def _trials_csv(trials: Sequence[optuna.trial.FrozenTrial]) -> str:
    params: list[str] = []
    for t in trials:
        params += [p for p in t.params if p not in params]
    columns = ["number", "state", "status", "value", "seconds", "train_seconds", "iterations", *params, "run_dir"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for t in trials:
        seconds = _seconds(t)
        writer.writerow({
            "number": t.number, "state": t.state.name, "status": _trial_status(t),
            "value": "" if t.value is None else f"{t.value:.6g}",
            "seconds": "" if seconds is None else f"{seconds:.2f}",
            "train_seconds": t.user_attrs.get("train_seconds", ""), "iterations": t.user_attrs.get("iterations", ""),
            **{p: _fmt(t.params[p]) if p in t.params else "" for p in params},
            "run_dir": t.user_attrs.get("run_dir", ""),
        })
    return buf.getvalue()


def _importances(study: optuna.Study,
                 trials: Sequence[optuna.trial.FrozenTrial]) -> tuple[dict[str, float], str]:
    """PED-ANOVA importances (no scikit-learn needed), or ``({}, why not)``."""
    import optuna

    values = {t.value for t in trials if t.state.name == "COMPLETE"}
    n = sum(1 for t in trials if t.state.name == "COMPLETE")
    if n < 2:
        return {}, f"needs at least 2 completed trials, the study has {n}"
    if len(values) < 2:
        return {}, "every completed trial has the same value"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
            result = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except Exception as e:  # noqa: BLE001 - a report must not fail the search
        return {}, f"{type(e).__name__}: {e}"
    result = {k: float(v) for k, v in result.items() if math.isfinite(v)}
    return (result, "") if result else ({}, "no parameter varied over the completed trials")


_COLORS = {COMPLETED: "tab:blue", PRUNED: "tab:gray", DIVERGED: "tab:red"}


def _history_figure(trials: Sequence[optuna.trial.FrozenTrial], name: str) -> Any:
    """Value per trial with the best so far, and intermediate val IoU against budget."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax, ax2 = fig.subplots(1, 2)
    for status, color in _COLORS.items():
        pts = [(t.number, t.value) for t in trials if _trial_status(t) == status and t.value is not None]
        if pts:
            ax.scatter(*zip(*pts), color=color, label=f"{status} ({len(pts)})", zorder=3,
                       marker="x" if status == DIVERGED else "o")
    best_x, best_y, best = [], [], -math.inf
    for t in trials:
        if t.state.name == "COMPLETE" and t.value is not None:
            best = max(best, t.value)
            best_x.append(t.number)
            best_y.append(best)
    if best_x:
        ax.step(best_x, best_y, where="post", color="tab:orange", label="best so far")
    ax.set(xlabel="trial", ylabel=f"validation {METRIC.upper()}", title="optimisation history")
    ax.grid(True, alpha=0.3)
    if trials:
        ax.legend(loc="lower right")
    for t in trials:
        if t.intermediate_values:
            steps = sorted(t.intermediate_values)
            ax2.plot([s / PRUNE_STEPS for s in steps], [t.intermediate_values[s] for s in steps],
                     color=_COLORS.get(_trial_status(t), "tab:purple"), alpha=0.6, marker=".")
    ax2.set(xlabel="fraction of the training budget", ylabel=f"validation {METRIC.upper()}",
            title="intermediate values (grey: pruned)")
    ax2.grid(True, alpha=0.3)
    fig.suptitle(f"texseg search {name!r}")
    return fig


def _importance_figure(importances: Mapping[str, float]) -> Any:
    from matplotlib.figure import Figure

    names = list(importances)[::-1]
    fig = Figure(figsize=(6.4, 0.5 * len(names) + 1.5), layout="constrained")
    ax = fig.subplots()
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set(xlabel="importance (PED-ANOVA, completed trials)", title="parameter importance")
    ax.grid(True, axis="x", alpha=0.3)
    return fig


def _summary_md(trials: Sequence[optuna.trial.FrozenTrial], settings: SearchSettings, base: TrainConfig,
                space: SearchSpace, best: dict[str, Any] | None, importances: Mapping[str, float],
                why_no_importance: str) -> str:
    by_status: dict[str, int] = {}
    for t in trials:
        by_status[_trial_status(t)] = by_status.get(_trial_status(t), 0) + 1
    counted = sum(1 for t in trials if _counts(t))
    budget = " and ".join(x for x in (f"{base.time_budget:g} s of training" if base.time_budget else "",
                                      f"{base.iterations} steps" if base.iterations else "") if x)
    wall = sum(s for t in trials if (s := _seconds(t)) is not None)
    lines = [
        f"# texseg search `{settings.study_name}`",
        "",
        f"{counted} of {settings.trials} trials finished "
        f"({', '.join(f'{n} {s}' for s, n in sorted(by_status.items()))}); {wall:.0f} s of trial time in all.",
        f"Objective: validation IoU (eval mode, {base.val_size} held-out images, val seed {base.val_seed}) at "
        f"the end of each trial. Every trial trained for {budget}, seed {base.seed}, at N={base.image_size}, "
        f"sigma1={base.sigma1:g}, sigma2={base.sigma2:g}, {base.regions} regions.",
        f"Sampler: TPE (seed {settings.seed}); pruner: {settings.pruner} (on val IoU per tenth of the budget). "
        f"Diverged trials count as IoU 0. Storage: `{_storage_label(settings)}`.",
        "",
        "## Best",
        "",
    ]
    if best:
        lines += [f"IoU **{best['value']:.4f}**, trial {best['number']} (`{best['run_dir']}`): "
                  f"{_params_text(best['params'])}.",
                  "", f"Reproduce: `texseg train --config {best['run_dir']}/config.json --out NEW_DIR`."]
    else:
        lines.append("No trial has completed yet.")
    lines += ["", "## Top trials", "", "| trial | IoU | status | params |", "|---:|---:|---|---|"]
    ranked = sorted((t for t in trials if t.value is not None), key=lambda t: -t.value)[:10]
    lines += [f"| {t.number} | {t.value:.4f} | {_trial_status(t)} | {_params_text(t.params)} |" for t in ranked]
    lines += ["", "## Search space", ""]
    lines += [f"- {k}: {v}" for k, v in space.describe().items()]
    fixed = [k for k in SEARCHABLE if k not in space.searched]
    if fixed:
        lines.append(f"- fixed: {', '.join(fixed)} (as given, or the defaults of `texseg train`)")
    lines += ["", "## Plots", "", "![optimisation history](history.png)", ""]
    if importances:
        lines += ["Parameter importance (PED-ANOVA over the completed trials; rough with few trials):", "",
                  *[f"- {k}: {v:.2f}" for k, v in importances.items()], "", "![parameter importance](importance.png)"]
    else:
        lines.append(f"No parameter-importance plot: {why_no_importance}.")
    lines += ["", f"All trials: `trials.csv`; best: `best.json`; each trial is a run directory under "
                  f"`{TRIALS_DIR}/`. Run the same command again to continue the search.", ""]
    return "\n".join(lines)
