"""Comparisons: one training option takes several values, everything else is equal.

``compare optimizers``, ``compare models`` and ``compare losses`` are this one
comparison with the option fixed. Each value can train at its own learning rate: given
per value, or chosen by a short learning-rate sweep run first (``auto``). The sweep is
scored on a *different* held-out set than the comparison (``val_seed + 1``), so choosing
the lr does not flatter the numbers reported for it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from texseg.errors import TexsegError
from texseg.experiments.experiment import Experiment, run_experiment, write_experiment_summary
from texseg.experiments.report import ExperimentResult, GroupStats, TrialRecord, best_group, budget_advice, format_value
from texseg.experiments.runner import Trial
from texseg.experiments.sweep import budget_text, check_values, seed_list
from texseg.training import engine
from texseg.training.config import TrainConfig

# Options a comparison cannot vary: seeds are the replicates, the rest are not scalars
# or do not change what is trained.
NOT_COMPARABLE = {"seed": "seeds are the replicates of every value (see `seeds`)",
                  "threads": "it changes speed, not the model",
                  "sigmas": "it is a list (compare sigma1/sigma2, or use config files)",
                  "model_kwargs": "it is a mapping (compare one `model_kwargs` setting per comparison)"}


def check_option(name: str) -> str:
    """``name`` if it is a TrainConfig field a comparison can vary.

    Raises:
        ValueError: not a training option, or one that cannot be compared.
    """
    names = [f.name for f in fields(TrainConfig)]
    if name not in names:
        raise ValueError(f"name must be a training option ({', '.join(names)}); got {name!r}")
    if name in NOT_COMPARABLE:
        raise ValueError(f"name: option {name} cannot be compared: {NOT_COMPARABLE[name]}")
    return name


def check_compared_values(name: str, values: Sequence[Any], base: TrainConfig) -> list[Any]:
    """The values of option ``name`` to compare: at least one, no repeats, each valid in ``base``.

    Raises:
        ValueError: naming ``values`` and the bad entry, or a repeated value.
    """
    check_option(name)
    if not values:
        raise ValueError("values needs at least one value")
    for v in values:  # every value must make a valid config on its own
        try:
            replace(base, **{name: v}).validate()
        except ValueError as e:
            raise ValueError(f"values: {e}") from None
    if len({repr(v) for v in values}) != len(values):
        raise ValueError(f"values lists a value twice: {', '.join(map(format_value, values))}")
    return list(values)


def value_label(name: str, value: Any) -> str:
    """How a value is labelled: ``adam`` for names (optimizer, model, loss), ``batch_size=8`` otherwise."""
    return value if isinstance(value, str) else f"{name}={format_value(value)}"


def check_lr_map(lrs: dict[str, float], labels: Sequence[str]) -> dict[str, float]:
    """A learning rate (> 0) for exactly the compared values' labels.

    Raises:
        ValueError: naming ``lrs``: an unknown or missing value, or a bad learning rate.
    """
    unknown = [k for k in lrs if k not in labels]
    if unknown:
        raise ValueError(f"lrs names {unknown[0]!r}, which is not compared (compared: {', '.join(labels)})")
    missing = [label for label in labels if label not in lrs]
    if missing:
        raise ValueError(f"lrs gives no learning rate for {', '.join(missing)}")
    return {label: check_values("lrs", [lrs[label]])[0] for label in labels}


# What the learning-rate tuning's runs change in the comparison's config besides the budget and val_seed:
# one evaluation (the final one, on every held-out image), and none of a run's optional outputs.
TUNING_RUN: dict[str, Any] = {"eval_every": None, "evals": 1, "early_stop": None, "figures": False,
                              "tensorboard": False, "keep_best": False}


@dataclass(frozen=True)
class TuneSettings:
    """The short learning-rate sweep that chooses each value's lr (``lrs="auto"``).

    Attributes:
        tune_lrs: candidate learning rates, tried for every compared value.
        tune_fraction: its runs get this fraction of the comparison's budget (iterations and seconds).
        tune_seeds: seeds per candidate.
    """

    tune_lrs: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    tune_fraction: float = 0.25
    tune_seeds: int = 1

    def validate(self) -> TuneSettings:
        check_values("tune_lrs", self.tune_lrs)
        if not (isinstance(self.tune_fraction, (int, float)) and 0 < self.tune_fraction <= 1):
            raise ValueError(f"tune_fraction must be in (0, 1], got {self.tune_fraction!r}")
        if not isinstance(self.tune_seeds, int) or isinstance(self.tune_seeds, bool) or not 1 <= self.tune_seeds <= 100:
            raise ValueError(f"tune_seeds must be an integer in [1, 100], got {self.tune_seeds!r}")
        return self


def tuning_experiment(base: TrainConfig, name: str, values: Sequence[Any], tune: TuneSettings,
                      command: str = "") -> Experiment:
    """The short sweep: every value x every candidate lr, on a shortened budget and its own validation set.

    Its runs are scored once, at their end, on their whole held-out set (what the choice is made on), and
    write nothing a choice does not need (:data:`TUNING_RUN`): no interim evaluations or checkpoints,
    figures, TensorBoard events or best weights, so a run of a couple of seconds is mostly training.
    """
    tune.validate()
    fraction = tune.tune_fraction
    short = replace(base, val_seed=base.val_seed + 1, **TUNING_RUN,
                    iterations=None if base.iterations is None else max(1, math.ceil(base.iterations * fraction)),
                    time_budget=None if base.time_budget is None else base.time_budget * fraction)
    seeds = [base.seed + i for i in range(tune.tune_seeds)]
    trials = [Trial(f"{value_label(name, v)} lr={lr:g}", replace(short, **{name: v, "lr": lr}), s)
              for v in values for lr in tune.tune_lrs for s in seeds]
    desc = (f"Learning-rate selection for the comparison of {name} values in the parent folder: every value x "
            f"every candidate lr, {budget_text(short)} ({fraction:g} of the comparison's budget), "
            f"{tune.tune_seeds} seed(s), each scored once at its end on a separate held-out set (val_seed "
            f"{short.val_seed}, {short.val_size} images).")
    return Experiment(f"Learning-rate selection per {name}", desc, trials, (name, "lr"), short, command)


def check_tuning_budget(short: TrainConfig, tune: TuneSettings) -> None:
    """Refuse a tuning whose runs are too short to score, before anything trains.

    Raises:
        ValueError: naming ``iterations``: the tuning runs would take fewer than ``MIN_STEPS`` steps.
    """
    if short.iterations is not None and short.iterations < engine.MIN_STEPS:
        need = math.ceil(engine.MIN_STEPS / tune.tune_fraction)
        raise ValueError(f"iterations: the learning-rate tuning runs would train {short.iterations} step(s) "
                         f"({tune.tune_fraction:g} of the budget), under the {engine.MIN_STEPS} a score needs to "
                         f"mean anything: give `iterations` {need} or more, a larger `tune_fraction`, or `lrs` "
                         "per value")


def chosen_lrs(result: ExperimentResult, name: str, values: Sequence[Any],
               fraction: float | None = None) -> dict[str, float]:
    """Per value, the lr of its best setting in the tuning result, among runs that learnt something.

    Args:
        result: the tuning experiment's result.
        name: the compared option; values: its values.
        fraction: the tuning runs' share of the comparison's budget (said in the error).

    Raises:
        TexsegError: for some value no candidate lr completed, or every one gave a trivial
            model (the message says what budget the tuning runs need).
    """
    out = {}
    for v in values:
        groups = [g for g in result.ranked if g.values[name] == v]
        best = best_group(groups, result.metric, min_seeds=1)  # a pick to train with, not a claim
        if best is None:
            done = [g for g in groups if g.completed]
            why = (f"every candidate gave a trivial model, so none can be chosen: {budget_advice(done)}"
                   if done else "no candidate learning rate completed")
            share = f" (the tuning runs get {fraction:g} of it)" if fraction is not None and done else ""
            raise TexsegError(f"learning-rate tuning for {value_label(name, v)}: {why}{share}, or give the learning "
                              f"rates with `lrs`; see {result.out_dir / 'summary.md'}")
        out[value_label(name, v)] = float(best.values["lr"])
    return out


def tuning_section(chosen: dict[str, float], tune: TuneSettings) -> str:
    """The tuning's own summary.md section on its choice: what it picks, and what it does not claim."""
    seeds = (f"{tune.tune_seeds} seed per candidate, so a pick to train with, not a claim that it is the best "
             "learning rate" if tune.tune_seeds == 1 else f"{tune.tune_seeds} seeds per candidate")
    return ("## Best choice\n\nPer value, the candidate with the best held-out IoU among runs that learnt something "
            f"(trivial runs are never chosen; {seeds}):\n\n| value | chosen lr |\n|---|---|\n"
            + "\n".join(f"| {k} | {v:g} |" for k, v in chosen.items()) + "\n")


