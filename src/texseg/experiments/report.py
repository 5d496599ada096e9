"""An experiment's results: one row per trial, statistics per setting, results.csv, summary.md.

Statistics are over *completed* trials only: a diverged run stopped early and keeps the
weights of its last good evaluation, so averaging it in would mix two different things.
A setting where any seed did not complete is marked, and it is chosen as the best only
if no setting completed on every seed.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from texseg.evaluation.names import METRIC_ORDER as _METRIC_ORDER
from texseg.evaluation.names import TABLE_METRICS, lower_is_better
from texseg.evaluation.stats import Interval, mean_ci
from texseg.experiments.runner import FAILED, NOT_RUN, RunOutcome, TrialResult
from texseg.io import atomic_write_text, write_csv
from texseg.result_file import number, read_result
from texseg.training import engine
from texseg.training.config import TrainConfig
from texseg.training.rundir import RunStatus

COMPLETED, INTERRUPTED = RunStatus.COMPLETED, RunStatus.INTERRUPTED

def format_value(value: Any) -> str:
    """A config value as it reads in labels and tables (``1e-05``, ``adam``, ``0.2``)."""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# ----------------------------------------------------------------------------- rows
def result_rows(results: Sequence[TrialResult], configs: Sequence[TrainConfig],
                varied: Sequence[str], exp_dir: Path) -> list[dict[str, Any]]:
    """One flat row per trial: identity, varied config values, status, final metrics, cost.

    Args:
        results: the trials' results.
        configs: the trials' configs (same order), for the varied values.
        varied: config fields the experiment varies.
        exp_dir: the experiment folder (run directories are given relative to it).
    """
    metric_names: list[str] = []
    for r in results:
        metric_names += [k for k in (r.summary.val if r.summary else {}) if k not in metric_names]
    metric_names.sort(key=lambda k: (_METRIC_ORDER.index(k) if k in _METRIC_ORDER else len(_METRIC_ORDER), k))
    rows = []
    for r, cfg in zip(results, configs):
        row: dict[str, Any] = {"trial": r.trial_id, "label": r.label, "seed": r.seed}
        row.update({name: getattr(cfg, name) for name in varied})
        row.update({"status": r.status, "error": r.error})
        val = (r.summary.val if r.summary else {})
        row.update({f"val_{k}": val.get(k, math.nan) for k in metric_names})
        row["warning"] = "; ".join(r.summary.warnings if r.summary else [])
        row["train_seconds"] = r.summary.train_seconds if r.summary else math.nan
        row["iterations"] = r.summary.iterations if r.summary else 0
        row["run_dir"] = os.path.relpath(r.run_dir, exp_dir)
        rows.append(row)
    return rows


def write_results_csv(rows: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """``results.csv``: the rows, floats with 6 significant digits, NaN as an empty cell."""
    write_csv(path, rows)


# --------------------------------------------------------------------------- groups
@dataclass
class GroupStats:
    """Statistics of one setting (label) over its seeds."""

    label: str
    values: dict[str, Any]
    statuses: Counter = field(default_factory=Counter)
    metrics: dict[str, Interval] = field(default_factory=dict)
    worst: dict[str, float] = field(default_factory=dict)  # per metric, the worst completed seed
    train_seconds: Interval = field(default_factory=lambda: mean_ci([]))
    iterations: Interval = field(default_factory=lambda: mean_ci([]))
    trivial: int = 0  # completed seeds flagged trivial (a constant prediction, or too few steps)
    warnings: list[str] = field(default_factory=list)  # the distinct warnings of those seeds

    @property
    def n(self) -> int:
        return sum(self.statuses.values())

    @property
    def completed(self) -> int:
        return self.statuses.get(COMPLETED, 0)

    @property
    def all_completed(self) -> bool:
        return self.completed == self.n > 0

    def status_text(self) -> str:
        """``3/3``, or ``2/3 (1 diverged)``."""
        others = ", ".join(f"{n} {s}" for s, n in sorted(self.statuses.items()) if s != COMPLETED)
        return f"{self.completed}/{self.n}" + (f" ({others})" if others else "")

    def to_dict(self) -> dict[str, Any]:
        """The setting's statistics as JSON-ready values (result.json's ``ranked`` entries)."""
        return {"label": self.label, "values": dict(self.values), "statuses": dict(self.statuses),
                "metrics": {k: v.to_dict() for k, v in self.metrics.items()}, "worst": dict(self.worst),
                "train_seconds": self.train_seconds.to_dict(), "iterations": self.iterations.to_dict(),
                "trivial": self.trivial, "warnings": list(self.warnings)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GroupStats:
        """The inverse of :meth:`to_dict`."""
        return cls(str(data["label"]), dict(data["values"]), Counter(data.get("statuses", {})),
                   {k: Interval.from_dict(v) for k, v in data.get("metrics", {}).items()},
                   {k: number(v) for k, v in data.get("worst", {}).items()},
                   Interval.from_dict(data["train_seconds"]), Interval.from_dict(data["iterations"]),
                   int(data.get("trivial", 0)), [str(w) for w in data.get("warnings", [])])


def group_stats(rows: Sequence[dict[str, Any]], varied: Sequence[str], confidence: float = 0.95) -> list[GroupStats]:
    """Per-label statistics of completed trials, labels in first-seen order."""
    groups: dict[str, GroupStats] = {}
    members: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        label = row["label"]
        if label not in groups:
            groups[label] = GroupStats(label, {k: row[k] for k in varied})
            members[label] = []
        groups[label].statuses[row["status"]] += 1
        if row["status"] == COMPLETED:
            members[label].append(row)
            if row.get("warning"):
                groups[label].trivial += 1
                groups[label].warnings += [w for w in str(row["warning"]).split("; ")
                                           if w not in groups[label].warnings]
    for label, g in groups.items():
        done = members[label]
        keys = [k for k in (done[0] if done else {}) if k.startswith("val_")]
        g.metrics = {k[4:]: mean_ci([r[k] for r in done], confidence, bounded=k != "val_loss") for k in keys}
        for k in keys:
            finite = [float(r[k]) for r in done if math.isfinite(float(r[k]))]
            if finite:
                g.worst[k[4:]] = max(finite) if lower_is_better(k[4:]) else min(finite)
        g.train_seconds = mean_ci([r["train_seconds"] for r in done], confidence)
        g.iterations = mean_ci([r["iterations"] for r in done], confidence)
    return list(groups.values())


def rank(groups: Sequence[GroupStats], metric: str = "iou") -> list[GroupStats]:
    """Groups best first by the mean of ``metric``; groups without a value last."""
    sign = 1.0 if lower_is_better(metric) else -1.0

    def key(g: GroupStats) -> tuple[bool, float]:
        m = g.metrics.get(metric)
        missing = m is None or m.n == 0
        return missing, 0.0 if missing else sign * m.mean  # type: ignore[union-attr]

    return sorted(groups, key=key)


def best_group(ranked: Sequence[GroupStats], metric: str = "iou", *, min_seeds: int = 2) -> GroupStats | None:
    """The best setting that completed on every seed; failing that, the best with any completed runs.

    Only settings with at least ``min_seeds`` completed seeds are considered: one seed
    cannot tell a better setting from a lucky one (pass ``min_seeds=1`` to take the
    best single run anyway, e.g. to choose a learning rate to try next). A setting with
    a trivial seed (a constant prediction, or too few steps) is never chosen: its score
    is not that of a model that learnt the task.
    """
    usable = [g for g in ranked if metric in g.metrics and g.metrics[metric].n >= min_seeds and not g.trivial]
    stable = [g for g in usable if g.all_completed]
    return (stable or usable or [None])[0]


@dataclass(frozen=True)
class Verdict:
    """What the data say about the ranking: one headline, the same in the terminal, summary.md and report.html.

    Attributes:
        best: the leading setting that may be chosen (two or more completed seeds, none trivial), or None.
        resolved: whether ``best``'s interval is clear of every other setting's: only then is it "best".
        rivals: labels of the settings it is not separated from.
        all_trivial: every completed trial is trivial (the comparison measured nothing).
        headline: the one-line verdict.
    """

    best: GroupStats | None
    resolved: bool
    rivals: tuple[str, ...]
    all_trivial: bool
    headline: str


def _separated(best: Interval, other: Interval, lower: bool) -> bool:
    """Whether ``best`` is clearly better than ``other`` (an interval against an interval or a single value)."""
    if other.n == 0:
        return True
    if other.n == 1:  # one value: separated only if it lies outside best's interval, on the worse side
        return other.mean > best.high if lower else other.mean < best.low
    return not best.overlaps(other)


def budget_advice(groups: Sequence[GroupStats]) -> str:
    """What trivial runs need: at least ``MIN_STEPS`` steps (with the seconds that takes at their speed), or more.

    Args:
        groups: the settings whose runs were trivial.
    """
    steps = [g.iterations.mean for g in groups if g.iterations.n]
    if any("training step" in w for g in groups for w in g.warnings) and steps:
        fewest = min(steps)
        rates = [g.iterations.mean / g.train_seconds.mean for g in groups
                 if g.iterations.n and g.train_seconds.n and g.train_seconds.mean > 0]
        seconds = f", about {engine.MIN_STEPS / min(rates):.0f} s per run at their speed" if rates else ""
        return (f"every run needs at least {engine.MIN_STEPS} training steps (these took {fewest:.0f}{seconds}): "
                "give a larger budget")
    return "their models predict one region everywhere: train longer, or try other learning rates"


def verdict(ranked: Sequence[GroupStats], metric: str = "iou") -> Verdict:
    """The verdict on ``ranked``: "best" only when the data resolve it.

    A setting is chosen only with two or more completed seeds, none of them trivial; it is
    "best" only if its interval is clear of every other setting's. When every completed
    trial is trivial, that is the headline, with the budget a next run needs.
    """
    done = [g for g in ranked if g.completed]
    if not done:
        return Verdict(None, False, (), False, "no verdict: no trial completed")
    if all(g.trivial == g.completed for g in done):
        return Verdict(None, False, (), True, "no verdict: every trial is trivial, so no setting is chosen; "
                                              + budget_advice(done))
    left_out = [g.label for g in done if g.trivial]
    note = (f" ({len(left_out)} setting(s) with trivial runs not considered: {', '.join(left_out)})"
            if left_out else "")
    best = best_group(ranked, metric)
    if best is None:
        return Verdict(None, False, (), False, "no best claimed: a setting needs two or more completed seeds that "
                                               "all learnt something (use --seeds 2 or more)" + note)
    m = best.metrics[metric]
    lower = lower_is_better(metric)
    rivals = tuple(g.label for g in ranked if g is not best and metric in g.metrics
                   and not _separated(m, g.metrics[metric], lower))
    if rivals:
        return Verdict(best, False, rivals, False,
                       f"no best: {best.label} leads ({metric} {m.format(4)}) but its difference from "
                       f"{', '.join(rivals)} is not resolved with these seeds" + note)
    return Verdict(best, True, (), False,
                   f"best: {best.label} ({metric} {m.format(4)}), its interval clear of every other setting's" + note)


# ------------------------------------------------------------------- the typed result
@dataclass
class TrialRecord:
    """One trial as the experiment's result records it (result.json's ``trials`` entries).

    Attributes:
        trial_id, label, seed: which trial (its run is ``<out>/<run_dir>``).
        status: ``completed``, ``diverged``, ``interrupted``, ``failed``, ``not run``, ...
        error: why it did not complete (empty when it did).
        action: what this invocation did (``new``, ``resumed``, ``restarted``, ``skipped``, ``not run``).
        run_dir: its run directory, relative to the experiment folder.
        warnings: the run's warnings (a trivial model, too few steps).
        val: its final held-out metrics (empty when it left none).
        train_seconds, iterations: what its training cost.
    """

    trial_id: str
    label: str
    seed: int
    status: str
    error: str
    action: str
    run_dir: str
    warnings: list[str] = field(default_factory=list)
    val: dict[str, float] = field(default_factory=dict)
    train_seconds: float = math.nan
    iterations: int = 0

    @classmethod
    def from_result(cls, r: TrialResult, exp_dir: Path) -> TrialRecord:
        """The record of a trial the runner returned (its run summary read once, here)."""
        s = r.summary  # None: the trial never wrote one (not run, or stopped before its first checkpoint)
        if s is None:
            return cls(r.trial_id, r.label, r.seed, r.status, r.error, r.action, os.path.relpath(r.run_dir, exp_dir))
        return cls(r.trial_id, r.label, r.seed, r.status, r.error, r.action, os.path.relpath(r.run_dir, exp_dir),
                   [str(w) for w in s.warnings], dict(s.val), float(s.train_seconds), int(s.iterations))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialRecord:
        """A record from result.json (null numbers read as NaN)."""
        return cls(**{**data, "val": {k: number(v) for k, v in data.get("val", {}).items()},
                      "train_seconds": number(data.get("train_seconds"))})


@dataclass
class ExperimentResult:
    """A finished (or interrupted) experiment: what it asked, every trial, the ranked settings.

    Written once to ``result.json`` (:meth:`to_dict`); ``summary.md`` and ``report.html`` are
    rendered from it (:func:`summary_markdown`, :mod:`texseg.report`).

    Attributes:
        out_dir: the experiment folder.
        title, description, command: what was asked, in words and as a command line.
        varied: the config fields that differ between settings; base: the shared config.
        metric: the held-out metric that ranks settings.
        trials: every trial, in the experiment's order.
        rows: one flat row per trial, as in results.csv.
        ranked: per setting, its statistics over seeds (means with intervals), best first.
        interrupted: a stop signal ended it with work left (run it again to finish).
        figures: ``(title, file name)`` of its figures; sections: extra Markdown sections.
        best_section: a Markdown section replacing the verdict (a tuning's pick is not a claim of "best").
        outcome: the runner's own results (this invocation only; not in result.json).
    """

    out_dir: Path
    title: str
    description: str
    command: str
    varied: tuple[str, ...]
    base: TrainConfig
    metric: str
    trials: list[TrialRecord]
    rows: list[dict[str, Any]]
    ranked: list[GroupStats]
    interrupted: bool = False
    figures: list[tuple[str, str]] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)
    best_section: str | None = None
    outcome: RunOutcome | None = field(default=None, compare=False, repr=False)

    @property
    def best(self) -> GroupStats | None:
        """The best setting (see :func:`best_group`)."""
        return best_group(self.ranked, self.metric)

    @property
    def verdict(self) -> Verdict:
        """What the data resolve (see :func:`verdict`)."""
        return verdict(self.ranked, self.metric)

    @property
    def failed(self) -> int:
        """Trials that raised an error."""
        return sum(t.status == FAILED for t in self.trials)

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready values (result.json, kind ``experiment``)."""
        return {"title": self.title, "description": self.description, "command": self.command,
                "varied": list(self.varied), "base": self.base.to_dict(), "metric": self.metric,
                "trials": [dataclasses.asdict(t) for t in self.trials], "rows": list(self.rows),
                "ranked": [g.to_dict() for g in self.ranked], "interrupted": self.interrupted,
                "figures": [list(f) for f in self.figures], "sections": list(self.sections),
                "best_section": self.best_section, "verdict": self.verdict.headline}

    @classmethod
    def from_dict(cls, data: dict[str, Any], out_dir: str | os.PathLike[str]) -> ExperimentResult:
        """The result read back from result.json (``verdict`` is recomputed from ``ranked``)."""
        rows = [{k: (math.nan if v is None else v) for k, v in r.items()} for r in data["rows"]]
        return cls(Path(out_dir), str(data["title"]), str(data["description"]), str(data["command"]),
                   tuple(data["varied"]), TrainConfig.from_dict(data["base"]), str(data["metric"]),
                   [TrialRecord.from_dict(t) for t in data["trials"]], rows,
                   [GroupStats.from_dict(g) for g in data["ranked"]], bool(data.get("interrupted", False)),
                   [(str(t), str(f)) for t, f in data.get("figures", [])], [str(x) for x in data.get("sections", [])],
                   data.get("best_section"))


# -------------------------------------------------------------------------- summary.md
def summary_markdown(r: ExperimentResult) -> str:
    """``summary.md`` of an experiment, a report that reads on its own, rendered from its result alone."""
    # The verdict is the headline (as in the terminal and report.html); a section that replaces it replaces it here too.
    headline = "" if r.best_section else f"**{r.verdict.headline}**.\n"
    parts = [f"# {r.title}\n", headline, r.description.strip() + "\n", _command_section(r.command),
             _settings_section(r.base, r.varied), _trials_section(r.trials),
             _table_section(r.ranked, r.varied, r.metric),
             r.best_section or _best_section(r.ranked, r.metric)]
    parts += [sec.strip() + "\n" for sec in r.sections]
    if r.figures:
        parts.append("## Figures\n\n" + "\n\n".join(f"**{title}**\n\n![{title}]({name})" for title, name in r.figures)
                     + "\n")
    parts.append(_failures_section(r.trials, r.interrupted))
    parts.append("## Files\n\n- `results.csv`: one row per trial (label, seed, varied values, status, error, "
                 "final held-out metrics, training seconds, iterations, run directory).\n"
                 "- `result.json`: everything this summary and report.html say, as data (rows, statistics with "
                 "intervals, verdict).\n"
                 "- `runs/<trial>/`: ordinary run directories (`texseg eval runs/<trial>`, "
                 "`texseg.load_model(...)`), each with its `metrics.csv`.\n")
    return "\n".join(p for p in parts if p)


def _command_section(command: str) -> str:
    return ("## Command\n\n```bash\n" + command + "\n```\n\nRunning it again reuses every finished trial, "
            "resumes interrupted ones and trains only what is missing.\n")


def _settings_section(base: TrainConfig, varied: Sequence[str]) -> str:
    defaults = TrainConfig()
    skip = set(varied) | {"seed", "threads"}
    shown = [f"`{f.name}` {_md_value(base, f.name)}" for f in fields(TrainConfig)
             if f.name not in skip and (getattr(base, f.name) != getattr(defaults, f.name)
                                        or f.name in ("model", "loss", "iterations", "time_budget"))]
    return ("## Settings shared by every trial\n\n" + ", ".join(shown) + ".\n\nEvery other option has its "
            "`texseg train` default. Metrics are measured at the end of each run, in eval mode, on the held-out "
            f"validation set ({base.val_size} images drawn from seed {base.val_seed}, never training data).\n")


def _md_value(config: TrainConfig, name: str) -> str:
    """A setting as it reads in prose: defaults that depend on other fields are resolved."""
    v = getattr(config, name)
    if name == "loss":
        return config.loss_name
    if name == "sigma" and v is None:
        return f"{config.partition_sigma:g} (N/5)"
    if v is None:
        return "none" if name in ("iterations", "time_budget") else "default"
    return format_value(v)


def _trials_section(results: Sequence[TrialRecord]) -> str:
    statuses = Counter(r.status for r in results)
    actions = Counter(r.action for r in results)
    status_text = ", ".join(f"{n} {s}" for s, n in statuses.most_common())
    action_text = ", ".join(f"{n} {a}" for a, n in actions.most_common())
    return f"## Trials\n\n{len(results)} trials: {status_text}. This invocation: {action_text}.\n"


@dataclass
class RankedTable:
    """The ranked settings as text cells: the one model of summary.md's table and report.html's."""

    columns: list[str]
    rows: list[list[str]]


def ranked_table(ranked: Sequence[GroupStats], varied: Sequence[str], metric: str = "iou", *,
                 html: bool = False) -> RankedTable:
    """One row per setting, best first: rank, label, varied values, metrics with intervals, worst seed, cost.

    Args:
        ranked: the settings, best first.
        varied: the varied config fields (columns).
        metric: the ranking metric (first among the metrics).
        html: the page's variant: a varied value that is its setting's whole label (``adam``) is not
            repeated, no separate interval column, intervals that wrap only before their bracket.
    """
    conf = next((g.metrics[metric].confidence for g in ranked if metric in g.metrics), 0.95)
    metrics = [metric] + [m for m in TABLE_METRICS if m != metric]
    shown = [k for k in varied if not html or any(format_value(g.values[k]) != g.label for g in ranked)]
    columns = ["rank", "setting", *shown, *[m if html else f"{m} (mean, {conf:.0%} interval)" for m in metrics],
               *([] if html else [f"{metric} {conf:.0%} interval"]), f"worst seed {metric}", "completed",
               "steps" if html else "iterations", "train s"]
    rows = []
    for i, g in enumerate(ranked, 1):
        m = g.metrics.get(metric, mean_ci([]))
        texts = [g.metrics.get(k, mean_ci([])).format(4 if k != "loss" else 5) for k in metrics]
        rows.append([str(i), g.label, *[format_value(g.values[k]) for k in shown],
                     *[t.replace(", ", ",\u00a0").replace("± ", "±\u00a0") if html else t for t in texts],
                     *([] if html else [m.format_bounds(4)]),
                     f"{g.worst[metric]:.4f}" if metric in g.worst else "—", g.status_text(),
                     f"{g.iterations.mean:.0f}" if g.iterations.n else "—",
                     f"{g.train_seconds.mean:.1f}" if g.train_seconds.n else "—"])
    return RankedTable(columns, rows)


def _table_section(ranked: Sequence[GroupStats], varied: Sequence[str], metric: str) -> str:
    conf = next((g.metrics[metric].confidence for g in ranked if metric in g.metrics), 0.95)
    table = ranked_table(ranked, varied, metric)
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table.rows]
    order = "lowest" if lower_is_better(metric) else "highest"
    return (f"## Results, ranked by held-out {metric} ({order} first)\n\nMean over the completed seeds and the "
            f"{conf:.0%} interval of the mean: for metrics in [0, 1] the Student-t interval of the seeds' logits "
            "mapped back (so it stays inside [0, 1]), for the loss mean ± the t-interval's half-width; none for "
            "one seed. The interval covers seed-to-seed variation (initial weights and training stream) on one "
            "fixed validation set; when one seed collapses (see the worst seed) read the worst seed, not the "
            "interval.\n\n" + "\n".join(lines) + "\n")


