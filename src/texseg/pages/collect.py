"""What a report shows, gathered from a folder: the page model and the helpers every kind uses.

Nothing here renders HTML: a page builder (:mod:`texseg.training.report` for a run,
:mod:`texseg.report.kinds` for the others) fills a :class:`Page` and
:mod:`texseg.pages.render` turns it into a page with the templates.
"""

from __future__ import annotations

import base64
import csv
import math
import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from markupsafe import Markup, escape

from texseg import __version__
from texseg.device import cpu_description
from texseg.errors import TexsegError
from texseg.io import read_json

REPORT_HTML = "report.html"
KINDS = ("run", "experiment", "search", "benchmark")

# Figures a folder may hold, in the order a reader wants them, with what they show.
FIGURE_CAPTIONS = {
    "samples.png": "Validation samples: input | true mask | eval-mode prediction.",
    "curves.png": "Learning curves: training loss and validation IoU against steps and training time.",
    "final.png": "Final held-out metric per setting (mean and 95% interval over seeds).",
    "heatmap.png": "Held-out metric over the grid of settings.",
    "scenes.png": "The scenes of the grid.",
    "lr-range.png": "Learning-rate range test: loss against learning rate.",
    "history.png": "Optimisation history: value per trial, best so far, intermediate values.",
    "importance.png": "Parameter importance over the completed trials.",
    "preview.png": "Preview of the data.",
}
_FIGURE_PREFIXES = {"bars-": "Leaderboard of suite {}: mean and 95% interval over images.",
                    "panel-": "Predictions of suite {} (labels matched to the truth)."}
_STATUS_LEVEL = {"completed": "ok", "done": "ok", "pruned": "warn", "interrupted": "warn", "running": "warn",
                 "not run": "warn", "diverged": "bad", "failed": "bad", "error": "bad"}


class ReportError(TexsegError):
    """A folder holds nothing a report can be made of, or its files cannot be read."""


@dataclass
class Card:
    """A headline number: ``label``, ``value`` and a line under it."""

    label: str
    value: str
    sub: str = ""


@dataclass
class Table:
    """A table of text cells; numeric columns are right-aligned, ``highlight`` rows emphasised."""

    columns: list[str]
    rows: list[list[str]]
    caption: str = ""
    highlight: set[int] = field(default_factory=set)

    @property
    def numeric(self) -> list[bool]:
        """Per column: whether every non-empty cell starts like a number."""
        def number(cell: str) -> bool:
            return bool(re.match(r"^[-+]?(\d|\.\d|nan|inf)", cell)) or cell in ("", "—")
        return [all(number(r[i]) for r in self.rows) and any(r[i] not in ("", "—") for r in self.rows)
                for i in range(len(self.columns))]


@dataclass
class FigureData:
    """A PNG from the folder, embedded as a data URI."""

    name: str
    caption: str
    uri: str


@dataclass
class Page:
    """Everything one report says; the templates only lay it out."""

    kind: str
    title: str
    path: str
    status: str
    cards: list[Card] = field(default_factory=list)
    status_items: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    description: list[Markup] = field(default_factory=list)
    command: str = ""
    config_title: str = "Configuration"
    config: list[tuple[str, str, bool]] = field(default_factory=list)  # (key, value, differs from default)
    tables: list[Table] = field(default_factory=list)
    details: list[Table] = field(default_factory=list)
    figures: list[FigureData] = field(default_factory=list)
    environment: list[tuple[str, str]] = field(default_factory=list)
    sections: list[tuple[str, list[Markup]]] = field(default_factory=list)  # more prose: (heading, paragraphs)

    status_detail: str = ""  # e.g. "1 of 4 cells": how much of a folder of trials the status concerns
    verdict: str = ""  # the one-line verdict on a ranking, in the words of summary.md and the terminal
    device_filled: list[tuple[str, str]] = field(default_factory=list)  # (key, value) the device chose, not the user

    @property
    def status_text(self) -> str:
        """The badge: the status, what it concerns, and how many warnings come with it."""
        n = len(self.warnings)
        return (self.status + (f": {self.status_detail}" if self.status_detail else "")
                + (f" · {n} warning{'s' if n > 1 else ''}" if n else ""))

    @property
    def status_level(self) -> str:
        """``ok``, ``warn`` or ``bad``: the colour of the status badge."""
        level = _STATUS_LEVEL.get(self.status, "warn")
        return "warn" if level == "ok" and self.warnings else level