def comparison(base: TrainConfig, name: str, values: Sequence[Any], seeds: Sequence[int],
               lrs: dict[str, float] | None, command: str = "", how_lrs: str = "") -> Experiment:
    """Every value of option ``name`` with ``len(seeds)`` seeds, at its lr from ``lrs`` (or ``base.lr``).

    Args:
        base: the shared configuration (budget included: it is the same for every value).
        name: the TrainConfig field compared.
        values: its values.
        seeds: training seeds, the same for every value.
        lrs: value label -> learning rate, or None for ``base.lr`` everywhere.
        command: the command line.
        how_lrs: a sentence saying where the learning rates come from.
    """
    trials = []
    for v in values:
        label = value_label(name, v)
        changes = {name: v, **({"lr": lrs[label]} if lrs else {})}
        trials += [Trial(label, replace(base, **changes), s) for s in seeds]
    varied = (name, "lr") if lrs and name != "lr" else (name,)
    desc = (f"Comparison of {name}: {', '.join(value_label(name, v) for v in values)}, each trained for "
            f"{budget_text(base)} with {len(seeds)} seed(s) (seeds {seeds[0]}..{seeds[-1]}), everything else equal. "
            + (how_lrs or f"Every value uses lr {_lr_text(base.lr)}, not tuned per value: a difference may come from "
                          "the learning rate rather than the option."))
    return Experiment(f"Comparison: {name}", desc, trials, varied, base, command)