def _best_section(ranked: Sequence[GroupStats], metric: str) -> str:
    v = verdict(ranked, metric)
    text = f"## Best choice\n\n**{v.headline}**."
    if v.best is not None and not v.best.all_completed:
        text += " Caution: no setting completed on every seed; this one did not either."
    if v.best is not None and v.best.metrics[metric].n > 1:
        text += f" The leader's 95% interval: {v.best.metrics[metric].format_bounds(4)}."
    return text + "\n"


def _failures_section(results: Sequence[TrialRecord], interrupted: bool) -> str:
    bad = [r for r in results if r.status != COMPLETED]
    trivial = [r for r in results if r.status == COMPLETED and r.warnings]
    lines = []
    if interrupted:
        lines.append("**The experiment was interrupted**; run the same command again to finish it.\n")
    for r in bad:
        kind = {FAILED: "raised an error", NOT_RUN: "was not started", INTERRUPTED: "was interrupted (resumable)"}
        lines.append(f"- `{r.trial_id}` {kind.get(r.status, r.status)}: {r.error or 'no message'}")
    for r in trivial:  # completed, but not a model that learnt the task: its scores are not results
        lines.append(f"- `{r.trial_id}` completed as a **trivial model**: {'; '.join(r.warnings)}")
    for r in results:  # not flagged, yet no better than one region everywhere: it learnt nothing either
        val = r.val
        if r.status == COMPLETED and r not in trivial and not _beats_baseline(val):
            lines.append(f"- `{r.trial_id}` completed but its held-out IoU {val.get('iou', math.nan):.4f} does not "
                         f"beat one region everywhere ({val.get('trivial_iou', math.nan):.4f}): it learnt nothing")
    if not lines:
        return ("## Failures\n\nNone: every trial completed and learnt something (no trivial model, and each "
                "beats the held-out IoU of one region everywhere).\n")
    return "## Failures and trivial runs\n\n" + "\n".join(lines) + "\n"


