"""Turn a folder into ``report.html`` with the Jinja2 templates (package data in ``templates/``)."""

from __future__ import annotations

import base64
import hashlib
import os
from datetime import datetime
from functools import cache
from pathlib import Path

import jinja2
from markupsafe import Markup

from texseg.io import atomic_write_text
from texseg.report.collect import REPORT_HTML, Page, ReportError, detect_kind
from texseg.report.kinds import PAGES


def csp_hash(script: str) -> str:
    """The Content-Security-Policy source that allows exactly this inline script: ``'sha256-BASE64'``."""
    digest = hashlib.sha256(str(script).encode("utf-8")).digest()
    return Markup(f"'sha256-{base64.b64encode(digest).decode('ascii')}'")


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("texseg.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["csp_hash"] = csp_hash
    return env


def render_report(path: str | os.PathLike[str]) -> str:
    """The HTML of the report of the folder ``path`` (see :func:`write_report`).

    Raises:
        ReportError: the folder is not a run, experiment, search or benchmark, or a file in it is unreadable.
    """
    folder = Path(path)
    kind = detect_kind(folder)
    try:
        page: Page = PAGES[kind](folder)
    except (TypeError, AttributeError, KeyError, IndexError) as e:
        # A field of a hand-edited file whose type or shape the checks of read_json_file do not cover.
        raise ReportError(f"{folder}: a file of this {kind} folder is malformed ({type(e).__name__}: {e})") from None
    template = _environment().get_template(f"{kind}.html.j2")
    return template.render(page=page, generated=f"{datetime.now():%Y-%m-%d %H:%M:%S}")


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
    out = Path(path) / REPORT_HTML
    atomic_write_text(out, render_report(path))
    return out


def write_report_or_note(path: str | os.PathLike[str]) -> str | None:
    """:func:`write_report` for the end of a run, experiment or search: a failure is returned as a note.

    Returns:
        None when the page was written, else a one-line note saying why not (the caller's
        results are saved; their page is a convenience and must never fail them).
    """
    try:
        write_report(path)
    except Exception as e:  # noqa: BLE001 - whatever went wrong, the run's own files are already safe
        why = getattr(e, "strerror", None) or str(e) or type(e).__name__
        return f"report.html not written: {why}" + (f": {e.filename}" if getattr(e, "filename", None) else "")
    return None
