"""Experiment commands: ``sweep lr``, ``sweep lr-range``, ``compare ...``, ``difficulty``.

Each takes every ``texseg train`` option (minus the ones it varies), passes it to every
trial, and writes one folder (``--out``) with results.csv, figures and summary.md.
Running the same command again finishes an interrupted experiment without training
anything twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from texseg.cli import cli
from texseg.cli._options import command_line, config_options, given_options, jobs_option, parse_lrs, parse_value
from texseg.errors import ExitCode
from texseg.training.config import TrainConfig

# Train options the range test has no use for: it sets the lr itself and evaluates nothing.
RANGE_UNUSED = ("lr", "schedule", "warmup", "time_budget", "eval_every", "evals", "val_size", "val_seed")
DIFFICULTY_VARIED = ("sigma1", "sigma2", "sigmas", "regions")


# ------------------------------------------------------------------------ shared options
def train_options(exclude: Sequence[str] = ()) -> Callable[[Callable], Callable]:
    """Every ``texseg train`` option except ``exclude`` (what the command varies itself)."""
    return config_options(only=[f.name for f in fields(TrainConfig) if f.name not in exclude])


def common_options(seeds_default: int | None) -> Callable[[Callable], Callable]:
    """``--out``, ``--config``, ``--quiet`` and, for experiments that train, ``--seeds`` and ``--jobs``."""

    def decorator(f: Callable) -> Callable:
        if seeds_default is not None:
            f = click.option("--jobs", default="1", show_default=True, callback=jobs_option,
                             help="trials trained at once, in separate processes (torch threads are divided "
                                  "among them), or auto: one per core, as many as fit in memory")(f)
            f = click.option("--seeds", type=click.INT, default=seeds_default, show_default=True,
                             help="seeds per setting: --seed, --seed+1, ...")(f)
        f = click.option("--quiet", is_flag=True, help="no progress bars")(f)
        f = click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
                         help="JSON file of training options (command-line options override it)")(f)
        return click.option("--out", type=click.Path(file_okay=False), required=True,
                            help="experiment folder (the same --out resumes the experiment)")(f)

    return decorator


def floats(option: str, text: str) -> list[float]:
    """``"1e-3,0.1"`` -> ``[0.001, 0.1]``; a ValueError naming ``option`` otherwise."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{option} must be comma-separated numbers, got {text!r}") from None
    if not values:
        raise ValueError(f"{option} needs at least one number, got {text!r}")
    return values


def names(option: str, text: str) -> list[str]:
    values = [x.strip() for x in text.split(",") if x.strip()]
    if not values:
        raise ValueError(f"{option} needs at least one value, got {text!r}")
    return values


def base_config(config_file: str | None, options: dict[str, Any]) -> TrainConfig:
    """The configuration every trial starts from: the config file, then the given options.

    Trials draw no figures and write no report.html of their own unless the file or ``--figures``
    asks: the experiment's report shows them all, and per-trial pictures cost more than short trials train.
    """
    # File and flags merge first, so --iterations drops only the *default* time budget.
    file_options = TrainConfig.read_json(config_file) if config_file else {}
    return TrainConfig.from_dict({"figures": False, **file_options, **given_options(options)}).validate()


def reject_given(ctx: click.Context, params: Sequence[str], why: str) -> None:
    """A usage error if any of ``params`` was given on the command line."""
    given = [p for p in params if ctx.get_parameter_source(p) == ParameterSource.COMMANDLINE]
    if given:
        flags = ", ".join("--" + p.replace("_", "-") for p in given)
        raise click.UsageError(f"{flags}: {why}")


# ----------------------------------------------------------------------- running/reporting
def run_and_report(experiment: Any, out: Path, jobs: int, quiet: bool,
                   extra: Callable[[Any], tuple[list[tuple[str, str]], list[str]]] | None = None) -> int:
    """Run ``experiment`` in ``out``, write its summary, print the ranking; return the exit code.

    Args:
        extra: given the result, returns more (figures, sections) for summary.md.
    """
    from texseg.experiments import run_experiment, write_experiment_summary

    result = run_experiment(experiment, out, jobs=jobs, progress=not quiet and jobs == 1, log=click.echo)
    figures, sections = extra(result) if extra else ([], [])
    path = write_experiment_summary(experiment, result, sections=sections, figures=figures)
    write_page(out)
    print_ranking(experiment.title, result, path)
    return exit_code(result)


