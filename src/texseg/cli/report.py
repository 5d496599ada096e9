"""``texseg report``: (re)write the HTML report of a run, experiment, search or benchmark folder."""

from __future__ import annotations

import click

from texseg.cli import cli


@cli.command()
@click.argument("path", type=click.Path())
def report(path: str) -> None:
    """Write PATH/report.html: one self-contained page for a run, experiment, search or benchmark folder.

    The page holds the question (config, command line), the answer (metrics, ranked table with
    intervals, best trial or leaderboard), the folder's figures (embedded), the status and the
    environment. It loads nothing from the network; open it in any browser. Runs, experiments
    and searches write it themselves when they end; this command makes it again.
    """
    from texseg.report import write_report

    click.echo(write_report(path))
