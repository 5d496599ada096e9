"""One function per kind of folder: read its files and fill a :class:`~texseg.pages.collect.Page`.

A run's page is :func:`texseg.training.report.run_page` (the training loop writes it).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from markupsafe import Markup

from texseg.evaluation.names import (
    BASELINE,
    BENCHMARK_TABLE_METRICS,
    metric_label,
)
from texseg.experiments.report import (
    ExperimentResult,
    TrialRecord,
    group_stats,
    rank,
    ranked_table,
    verdict,
)
from texseg.pages.collect import (
    Card,
    Page,
    ReportError,
    Table,
    counts_text,
    device_filled,
    environment_rows,
    fmt,
    fmt_config,
    folder_figures,
    inline_markdown,
    machine_rows,
    overall_status,
    read_csv_rows,
    read_json_file,
    read_json_or_empty,
    to_float,
)
from texseg.result_file import RESULT_JSON, read_result
from texseg.training.config import TrainConfig
from texseg.training.report import cell_text, config_rows, run_page
from texseg.training.summary import RunSummary


# ----------------------------------------------------------------------- an experiment
def experiment_page(path: Path) -> Page:
    """An experiment folder: its question, the ranked settings with intervals, the trials, figures.

    Everything comes from the folder's result.json (the typed result summary.md is rendered from);
    a folder written before result.json existed is read from results.csv and experiment.json.
    """
    if not (path / "experiment.json").is_file():  # a table of results (a saved model over a grid, a range test)
        return results_page(path)
    result = _experiment_result(path)
    statuses = [t.status for t in result.trials]
    status, detail = overall_status(statuses)
    page = Page("experiment", result.title or path.name, str(path), status, command=result.command,
                description=[inline_markdown(result.description)] if result.description else [],
                status_detail=detail)
    ranked, metric = result.ranked, result.metric
    v = verdict(ranked, metric)  # the words of summary.md and the terminal
    best = v.best
    if v.resolved and best is not None:
        page.cards.append(Card("best setting", best.label, f"{metric} {best.metrics[metric].format(4)}"))
    else:
        page.cards.append(Card("verdict", "all trials trivial" if v.all_trivial else "not resolved"
                               if best is not None else "no best", v.headline))
    page.verdict = v.headline
    page.cards.append(Card("trials", str(len(statuses)), counts_text(statuses)))
    page.cards.append(Card("settings", str(len(ranked)), f"varied: {', '.join(result.varied) or '—'}"))
    table = ranked_table(ranked, result.varied, metric, html=True)
    caption = (f"Settings ranked by held-out {metric}: mean over completed seeds [95% interval] (for [0, 1] "
               "metrics a t-interval of the logits, mapped back; ± for the loss; none for one seed)")
    page.tables.append(Table(table.columns, table.rows, caption,
                             highlight={ranked.index(best)} if best is not None and v.resolved else set()))
    rows = result.rows
    trial_columns = ["trial", "seed", "status", "val iou", "steps", "train s", "warning or error", "run"]
    page.details.append(Table(trial_columns, [
        [r["trial"], str(r["seed"]), r["status"], fmt(r.get("val_iou", math.nan)), fmt(r["iterations"], 0),
         fmt(r["train_seconds"], 1), r.get("error") or r.get("warning") or "", r.get("run_dir", "")] for r in rows],
        f"Every trial ({len(rows)}, results.csv)"))
    page.status_items = [("trials", counts_text(statuses) or "none"), ("settings", str(len(ranked)))]
    page.warnings = sorted({f"{r['trial']}: {r['warning']}" for r in rows if r.get("warning")})
    page.notes += [f"{r['trial']}: {r['error']}" for r in rows if r.get("error")]
    _shared_settings(page, path, rows, result.varied)
    page.figures = folder_figures(path)
    page.notes += [f"also in this folder: the experiment {sub.name}/ (its summary.md and result.json)"
                   for sub in sorted(path.iterdir()) if (sub / "experiment.json").is_file()]
    return page


def _experiment_result(path: Path) -> ExperimentResult:
    """The folder's typed result: result.json, or (an older folder) results.csv with experiment.json."""
    try:
        data = read_result(path, "experiment")
    except ValueError as e:
        raise ReportError(str(e)) from None
    if data is not None:
        try:
            return ExperimentResult.from_dict(data, path)
        except (KeyError, TypeError, ValueError) as e:
            raise ReportError(f"{path / RESULT_JSON}: malformed ({type(e).__name__}: {e})") from None
    record = read_json_file(path / "experiment.json", {"varied": list, "title": str})
    varied = tuple(str(v) for v in record.get("varied", []))
    rows = [_numeric_row(r) for r in read_csv_rows(path / "results.csv")]
    trials = [TrialRecord(r["trial"], r["label"], int(to_float(r.get("seed")) if r.get("seed") else 0), r["status"],
                          r.get("error", ""), "", r.get("run_dir", "")) for r in rows]
    return ExperimentResult(path, str(record.get("title", path.name)), "", "", varied, TrainConfig(), "iou", trials,
                            rows, rank(group_stats(rows, varied), "iou"))


