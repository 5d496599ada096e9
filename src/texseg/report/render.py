"""Turn a run, experiment, search or benchmark folder into ``report.html`` (rendering: :mod:`texseg.pages`)."""

from __future__ import annotations

import os
from pathlib import Path

from texseg.pages import note_on_failure, render_page, write_page
from texseg.pages.collect import detect_kind
from texseg.report.kinds import PAGES


def render_report(path: str | os.PathLike[str]) -> str:
    """The HTML of the report of the folder ``path`` (see :func:`write_report`).

    Raises:
        ReportError: the folder is not a run, experiment, search or benchmark, or a file in it is unreadable.
    """
    folder = Path(path)
    return render_page(folder, PAGES[detect_kind(folder)])


def write_report(path: str | os.PathLike[str]) -> Path:
    """Write ``path/report.html``: one self-contained page (figures embedded, nothing loaded from elsewhere).

    Args:
        path: a run directory, an experiment folder, a search folder or a benchmark folder
            (one holding ``leaderboard.csv``).

    Returns:
        The path of ``report.html``.

    Raises:
        ReportError: not such a folder, or one of its files cannot be read.
        OSError: the page cannot be written.
    """
    return write_page(path, PAGES[detect_kind(path)])


def write_report_or_note(path: str | os.PathLike[str]) -> str | None:
    """:func:`write_report` for the end of an experiment or search: a failure is returned as a note.

    Returns:
        None when the page was written, else a one-line note saying why not (the caller's
        results are saved; their page is a convenience and must never fail them).
    """
    return note_on_failure(write_report, path)
