"""Saving and loading trained models: safetensors weights plus a JSON description.

A saved model is two files, usually in a run directory::

    model.json          {"format": "texseg-model", "name": ..., "kwargs": {...}, ...}
    model.safetensors   the weights (never pickle)

:func:`load_model` rebuilds the architecture from the registry with the recorded
kwargs and loads the weights strictly, so a file of another architecture, a truncated
file or a pickle renamed ``.safetensors`` is refused with a one-line error.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model as _st_load_model
from safetensors.torch import save_model as _st_save_model
from torch import nn

from texseg.device import resolve_device
from texseg.errors import CheckpointError
from texseg.io import atomic_path, atomic_write_json
from texseg.models import create_model

MODEL_JSON = "model.json"
WEIGHTS = "model.safetensors"
FORMAT = "texseg-model"
FORMAT_VERSION = 1
_MODEL_JSON_KEYS = {"format", "version", "name", "kwargs", "num_regions", "scene"}


def save_model(model: nn.Module, directory: str | os.PathLike[str], *, name: str,
               kwargs: dict[str, Any], num_regions: int, scene: dict[str, Any] | None = None) -> None:
    """Write ``model.json`` and ``model.safetensors`` into ``directory`` (atomically each).

    Args:
        model: the module to save (shared tensors, as in ``seed-cnn``, are handled).
        directory: an existing folder.
        name: its registry name; kwargs: the constructor kwargs used (JSON types).
        num_regions: K the model segments into.
        scene: optional scene description it was trained on (for reference only).
    """
    directory = Path(directory)
    with atomic_path(directory / WEIGHTS) as tmp:
        # One metadata key only: safetensors orders several keys arbitrarily, and the same
        # weights should give the same bytes.
        _st_save_model(model, str(tmp), metadata={"format": FORMAT})
    atomic_write_json(directory / MODEL_JSON, {
        "format": FORMAT, "version": FORMAT_VERSION, "name": name, "kwargs": kwargs,
        "num_regions": num_regions, "scene": scene,
    })


def _locate(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    path = Path(path)
    if path.is_dir():
        return path / MODEL_JSON, path / WEIGHTS
    if path.suffix == ".safetensors":
        return path.with_name(MODEL_JSON), path
    if path.name == MODEL_JSON:
        return path, path.with_name(WEIGHTS)
    raise CheckpointError(f"{path}: expected a run directory or a model.safetensors file")


def read_model_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a run's ``model.json``; raise :class:`CheckpointError` if unusable."""
    json_path, _ = _locate(path)
    if not json_path.is_file():
        raise CheckpointError(f"no saved model at {path}: {json_path.name} is missing")
    try:
        info = json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{json_path} is not valid JSON ({e})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CheckpointError(f"{json_path} is not a texseg model description")
    unknown = sorted(set(info) - _MODEL_JSON_KEYS)
    if unknown:
        raise CheckpointError(f"{json_path}: unknown key(s) {', '.join(unknown)}")
    if not isinstance(info.get("name"), str) or not isinstance(info.get("kwargs"), dict):
        raise CheckpointError(f"{json_path}: 'name' must be a string and 'kwargs' an object")
    k = info.get("num_regions")
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise CheckpointError(f"{json_path}: 'num_regions' must be an integer >= 2")
    return info


def load_model(path: str | os.PathLike[str], device: str | torch.device | None = None) -> nn.Module:
    """Rebuild a saved model, in eval mode.

    Args:
        path: a run directory, or the path of its ``model.safetensors``.
        device: where to put it (default CPU).

    Returns:
        The model in eval mode, with ``texseg_info`` (the model.json dict) attached.

    Raises:
        CheckpointError: missing, truncated, foreign or mismatched files.
    """
    info = read_model_json(path)
    _, weights = _locate(path)
    if not weights.is_file():
        raise CheckpointError(f"no weights at {path}: {weights.name} is missing")
    try:
        with warnings.catch_warnings():  # a model's known caveat is the caller's to report
            warnings.simplefilter("ignore", UserWarning)
            model = create_model(info["name"], **info["kwargs"])
    except ValueError as e:
        raise CheckpointError(f"{path}: cannot rebuild the model ({e})") from None
    try:
        # strict: missing or unexpected tensors and wrong shapes are errors.
        missing, unexpected = _st_load_model(model, str(weights), strict=True)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{weights} is not a valid safetensors file ({e})") from None
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0:3]
        raise CheckpointError(
            f"{weights} does not fit model {info['name']!r}: {' '.join(s.strip() for s in first)}"
        ) from None
    model.texseg_info = info  # type: ignore[attr-defined]
    return model.to(resolve_device(device)).eval()


def predict(model: nn.Module, images: Any, batch_size: int = 32, **kwargs: Any) -> torch.Tensor:
    """Class probabilities of ``images``; see :func:`texseg.inference.predict` (this delegates to it).

    A float tensor (B, 1, H, W) or (H, W) gives (B, 1, H, W) probabilities of Omega_1 for a
    two-region model or (B, K, H, W) for K regions, on the tensor's device, as always;
    numpy arrays, PIL images and image paths are accepted too.
    """
    from texseg.inference.predict import predict as _predict

    return _predict(model, images, batch_size, **kwargs)
