"""A run's ``summary.json``, typed: :class:`RunSummary` is its only writer and reader.

The file's keys are those texseg has always written, plus ``schema_version``; a summary
written by an older texseg (without the newer keys, or with keys since dropped) loads
without error: missing keys take their defaults, unknown ones are kept in
:attr:`RunSummary.extra` and written back unchanged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from texseg.io import atomic_write_json, read_json
from texseg.pages.collect import ReportError, read_json_file

# The type of each value a reader may rely on, where present and not null (a hand edit may break it).
_NUMBER = (int, float)
_TYPES: dict[str, type | tuple[type, ...]] = {
    "val": dict, "val.*": _NUMBER, "warnings": list, "notes": list, "status": str, "message": str,
    "model": str, "parameters": int, "iterations": _NUMBER, "train_seconds": _NUMBER, "eval_seconds": _NUMBER,
    "it_per_s": _NUMBER, "skipped_steps": _NUMBER, "label_mode": str}

SCHEMA_VERSION = 1
# Fields whose key in the file differs from the attribute's name (the file's keys predate the class).
_KEYS = {"torch_version": "torch", "texseg_version": "texseg"}


@dataclass
class RunSummary:
    """What ``summary.json`` holds: how a run stands or ended, its latest held-out metrics and timings.

    Attributes:
        status: ``running``, ``completed``, ``diverged``, ``interrupted``, ``pruned`` or ``failed``
            (:class:`texseg.training.RunStatus`).
        message: why it stopped (empty for a run that simply completed).
        model: the architecture's registry name; ``model_kwargs`` its arguments (``num_classes`` included).
        parameters: the model's parameter count.
        iterations: training steps taken.
        world_size: processes it trained on (1: not distributed).
        train_seconds: training time (evaluation excluded); ``eval_seconds`` evaluation time.
        it_per_s: steps per second of training time.
        skipped_steps: non-finite steps skipped (``skip_nonfinite``).
        val: the latest held-out metrics (``iou``, ``accuracy``, ``trivial_iou``...).
        val_size, val_seed: the held-out set.
        device, precision, threads, compiled, batch_size, lr: how it trained.
        torch_version, texseg_version: the versions it trained with (keys ``torch``, ``texseg``).
        cpu_share: the share of its threads' CPU time it got (None: not measured).
        notes: caveats for its reader; ``warnings``: why its scores should not be read as a model's.
        label_mode: ``fixed`` or ``any`` (label numbers arbitrary).
        defaults: what the device profile filled in and where it was measured.
        schema_version: the version of this layout (:data:`SCHEMA_VERSION`; 0: written before it had one).
        extra: keys of the file this version does not know (kept, written back).
    """

    status: str = "running"
    message: str = ""
    model: str = ""
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    parameters: int = 0
    iterations: int = 0
    world_size: int = 1
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    it_per_s: float = 0.0
    skipped_steps: int = 0
    val: dict[str, float] = field(default_factory=dict)
    val_size: int | None = None
    val_seed: int | None = None
    device: str = ""
    precision: str = ""
    threads: int | None = None
    torch_version: str = ""
    cpu_share: float | None = None
    texseg_version: str = ""
    notes: list[str] = field(default_factory=list)
    label_mode: str = "fixed"
    warnings: list[str] = field(default_factory=list)
    defaults: dict[str, Any] = field(default_factory=dict)
    compiled: bool = False
    batch_size: int | None = None
    lr: float | None = None
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ the file
    def to_dict(self) -> dict[str, Any]:
        """The file's contents: every field under its key, ``extra``'s keys alongside."""
        out = dict(self.extra)
        for f in fields(self):
            if f.name != "extra":
                out[_KEYS.get(f.name, f.name)] = getattr(self, f.name)
        return out

    def to_json(self) -> str:
        """The file's text: indented, key-sorted JSON (what :meth:`write` writes)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=True) + "\n"

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write ``summary.json`` at ``path`` atomically."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSummary:
        """A summary from a file's contents; missing keys take their defaults (an older run's file),
        a file without ``schema_version`` is version 0.

        Raises:
            ValueError: ``data`` is not a JSON object.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"a run summary must be a JSON object, got {type(data).__name__}")
        by_key = {_KEYS.get(f.name, f.name): f.name for f in fields(cls) if f.name != "extra"}
        known = {by_key[k]: v for k, v in data.items() if k in by_key}
        known.setdefault("schema_version", 0)
        return cls(**known, extra={k: v for k, v in data.items() if k not in by_key})

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> RunSummary:
        """Read a ``summary.json`` (a run folder's, or the file itself).

        Raises:
            ValueError: the file is missing, not JSON, or not a JSON object (the message names it).
        """
        path = Path(path)
        if path.is_dir():
            path = path / "summary.json"
        return cls.from_dict(read_json(path))

    @staticmethod
    def read_as_written(path: str | os.PathLike[str], *, missing_ok: bool = False) -> dict[str, Any]:
        """The keys a ``summary.json`` holds, as written (no defaults filled in), each present value
        checked against the type this class gives it: what a report page shows of a run, which
        must show a hand-edited or older file as it is rather than with defaults.

        Args:
            path: a run folder or its ``summary.json``.
            missing_ok: an absent or unreadable file gives ``{}`` (a report's optional part).

        Raises:
            ReportError: the file cannot be read, is not a JSON object, or a value has the wrong type
                (the message names the file and the key); never with ``missing_ok`` for the first two.
        """
        path = Path(path)
        path = path / "summary.json" if path.is_dir() or path.suffix != ".json" else path
        if missing_ok and not path.is_file():
            return {}
        try:
            return read_json_file(path, _TYPES)
        except ReportError:
            if missing_ok:
                return {}
            raise

    # --------------------------------------------- scripts written against the dict
    def __getitem__(self, key: str) -> Any:
        """``summary["val"]``: the file's value of ``key``, for scripts written when this was a dict."""
        return self.to_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        """``summary.get("val", {})``, as for a dict of the file's contents."""
        return self.to_dict().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.to_dict()
