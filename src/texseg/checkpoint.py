"""Saving and loading trained models and the state that resumes a run.

A saved model is two files, usually in a run directory::

    model.json          {"format": "texseg-model", "name": ..., "kwargs": {...}, ...}
    model.safetensors   the weights (never pickle)

:func:`load_model` rebuilds the architecture from the registry with the recorded
kwargs and loads the weights strictly, so a file of another architecture, a truncated
file or a pickle renamed ``.safetensors`` is refused with a one-line error.

A run's ``resume.pt`` (:func:`save_resume_state`) holds the model, optimizer, RNG states,
counters and metric rows: tensors and plain values only, read back with
``torch.load(weights_only=True)`` and checked field by field (:func:`load_resume_state`)
before anything in it is used, including that it belongs to the run's configuration.
"""

from __future__ import annotations

import io
import json
import math
import os
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model as _st_load_model
from safetensors.torch import save as _st_save_bytes
from torch import nn

from texseg.device import resolve_device
from texseg.errors import CheckpointError
from texseg.io import atomic_write_bytes, atomic_write_json, read_json
from texseg.models import create_model
from texseg.models.pretrained import pretrained_files, pretrained_spec
from texseg.models.texnet import TextureEmbeddingNet

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
    # One metadata key only: safetensors orders several keys arbitrarily, and the same
    # weights should give the same bytes.
    atomic_write_bytes(directory / WEIGHTS, _st_save_bytes(_unshared_state(model), metadata={"format": FORMAT}))
    atomic_write_json(directory / MODEL_JSON, {
        "format": FORMAT, "version": FORMAT_VERSION, "name": name, "kwargs": kwargs,
        "num_regions": num_regions, "scene": scene,
    })


def _unshared_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each shared tensor once (under its first name), contiguous.

    safetensors refuses tensors that share memory; its loader reports the other names of
    a shared tensor as expected-missing, so keeping one name per storage loads strictly.
    """
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    out = {}
    for name, t in model.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if t.numel() and key in seen:
            continue
        seen.add(key)
        out[name] = t.detach().contiguous()
    return out


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
    except RecursionError:
        raise CheckpointError(f"{json_path} is nested too deeply to be a model description") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CheckpointError(f"{json_path} is not a texseg model description")
    if info.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{json_path} has format version {info.get('version')!r}; this texseg reads "
                              f"version {FORMAT_VERSION} (a newer texseg wrote it?)")
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
        The model in eval mode; its ``run_info`` is the model.json description.

    Raises:
        CheckpointError: missing, truncated, foreign or mismatched files.
    """
    info = read_model_json(path)
    _, weights = _locate(path)
    if not weights.is_file():
        raise CheckpointError(f"no weights at {path}: {weights.name} is missing")
    try:
        model = _build(info)
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
    model.run_info = info
    return model.to(resolve_device(device)).eval()


def _build(info: dict[str, Any]) -> nn.Module:
    """An untrained model of the architecture ``model.json`` names."""
    if info["name"] == "texnet":  # an embedding network: not a registered logits model
        return TextureEmbeddingNet(**info["kwargs"])
    return create_model(info["name"], **info["kwargs"])


def load_pretrained(name: str, device: str | torch.device | None = None) -> nn.Module:
    """A pretrained model shipped inside texseg (no network needed), in eval mode.

    Args:
        name: a name from :func:`texseg.models.pretrained.list_pretrained`, e.g. ``"general"``
            (``"texseg:general"`` is accepted too).
        device: where to put it (default CPU).

    Returns:
        The model; its ``run_info`` is its model.json description plus ``card`` (the model card).
    """
    spec = pretrained_spec(name.removeprefix("texseg:"))
    with pretrained_files(spec.name) as folder:
        model = load_model(folder, device=device)
        model.run_info = {**model.run_info, "card": read_json(folder / "card.json"), "pretrained": spec.name}
    return model


# --------------------------------------------------------------------------- resume state
RESUME_STATE = "resume.pt"
RESUME_VERSION = 2


@dataclass
class Counters:
    """Where a run stands; saved in every checkpoint and restored by a resume."""

    step: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    window_loss: float = 0.0  # sum of training losses since the last evaluation
    window_steps: int = 0
    skipped_steps: int = 0  # non-finite steps skipped with skip_nonfinite
    saved_step: int = 0  # step of the weights on disk
    best_step: int = 0  # step of the best held-out IoU so far (0: none yet)
    best_iou: float = 0.0
    stale_evals: int = 0  # evaluations since the best one (for early stopping)


@dataclass
class ResumeState:
    """Everything that continues a run exactly: see :func:`save_resume_state`."""

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng_cpu: torch.Tensor
    rng_data: torch.Tensor
    rng_cuda: list[torch.Tensor]
    counters: Counters
    rows: list[dict[str, float]]
    config: dict[str, Any]  # the run's configuration: a state from another run is refused
    world_size: int = 1  # ranks of a distributed run; rng_data holds every rank's stream, in rank order


