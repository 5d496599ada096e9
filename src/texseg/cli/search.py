"""``texseg search``: an Optuna hyperparameter search over training runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from texseg.cli import cli
from texseg.cli._options import config_options, given_options, jobs_option, table
from texseg.cli.experiments import write_page
from texseg.errors import ExitCode
from texseg.io import read_json
from texseg.training.config import TrainConfig

# --seed is the search's own (sampler and training seed); every other train option passes through.
_PASSED = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "seed"]


@cli.command()
@click.option("--trials", type=click.INT, default=20, show_default=True,
              help="total trials of the study (finished ones from earlier runs count)")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="experiment folder: trials/<number>/, reports, the study  [default: searches/<study-name>]")
@click.option("--storage", default=None, metavar="URL",
              help="Optuna storage shared by many processes/machines: sqlite:///FILE, postgresql://..., "
                   "mysql://..., or a journal file path  [default: OUT/study.journal]")
@click.option("--study-name", default="texseg", show_default=True, help="name of the study in the storage")
@click.option("--seed", type=click.INT, default=0, show_default=True,
              help="seed of the TPE sampler and the training seed of every trial")
@click.option("--jobs", default="1", show_default=True, callback=jobs_option,
              help="worker processes on this machine (they share the cores), or auto: one per core, as "
                   "many as fit in memory")
@click.option("--pruner", default="median", show_default=True,
              help="median (stop a trial whose val IoU is below the median of earlier trials at the same "
                   "fraction of the budget; needs evaluations during a run: see --eval-every) or none")
@click.option("--models", default=None, metavar="M1,M2",
              help="models to search  [default: every registered model but seed-cnn]")
@click.option("--quiet", is_flag=True, help="no line per trial")
@config_options(only=_PASSED)
def search(trials: int, out: str | None, storage: str | None, study_name: str, seed: int, jobs: int | str,
           pruner: str, models: str | None, quiet: bool, **options: Any) -> int:
    """Search hyperparameters with Optuna (TPE sampler, median pruning on val IoU).

    Searched, unless given as an option: model (and its width), loss, optimizer, lr
    (log-uniform 1e-4..1e-1), schedule, batch size. Every other option (scene,
    --time-budget, --iterations, --val-size, ...) applies to every trial; each trial
    is a run directory OUT/trials/<number>. The objective is the final validation IoU;
    a diverged trial scores 0.

    Running the same command again continues the search: finished trials count toward
    --trials, and trials of a killed process are marked failed and replaced. Several
    processes (or machines, with --storage) can work on one study at once.
    """
    from texseg.search import SearchSettings, run_search

    if jobs == "auto":
        from texseg.training.memory import estimate_training_bytes
        from texseg.workers import auto_jobs

        jobs = auto_jobs(estimate_training_bytes(TrainConfig.from_dict(given_options(options)).validate()), trials)
    settings = SearchSettings(
        out=Path(out) if out else Path("searches") / study_name, trials=trials, storage=storage,
        study_name=study_name, seed=seed, jobs=jobs, pruner=pruner,
        models=tuple(m.strip() for m in models.split(",") if m.strip()) if models is not None else None,
    )
    log = None if quiet else (lambda line: click.echo(line))
    result = run_search(settings, given_options(options), log=log)
    write_page(result.out)  # report.html, once, from result.json
    best = result.best
    rows = [("study", f"{result.study_name} ({result.storage})"),
            ("trials", f"{result.counted} of {result.trials} finished ({result.ran} run now"
                       + (f", {result.running} running elsewhere)" if result.running else ")"))]
    if best:
        params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items())
        rows += [("best val iou", f"{best['value']:.4f} (trial {best['number']})"), ("best params", params),
                 ("best run", str(best["run_dir"]))]
    else:  # the words of best.json and summary.md: none completed, or every completed trial is trivial
        rows.append(("best", str(read_json(result.out / "best.json").get("message", "none"))))
    files = [p.name for p in result.files] + (["report.html"] if (result.out / "report.html").is_file() else [])
    rows.append(("reports", ", ".join(files) + f" in {result.out}"))
    click.echo(("\n" if log else "") + table(rows))
    for note in result.notes:
        click.echo(f"note: {note}")
    if result.interrupted:
        click.echo("search interrupted; run the same command again to continue", err=True)
        return ExitCode.INTERRUPTED
    return 0
