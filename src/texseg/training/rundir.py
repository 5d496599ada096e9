"""The run directory: one folder per training run, every file written atomically.

Contents::

    config.json        the resolved TrainConfig (written last when a run starts: its
                       presence means the run exists and can be resumed)
    model.json         architecture name and kwargs (see texseg.checkpoint)
    model.safetensors  the latest good weights
    resume.pt          model, optimizer, RNG states, counters (see texseg.checkpoint)
    metrics.csv        step, train_seconds, lr, train_loss, val_* (one row per evaluation)
    summary.json       final metrics, status, timings (texseg.training.summary.RunSummary)
    samples.png        input | true mask | prediction on validation images   } written by the default
    curves.png         loss and val IoU against steps and against training time } callbacks
    report.html        the run on one page (texseg.report), written when it ends } (texseg.training.callbacks)
    .texseg-run        marks the folder as a run texseg created (so its leftovers are its own)
    .lock              held while a process writes the run
"""

from __future__ import annotations

import csv
import errno
import json
import os
from contextlib import ExitStack
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

from texseg.errors import RunDirError
from texseg.io import atomic_write_json, atomic_write_text, exclusive_lock, overwrite_in_place, write_csv
from texseg.training.summary import RunSummary

CONFIG = "config.json"
METRICS = "metrics.csv"
SUMMARY = "summary.json"
MARKER = ".texseg-run"
BEST = "best"  # keep_best: the weights of the best held-out IoU, a loadable model folder
# Every file a run writes: none of them may be replaced in a folder texseg did not create.
RUN_FILES = (CONFIG, METRICS, SUMMARY, "model.json", "model.safetensors", "resume.pt", "samples.png",
             "curves.png", "report.html")


class RunStatus(str, Enum):
    """How a run stands, as written in its ``summary.json``."""

    RUNNING = "running"  # being trained, or killed while it was
    COMPLETED = "completed"
    DIVERGED = "diverged"  # NaN/inf; the last good weights are kept
    INTERRUPTED = "interrupted"  # a stop signal; resumable
    PRUNED = "pruned"  # stopped by the caller (a search's pruner)
    FAILED = "failed"  # could not write its files (a full disk); resumable once fixed

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def ended(self) -> bool:
        """Whether the run is over for good (never trained again)."""
        return self in (RunStatus.COMPLETED, RunStatus.DIVERGED, RunStatus.PRUNED)


def read_status(run_dir: str | os.PathLike[str]) -> RunStatus | None:
    """The status in a run's ``summary.json``; None when it has none or it is unreadable."""
    try:
        return RunStatus(RunSummary.from_file(Path(run_dir) / SUMMARY).status)
    except ValueError:
        return None


def run_label_mode(model_path: str | os.PathLike[str], scene: dict[str, Any] | None = None) -> str:
    """How a saved model's label numbers are to be read: ``fixed`` or ``any`` (arbitrary).

    The ``label_mode`` its run recorded in ``summary.json`` (in the model's folder, or the run
    above a ``best/`` folder); for a model without one, ``any`` when it was trained on
    mosaics or mixed families (``scene["texture"]``), as :attr:`TrainConfig.labels` decides.
    """
    path = Path(model_path)
    folder = path if path.is_dir() else path.parent
    for candidate in (folder, folder.parent) if folder.name == BEST else (folder,):
        try:
            mode = RunSummary.from_file(candidate / SUMMARY).label_mode
        except (ValueError, OSError):
            continue
        if mode in ("fixed", "any"):
            return str(mode)
    return "any" if (scene or {}).get("texture") in ("mosaic", "mixed") else "fixed"


def default_run_dir(model: str, root: str | os.PathLike[str] = "runs") -> Path:
    """``runs/<YYYYmmdd-HHMMSS>-<model>``, with a numeric suffix if it already exists."""
    base = Path(root) / f"{datetime.now():%Y%m%d-%H%M%S}-{model}"
    path, i = base, 1
    while path.exists():
        path, i = base.with_name(f"{base.name}-{i}"), i + 1
    return path


class RunDir:
    """An open run directory, locked against a second writer until :meth:`close`."""

    def __init__(self, path: str | os.PathLike[str], *, resume: bool = False) -> None:
        """Create (or, with ``resume``, reopen) the run directory at ``path`` and lock it.

        A folder that holds a started run (``config.json``) is refused unless ``resume``;
        one that texseg created for a run killed before it started is cleared and reused;
        a folder with files of the user's that a run would replace is refused.

        Raises:
            RunDirError: the folder cannot be created or written, already holds a run
                (without ``resume``), holds files a run would overwrite, or another
                process is writing it.
        """
        self.path = Path(path)
        self._lock = ExitStack()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock.enter_context(exclusive_lock(self.path / ".lock",
                                                    f"{self.path} is in use by another texseg process"))
        except OSError as e:
            raise RunDirError(f"cannot write the run directory {self.path}: {e.strerror or e}") from None
        try:
            self._prepare(resume)
        except BaseException:
            self.close()
            raise
        self.rows: list[dict[str, Any]] = []

    def _prepare(self, resume: bool) -> None:
        """Check what the folder holds and clear what killed writers left (we hold the lock)."""
        for tmp in self.path.glob(".*.tmp"):  # half-written files of a killed process
            tmp.unlink(missing_ok=True)
        started = (self.path / CONFIG).exists()
        if resume:
            return
        if started:
            raise RunDirError(f"{self.path} already holds a run; choose another output folder (nothing was changed)")
        ours = (self.path / MARKER).exists()
        if ours:  # a run killed before it wrote config.json: nothing in it can be resumed
            for name in RUN_FILES:
                (self.path / name).unlink(missing_ok=True)
            return
        clashes = [name for name in RUN_FILES if (self.path / name).exists()]
        if clashes:
            raise RunDirError(f"{self.path} holds files a run would overwrite ({', '.join(clashes)}); "
                              "choose another output folder (nothing was changed)")
        atomic_write_text(self.path / MARKER, "a texseg run directory\n")

    def close(self) -> None:
        """Release the lock."""
        self._lock.close()

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def file(self, name: str) -> Path:
        return self.path / name

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_json(self.path / CONFIG, config)

    def write_summary(self, summary: RunSummary) -> None:
        summary.write(self.path / SUMMARY)

    def write_summary_best_effort(self, summary: RunSummary) -> None:
        """Write the summary even on a full disk if at all possible (for recording a failure; never raises)."""
        try:
            self.write_summary(summary)
        except OSError as e:
            if e.errno != errno.ENOSPC or not (self.path / SUMMARY).exists():
                return
            try:
                compact = json.dumps(summary.to_dict(), sort_keys=True) + "\n"  # fits where the indented one did not
                overwrite_in_place(self.path / SUMMARY, compact)
            except OSError:
                pass

    def append_metrics(self, row: dict[str, Any]) -> None:
        """Add one evaluation row and rewrite ``metrics.csv`` whole (atomic, small)."""
        self.rows.append(row)
        self.rewrite_metrics()

    def rewrite_metrics(self) -> None:
        """Write ``metrics.csv`` from :attr:`rows`."""
        write_csv(self.path / METRICS, self.rows)


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, float]]:
    """Rows of a run's ``metrics.csv`` as floats (empty cells become NaN)."""
    with open(Path(path) / METRICS, newline="", encoding="utf-8") as f:
        return [{k: float(v) if v != "" else float("nan") for k, v in row.items()} for row in csv.DictReader(f)]
