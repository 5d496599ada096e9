"""Pretrained models shipped inside the texseg package (offline: no hub, no download).

Each entry is a folder ``texseg/models/weights/<name>/`` holding ``model.json`` and
``model.safetensors`` (as a run folder does) and ``card.json``: the model card -- the
recipe command that trained it, the training time and hardware, the commit, and its
benchmark scores. Load one with :func:`texseg.load_pretrained` or name it
``texseg:<name>`` wherever a run folder is accepted (``texseg predict``, ``benchmark``,
``--init-from``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from texseg._validate import check_choice

__all__ = ["PREFIX", "PretrainedSpec", "is_pretrained_name", "list_pretrained", "pretrained_files",
           "pretrained_spec"]

PREFIX = "texseg:"


@dataclass(frozen=True)
class PretrainedSpec:
    """One shipped model: its name, architecture and a one-line description."""

    name: str
    architecture: str
    description: str


_PRETRAINED = {
    "general": PretrainedSpec(
        "general", "texnet",
        "texture-agnostic embeddings (k-means per image; K given, estimated, or a reference patch), "
        "trained only on texseg's procedural collages"),
}


def list_pretrained() -> dict[str, PretrainedSpec]:
    """The shipped models: name -> spec (only those whose weights are in this installation)."""
    return {name: spec for name, spec in _PRETRAINED.items() if _folder(name).joinpath("model.safetensors").is_file()}


def pretrained_spec(name: str) -> PretrainedSpec:
    """The spec of ``name``; a wrong name lists the shipped ones."""
    check_choice("pretrained model", name, sorted(list_pretrained()))
    return _PRETRAINED[name]


def is_pretrained_name(text: str) -> bool:
    """Whether ``text`` names a shipped model (``texseg:general``)."""
    return text.startswith(PREFIX)


def _folder(name: str):  # noqa: ANN202 - an importlib.resources Traversable
    return resources.files("texseg.models").joinpath("weights", name)


@contextlib.contextmanager
def pretrained_files(name: str) -> Iterator[Path]:
    """A real folder holding the files of shipped model ``name`` (for the duration of the block)."""
    pretrained_spec(name)
    with resources.as_file(_folder(name)) as folder:
        yield Path(folder)