def write_page(out: str | Path) -> None:
    """``report.html`` of a folder, rendered from its result.json: once per experiment, a warning if it fails."""
    from texseg.report import write_report_or_note

    if (note := write_report_or_note(Path(out))) is not None:  # a convenience, never an error
        click.echo(f"warning: {note}", err=True)


def print_ranking(title: str, result: Any, summary: Path) -> None:
    """The ranked settings (mean ± 95% CI over completed seeds), the verdict (summary.md's words), the path."""
    click.echo(f"\n{title} ({result.metric}, mean ± 95% CI over completed seeds):")
    width = max(len(g.label) for g in result.ranked)
    for i, g in enumerate(result.ranked, 1):
        m = g.metrics.get(result.metric)
        click.echo(f"  {i:>2}. {g.label:<{width}}  {m.format(4) if m else '—':<20} completed {g.status_text()}"
                   + (f"  TRIVIAL {g.trivial}/{g.completed}" if g.trivial else ""))
    click.echo(result.verdict.headline)
    click.echo(f"wrote {summary}")


def exit_code(result: Any) -> int:
    """130 if interrupted (rerun to finish), 1 if a trial raised an error, else 0."""
    if result.interrupted:
        click.echo("interrupted: run the same command again to finish the experiment", err=True)
        return ExitCode.INTERRUPTED
    if result.failed:
        click.echo(f"{result.failed} trial(s) failed with an error (see summary.md)", err=True)
        return ExitCode.INTERNAL
    return ExitCode.OK


# ----------------------------------------------------------------------------- sweep
@cli.group()
def sweep() -> None:
    """Learning-rate experiments: a sweep over runs, or a one-run range test."""


@sweep.command("lr")
@click.option("--lrs", required=True, metavar="LR,LR,...", help="learning rates, e.g. 1e-5,1e-4,1e-3,1e-2,1e-1")
@common_options(seeds_default=1)
@train_options(exclude=("lr",))
@click.pass_context
def sweep_lr(ctx: click.Context, lrs: str, out: str, config_file: str | None, quiet: bool, seeds: int, jobs: int,
             **options: Any) -> int:
    """One run per learning rate and seed; curves, a ranked table and the best lr.

    Example: texseg sweep lr --lrs 1e-4,1e-3,1e-2,1e-1 --seeds 3 --iterations 500 --out exp/lr
    """
    from texseg.experiments.sweep import lr_sweep, seed_list

    base = base_config(config_file, options)
    experiment = lr_sweep(base, floats("--lrs", lrs), seed_list(base.seed, seeds), command_line(ctx))
    return run_and_report(experiment, Path(out), jobs, quiet)


@sweep.command("lr-range")
@click.option("--min-lr", type=click.FLOAT, default=1e-6, show_default=True, help="lr of the first step")
@click.option("--max-lr", type=click.FLOAT, default=10.0, show_default=True, help="lr of the last step")
@click.option("--beta", type=click.FLOAT, default=0.9, show_default=True,
              help="exponential smoothing of the loss, in [0, 1)")
@common_options(seeds_default=None)
@train_options(exclude=RANGE_UNUSED)
@click.pass_context
def sweep_lr_range(ctx: click.Context, min_lr: float, max_lr: float, beta: float, out: str,
                   config_file: str | None, quiet: bool, **options: Any) -> None:
    """Learning-rate range test: ONE run whose lr grows exponentially every step.

    Plots the smoothed training loss against the lr and suggests a learning rate (the
    steepest descent of the smoothed loss; also a tenth of the lr of its minimum).
    --iterations is the number of steps (one batch each; default 100).
    """
    from texseg.experiments.sweep import RangeTestConfig, lr_range_test, write_range_test

    config = base_config(config_file, options)
    steps = config.iterations if config.iterations is not None else RangeTestConfig.steps
    rt = RangeTestConfig(min_lr=min_lr, max_lr=max_lr, steps=steps, beta=beta)
    result = lr_range_test(config, rt, progress=not quiet)
    path = write_range_test(result, config, rt, out, command_line(ctx))
    write_page(out)
    fmt = lambda v: "none" if v is None else f"{v:.3g}"  # noqa: E731
    click.echo(f"{len(result.lrs)} steps; stopped: {result.stop_reason}")
    click.echo(f"suggested lr: {fmt(result.steepest_lr)} (steepest descent); {fmt(result.min_lr_10)} (min/10)")
    click.echo(f"wrote {path}")


