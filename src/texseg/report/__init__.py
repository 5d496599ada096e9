"""One self-contained HTML page per run, experiment, search or benchmark folder.

``write_report(path)`` looks at what the folder holds, gathers the question (config,
command line), the answer (metrics, ranked table, best trial, leaderboard), the figures
(embedded as PNG data URIs), the environment and the status, and writes
``path/report.html`` from the Jinja2 templates in ``templates/``. The page loads nothing
from anywhere: its Content-Security-Policy forbids every source but inline styles,
inline scripts and ``data:`` images, and its own script writes a self-check (images
loaded, script errors) into ``#selfcheck`` once the page has loaded.
"""

from __future__ import annotations

from texseg.pages import KINDS, REPORT_HTML, ReportError, detect_kind
from texseg.report.render import render_report, write_report, write_report_or_note

__all__ = ["KINDS", "REPORT_HTML", "ReportError", "detect_kind", "render_report", "write_report",
           "write_report_or_note"]
