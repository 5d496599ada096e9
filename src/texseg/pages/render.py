"""Turn a :class:`~texseg.pages.collect.Page` into ``report.html`` with the Jinja2 templates (``templates/``)."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from datetime import datetime
from functools import cache
from pathlib import Path

import jinja2
from markupsafe import Markup

from texseg.io import atomic_write_text
from texseg.pages.collect import REPORT_HTML, Page, ReportError

#: Builds the page of a folder from its files (a run's: :func:`texseg.training.report.run_page`).
PageBuilder = Callable[[Path], Page]


def csp_hash(script: str) -> str:
    """The Content-Security-Policy source that allows exactly this inline script: ``'sha256-BASE64'``."""
    digest = hashlib.sha256(str(script).encode("utf-8")).digest()
    return Markup(f"'sha256-{base64.b64encode(digest).decode('ascii')}'")


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("texseg.pages", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["csp_hash"] = csp_hash
    return env


def render_page(folder: Path, build: PageBuilder) -> str:
    """The HTML of the page ``build`` makes of ``folder`` (the template is the page's kind).

    Raises:
        ReportError: a file of the folder is unreadable or malformed.
    """
    try:
        page = build(folder)
    except (TypeError, AttributeError, KeyError, IndexError) as e:
        # A field of a hand-edited file whose type or shape the checks of read_json_file do not cover.
        raise ReportError(f"{folder}: a file of this folder is malformed ({type(e).__name__}: {e})") from None
    template = _environment().get_template(f"{page.kind}.html.j2")
    return template.render(page=page, generated=f"{datetime.now():%Y-%m-%d %H:%M:%S}")


def write_page(folder: str | os.PathLike[str], build: PageBuilder) -> Path:
    """Write ``folder/report.html`` from the page ``build`` makes of ``folder``; returns its path."""
    out = Path(folder) / REPORT_HTML
    atomic_write_text(out, render_page(Path(folder), build))
    return out


def note_on_failure(write: Callable[[str | os.PathLike[str]], object], path: str | os.PathLike[str]) -> str | None:
    """Call ``write(path)``; a failure comes back as a one-line note (the folder's own files are already safe).

    Returns:
        None when the page was written, else ``report.html not written: why``.
    """
    try:
        write(path)
    except Exception as e:  # noqa: BLE001 - whatever went wrong, the caller's results are saved
        why = getattr(e, "strerror", None) or str(e) or type(e).__name__
        return f"{REPORT_HTML} not written: {why}" + (f": {e.filename}" if getattr(e, "filename", None) else "")
    return None