def _lr_text(lr: float | None) -> str:
    return "the device's default" if lr is None else f"{lr:g}"


@dataclass
class ComparisonResult:
    """What :func:`run_comparison` returns: the comparison, the lr tuning that preceded it, the lrs chosen.

    Attributes:
        result: the comparison (every trial, the ranked settings with intervals); None if it was
            stopped while tuning learning rates.
        tuning: the lr tuning (``lrs="auto"``), in ``out/lr-tuning``; None otherwise.
        lrs: value label -> the learning rate it trained with (None: ``base.lr`` everywhere).
        summary: the comparison's summary.md (None if stopped while tuning).
    """

    result: ExperimentResult | None
    tuning: ExperimentResult | None
    lrs: dict[str, float] | None
    summary: Path | None

    @property
    def interrupted(self) -> bool:
        return any(r is not None and r.interrupted for r in (self.result, self.tuning)) or self.result is None

    @property
    def trials(self) -> list[TrialRecord]:
        """The comparison's trials (none if it was stopped while tuning)."""
        return self.result.trials if self.result else []

    @property
    def ranked(self) -> list[GroupStats]:
        """The compared values' statistics, best first."""
        return self.result.ranked if self.result else []

    @property
    def best(self) -> GroupStats | None:
        """The best value, if the data choose one (see :func:`~texseg.experiments.report.best_group`)."""
        return self.result.best if self.result else None


ComparisonOutcome = ComparisonResult  # its former name


@dataclass(frozen=True)
class ComparisonSettings:
    """How :func:`run_comparison` runs (the options of ``texseg compare`` besides the training options).

    Attributes:
        seeds: seeds per value (``base.seed``, ``base.seed + 1``, ...).
        lrs: learning rate per value label; ``"auto"`` (the default) to choose each value's
            lr with a short sweep first (in ``out/lr-tuning``, scored on another held-out
            set), since one shared lr favours whichever value it happens to suit; None for
            ``base.lr`` everywhere (said in the summary).
        tune: the settings of the ``"auto"`` sweep.
        jobs: trials trained at once (separate processes when > 1), or ``"auto"``.
        command: the command line, for the summary.
        progress: a progress bar per trial (``jobs == 1``).
    """

    seeds: int = 3
    lrs: dict[str, float] | str | None = "auto"
    tune: TuneSettings | None = None
    jobs: int | str = 1
    command: str = ""
    progress: bool = False