# A model must beat one region everywhere by this much IoU to count as having learnt something.
BASELINE_MARGIN = 0.01


def _beats_baseline(val: dict[str, Any]) -> bool:
    """Whether held-out metrics beat the one-region-everywhere IoU (True when either is missing)."""
    iou, base = val.get("iou"), val.get("trivial_iou")
    if not isinstance(iou, (int, float)) or not isinstance(base, (int, float)):
        return True
    return iou > base + BASELINE_MARGIN


# ------------------------------------------------------------ an experiment without trials
def table_markdown(doc: dict[str, Any]) -> str:
    """``summary.md`` of a result of kind ``table`` (a saved model over a grid, a range test), from its result.json.

    Args:
        doc: ``title``, ``description`` (paragraphs), ``command``, ``sections`` (each ``heading``,
            ``paragraphs`` and optionally ``table``, Markdown), ``figures`` (``[title, file]``), ``footer``.
    """
    parts = [f"# {doc['title']}", *doc.get("description", [])]
    if doc.get("command"):
        parts.append("## Command\n\n```bash\n" + doc["command"] + "\n```")
    for sec in doc.get("sections", []):
        parts += [f"## {sec['heading']}", *sec.get("paragraphs", [])] + ([sec["table"]] if sec.get("table") else [])
    parts += [f"**{title}**\n\n![{title}]({name})" for title, name in doc.get("figures", [])]
    if doc.get("footer"):
        parts.append(doc["footer"])
    return "\n\n".join(parts) + "\n"


def write_table_summary(out_dir: str | os.PathLike[str]) -> Path:
    """(Re)write ``summary.md`` of a ``table`` result from the folder's result.json alone; returns its path."""
    doc = read_result(out_dir, "table")
    if doc is None:
        raise ValueError(f"out_dir: {out_dir} holds no result.json")
    path = Path(out_dir) / "summary.md"
    atomic_write_text(path, table_markdown(doc))
    return path