def save_resume_state(path: str | os.PathLike[str], state: ResumeState) -> None:
    """Write ``state`` to ``path`` atomically (tensors and plain values only, no objects)."""
    payload = {
        "version": RESUME_VERSION, "model": state.model, "optimizer": state.optimizer,
        "rng_cpu": state.rng_cpu, "rng_data": state.rng_data, "rng_cuda": state.rng_cuda,
        "counters": asdict(state.counters), "rows": state.rows, "config": state.config,
        "world_size": state.world_size,
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_resume_state(path: str | os.PathLike[str], config: dict[str, Any]) -> ResumeState:
    """Read and check a resume state written by :func:`save_resume_state`.

    Args:
        path: the ``resume.pt`` file.
        config: the run's configuration (from its ``config.json``); the state must have
            been saved by a run of exactly this configuration.

    Raises:
        CheckpointError: missing, empty, damaged, foreign, of another run, or with any
            field of the wrong type or out of range, naming the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path.parent} has no {path.name} to resume from")
    try:
        # weights_only: tensors and plain containers only; a pickle payload cannot run.
        with warnings.catch_warnings():  # a foreign file's pickle-protocol warnings are noise here
            warnings.simplefilter("ignore")
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # anything wrong in a foreign or damaged file is the file's fault
        detail = (str(e).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"cannot resume from {path}: not a readable texseg resume state "
                              f"({type(e).__name__}{': ' + detail if detail else ''})") from None
    try:
        state = _check_resume_payload(raw)
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"cannot resume from {path}: {e}") from None
    if state.config != config:
        diff = sorted(k for k in set(config) | set(state.config) if config.get(k) != state.config.get(k))
        raise CheckpointError(f"cannot resume from {path}: it was saved by a run of another configuration "
                              f"(differs in {', '.join(diff)}); config.json or resume.pt was replaced")
    return state


def _check_resume_payload(raw: Any) -> ResumeState:
    """A :class:`ResumeState` from a loaded payload, every field checked (raises ValueError)."""
    if not isinstance(raw, dict) or raw.get("version") != RESUME_VERSION:
        raise ValueError(f"not a texseg resume state of version {RESUME_VERSION}")
    missing = sorted({"model", "optimizer", "rng_cpu", "rng_data", "rng_cuda", "counters", "rows", "config",
                      "world_size"} - set(raw))
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    if not isinstance(raw["model"], dict) or not all(isinstance(v, torch.Tensor) for v in raw["model"].values()):
        raise ValueError("'model' must map names to tensors")
    if not isinstance(raw["optimizer"], dict):
        raise ValueError("'optimizer' must be an optimizer state dict")
    for key in ("rng_cpu", "rng_data"):
        if not isinstance(raw[key], torch.Tensor) or raw[key].dtype != torch.uint8:
            raise ValueError(f"'{key}' must be a byte tensor")
    if not isinstance(raw["rng_cuda"], list):
        raise ValueError("'rng_cuda' must be a list")
    counters = _check_counters(raw["counters"])
    rows = _check_rows(raw["rows"], counters.step)
    if not isinstance(raw["config"], dict):
        raise ValueError("'config' must be a mapping")
    w = raw["world_size"]
    if isinstance(w, bool) or not isinstance(w, int) or w < 1 or raw["rng_data"].numel() % w:
        raise ValueError(f"'world_size' must be an integer >= 1 that divides the data-stream state, got {w!r}")
    return ResumeState(raw["model"], raw["optimizer"], raw["rng_cpu"], raw["rng_data"], raw["rng_cuda"],
                       counters, rows, raw["config"], w)


def _check_counters(d: Any) -> Counters:
    names = [f.name for f in fields(Counters)]
    if not isinstance(d, dict) or sorted(d) != sorted(names):
        raise ValueError(f"'counters' must have exactly the keys {', '.join(names)}")
    for f in fields(Counters):
        v = d[f.name]
        if f.type in ("int", int):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"counter {f.name} must be an integer >= 0, got {v!r}")
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or (v < 0 and f.name != "window_loss"):
            raise ValueError(f"counter {f.name} must be a finite number >= 0, got {v!r}")
    c = Counters(**d)
    if c.saved_step > c.step or c.window_steps > c.step or c.skipped_steps > c.step:
        raise ValueError(f"counters are inconsistent (step {c.step}, saved_step {c.saved_step})")
    return c


def _check_rows(rows: Any, step: int) -> list[dict[str, float]]:
    if not isinstance(rows, list):
        raise ValueError("'rows' must be a list of metric rows")
    last = 0
    for row in rows:
        if not isinstance(row, dict) or not all(isinstance(k, str) for k in row) \
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row.values()):
            raise ValueError("every metric row must map names to numbers")
        s = row.get("step")
        if not isinstance(s, int) or not last < s <= step:
            raise ValueError(f"metric rows must have increasing steps <= {step}, got step {s!r}")
        last = s
    return list(rows)
