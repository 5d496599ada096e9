"""The run directory: one folder per training run, every file written atomically.

Contents::

    config.json        the resolved TrainConfig
    model.json         architecture name and kwargs (see texseg.checkpoint)
    model.safetensors  the latest good weights
    metrics.csv        step, train_seconds, lr, train_loss, val_* (one row per evaluation)
    summary.json       final metrics, status, timings
    samples.png        input | true mask | prediction on validation images
    curves.png         loss and val IoU against steps and against training time
    .lock              held while a process writes the run
"""

from __future__ import annotations

import csv
import fcntl
import io
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from texseg.errors import RunDirError
from texseg.io import atomic_write_json, atomic_write_text

CONFIG = "config.json"
METRICS = "metrics.csv"
SUMMARY = "summary.json"


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

        Raises:
            RunDirError: the folder cannot be created or written, already holds a run
                (without ``resume``), or another process is writing it.
        """
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock_file = open(self.path / ".lock", "a+")  # noqa: SIM115 (held open)
        except OSError as e:
            raise RunDirError(f"cannot write the run directory {self.path}: {e.strerror or e}") from None
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.close()
            raise RunDirError(f"{self.path} is in use by another texseg process") from None
        if not resume and (self.path / CONFIG).exists():
            self.close()
            raise RunDirError(
                f"{self.path} already holds a run; choose another --out (nothing was changed)"
            )
        self.rows: list[dict[str, Any]] = []

    def close(self) -> None:
        """Release the lock."""
        if not self._lock_file.closed:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def file(self, name: str) -> Path:
        return self.path / name

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_json(self.path / CONFIG, config)

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.path / SUMMARY, summary)

    def append_metrics(self, row: dict[str, Any]) -> None:
        """Add one evaluation row and rewrite ``metrics.csv`` whole (atomic, small)."""
        self.rows.append(row)
        self.rewrite_metrics()

    def rewrite_metrics(self) -> None:
        """Write ``metrics.csv`` from :attr:`rows`."""
        columns: list[str] = []
        for r in self.rows:
            columns += [c for c in r if c not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for r in self.rows:
            writer.writerow({k: _fmt(v) for k, v in r.items()})
        atomic_write_text(self.path / METRICS, buf.getvalue())


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, float]]:
    """Rows of a run's ``metrics.csv`` as floats (empty cells become NaN)."""
    with open(Path(path) / METRICS, newline="", encoding="utf-8") as f:
        return [{k: float(v) if v != "" else float("nan") for k, v in row.items()} for row in csv.DictReader(f)]
