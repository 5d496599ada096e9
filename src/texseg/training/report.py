"""A run directory's page, ``report.html``: what the training loop writes when a run ends.

The page model, the templates and the renderer are :mod:`texseg.pages`; this module knows
what a run directory holds (config.json, summary.json, metrics.csv, its figures).
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

from texseg.evaluation.names import METRIC_ORDER, TRIVIAL, TRIVIAL_NAME
from texseg.pages import Card, Page, Table, note_on_failure, write_page
from texseg.pages.collect import (
    device_filled,
    environment_rows,
    fmt,
    fmt_config,
    folder_figures,
    read_csv_rows,
    read_json_file,
    to_float,
)
from texseg.training.config import TrainConfig
from texseg.training.summary import RunSummary

__all__ = ["cell_text", "config_rows", "run_page", "write_report_or_note", "write_run_report"]

# Validation metrics of a run, in reading order; per-region IoUs (iou_0, ...) follow iou_omega1.
_RUN_HEAD = (METRIC_ORDER[0], "iou_omega1")
_RUN_METRICS = METRIC_ORDER[1:]
_HISTORY_SKIP = ("val_iou_", "val_trivial_", "val_majority")


# ------------------------------------------------------------------------------- a run
def run_page(path: Path) -> Page:
    """A run directory: its config, final metrics against the trivial baseline, history, figures."""
    summary = RunSummary.read_as_written(path / "summary.json")  # as written: a hand edit shows as it is
    config = read_json_file(path / "config.json")
    val: dict[str, Any] = summary.get("val") or {}
    model = summary.get("model", config.get("model", "?"))
    title = f"Run {path.name}" + ("" if str(model) in path.name else f" ({model})")
    page = Page("run", title, str(path), str(summary.get("status", "unknown")),
                warnings=[str(w) for w in summary.get("warnings", [])],
                notes=[str(n) for n in summary.get("notes", [])])
    if "iou" in val:
        page.cards.append(Card("validation IoU (mean of regions)", f"{val['iou']:.4f}",
                               f"{TRIVIAL_NAME}: {val[TRIVIAL['iou']]:.4f}" if TRIVIAL["iou"] in val else ""))
    if "accuracy" in val:
        page.cards.append(Card("pixel accuracy", f"{val['accuracy']:.4f}",
                               f"{TRIVIAL_NAME}: {val[TRIVIAL['accuracy']]:.4f}"
                               if TRIVIAL["accuracy"] in val else ""))
    page.cards.append(Card("training", f"{summary.get('iterations', 0)} steps",
                           f"{fmt(summary.get('train_seconds'), 1)} s, {fmt(summary.get('it_per_s'), 1)} it/s"))
    page.cards.append(Card("model", str(model), f"{summary.get('parameters', 0):,} parameters"))
    page.status_items = [("status", page.status), ("message", summary.get("message") or "—"),
                         ("steps", fmt(summary.get("iterations"))),
                         ("training time", f"{fmt(summary.get('train_seconds'), 1)} s"),
                         ("evaluation time", f"{fmt(summary.get('eval_seconds'), 1)} s"),
                         ("skipped non-finite steps", fmt(summary.get("skipped_steps", 0))),
                         ("labels", str(summary.get("label_mode", "fixed")))]
    page.tables.append(_run_metrics_table(val, summary))
    history = read_csv_rows(path / "metrics.csv")
    if history:
        columns = [c for c in history[0] if not c.startswith(_HISTORY_SKIP)]
        page.details.append(Table(columns, [[cell_text(r[c]) for c in columns] for r in history],
                                  f"Every evaluation ({len(history)} rows of metrics.csv)"))
    page.command = f"texseg train --config {path / 'config.json'} --out NEW_DIR"
    filled = device_filled(summary)
    page.config_title = "Configuration (config.json; bold: set to other than the default; device default: " \
                        "left to the device, filled in by its profile)"
    page.config = config_rows(config, filled=filled)
    page.device_filled = [(k, fmt_config(config.get(k, v))) for k, v in filled.items()]
    page.figures = folder_figures(path)
    page.environment = environment_rows(summary, "this run")
    return page


def _run_metrics_table(val: dict[str, Any], summary: dict[str, Any]) -> Table:
    regions = sorted((k for k in val if k.startswith("iou_") and k[4:].isdigit()), key=lambda k: int(k[4:]))
    known = (*_RUN_HEAD, *regions, *_RUN_METRICS)
    names = [k for k in known if k in val] + [k for k in val if k not in known and not k.startswith("trivial_")]
    rows = [[k, fmt(val[k]), fmt(val.get(TRIVIAL.get(k, ""), math.nan))] for k in names]
    return Table(["metric", "value", TRIVIAL_NAME], rows,
                 f"Held-out metrics at the end, eval mode, {summary.get('val_size', '?')} images "
                 f"(seed {summary.get('val_seed', '?')})", highlight={0} if rows else set())


def cell_text(value: str) -> str:
    f = to_float(value)
    if value == "" or math.isnan(f):
        return value or "—"
    return value if f.is_integer() else f"{f:.4g}"


def config_rows(config: dict[str, Any], skip: set[str] = frozenset(),
                filled: Collection[str] = ()) -> list[tuple[str, str, bool]]:
    """``(key, value, set to something other than TrainConfig's default)`` for each key of a run's config.

    Args:
        config: the run's config.json.
        skip: keys left out.
        filled: keys the device profile filled in (the user left them to the device): never "set".
    """

    defaults = TrainConfig().to_dict()
    return [(k, fmt_config(v) + (" (device default)" if k in filled else ""),
             k in defaults and k not in filled and _differs(v, defaults[k]))
            for k, v in config.items() if k not in skip]


def _differs(value: Any, default: Any) -> bool:
    if isinstance(default, tuple):
        default = list(default)
    return value != default


def write_run_report(run_dir: str | os.PathLike[str]) -> Path:
    """Write ``run_dir/report.html``: the run on one page (figures embedded, nothing loaded from elsewhere).

    Raises:
        ReportError: ``run_dir`` lacks summary.json or config.json, or one of its files cannot be read.
        OSError: the page cannot be written.
    """
    return write_page(run_dir, run_page)


def write_report_or_note(run_dir: str | os.PathLike[str]) -> str | None:
    """:func:`write_run_report` for the end of a run: None when written, else a one-line note saying why not."""
    return note_on_failure(write_run_report, run_dir)