# ------------------------------------------------------------------ which folder is it
def detect_kind(path: str | os.PathLike[str]) -> str:
    """Which kind of folder ``path`` is: ``run``, ``experiment``, ``search`` or ``benchmark``.

    Raises:
        ReportError: ``path`` is not a folder, or holds none of these.
    """
    p = Path(path)
    if not p.is_dir():
        raise ReportError(f"{p}: not a folder")
    has = {name for name in ("summary.json", "config.json", "best.json", "trials.csv", "results.csv",
                             "experiment.json", "leaderboard.csv") if (p / name).is_file()}
    if {"summary.json", "config.json"} <= has:
        return "run"
    if {"best.json", "trials.csv"} <= has:
        return "search"
    if "results.csv" in has and ("experiment.json" in has or (p / "summary.md").is_file()):
        return "experiment"  # without experiment.json: a difficulty grid or a range test (a table of results)
    if "leaderboard.csv" in has:
        return "benchmark"
    raise ReportError(f"{p}: not a run, experiment, search or benchmark folder (none of summary.json + "
                      "config.json, results.csv + experiment.json or summary.md, best.json + trials.csv, "
                      "leaderboard.csv)")


# ----------------------------------------------------------------------- reading files
#: JSON types by name, for messages about a malformed file.
_JSON_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number",
               bool: "true or false"}


def read_json_file(path: Path, types: dict[str, type | tuple[type, ...]] | None = None) -> dict[str, Any]:
    """A JSON object from ``path``; refused with a :class:`ReportError` naming the file.

    Args:
        types: key -> the type(s) its value must have when present and not null (numbers:
            ``(int, float)``; true/false never counts as a number). A key ``"name.*"`` checks
            every value of the object ``name``.
    """
    try:
        data = read_json(path)
    except (OSError, ValueError) as e:
        raise ReportError(f"{path}: cannot be read ({e})") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: not a JSON object")
    for key, allowed in (types or {}).items():
        name, _, inner = key.partition(".")
        values = [(key, data.get(key))] if not inner else \
            [(f"{name}.{k}", v) for k, v in data.get(name, {}).items()] if isinstance(data.get(name), dict) else []
        for shown, value in values:
            if value is not None and not _is_a(value, allowed):
                kinds = allowed if isinstance(allowed, tuple) else (allowed,)
                kinds = tuple(t for t in kinds if not (t is int and float in kinds))  # "a number" says both
                wanted = " or ".join(_JSON_NAMES.get(t, t.__name__) for t in kinds)
                raise ReportError(f"{path}: malformed: {shown!r} must be {wanted}, got {json_type(value)}")
    return data


def _is_a(value: Any, allowed: type | tuple[type, ...]) -> bool:
    kinds = allowed if isinstance(allowed, tuple) else (allowed,)
    if isinstance(value, bool):
        return bool in kinds
    return isinstance(value, kinds)


def json_type(value: Any) -> str:
    """What a JSON value is, in words (``an object``, ``a list``, ...)."""
    for t in (bool, dict, list, str, int, float):
        if isinstance(value, t):
            return _JSON_NAMES[t]
    return type(value).__name__


