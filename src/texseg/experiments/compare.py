"""Comparisons: one training option takes several values, everything else is equal.

``compare optimizers``, ``compare models`` and ``compare losses`` are this one
comparison with the option fixed. Each value can train at its own learning rate: given
per value, or chosen by a short learning-rate sweep run first (``auto``). The sweep is
scored on a *different* held-out set than the comparison (``val_seed + 1``), so choosing
the lr does not flatter the numbers reported for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from texseg.errors import TexsegError
from texseg.experiments.experiment import Experiment, ExperimentResult
from texseg.experiments.report import best_group, format_value
from texseg.experiments.runner import Trial
from texseg.experiments.sweep import budget_text, check_values
from texseg.training.config import TrainConfig

# Options a comparison cannot vary: seeds are the replicates, the rest are not scalars
# or do not change what is trained.
NOT_COMPARABLE = {"seed": "seeds are the replicates of every value (use --seeds)",
                  "threads": "it changes speed, not the model",
                  "sigmas": "it is a list (compare sigma1/sigma2, or use --config files)",
                  "model_kwargs": "it is a mapping (use --model-arg with one value per comparison)"}
_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def option_name(name: str) -> str:
    """A TrainConfig field from an option name (``batch-size``, ``--batch-size`` or ``batch_size``).

    Raises:
        ValueError: not a training option, or one that cannot be compared.
    """
    field_name = name.strip().lstrip("-").replace("-", "_")
    names = [f.name for f in fields(TrainConfig)]
    if field_name not in names:
        raise ValueError(f"NAME must be a texseg train option ({', '.join(n.replace('_', '-') for n in names)}); "
                         f"got {name!r}")
    if field_name in NOT_COMPARABLE:
        raise ValueError(f"option {field_name.replace('_', '-')} cannot be compared: {NOT_COMPARABLE[field_name]}")
    return field_name


def parse_values(name: str, texts: Sequence[str], base: TrainConfig) -> list[Any]:
    """Convert the strings of ``--values`` to the type of option ``name``, checking each in ``base``.

    Raises:
        ValueError: naming ``--values`` and the bad entry, or a repeated value.
    """
    if not texts:
        raise ValueError("--values needs at least one value")
    kind = str(next(f.type for f in fields(TrainConfig) if f.name == name))
    values = [_parse_one(name, kind.replace(" | None", ""), "None" in kind, t.strip()) for t in texts]
    for v in values:  # every value must make a valid config on its own
        try:
            replace(base, **{name: v}).validate()
        except ValueError as e:
            raise ValueError(f"--values: {e}") from None
    if len({repr(v) for v in values}) != len(values):
        raise ValueError(f"--values lists a value twice: {', '.join(map(format_value, values))}")
    return values


def _parse_one(name: str, kind: str, optional: bool, text: str) -> Any:
    if optional and text.lower() in ("none", "default"):
        return None
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            v = float(text)
            if not math.isfinite(v):
                raise ValueError
            return v
    except ValueError:
        raise ValueError(f"--values: {name} takes {kind} values, got {text!r}") from None
    if kind == "bool":
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise ValueError(f"--values: {name} takes true/false, got {text!r}")
    return text


def value_label(name: str, value: Any) -> str:
    """How a value is labelled: ``adam`` for names (optimizer, model, loss), ``batch_size=8`` otherwise."""
    return value if isinstance(value, str) else f"{name}={format_value(value)}"


def parse_lr_map(text: str, labels: Sequence[str]) -> dict[str, float] | None:
    """``--lrs``: ``auto`` (None), one lr for every value, or ``value=lr,...`` covering every value.

    Raises:
        ValueError: naming ``--lrs`` (malformed, an unknown or a missing value).
    """
    text = text.strip()
    if text.lower() == "auto":
        return None
    if "=" not in text:
        try:
            lr = float(text)
        except ValueError:
            raise ValueError(f"--lrs must be auto, one learning rate, or VALUE=LR,...; got {text!r}") from None
        return {label: check_values("--lrs", [lr])[0] for label in labels}
    out: dict[str, float] = {}
    for pair in text.split(","):
        key, _, lr_text = pair.partition("=")
        key = key.strip()
        if key not in labels:
            raise ValueError(f"--lrs names {key!r}, which is not compared (compared: {', '.join(labels)})")
        try:
            out[key] = check_values("--lrs", [float(lr_text)])[0]
        except ValueError:
            raise ValueError(f"--lrs: the learning rate of {key} must be a number > 0, got {lr_text!r}") from None
    missing = [label for label in labels if label not in out]
    if missing:
        raise ValueError(f"--lrs gives no learning rate for {', '.join(missing)}")
    return out


@dataclass(frozen=True)
class TuneSettings:
    """The short learning-rate sweep of ``--lrs auto``.

    Attributes:
        lrs: candidate learning rates, tried for every compared value.
        fraction: its runs get this fraction of the comparison's budget (iterations and seconds).
        seeds: seeds per candidate.
    """

    lrs: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    fraction: float = 0.25
    seeds: int = 1

    def validate(self) -> TuneSettings:
        check_values("--tune-lrs", self.lrs)
        if not (isinstance(self.fraction, (int, float)) and 0 < self.fraction <= 1):
            raise ValueError(f"--tune-fraction must be in (0, 1], got {self.fraction!r}")
        if not isinstance(self.seeds, int) or isinstance(self.seeds, bool) or not 1 <= self.seeds <= 100:
            raise ValueError(f"--tune-seeds must be an integer in [1, 100], got {self.seeds!r}")
        return self


def tuning_experiment(base: TrainConfig, name: str, values: Sequence[Any], tune: TuneSettings,
                      command: str = "") -> Experiment:
    """The short sweep: every value x every candidate lr, on a shortened budget and its own validation set."""
    tune.validate()
    short = replace(base, val_seed=base.val_seed + 1,
                    iterations=None if base.iterations is None else max(1, math.ceil(base.iterations * tune.fraction)),
                    time_budget=None if base.time_budget is None else base.time_budget * tune.fraction)
    seeds = [base.seed + i for i in range(tune.seeds)]
    trials = [Trial(f"{value_label(name, v)} lr={lr:g}", replace(short, **{name: v, "lr": lr}), s)
              for v in values for lr in tune.lrs for s in seeds]
    desc = (f"Learning-rate selection for the comparison of {name} values in the parent folder: every value x "
            f"every candidate lr, {budget_text(short)} ({tune.fraction:g} of the comparison's budget), "
            f"{tune.seeds} seed(s), scored on a separate held-out set (val_seed {short.val_seed}).")
    return Experiment(f"Learning-rate selection per {name}", desc, trials, (name, "lr"), short, command)


def chosen_lrs(result: ExperimentResult, name: str, values: Sequence[Any]) -> dict[str, float]:
    """Per value, the lr of its best setting in the tuning result.

    Raises:
        TexsegError: no candidate lr completed for some value.
    """
    out = {}
    for v in values:
        groups = [g for g in result.ranked if g.values[name] == v]
        best = best_group(groups, result.metric)
        if best is None:
            raise TexsegError(f"no candidate learning rate completed for {value_label(name, v)}; "
                              f"see {result.out_dir / 'summary.md'} and widen --tune-lrs")
        out[value_label(name, v)] = float(best.values["lr"])
    return out


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
            + (how_lrs or f"Every value uses lr {base.lr:g}."))
    return Experiment(f"Comparison: {name}", desc, trials, varied, base, command)