def _shared_settings(page: Page, path: Path, rows: list[dict[str, Any]], varied: tuple[str, ...]) -> None:
    """The first trial's config without the varied fields, what its device chose, and the environment."""
    first = _first_run(path, rows)
    if first is not None:
        page.config_title = "Settings shared by every trial (first trial's config.json without the varied fields)"
        filled = device_filled(RunSummary.read_as_written(first, missing_ok=True))
        page.config = config_rows(read_json_or_empty(first / "config.json"), set(varied) | {"seed"}, filled)
        page.device_filled = [(k, fmt_config(v)) for k, v in filled.items() if k not in varied]
    page.environment = environment_rows(RunSummary.read_as_written(first, missing_ok=True) if first else {},
                                        "first trial")


def _numeric_row(row: dict[str, str]) -> dict[str, Any]:
    """A results.csv row with metrics, seconds and steps as numbers (as :func:`group_stats` expects)."""
    out: dict[str, Any] = dict(row)
    for k, v in row.items():
        if k.startswith("val_") or k in ("train_seconds", "iterations"):
            out[k] = to_float(v)
    out["iterations"] = 0 if math.isnan(out.get("iterations", math.nan)) else out["iterations"]
    return out


def _first_run(path: Path, rows: list[dict[str, Any]]) -> Path | None:
    """The run directory of the first trial that left a summary (completed first)."""
    ordered = sorted(rows, key=lambda r: r["status"] != "completed")
    for r in ordered:
        run = path / str(r.get("run_dir", ""))
        if r.get("run_dir") and (run / "summary.json").is_file():
            return run
    return None


def results_page(path: Path, max_rows: int = 40) -> Page:
    """An experiment folder without trials (a difficulty grid, a range test): its summary.md and results.csv."""
    rows = read_csv_rows(path / "results.csv")
    doc = _result_doc(path, "table")
    page = Page("experiment", _title(doc) or path.name, str(path), "completed", description=_paragraphs(doc),
                command=str(doc.get("command", "")),
                sections=[(str(sec.get("heading", "")), [inline_markdown(str(p)) for p in sec.get("paragraphs", [])])
                          for sec in doc.get("sections", []) if isinstance(sec, dict)])
    columns = list(rows[0]) if rows else []
    table = Table(columns, [[cell_text(r.get(c) or "") for c in columns] for r in rows],
                  f"results.csv ({len(rows)} rows)")
    (page.tables if len(rows) <= max_rows else page.details).append(table)
    page.status_items = [("rows in results.csv", str(len(rows)))]
    page.figures = folder_figures(path)
    page.environment = machine_rows()
    return page


