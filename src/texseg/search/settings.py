"""Search settings: how a search is run (:class:`SearchSettings`) and the checks on them.

The trials' own settings are a :class:`~texseg.training.config.TrainConfig`; this
module holds what belongs to the search itself (its folder, the number of trials, the
storage URL, the study name, seed, workers, pruner and candidate models).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from texseg._validate import check_choice, check_int
from texseg.models import list_models

__all__ = ["SearchSettings", "storage_kind"]

DEFAULT_STUDY = "texseg"
PRUNERS = ("median", "none")
RDB_DIALECTS = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")


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
    scheme, rest = url.split("://", 1)
    scheme = scheme.lower()
    if scheme.split("+", 1)[0] == "sqlite" and rest != "/:memory:" and \
            (not rest.startswith("/") or not rest[1:] or rest.endswith("/")):
        raise ValueError(f"storage {url!r} names no database file; use sqlite:///FILE.db (a path relative to "
                         "the current folder) or sqlite:////ABSOLUTE/PATH.db")
    if scheme.split("+", 1)[0] in RDB_DIALECTS:
        return "rdb"
    raise ValueError(
        f"storage has an unknown scheme {scheme!r}; use a journal file path, sqlite:///FILE, "
        f"postgresql://... or mysql://..."
    )
