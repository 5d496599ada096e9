"""Reports of a search, written into its folder from the study.

``best.json`` (the best trial), ``trials.csv`` (every trial), ``history.png`` (value
per trial and intermediate values), ``importance.png`` (parameter importance, when the
study allows it) and ``summary.md``; also the one-line summary of a finished trial.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from matplotlib.figure import Figure

from texseg.io import atomic_write_json, atomic_write_text, write_csv
from texseg.plots import save_figure
from texseg.result_file import write_result
from texseg.search.settings import SearchSettings
from texseg.search.space import METRIC, SEARCHABLE, SearchSpace
from texseg.search.storage import (
    COMPLETED,
    DIVERGED,
    PRUNE_STEPS,
    PRUNED,
    TRIALS_DIR,
    counts_toward_total,
    storage_label,
)
from texseg.training import engine
from texseg.training.config import TrainConfig

if TYPE_CHECKING:
    import optuna

__all__ = ["write_reports"]


def trial_line(number: int, status: str, t: optuna.trial.FrozenTrial, seconds: float, run_dir: Path) -> str:
    value = "" if t.value is None else f"IoU {t.value:.4f}  "
    warn = f"  TRIVIAL: {t.user_attrs['warning']}" if t.user_attrs.get("warning") else ""
    return f"trial {number:>3}  {status:<11} {value}{_params_text(t.params)}  ({seconds:.1f} s, {run_dir}){warn}"


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
    """Write best.json, trials.csv, history.png, importance.png, result.json and summary.md.

    Returns:
        ``(files written, notes, best)``; a note says why a plot was left out.
    """
    out = settings.out
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    best = _best(trials, settings)
    atomic_write_json(out / "best.json", best or {"value": None, "message": no_best_message(trials)})
    _write_trials_csv(out / "trials.csv", trials)
    files = [out / "best.json", out / "trials.csv"]
    notes: list[str] = []

    save_figure(_history_figure(trials, settings.study_name), out / "history.png")
    files.append(out / "history.png")
    importances, why = _importances(study, trials)
    if importances:
        save_figure(_importance_figure(importances), out / "importance.png")
        files.append(out / "importance.png")
    else:
        (out / "importance.png").unlink(missing_ok=True)  # never leave an outdated picture
        notes.append(f"no parameter-importance plot: {why}")
    title, intro = _intro(trials, settings, base)
    files.append(write_result(out, "search", {"title": title, "description": [" ".join(intro)], "best": best,
                                              "study_name": settings.study_name}))
    atomic_write_text(out / "summary.md", _summary_md(trials, settings, base, space, best, importances, why))
    files.append(out / "summary.md")
    # report.html is the caller's to write (the CLI does, once, from result.json): search sits below report.
    return files, notes, best


def no_best_message(trials: Sequence[optuna.trial.FrozenTrial]) -> str:
    """Why there is no best trial: none completed, or every completed one is trivial (and what it needs)."""
    done = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None]
    if not done:
        return "no completed trial yet"
    steps = [int(s) for t in done if isinstance(s := t.user_attrs.get("iterations"), (int, float))]
    took = f" (these took {min(steps)} or more)" if steps else ""
    return (f"no verdict: every completed trial is trivial, so none is chosen: a trial needs at least "
            f"{engine.MIN_STEPS} training steps{took} and a model that does not predict one region everywhere; "
            "give a larger budget")


def _best(trials: Sequence[optuna.trial.FrozenTrial], settings: SearchSettings) -> dict[str, Any] | None:
    """The best completed trial that learnt something (a trivial trial is never chosen), or None."""
    done = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None and not t.user_attrs.get("warning")]
    if not done:
        return None
    t = max(done, key=lambda t: (t.value, -t.number))  # ties: the earlier trial
    return {
        "value": t.value, "metric": f"val {METRIC}", "number": t.number, "params": t.params,
        "run_dir": t.user_attrs.get("run_dir"), "host": t.user_attrs.get("host"),
        "status": _trial_status(t), "seconds": _seconds(t), "study_name": settings.study_name,
        "storage": storage_label(settings),
    }


def _write_trials_csv(path: Path, trials: Sequence[optuna.trial.FrozenTrial]) -> None:
    params: list[str] = []
    for t in trials:
        params += [p for p in t.params if p not in params]
    columns = ["number", "state", "status", "value", "seconds", "train_seconds", "iterations", *params, "warning",
               "run_dir"]
    rows = []
    for t in trials:
        seconds = _seconds(t)
        rows.append({
            "number": t.number, "state": t.state.name, "status": _trial_status(t), "value": t.value,
            "seconds": None if seconds is None else f"{seconds:.2f}",
            "train_seconds": t.user_attrs.get("train_seconds"), "iterations": t.user_attrs.get("iterations"),
            **{p: _fmt(t.params[p]) if p in t.params else None for p in params},
            "warning": t.user_attrs.get("warning"), "run_dir": t.user_attrs.get("run_dir"),
        })
    write_csv(path, rows, columns)


def _importances(study: optuna.Study,
                 trials: Sequence[optuna.trial.FrozenTrial]) -> tuple[dict[str, float], str]:
    """PED-ANOVA importances (no scikit-learn needed), or ``({}, why not)``."""
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
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best")
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
    names = list(importances)[::-1]
    fig = Figure(figsize=(6.4, 0.5 * len(names) + 1.5), layout="constrained")
    ax = fig.subplots()
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set(xlabel="importance (PED-ANOVA, completed trials)", title="parameter importance")
    ax.grid(True, axis="x", alpha=0.3)
    return fig


def _intro(trials: Sequence[optuna.trial.FrozenTrial], settings: SearchSettings,
           base: TrainConfig) -> tuple[str, list[str]]:
    """The title of a search's summary.md and report.html, and the lines of its opening paragraph."""
    by_status: dict[str, int] = {}
    for t in trials:
        by_status[_trial_status(t)] = by_status.get(_trial_status(t), 0) + 1
    counted = sum(1 for t in trials if counts_toward_total(t))
    budget = " and ".join(x for x in (f"{base.time_budget:g} s of training" if base.time_budget else "",
                                      f"{base.iterations} steps" if base.iterations else "") if x)
    wall = sum(s for t in trials if (s := _seconds(t)) is not None)
    return f"texseg search `{settings.study_name}`", [
        f"{counted} of {settings.trials} trials finished "
        f"({', '.join(f'{n} {s}' for s, n in sorted(by_status.items()))}); {wall:.0f} s of trial time in all.",
        f"Objective: validation IoU (eval mode, {base.val_size} held-out images, val seed {base.val_seed}) at "
        f"the end of each trial. Every trial had {budget} (seed {base.seed}) at N={base.image_size}, "
        f"sigma1={base.sigma1:g}, sigma2={base.sigma2:g}, {base.regions} regions.",
        f"Sampler: TPE (seed {settings.seed}); pruner: {settings.pruner} (on val IoU per tenth of the budget). "
        f"Diverged trials count as IoU 0. Storage: `{storage_label(settings)}`.",
    ]


def _summary_md(trials: Sequence[optuna.trial.FrozenTrial], settings: SearchSettings, base: TrainConfig,
                space: SearchSpace, best: dict[str, Any] | None, importances: Mapping[str, float],
                why_no_importance: str) -> str:
    title, intro = _intro(trials, settings, base)
    lines = [
        f"# {title}",
        "",
        *intro,
        "",
        "## Best",
        "",
    ]
    if best:
        lines += [f"IoU **{best['value']:.4f}**, trial {best['number']} (`{best['run_dir']}`): "
                  f"{_params_text(best['params'])}.",
                  "", f"Reproduce: `texseg train --config {best['run_dir']}/config.json --out NEW_DIR`."]
    else:
        lines.append(f"**{no_best_message(trials)}**.")
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