# --------------------------------------------------------------------------- a search
def search_page(path: Path) -> Page:
    """A search folder: the best trial, the top trials, the status of every trial, the plots."""
    best = read_json_file(path / "best.json", {"value": (int, float), "params": dict, "metric": str})
    trials = read_csv_rows(path / "trials.csv")
    doc = _result_doc(path, "search")
    title, description = _title(doc), _paragraphs(doc)
    statuses = [t.get("status", "") for t in trials]
    status, detail = overall_status(statuses)
    page = Page("search", title or f"Search {path.name}", str(path), "completed" if status == "empty" else status,
                description=description, status_detail=detail)
    value = best.get("value")
    params = best.get("params") or {}
    if value is not None:
        page.cards.append(Card(f"best {best.get('metric', 'value')}", f"{value:.4f}", f"trial {best.get('number')}"))
        page.cards.append(Card("best settings", str(params.get("model", f"{len(params)} parameters")),
                               ", ".join(f"{k}={f'{v:.3g}' if isinstance(v, float) else v}"
                                         for k, v in params.items() if k != "model")))
    else:
        page.verdict = str(best.get("message", "no completed trial yet"))
        page.warnings.append(page.verdict)
    page.cards.append(Card("trials", str(len(trials)), counts_text(statuses)))
    param_names = [c for c in (trials[0] if trials else {}) if c not in _SEARCH_FIXED_COLUMNS]
    ranked = sorted((t for t in trials if not math.isnan(to_float(t.get("value")))),
                    key=lambda t: (-to_float(t["value"]), int(t["number"])))
    columns = ["trial", "value", "status", *param_names, "s", "steps"]
    page.tables.append(Table(columns, [[t["number"], fmt(to_float(t["value"])), t.get("status", ""),
                                        *[t.get(p) or "—" for p in param_names], fmt(to_float(t.get("seconds")), 1),
                                        t.get("iterations") or "—"] for t in ranked[:10]],
                             f"Top {min(len(ranked), 10)} trials by value", highlight={0} if ranked else set()))
    page.details.append(Table(["trial", "state", "status", "value", "warning", "run"], [
        [t["number"], t.get("state", ""), t.get("status", ""), fmt(to_float(t.get("value"))),
         t.get("warning", ""), t.get("run_dir", "")] for t in trials], f"Every trial ({len(trials)}, trials.csv)"))
    page.status_items = [("trials", counts_text(statuses) or "none"), ("study", str(best.get("study_name", "—"))),
                         ("storage", str(best.get("storage", "—")))]
    page.warnings += [f"trial {t['number']}: {t['warning']}" for t in trials if t.get("warning")]
    run = _search_run(path, best.get("run_dir"))
    if run is not None:
        page.command = f"texseg train --config {run / 'config.json'} --out NEW_DIR"
        page.config_title = f"Configuration of the best trial ({run.name}/config.json)"
        page.config = config_rows(read_json_or_empty(run / "config.json"))
    page.figures = folder_figures(path)
    page.environment = environment_rows(RunSummary.read_as_written(run, missing_ok=True) if run else {}, "best trial")
    return page


_SEARCH_FIXED_COLUMNS = {"number", "state", "status", "value", "seconds", "train_seconds", "iterations", "warning",
                         "run_dir"}


def _search_run(path: Path, run_dir: Any) -> Path | None:
    """The best trial's run directory: as recorded, or under the search folder."""
    if not run_dir:
        return None
    recorded = Path(str(run_dir))
    for candidate in (recorded, path / recorded, path / "trials" / recorded.name):
        if (candidate / "config.json").is_file():
            return candidate
    return None


# ------------------------------------------------------------------------ a benchmark
def benchmark_page(path: Path) -> Page:
    """A benchmark folder (``leaderboard.csv``): one table per suite, mean and interval per metric."""
    doc = _result_doc(path, "benchmark")
    # result.json's rows are leaderboard.csv's (an older folder has only the CSV).
    rows = [{k: "" if v is None else str(v) for k, v in r.items()} for r in doc.get("rows", [])] \
        or read_csv_rows(path / "leaderboard.csv")
    if not rows:
        raise ReportError(f"{path / 'leaderboard.csv'}: no rows")
    title, description, command = _title(doc), _paragraphs(doc), str(doc.get("command", ""))
    statuses = [r.get("status", "") for r in rows]
    status, detail = overall_status(statuses, done="done", what="cells")
    page = Page("benchmark", title or f"Benchmark {path.name}", str(path), status, description=description,
                command=command, status_detail=detail)
    columns = list(rows[0])
    every = [c for c in columns if f"{c}_low" in columns and f"{c}_high" in columns]
    # The leaderboard.md columns, in its words; the rest (VI split/merge, per-region IoU) below, in a detail table.
    metrics = [m for m in BENCHMARK_TABLE_METRICS if m in every] or every
    others = [m for m in every if m not in metrics]
    suites: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        suites.setdefault(r.get("suite", ""), []).append(r)
    speed = [c for c in ("images_per_s", "s_per_megapixel") if c in columns]
    for suite, members in suites.items():
        _suite_tables(page, suite, members, metrics, others, speed)
    scored = [r for r in rows if r.get("segmenter") != BASELINE]
    if metrics and scored:
        head = metrics[0]
        top = max(scored, key=lambda r: _finite(r.get(head)))
        page.cards.append(Card(f"highest {metric_label(head)}", fmt(to_float(top.get(head))),
                               f"{top.get('segmenter')} on {top.get('suite')}"))
    page.cards.append(Card("cells", str(len(rows)), counts_text(statuses)))
    page.cards.append(Card("suites", str(len(suites)), ", ".join(suites)))
    page.status_items = [("cells", counts_text(statuses))]
    page.notes = [f"{r.get('segmenter')} on {r.get('suite')}: {r['note']}" for r in rows
                  if r.get("note") and r.get("segmenter") != BASELINE]  # notes below the table, not a column
    config = read_json_or_empty(path / "config.json")
    if config:
        page.config_title = "Configuration (config.json)"
        page.config = [(k, fmt(v), False) for k, v in config.items()]
    page.figures = folder_figures(path)
    page.environment = machine_rows()
    return page


