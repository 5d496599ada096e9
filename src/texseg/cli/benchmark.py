"""``texseg benchmark``, ``texseg segmenters`` and ``texseg suites``."""

from __future__ import annotations

from typing import Any

import click

from texseg.cli import cli
from texseg.errors import ExitCode
from texseg.images import MAX_PIXELS


def _split_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _parse_method_args(pairs: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``("gabor-kmeans.orientations=6",)`` -> ``{"gabor-kmeans": {"orientations": 6}}``."""
    from texseg.segmenters import parse_method_arg

    out: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        target, sep, value = pair.partition("=")
        name, dot, key = target.rpartition(".")
        if not sep or not dot or not name or not key:
            raise click.BadParameter(f"expected NAME.KEY=VALUE (e.g. gabor-kmeans.orientations=6), got {pair!r}",
                                     param_hint="'--method-arg'")
        out.setdefault(name, {})[key] = parse_method_arg(name, key, value)
    return out


@cli.command()
@click.option("--segmenters", required=True, metavar="A,B,...",
              help="classical method names (see `texseg segmenters`) and/or run directories of `texseg train`")
@click.option("--suites", default="notebook,medium,hard,k4,fine", show_default=True, metavar="S,...",
              help="suite names (see `texseg suites`), suite .json files, or folders with images/ and masks/")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="output folder (re-runs skip done cells)")
@click.option("--method-arg", "method_args", multiple=True, metavar="NAME.KEY=VALUE",
              help="parameter of a classical method, repeatable (e.g. local-energy.window=6)")
@click.option("--device", default=None, help="where trained models run (cpu, cuda, auto)  [default: cpu]")
@click.option("--max-pixels", type=click.INT, default=MAX_PIXELS, show_default=True,
              help="refuse images of folder suites over this many pixels, from their header; 0: no limit")
@click.option("--quiet", is_flag=True, help="no progress bar")
def benchmark(segmenters: str, suites: str, out: str, method_args: tuple[str, ...], device: str | None,
              max_pixels: int, quiet: bool) -> None:
    """Score segmenters on fixed test suites and write a leaderboard.

    Writes OUT/leaderboard.csv (every metric with its 95% interval over images, images/s,
    seconds per megapixel), OUT/leaderboard.md, OUT/bars-SUITE.png and OUT/panel-SUITE.png.
    Unsupervised label numbers are matched to the truth before scoring. Ctrl-C stops after
    the current batch and keeps the finished cells; running the command again skips them.
    """
    from texseg._validate import check_int
    from texseg.benchmark import BenchmarkSettings, run_benchmark
    from texseg.benchmark.suites import resolve_suite
    from texseg.cli._options import use_free_cores
    from texseg.report import write_report_or_note

    use_free_cores()
    check_int("--max-pixels", max_pixels, minimum=0)
    suite_objs = [resolve_suite(s, max_pixels=max_pixels or None) for s in _split_list(suites)]
    settings = BenchmarkSettings(method_args=_parse_method_args(method_args), device=device, progress=not quiet)
    result = run_benchmark(_split_list(segmenters), suite_objs, out, settings)
    note = write_report_or_note(result.out)  # the page a person opens; a failure never fails the benchmark
    if note:
        click.echo(f"note: {note}", err=True)
    done = sum(c.status == "done" for c in result.cells)
    cached = sum(c.cached for c in result.cells)
    skipped = sum(c.status == "skipped" for c in result.cells)
    click.echo(f"{done} cells scored ({cached} from an earlier run), {skipped} not applicable; "
               f"leaderboard: {result.out / 'leaderboard.md'}")
    if result.interrupted:
        click.echo("texseg: interrupted: finished cells are kept; run the same command to continue", err=True)
        raise SystemExit(ExitCode.INTERRUPTED)


@cli.command("segmenters")
def segmenters_command() -> None:
    """List the classical segmentation methods and their parameters (--method-arg NAME.KEY=VALUE)."""
    from texseg.models import list_models
    from texseg.segmenters import list_segmenters, segmenter_params

    for name, description in list_segmenters().items():
        click.echo(f"{name}: {description}")
        for p in segmenter_params(name):
            default = ",".join(f"{v:g}" for v in p.default) if p.kind == "floats" else p.default
            click.echo(f"    {p.name:<18} {p.kind:<7} default {default!s:<22} {p.help}")
    click.echo(f"or a run directory of `texseg train` (models: {', '.join(list_models())}); a model is scored "
               "only on suites with its number of regions")


@cli.command("suites")
def suites_command() -> None:
    """List the named benchmark suites."""
    from texseg.benchmark import list_suites

    for name, description in list_suites().items():
        click.echo(f"  {name:<10} {description}")
    click.echo("or a .json file {\"scene\": {...}, \"count\": N, \"seed\": S}, or a folder with images/ and "
               "masks/ (or labels/) matched by file stem, and optionally train/ laid out the same way (what "
               "supervised methods are fitted on)")
