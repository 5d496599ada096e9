"""``result.json``: the one structured result of an experiment, a search or a benchmark.

The library function that ran the work returns a typed result; the caller writes it here
once, and ``summary.md`` (or ``leaderboard.md``) and ``report.html`` are both rendered from
it, so nothing is parsed back out of Markdown. The file is plain JSON with two fixed keys,
``schema_version`` and ``kind``; NaN is written as ``null`` (strict JSON), and read back as NaN
where a number is expected. See ``docs/reference/result-json.md``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from texseg.io import atomic_write_json, read_json

RESULT_JSON = "result.json"
SCHEMA_VERSION = 1
RESULT_KINDS = ("experiment", "table", "search", "benchmark")


def _strict(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def number(value: Any) -> float:
    """A number of result.json as a float (null: NaN)."""
    return math.nan if value is None else float(value)


def write_result(folder: str | os.PathLike[str], kind: str, data: dict[str, Any]) -> Path:
    """Write ``<folder>/result.json``: ``data`` with ``schema_version`` and ``kind`` (atomically).

    Args:
        folder: the experiment, search or benchmark folder.
        kind: one of :data:`RESULT_KINDS`.
        data: the result's fields (JSON types, Paths, NaN allowed).

    Returns:
        The path written.
    """
    if kind not in RESULT_KINDS:
        raise ValueError(f"kind must be one of {', '.join(RESULT_KINDS)}, got {kind!r}")
    path = Path(folder) / RESULT_JSON
    atomic_write_json(path, {"schema_version": SCHEMA_VERSION, "kind": kind, **_strict(data)})
    return path


def read_result(folder: str | os.PathLike[str], kind: str | None = None) -> dict[str, Any] | None:
    """``<folder>/result.json`` as a dict, or None if the folder has none (written by an older texseg).

    Raises:
        ValueError: the file is not a JSON object of this kind, or has a newer schema than this texseg reads.
    """
    path = Path(folder) / RESULT_JSON
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version {version!r} is not one this texseg reads (1..{SCHEMA_VERSION}); "
                         "upgrade texseg")
    if kind is not None and data.get("kind") != kind:
        raise ValueError(f"{path}: holds a {data.get('kind')!r} result, not {kind!r}")
    return data
