"""The study and where it lives: storage, experiment folder, and the trials' bookkeeping.

- Opening the storage (a journal file by default, or an Optuna RDB URL, with passwords
  redacted wherever a URL is shown) and the study, with its sampler and pruner.
- The experiment folder: ``search.json`` ties a folder to one study, and a study
  records a fingerprint of its problem so that all its trials share it.
- The trials' records: their texseg status, the heartbeat of a running trial and the
  marking of stale trials (see :mod:`texseg.search.study` for why).
"""

from __future__ import annotations

import os
import random
import re
import socket
import threading
import time
import warnings
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.trial import TrialState

import texseg
from texseg.errors import TexsegError
from texseg.io import atomic_write_json, exclusive_lock, read_json
from texseg.search.settings import SearchSettings, storage_kind
from texseg.search.space import METRIC, SearchSpace
from texseg.training.config import TrainConfig

if TYPE_CHECKING:
    import optuna

__all__ = ["Heartbeat", "check_fingerprint", "check_folder", "check_new_study", "counts_toward_total",
           "fail_stale_trials", "fingerprint", "is_stale", "make_sampler", "open_storage", "open_study", "redact",
           "storage_label", "trial_state", "write_folder_file"]

JOURNAL_FILE = "study.journal"
SEARCH_FILE = "search.json"
TRIALS_DIR = "trials"
PRUNE_STEPS = 10  # intermediate values are reported per tenth of the budget
HEARTBEAT_S = 15.0
STALE_AFTER_S = 120.0
CREATE_ATTEMPTS = 5  # tries to create or load a study that other processes are creating at the same time
# Fields that may differ between the workers of one study (they do not change the problem).
WORKER_FIELDS = ("device", "threads")

# texseg status of a trial (its user attribute "status")
COMPLETED, PRUNED, DIVERGED = "completed", "pruned", "diverged"
INTERRUPTED, STALE, SURPLUS, ERROR = "interrupted", "stale", "surplus", "error"


def redact(url: str) -> str:
    """The URL without its password (it is written to files and printed).

    Parsed by SQLAlchemy (``make_url``, what Optuna's RDB storage uses). A password with an
    unescaped ``@`` makes the URL ambiguous; everything up to the *last* ``@`` before the
    host is then taken as the password, so no part of it is shown.
    """
    parsed = _parse_url(url)
    if parsed is None:  # a journal file path, or not a URL SQLAlchemy can read: hide anything like a password
        return re.sub(r"(://[^:/@]*):.*@", r"\1:***@", url)
    return parsed.render_as_string(hide_password=True)


def _parse_url(url: str) -> Any:
    """SQLAlchemy's URL of ``url`` with an ambiguous password made whole, or None."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if "://" not in url:
        return None
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return None
    if parsed.host and "@" in parsed.host and parsed.password is not None:
        rest, host = parsed.host.rsplit("@", 1)
        parsed = parsed.set(password=f"{parsed.password}@{rest}", host=host)
    return parsed


def _hide_secrets(text: str, url: str | None) -> str:
    """``text`` (an error from a driver) without the URL's password or any piece of it."""
    if not url:
        return text
    text = text.replace(url, redact(url))
    parsed = _parse_url(url)
    password = parsed.password if parsed is not None else None
    if password:
        for secret in sorted({password, *password.split("@")}, key=len, reverse=True):
            if len(secret) >= 2:  # one character would blank out half the message
                text = text.replace(secret, "***")
    return text


# ----------------------------------------------------------- storage and study
def open_storage(settings: SearchSettings) -> optuna.storages.BaseStorage:
    url = settings.storage
    if url is None:
        settings.out.mkdir(parents=True, exist_ok=True)
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
        if _lost_creation_race(e):
            raise  # another process is creating the same tables: open_study tries again
        text = _hide_secrets(str(e).splitlines()[0][:300] if str(e) else type(e).__name__, url)
        raise TexsegError(f"cannot open storage {redact(url or str(settings.out / JOURNAL_FILE))}: {text}") \
            from None


def open_study(settings: SearchSettings, pruner: optuna.pruners.BasePruner | None) -> tuple[optuna.Study, bool]:
    """Load the study, or create it; returns ``(study, created)``.

    Processes started together race to create the database's tables and the study: on
    one machine a lock file beside an SQLite database serialises them; elsewhere (a
    server) a lost race is retried.
    """
    lock = _sqlite_lock_path(settings.storage)
    new_lock = lock is not None and not lock.exists()
    try:
        with exclusive_lock(lock, wait=True) if lock else nullcontext():
            for attempt in range(CREATE_ATTEMPTS):
                try:
                    return _open_or_create_study(settings, pruner)
                except TexsegError:
                    raise
                except Exception as e:  # noqa: BLE001 - a concurrent creator won the race; look again
                    if attempt == CREATE_ATTEMPTS - 1:  # not a race: a damaged file, a broken database
                        text = _hide_secrets((str(e).strip().splitlines() or [type(e).__name__])[0][:300],
                                             settings.storage)
                        raise TexsegError(f"cannot open the study in {storage_label(settings)}: {text}") from None
                    time.sleep(0.2 * (attempt + 1) * (1 + random.random()))
    except BaseException:
        # Nothing was opened: the lock file this call made would be litter beside the user's files. (A
        # process waiting on it fails the same way; the lock only orders the creation of a study.)
        if new_lock:
            lock.unlink(missing_ok=True)
        raise
    raise AssertionError("unreachable")


