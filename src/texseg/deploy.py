"""Deploying a trained model: ``texseg export`` and :func:`export_onnx`.

The exported graph is the network alone (logits, or embeddings for a texture-embedding
model, whose grouping stays in Python); ``texseg predict model.onnx IMAGE`` runs it through
onnxruntime with the same tiling, normalisation and outputs as a run folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from texseg._validate import check_choice
from texseg.checkpoint import load_model, load_pretrained
from texseg.inference.onnx import save_onnx
from texseg.models.pretrained import is_pretrained_name

__all__ = ["EXPORT_FORMATS", "export_onnx", "export_path"]

#: Formats ``texseg export`` writes.
EXPORT_FORMATS = ("onnx",)


def export_path(run: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Where :func:`export_onnx` writes by default: ``RUN/model.onnx`` (``general.onnx`` for ``texseg:general``)."""
    if out is not None:
        return Path(out)
    text = str(run)
    return Path(f"{text.removeprefix('texseg:')}.onnx") if is_pretrained_name(text) else Path(run) / "model.onnx"


def export_onnx(run_or_model: nn.Module | str | os.PathLike[str], path: str | os.PathLike[str] | None = None,
                *, format: str = "onnx") -> Path:  # noqa: A002 - the CLI's --format
    """Write a run folder, shipped model (``texseg:general``) or model as an ONNX file.

    The graph takes ``(batch, in_channels, height, width)`` float images in [0, 1] (batch,
    height and width dynamic, sides >= 16) and returns the model's logits (or embeddings);
    the run's ``model.json`` is in its metadata. The file is written to a temporary name
    and renamed, so an existing file is replaced only by a complete one.

    Args:
        run_or_model: a run folder, ``texseg:NAME`` or a model.
        path: the ``.onnx`` file (default :func:`export_path`; required for a model).
        format: ``onnx`` (the only one).

    Returns:
        The path written.

    Raises:
        CheckpointError: the run folder has no usable model, or onnx is not installed.
        ValueError: a bad ``format``, or no ``path`` for a model.
    """
    check_choice("format", format, EXPORT_FORMATS)
    if isinstance(run_or_model, nn.Module):
        if path is None:
            raise ValueError("path is required when exporting a model object")
        model = run_or_model
    else:
        text = str(run_or_model)
        model = load_pretrained(text) if is_pretrained_name(text) else load_model(run_or_model)
        path = export_path(run_or_model, path)
    return save_onnx(model, path)