def run_comparison(base: TrainConfig, name: str, values: Sequence[Any], out: str | os.PathLike[str],
                   settings: ComparisonSettings | None = None, *,
                   log: Callable[[str], None] | None = None) -> ComparisonResult:
    """Compare values of option ``name`` with equal budgets and seeds; write ``out`` (results, figures, summary.md).

    Writes result.json and summary.md for the comparison and its lr tuning (``out/lr-tuning``); the one
    report.html of the experiment is the caller's to write (``texseg.report.write_report(out)``).

    Args:
        base: the shared configuration (budget included).
        name: the TrainConfig field compared; values: its values.
        out: the experiment folder (the same folder resumes it).
        settings: seeds, learning rates (``"auto"`` by default), jobs, ... (see :class:`ComparisonSettings`).
        log: receives progress lines (one per trial, and the chosen learning rates).

    Returns:
        A :class:`ComparisonResult`.
    """
    s = settings or ComparisonSettings()
    log = log or (lambda line: None)
    values = check_compared_values(name, values, base)
    seed_values = seed_list(base.seed, s.seeds)
    chosen = _given_lrs(name, s.lrs, [value_label(name, v) for v in values])
    sections, how, tuning = [], "Learning rates given per value." if chosen else "", None
    if s.lrs == "auto":
        tuning, chosen, how = _tune(base, name, values, Path(out), s, log)
        if chosen is None:  # stopped while tuning
            return ComparisonResult(None, tuning, None, None)
        sections.append("## Learning rates\n\n" + how + "\n\n| value | lr |\n|---|---|\n"
                        + "\n".join(f"| {k} | {v:g} |" for k, v in chosen.items()) + "\n")
    experiment = comparison(base, name, values, seed_values, chosen, s.command, how)
    result = run_experiment(experiment, out, jobs=s.jobs, progress=s.progress, log=log)
    summary = write_experiment_summary(experiment, result, sections=sections)
    return ComparisonResult(result, tuning, chosen, summary)


def _given_lrs(name: str, lrs: dict[str, float] | str | None, labels: list[str]) -> dict[str, float] | None:
    """The learning rates given per value (checked), or None for ``"auto"`` and None.

    Raises:
        ValueError: naming ``lrs``.
    """
    if name == "lr" and lrs is not None:
        raise ValueError("lrs cannot be given: the compared option is lr itself")
    if isinstance(lrs, str) and lrs != "auto":
        raise ValueError(f"lrs must be 'auto', a mapping of value to learning rate, or None; got {lrs!r}")
    return check_lr_map(lrs, labels) if isinstance(lrs, dict) else None


def _tune(base: TrainConfig, name: str, values: list[Any], out: Path, s: ComparisonSettings,
          log: Callable[[str], None]) -> tuple[ExperimentResult, dict[str, float] | None, str]:
    """The ``lrs="auto"`` sweep in ``out/lr-tuning``: its result, the lr chosen per value (None if
    stopped) and the sentence saying how they were chosen."""
    tune = (s.tune or TuneSettings()).validate()
    texp = tuning_experiment(base, name, values, tune, s.command)
    for t in comparison(base, name, values, seed_list(base.seed, s.seeds), None).trials:
        t.run_config().validate()  # fail on bad input before any tuning
    check_tuning_budget(texp.base, tune)
    log(f"choosing a learning rate per value: {len(texp.trials)} short runs in {out / 'lr-tuning'}")
    tuning = run_experiment(texp, out / "lr-tuning", jobs=s.jobs, progress=s.progress, log=log)
    if tuning.interrupted:
        write_experiment_summary(texp, tuning)
        return tuning, None, ""
    chosen = None
    try:
        chosen = chosen_lrs(tuning, name, values, tune.tune_fraction)
    finally:  # its summary says what it chose, or (raising) why it could not choose
        write_experiment_summary(texp, tuning, best_section=tuning_section(chosen, tune) if chosen else None)
    candidates = ",".join(f"{lr:g}" for lr in tune.tune_lrs)
    how = ("Each value trains at its own learning rate, the best of a short sweep over "
           f"{candidates} ([lr-tuning/summary.md](lr-tuning/summary.md)), scored on a separate held-out set.")
    log("chosen: " + ", ".join(f"{k} lr={v:g}" for k, v in chosen.items()) + "\n")
    return tuning, chosen, how