def _suite_tables(page: Page, suite: str, members: list[dict[str, str]], metrics: list[str], others: list[str],
                  speed: list[str]) -> None:
    """A suite's leaderboard (the best highlighted only when the data resolve it) and its other metrics."""
    head = metrics[0] if metrics else None
    methods = [i for i, r in enumerate(members) if r.get("segmenter") != BASELINE]
    best = max(methods, key=lambda i: _finite(members[i].get(head))) if head and methods else None
    if best is not None and not _clear_of_others(members, best, head):
        best = None
    page.tables.append(Table(
        ["segmenter", *map(metric_label, metrics), *[s.replace("_", " ") for s in speed], "status"],
        [[r.get("segmenter", "?"), *[_with_interval(r, m) for m in metrics], *[r.get(s) or "—" for s in speed],
          r.get("status", "")] for r in members],
        f"Suite {suite or '—'}: mean over images [95% interval]; {BASELINE}: what a model that learnt nothing "
        "scores", highlight={best} if best is not None else set()))
    if others:
        page.details.append(Table(["segmenter", *map(metric_label, others)],
                                  [[r.get("segmenter", "?"), *[_with_interval(r, m) for m in others]]
                                   for r in members], f"Suite {suite or '—'}: the other metrics"))


def _clear_of_others(rows: list[dict[str, str]], top: int, metric: str) -> bool:
    """Whether row ``top``'s interval of ``metric`` (higher is better) lies above every other scored row's."""
    low = to_float(rows[top].get(f"{metric}_low"))
    if math.isnan(low):
        return False
    others = [to_float(r.get(f"{metric}_high")) if r.get(f"{metric}_high") else to_float(r.get(metric))
              for i, r in enumerate(rows) if i != top and not math.isnan(to_float(r.get(metric)))]
    return all(low > h for h in others if not math.isnan(h))


def _finite(value: Any) -> float:
    f = to_float(value)
    return -math.inf if math.isnan(f) else f


def _with_interval(row: dict[str, str], metric: str) -> str:
    mean, low, high = (to_float(row.get(k)) for k in (metric, f"{metric}_low", f"{metric}_high"))
    if math.isnan(mean):
        return "—"
    return f"{mean:.3f}" + ("" if math.isnan(low) or math.isnan(high) else f" [{low:.3f}, {high:.3f}]")


def _result_doc(path: Path, kind: str) -> dict[str, Any]:
    """The folder's result.json of ``kind``; ``{}`` for a folder an older texseg wrote (none there)."""
    try:
        return read_result(path, kind) or {}
    except ValueError as e:
        raise ReportError(str(e)) from None


def _title(doc: dict[str, Any]) -> str:
    return str(doc.get("title", "")).replace("`", "'")


def _paragraphs(doc: dict[str, Any]) -> list[Markup]:
    """The result's description (a list of Markdown paragraphs) as escaped HTML with inline markup."""
    text = doc.get("description", [])
    return [inline_markdown(str(p)) for p in ([text] if isinstance(text, str) else text) if p]


PAGES = {"run": run_page, "experiment": experiment_page, "search": search_page, "benchmark": benchmark_page}
__all__ = ["PAGES", "benchmark_page", "experiment_page", "inline_markdown", "run_page", "search_page"]
