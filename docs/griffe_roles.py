"""A Griffe extension (mkdocs.yml, mkdocstrings `extensions:`) for texseg's docstrings.

The docstrings are Google style but cross-reference with Sphinx roles (:func:`train`,
:class:`~texseg.training.TrainConfig`), which Markdown would show as they are typed. They become
code spans, the `~` form keeping only the last name, as Sphinx shows it.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension

ROLE = re.compile(r":(?:func|class|mod|data|meth|attr|exc|obj|const):`(~?)([^`]+)`")


def plain_roles(text: str) -> str:
    """``:func:`~a.b.c``` -> ```c```, ``:class:`a.B``` -> ```a.B```."""
    return ROLE.sub(lambda m: f"`{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}`", text)


class SphinxRoles(Extension):
    """Rewrite Sphinx roles in every docstring once the object tree is built."""

    def on_object(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain_roles(obj.docstring.value)
