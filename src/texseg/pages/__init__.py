"""Self-contained HTML pages of folders: the page model, the templates and the renderer.

A page builder reads a folder's files into a :class:`Page`; :func:`write_page` renders it
with the Jinja2 templates into ``report.html``. The builder of a run directory is
:func:`texseg.training.report.run_page` (the training loop writes a run's page when it
ends); :mod:`texseg.report` has the builders of experiment, search and benchmark folders.
"""

from texseg.pages.collect import KINDS, REPORT_HTML, Card, FigureData, Page, ReportError, Table, detect_kind
from texseg.pages.render import PageBuilder, note_on_failure, render_page, write_page

__all__ = ["KINDS", "REPORT_HTML", "Card", "FigureData", "Page", "PageBuilder", "ReportError", "Table",
           "detect_kind", "note_on_failure", "render_page", "write_page"]
