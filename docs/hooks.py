"""MkDocs hooks for texseg's site (mkdocs.yml `hooks:`), run by `mkdocs build` / `mkdocs serve`.

- The CLI reference (mkdocs-click) needs the `texseg` group with every command registered: the
  commands register when their modules are imported, which `texseg.cli.load_commands` does.
- The top-level API page lists `texseg`'s re-exports, which are resolved lazily (PEP 562) and so
  invisible to static analysis: the marker `<!-- texseg-exports -->` becomes one mkdocstrings
  block per name, at the module that defines it, read from `texseg._EXPORTS` so the page follows
  the package.
- The site's home page is the README (one front page, not two that drift apart): the marker
  `<!-- README.md -->` in docs/index.md becomes the README, its `docs/...` links made relative
  to docs/.
- mkdocs-click 0.9 prints click 8.3's "no default" marker as `Sentinel.UNSET` in its option
  tables; the CLI page shows a dash there instead.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
MARKER = "<!-- texseg-exports -->"
README_MARKER = "<!-- README.md -->"
UNSET_CELL = "<td><code>Sentinel.UNSET</code></td>"


def on_config(config: Any) -> Any:
    if str(SRC) not in sys.path:  # the sources beside this file, not another installed texseg
        sys.path.insert(0, str(SRC))
    from texseg.cli import load_commands  # noqa: PLC0415  (import after the path is set)

    load_commands()
    return config


def exports_markdown() -> str:
    """One `::: path` block per name `texseg` re-exports, in the order `texseg` lists them.

    Each is rendered at the path of the module that defines it (``texseg.data.scene.SceneSpec``), so
    its anchor differs from the subpackage page's (``texseg.data.SceneSpec``) and links stay unique.
    """
    import texseg  # noqa: PLC0415

    blocks = []
    for name in texseg._EXPORTS:
        value = getattr(texseg, name)
        blocks.append(f"::: {getattr(value, '__module__', texseg._EXPORTS[name])}.{name}\n"
                      "    options:\n      heading_level: 3\n      show_root_full_path: false\n")
    return "\n".join(blocks)


def readme_markdown() -> str:
    """The README with its links into docs/ made relative to docs/ (where the home page lives)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.sub(r"\]\(docs/", "](", text)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if README_MARKER in markdown:
        markdown = markdown.replace(README_MARKER, readme_markdown())
    return markdown.replace(MARKER, exports_markdown()) if MARKER in markdown else markdown


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    return html.replace(UNSET_CELL, "<td>—</td>")