# ----------------------------------------------------------------------------- compare
@cli.group()
def compare() -> None:
    """Compare values of one training option with equal budgets and several seeds."""


def compare_options(f: Callable) -> Callable:
    """``--lrs`` and the settings of its ``auto`` sweep."""
    f = click.option("--tune-seeds", type=click.INT, default=1, show_default=True,
                     help="seeds per candidate in the --lrs auto sweep")(f)
    f = click.option("--tune-fraction", type=click.FLOAT, default=0.25, show_default=True,
                     help="budget of the --lrs auto sweep's runs, as a fraction of the comparison's")(f)
    f = click.option("--tune-lrs", default="1e-4,1e-3,1e-2,1e-1,1", show_default=True, metavar="LR,LR,...",
                     help="candidate learning rates of --lrs auto")(f)
    return click.option("--lrs", default=None, metavar="auto|LR|VALUE=LR,...",
                        help="learning rate per value: auto (a short sweep first, in OUT/lr-tuning), one lr for "
                             "all, or e.g. sgd=0.1,adam=1e-3  [default: auto; with --lr given: that lr for all, "
                             "with a warning]")(f)


def run_comparison(ctx: click.Context, field: str, value_texts: list[str], options: dict[str, Any]) -> int:
    """The body of every ``compare`` command: parse, then the library compares (tuning lrs first if asked)."""
    from texseg.experiments.compare import ComparisonSettings, TuneSettings, value_label
    from texseg.experiments.compare import run_comparison as compare_values

    p = {k: options.pop(k) for k in ("lrs", "tune_lrs", "tune_fraction", "tune_seeds", "out", "config_file",
                                      "quiet", "seeds", "jobs")}
    lr_given = "lr" in options and options["lr"] is not None
    base = base_config(p["config_file"], options)
    values = [parse_value(field, text) for text in value_texts]
    if p["lrs"] is not None:
        lrs = parse_lrs(p["lrs"], [value_label(field, v) for v in values])
    elif field == "lr":
        lrs = None
    elif lr_given:  # the notebook's trap, kept only when asked for: say so loudly
        lrs = None
        click.echo(f"warning: every {field} trains at --lr {base.lr:g}; a difference may come from the learning "
                   "rate, not the option (drop --lr to tune each value's lr, or give --lrs)", err=True)
    else:
        lrs = "auto"
    tune = TuneSettings(tuple(floats("--tune-lrs", p["tune_lrs"])), p["tune_fraction"], p["tune_seeds"])
    settings = ComparisonSettings(seeds=p["seeds"], lrs=lrs, tune=tune, jobs=p["jobs"], command=command_line(ctx),
                                  progress=not p["quiet"] and p["jobs"] == 1)
    outcome = compare_values(base, field, values, p["out"], settings, log=click.echo)
    write_page(p["out"] if outcome.result is not None else Path(p["out"]) / "lr-tuning")
    if outcome.result is None:  # stopped while choosing learning rates
        return exit_code(outcome.tuning)
    print_ranking(f"Comparison: {field}", outcome.result, outcome.summary)
    return exit_code(outcome.result)


def _named_comparison(field: str, plural: str, example: str) -> None:
    """Register ``texseg compare <plural> --<plural> A,B,...`` comparing option ``field``."""

    @compare.command(plural, help=f"Compare {plural}: every value of --{field} with the same budget and seeds.\n\n"
                                  f"Example: texseg compare {plural} --{plural} {example} --seeds 3 "
                                  f"--iterations 500 --out exp/{plural}")
    @click.option(f"--{plural}", "values", required=True, metavar="A,B,...", help=f"the {plural} to compare")
    @compare_options
    @common_options(seeds_default=3)
    @train_options(exclude=(field,))
    @click.pass_context
    def command(ctx: click.Context, values: str, **options: Any) -> int:
        return run_comparison(ctx, field, names(f"--{plural}", values), options)


_named_comparison("optimizer", "optimizers", "sgd,momentum,rmsprop,adam --lrs auto")
_named_comparison("model", "models", "seed-cnn,cnn,unet")
_named_comparison("loss", "losses", "mse,bce,dice,bce+dice")


