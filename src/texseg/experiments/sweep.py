"""Learning-rate experiments: a sweep (one run per lr and seed) and a range test (one run).

The sweep is an ordinary :class:`Experiment`. The range test is not a training run: it
raises the learning rate exponentially at every step of one short run and records the
loss, so it has its own few-line loop over the library's pieces (model, loss,
optimizer, generator) and none of the training loop's bookkeeping.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from texseg._validate import check_int, check_positive
from texseg.experiments.experiment import Experiment
from texseg.experiments.report import format_value, write_results_csv, write_table_summary
from texseg.experiments.runner import Trial
from texseg.plots import save_figure
from texseg.result_file import write_result
from texseg.signals import catch_stop_signals
from texseg.training.config import TrainConfig
from texseg.training.engine import build_trainer, train_step


def check_values(name: str, values: Sequence[float]) -> list[float]:
    """Positive finite numbers, at least one, no repeats; ``name`` is the option named in errors."""
    if not values:
        raise ValueError(f"{name} needs at least one value")
    out = [check_positive(name, v) for v in values]
    if len(set(out)) != len(out):
        raise ValueError(f"{name} lists a value twice: {', '.join(format_value(v) for v in out)}")
    return out


def seed_list(first: int, count: int) -> list[int]:
    """``count`` consecutive seeds starting at ``first`` (the --seed option)."""
    check_int("seeds", count, minimum=1, maximum=1000)
    return [first + i for i in range(count)]


def budget_text(config: TrainConfig) -> str:
    """``1000 iterations``, ``20 s of training`` or both."""
    parts = []
    if config.iterations is not None:
        parts.append(f"{config.iterations} iterations")
    if config.time_budget is not None:
        parts.append(f"{config.time_budget:g} s of training")
    return " or ".join(parts)


def lr_sweep(base: TrainConfig, lrs: Sequence[float], seeds: Sequence[int], command: str = "") -> Experiment:
    """One run per learning rate and seed, everything else as in ``base``.

    Args:
        base: the shared configuration.
        lrs: learning rates (positive, distinct).
        seeds: training seeds.
        command: the command line, for the report.
    """
    lrs = check_values("lrs", lrs)
    trials = [Trial(f"lr={lr:g}", replace(base, lr=lr), s) for lr in lrs for s in seeds]
    desc = (f"Learning-rate sweep of `{base.model}` trained with `{base.optimizer}` ({base.schedule} schedule, "
            f"loss {base.loss_name}) for {budget_text(base)}: {len(lrs)} learning rates x {len(seeds)} seed(s). "
            "A learning rate too small learns slowly; one too large diverges (recorded, not averaged in).")
    return Experiment("Learning-rate sweep", desc, trials, ("lr",), base, command)


# ----------------------------------------------------------------------- range test
@dataclass(frozen=True)
class RangeTestConfig:
    """Settings of a learning-rate range test.

    Attributes:
        min_lr: learning rate of the first step.
        max_lr: learning rate of the last step.
        steps: number of steps (the lr grows by a constant factor each step).
        beta: exponential smoothing of the loss (bias-corrected), in [0, 1).
        stop_factor: stop once the smoothed loss exceeds this multiple of its minimum.
    """

    min_lr: float = 1e-6
    max_lr: float = 10.0
    steps: int = 100
    beta: float = 0.9
    stop_factor: float = 4.0

    def validate(self) -> RangeTestConfig:
        check_positive("min_lr", self.min_lr)
        check_positive("max_lr", self.max_lr)
        if self.max_lr <= self.min_lr:
            raise ValueError(f"max_lr must be larger than `min_lr`, got {self.max_lr!r} <= {self.min_lr!r}")
        check_int("iterations", self.steps, minimum=5, maximum=100_000)  # the steps of the test
        check_positive("beta", self.beta, allow_zero=True)
        if self.beta >= 1:
            raise ValueError(f"beta must be in [0, 1), got {self.beta!r}")
        check_positive("stop_factor", self.stop_factor)
        if self.stop_factor <= 1:
            raise ValueError(f"stop_factor must be > 1, got {self.stop_factor!r}")
        return self

    def lr_at(self, step: int) -> float:
        return self.min_lr * (self.max_lr / self.min_lr) ** (step / (self.steps - 1))


@dataclass
class RangeTestResult:
    """The loss at each learning rate tried, and the learning rates it suggests.

    ``steepest_lr``: where the smoothed loss falls fastest per decade of lr (before its
    minimum); ``min_lr_10``: a tenth of the lr of the minimum smoothed loss.
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    stop_reason: str
    steepest_lr: float | None
    min_lr_10: float | None
    batch_size: int = 0  # what the test trained with (the device's default when the config left it)