def read_json_or_empty(path: Path) -> dict[str, Any]:
    """Like :func:`read_json_file`, but an absent or broken optional file gives ``{}``."""
    try:
        return read_json_file(path)
    except ReportError:
        return {}


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file with a header; a missing file gives no rows."""
    if not path.is_file():
        return []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ReportError(f"{path}: cannot be read ({e})") from None


def to_float(value: Any) -> float:
    """A cell as a float; empty or unreadable cells are NaN."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def fmt(value: Any, digits: int = 4) -> str:
    """A value as a table cell: floats with ``digits`` decimals, NaN/None as a dash."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.{digits}f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v, digits) for v in value)
    return str(value)


def fmt_config(value: Any) -> str:
    """A configuration value as a table cell (``none`` for JSON's null)."""
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={fmt_config(v)}" for k, v in value.items()) or "{}"
    return fmt(value)


def device_filled(summary: dict[str, Any]) -> dict[str, Any]:
    """The settings a run's device profile filled in (``summary.json``'s ``defaults.filled``)."""
    defaults = summary.get("defaults")
    filled = defaults.get("filled") if isinstance(defaults, dict) else None
    return filled if isinstance(filled, dict) else {}


def counts_text(statuses: list[str]) -> str:
    """``3 completed, 1 diverged``: statuses by frequency."""
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s] = counts.get(s, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def overall_status(statuses: list[str], *, done: str = "completed", what: str = "trials") -> tuple[str, str]:
    """A folder of trials in a word and its extent: the worst status present and how many it concerns.

    Returns:
        ``("completed", "")`` when all are done, else e.g. ``("failed", "1 of 4 trials")``
        (failed > diverged > interrupted > not run > running).
    """
    for worst in ("failed", "error", "diverged", "interrupted", "not run", "running"):
        if worst in statuses:
            return worst, f"{statuses.count(worst)} of {len(statuses)} {what}"
    return (done, "") if statuses else ("empty", "")


# ---------------------------------------------------------------------------- markdown
def inline_markdown(text: str) -> Markup:
    """Escaped text with markdown's inline ``code``, **bold** and relative links (what summary files use in prose)."""
    html = str(escape(text))
    html = re.sub(r"`([^`]+)`", r"<code>\1</code>", html)
    html = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", html)
    # Links to files beside the summary (relative, so they open locally; the page never fetches them).
    html = re.sub(r"\[([^\]]+)\]\(([^)\s:]+)\)", r'<a href="\2">\1</a>', html)
    return Markup(html)


# ----------------------------------------------------------------------------- figures
def folder_figures(path: Path) -> list[FigureData]:
    """Every PNG directly in ``path``: known figures first in reading order, then the rest by name."""
    pngs = sorted(p for p in path.glob("*.png") if p.is_file())
    order = list(FIGURE_CAPTIONS)
    pngs.sort(key=lambda p: (order.index(p.name) if p.name in order else len(order), p.name))
    return [FigureData(p.name, _caption(p.name), png_data_uri(p)) for p in pngs]


def _caption(name: str) -> str:
    if name in FIGURE_CAPTIONS:
        return FIGURE_CAPTIONS[name]
    for prefix, caption in _FIGURE_PREFIXES.items():
        if name.startswith(prefix):
            return caption.format(name[len(prefix):-len(".png")])
    return name


def png_data_uri(path: Path) -> str:
    """``data:image/png;base64,...`` of a PNG file (refused if it is not one: a page must not break)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ReportError(f"{path}: cannot be read ({e.strerror or e})") from None
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ReportError(f"{path}: not a PNG file")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


# ------------------------------------------------------------------------- environment
def environment_rows(summary: dict[str, Any], source: str) -> list[tuple[str, str]]:
    """The hardware path a run took (from its summary.json) and the machine writing the report.

    Args:
        summary: a run's summary.json (may be empty: then only this machine is described).
        source: which run the values come from, for the reader.
    """
    rows: list[tuple[str, str]] = []
    for key, label in (("texseg", "texseg"), ("torch", "torch"), ("device", "device"), ("precision", "precision"),
                       ("threads", "torch threads"), ("world_size", "processes (ranks)")):
        if key in summary:
            rows.append((f"{label} ({source})", fmt(summary[key])))
    rows += machine_rows(str(summary.get("device", "")))
    return rows


def machine_rows(device: str = "") -> list[tuple[str, str]]:
    """This machine: Python, OS, CPU model and the CPU capability torch uses; the GPU name for CUDA runs."""
    rows = [("texseg (this report)", __version__), ("torch (this report)", torch.__version__),
            ("python", platform.python_version()), ("system", f"{platform.system()} {platform.machine()}")]
    cpu = cpu_description()["model"] or platform.processor()
    if cpu:
        rows.append(("CPU", f"{cpu} ({os.cpu_count()} logical cores)"))
    try:
        rows.append(("CPU capability (torch)", torch.backends.cpu.get_cpu_capability()))
    except (AttributeError, RuntimeError):
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        rows.append(("GPU", torch.cuda.get_device_name(0)))
    return rows