@compare.command("option")
@click.argument("name")
@click.option("--values", "values", required=True, metavar="A,B,...", help="the values of option NAME")
@compare_options
@common_options(seeds_default=3)
@train_options()
@click.pass_context
def compare_option(ctx: click.Context, name: str, values: str, **options: Any) -> int:
    """Compare values of any training option NAME (e.g. batch-size, schedule, weight-decay).

    Example: texseg compare option batch-size --values 2,4,8 --time-budget 30 --out exp/bs
    """
    from texseg.experiments.compare import check_option

    field = check_option(name.strip().lstrip("-").replace("-", "_"))
    reject_given(ctx, [field], f"is what `compare option {name}` varies (give its values with --values)")
    return run_comparison(ctx, field, names("--values", values), options)


# --------------------------------------------------------------------------- difficulty
@cli.command()
@click.option("--sigma1", "sigma1s", required=True, metavar="S,S,...", help="texture widths in Omega_1 (rows)")
@click.option("--sigma2", "sigma2s", required=True, metavar="S,S,...", help="texture widths in Omega_2 (columns)")
@click.option("--model-dir", type=click.Path(file_okay=False), default=None,
              help="evaluate this saved run on every cell instead of training one model per cell")
@click.option("--count", type=click.INT, default=64, show_default=True,
              help="held-out scenes per cell (with --model-dir; when training: --val-size)")
@click.option("--eval-seed", type=click.INT, default=2024, show_default=True,
              help="seed of the held-out scenes (with --model-dir; when training: --val-seed)")
@common_options(seeds_default=1)
@train_options(exclude=DIFFICULTY_VARIED)
@click.pass_context
def difficulty(ctx: click.Context, sigma1s: str, sigma2s: str, model_dir: str | None, count: int,
               eval_seed: int, out: str, config_file: str | None, quiet: bool, seeds: int, jobs: int,
               **options: Any) -> int:
    """Held-out IoU over a grid of texture widths (sigma1, sigma2): a heatmap and one scene per cell.

    Trains one model per cell with the given budget, or with --model-dir evaluates one
    saved model on every cell (eval mode).
    """
    s1, s2 = floats("--sigma1", sigma1s), floats("--sigma2", sigma2s)
    if model_dir is not None:
        return _difficulty_of_model(ctx, model_dir, s1, s2, count, eval_seed, out, options)
    reject_given(ctx, ["count", "eval_seed"], "only with --model-dir (when training use --val-size/--val-seed)")
    from texseg.experiments.difficulty import difficulty_experiment, grid_means, grid_table, write_grid_figures
    from texseg.experiments.sweep import seed_list

    base = base_config(config_file, options)
    experiment = difficulty_experiment(base, s1, s2, seed_list(base.seed, seeds), command_line(ctx))

    def extra(result: Any) -> tuple[list[tuple[str, str]], list[str]]:
        grid = grid_means(result.ranked, s1, s2)
        figures = write_grid_figures(Path(out), grid, base.scene(), s1, s2, "Held-out IoU per cell (mean over seeds)")
        return figures, ["## Held-out IoU per cell\n\n" + grid_table(grid, s1, s2) + "\n"]

    return run_and_report(experiment, Path(out), jobs, quiet, extra=extra)


def _difficulty_of_model(ctx: click.Context, model_dir: str, s1: list[float], s2: list[float], count: int,
                         eval_seed: int, out: str, options: dict[str, Any]) -> int:
    from texseg._validate import check_int
    from texseg.experiments.difficulty import ModelGrid, evaluate_grid, grid_table, rows_to_grid, write_model_grid

    given = given_options(options)
    allowed = {"image_size", "sigma", "smoothing", "device"}
    reject_given(ctx, sorted(set(given) - allowed) + ["seeds", "jobs", "config_file"],
                 "nothing is trained with --model-dir (scene options allowed: --image-size, --sigma, --smoothing)")
    check_int("--count", count, minimum=1, maximum=100_000)
    check_int("--eval-seed", eval_seed, minimum=0)
    changes = {k: v for k, v in given.items() if k != "device"}
    scene, rows = evaluate_grid(model_dir, s1, s2, scene_changes=changes, count=count, seed=eval_seed,
                                device=given.get("device", "cpu"))
    path = write_model_grid(out, ModelGrid(model_dir, scene, rows, s1, s2, count, eval_seed), command_line(ctx))
    write_page(out)
    click.echo(grid_table(rows_to_grid(rows, s1, s2), s1, s2, swapped=rows_to_grid(rows, s1, s2, "swapped") > 0,
                          matched=rows_to_grid(rows, s1, s2, "matched_iou")))
    click.echo(f"wrote {path}")
    return 0