def lr_range_test(config: TrainConfig, rt: RangeTestConfig, *, progress: bool = False) -> RangeTestResult:
    """Train one model while raising the lr from ``rt.min_lr`` to ``rt.max_lr`` exponentially.

    Uses the training engine with ``config``'s scene, model, loss, optimizer (its lr is
    replaced), batch size, seed, device, threads and precision; its budget and evaluation
    settings are unused.
    """
    rt.validate()
    t = build_trainer(config)
    t.model.train()
    lrs, losses, smoothed, avg, reason = [], [], [], 0.0, f"reached max_lr {rt.max_lr:g}"
    with catch_stop_signals() as stop:
        for step in tqdm(range(rt.steps), disable=not progress, desc="lr range test"):
            if stop.signal is not None:
                reason = f"stopped by {stop.name} at lr {rt.lr_at(step):.3g}"
                break
            lr = rt.lr_at(step)
            loss, problem = train_step(t, lr).read()  # the curve needs every step's loss
            if problem is not None:
                reason = f"the {problem} at lr {lr:.3g}"
                break
            avg = rt.beta * avg + (1 - rt.beta) * loss
            lrs.append(lr)
            losses.append(loss)
            smoothed.append(avg / (1 - rt.beta ** (step + 1)))
            if smoothed[-1] > rt.stop_factor * min(smoothed):
                reason = f"the smoothed loss exceeded {rt.stop_factor:g}x its minimum at lr {lr:.3g}"
                break
    steepest, tenth = suggest_lrs(lrs, smoothed)
    return RangeTestResult(lrs, losses, smoothed, reason, steepest, tenth, t.config.batch_size)


def suggest_lrs(lrs: Sequence[float], smoothed: Sequence[float]) -> tuple[float | None, float | None]:
    """``(steepest, min/10)`` from a range test's smoothed losses (None when too few points).

    The steepest descent is searched from the first tenth of the test (where the
    bias-corrected average still rests on a few losses) up to the minimum.
    """
    if len(lrs) < 5:
        return None, None
    loss, log_lr = np.asarray(smoothed), np.log10(np.asarray(lrs))
    i_min = int(np.argmin(loss))
    tenth = float(lrs[i_min]) / 10
    start = max(1, len(lrs) // 10)
    if i_min - start < 2:
        return None, tenth
    slope = np.gradient(loss, log_lr)[start:i_min + 1]
    return float(lrs[start + int(np.argmin(slope))]), tenth


def write_range_test(result: RangeTestResult, config: TrainConfig, rt: RangeTestConfig,
                     out_dir: str | os.PathLike[str], command: str) -> Path:
    """``results.csv`` (step, lr, loss, smoothed loss), ``lr-range.png`` and ``summary.md``.

    Returns:
        The path of ``summary.md``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"step": i, "lr": lr, "loss": loss, "smoothed_loss": s}
            for i, (lr, loss, s) in enumerate(zip(result.lrs, result.losses, result.smoothed))]
    write_results_csv(rows, out / "results.csv")
    save_figure(range_figure(result, config), out / "lr-range.png")
    fmt = lambda v: "none (too few steps)" if v is None else f"{v:.3g}"  # noqa: E731
    doc = {"title": "Learning-rate range test", "command": command, "description": [
        f"One run of `{config.model}` with `{config.optimizer}` (loss {config.loss_name}, batch {result.batch_size}, "
        f"seed {config.seed}): the learning rate grows exponentially from {rt.min_lr:g} to {rt.max_lr:g} over "
        f"{rt.steps} steps, one batch per step, and the training loss is smoothed with a bias-corrected "
        f"exponential average (beta {rt.beta:g}). It stopped after {len(result.lrs)} steps: {result.stop_reason}."],
        "sections": [{"heading": "Suggested learning rates", "paragraphs": [
            f"- **steepest descent of the smoothed loss: {fmt(result.steepest_lr)}** (where the loss falls fastest "
            "per decade of learning rate, searched up to the minimum);",
            f"- a tenth of the lr of the minimum smoothed loss: {fmt(result.min_lr_10)}.",
            "These are starting points, not answers: the loss here is a training loss under a moving learning "
            "rate. Confirm with `texseg sweep lr` around them (held-out metrics, several seeds)."]}],
        "figures": [["loss against learning rate", "lr-range.png"]],
        "footer": "`results.csv` holds every step (lr, loss, smoothed loss).",
        "suggested": {"steepest_lr": result.steepest_lr, "min_lr_10": result.min_lr_10}}
    write_result(out, "table", doc)
    return write_table_summary(out)


def range_figure(result: RangeTestResult, config: TrainConfig) -> Figure:
    """Raw and smoothed loss against the learning rate (log axis), suggestions marked."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.plot(result.lrs, result.losses, color="0.7", linewidth=0.8, label="loss per step")
    ax.plot(result.lrs, result.smoothed, color="C0", label="smoothed loss")
    for value, name, color in ((result.steepest_lr, "steepest descent", "C1"), (result.min_lr_10, "min / 10", "C2")):
        if value is not None:
            ax.axvline(value, color=color, linestyle="--", label=f"{name}: {value:.3g}")
    ax.set_xscale("log")
    if result.losses and min(result.losses) > 0:
        ax.set_yscale("log")
    ax.set(xlabel="learning rate", ylabel=f"training loss ({config.loss_name})")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.suptitle(f"Learning-rate range test: {config.model}, {config.optimizer}")
    return fig
