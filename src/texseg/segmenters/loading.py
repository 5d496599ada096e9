"""A segmenter by name, run directory or shipped model: the one place that knows every implementation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from texseg.checkpoint import read_model_json
from texseg.models.pretrained import is_pretrained_name
from texseg.segmenters import classical  # noqa: F401  (registers the classical methods)
from texseg.segmenters.base import Segmenter, _registered, segmenter_class, segmenter_params
from texseg.segmenters.general import EmbeddingSegmenter
from texseg.segmenters.model import ModelSegmenter

__all__ = ["load_segmenter"]

#: What :func:`load_segmenter` passes on to an :class:`EmbeddingSegmenter`.
_EMBEDDING_ARGS = ("batch_size", "gabor_weight", "reference_gabor_weight", "seed")


def load_segmenter(name_or_run_dir: str | os.PathLike[str], device: str | torch.device | None = None,
                   **method_args: Any) -> Segmenter:
    """A segmenter by name (a classical method) or from a run directory (a trained model).

    Args:
        name_or_run_dir: a name from :func:`list_segmenters`, a run directory of
            ``texseg train`` or ``texseg train-general`` (holding ``model.json`` and
            ``model.safetensors``), or a shipped model ``texseg:<name>`` (e.g. ``texseg:general``).
        device: where a trained model runs (default CPU); classical methods run on the CPU.
        **method_args: parameters of a classical method (see :func:`segmenter_params`), or of
            a texture-embedding model's grouping: ``gabor_weight``, ``reference_gabor_weight``, ``seed``, ``batch_size``
            (see :class:`~texseg.segmenters.general.EmbeddingSegmenter`).

    Raises:
        ValueError: unknown name, unknown parameter or a value out of range (one line).
        CheckpointError: a run directory that cannot be loaded.
    """
    text = os.fspath(name_or_run_dir)
    if text not in _registered() and (Path(text).is_dir() or is_pretrained_name(text)):
        if is_pretrained_name(text) or read_model_json(text).get("name") == "texnet":
            unknown = sorted(set(method_args) - set(_EMBEDDING_ARGS))
            if unknown:
                raise ValueError(f"method argument {unknown[0]!r}: a texture-embedding model takes "
                                 f"{', '.join(_EMBEDDING_ARGS)}")
            return EmbeddingSegmenter(text, device=device, **method_args)
        if method_args:
            raise ValueError(f"method arguments apply to classical methods and texture-embedding models only, "
                             f"not to {text}")
        return ModelSegmenter(text, device=device)
    cls = segmenter_class(text)  # a wrong name: the one-line list of valid ones
    allowed = {p.name for p in segmenter_params(text)}
    unknown = sorted(set(method_args) - allowed)
    if unknown:
        raise ValueError(f"method argument {text}.{unknown[0]}: {text} has no parameter {unknown[0]!r}; "
                         f"its parameters: {', '.join(sorted(allowed))}")
    return cls(**method_args)