def _lost_creation_race(e: Exception) -> bool:
    """Whether ``e`` says another process created the same tables or study first."""
    text = f"{type(e).__name__} {e}"
    return any(w in text for w in ("IntegrityError", "UniqueViolation", "already exists", "duplicate key",
                                   "UNIQUE constraint"))


def _sqlite_lock_path(url: str | None) -> Path | None:
    """``<db file>.texseg-lock`` for an ``sqlite:///`` URL of a file, else None."""
    if not url or not url.startswith("sqlite:///") or url.endswith(":memory:"):
        return None
    db = Path(url[len("sqlite:///"):])
    return db.with_name(db.name + ".texseg-lock") if db.name and db.parent.is_dir() else None


def _open_or_create_study(settings: SearchSettings,
                          pruner: optuna.pruners.BasePruner | None) -> tuple[optuna.Study, bool]:
    storage = open_storage(settings)
    existed = settings.study_name in optuna.get_all_study_names(storage)
    study = optuna.create_study(study_name=settings.study_name, storage=storage, direction="maximize",
                                sampler=make_sampler(settings.seed, 0), pruner=pruner or _make_pruner(settings.pruner),
                                load_if_exists=True)
    if study.direction.name != "MAXIMIZE":
        raise TexsegError(f"study {settings.study_name!r} in {storage_label(settings)} minimises; "
                          "it was not made by texseg search")
    return study, not existed


def storage_label(settings: SearchSettings) -> str:
    return redact(settings.storage) if settings.storage else str(settings.out / JOURNAL_FILE)


def make_sampler(seed: int, number: int) -> optuna.samplers.BaseSampler:
    """A TPE sampler for trial ``number``, seeded from ``(seed, number)`` (see :mod:`texseg.search.study`)."""
    trial_seed = int(np.random.SeedSequence([seed, number]).generate_state(1)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # multivariate: models lr x optimizer-like interactions; constant_liar: running
        # trials of other workers count as bad, so workers spread out.
        return optuna.samplers.TPESampler(seed=trial_seed, multivariate=True, constant_liar=True)


def _make_pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "none":
        return optuna.pruners.NopPruner()
    # 3 finished trials before pruning anything, and never before 30 % of the budget.
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=3)


# ---------------------------------------------------- folder and fingerprint
def _folder_record(settings: SearchSettings) -> dict[str, Any]:
    return {"study_name": settings.study_name, "storage": redact(settings.storage) if settings.storage else None}


def check_folder(settings: SearchSettings) -> None:
    """One folder holds one study: refuse another study before touching anything."""
    path = settings.out / SEARCH_FILE
    if not path.is_file():
        return
    saved, mine = read_json(path), _folder_record(settings)
    if not isinstance(saved, dict):
        raise TexsegError(f"{path} is not a texseg search file")
    for key in ("study_name", "storage"):
        if saved.get(key) != mine[key]:
            raise TexsegError(f"{settings.out} holds the search with {key} {saved.get(key)!r}, not {mine[key]!r}; "
                              f"give the same `{key}` or another `out`")


def check_new_study(settings: SearchSettings, created: bool) -> None:
    """A new study must not inherit trial directories (e.g. its journal was deleted)."""
    trials_dir = settings.out / TRIALS_DIR
    if created and trials_dir.is_dir() and any(trials_dir.iterdir()):
        raise TexsegError(f"{trials_dir} holds trials of another study; choose another `out`")


def write_folder_file(settings: SearchSettings) -> None:
    settings.out.mkdir(parents=True, exist_ok=True)
    if not (settings.out / SEARCH_FILE).is_file():
        atomic_write_json(settings.out / SEARCH_FILE, {**_folder_record(settings), "texseg": texseg.__version__,
                                                       "created": datetime.now().isoformat(timespec="seconds")})


def fingerprint(base: TrainConfig, space: SearchSpace) -> dict[str, Any]:
    """What defines the problem: trials of one study must share it."""
    config = {k: v for k, v in base.to_dict().items() if k not in WORKER_FIELDS}
    return {"version": 1, "metric": f"val {METRIC}", "base": config, "space": space.describe()}


def check_fingerprint(study: optuna.Study, mine: dict[str, Any]) -> None:
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
                     "give the same options, or another `out` / `study_name`")


# ------------------------------------------------------------- trial records
def trial_state(name: str) -> optuna.trial.TrialState:
    return TrialState[name]


def counts_toward_total(t: optuna.trial.FrozenTrial) -> bool:
    """Finished trials that count toward the total (COMPLETE includes diverged ones)."""
    return t.state.name in ("COMPLETE", "PRUNED")


class Heartbeat:
    """Refreshes the ``heartbeat`` attribute of a running trial from a thread (see :mod:`texseg.search.study`)."""
    def __init__(self, trial: optuna.Trial, interval: float = HEARTBEAT_S) -> None:
        self.trial, self.interval = trial, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="texseg-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
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


def fail_stale_trials(study: optuna.Study) -> None:
    """Mark RUNNING trials whose worker is gone as FAIL with status ``stale``."""
    now, host = time.time(), socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(trial_state("RUNNING"),)):
        if not is_stale(t, now, host):
            continue
        try:
            # Optuna has no public way to set an attribute of a trial this process did not ask for.
            study._storage.set_trial_user_attr(t._trial_id, "status", STALE)
            study.tell(t.number, state=trial_state("FAIL"), skip_if_finished=True)
        except Exception:  # noqa: BLE001 - another worker finished or marked it first
            pass


def is_stale(t: optuna.trial.FrozenTrial, now: float, host: str) -> bool:
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
