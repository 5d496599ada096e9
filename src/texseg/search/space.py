"""The search space: what a trial samples (:class:`SearchSpace`) and for which objective.

:func:`build_space` leaves out every parameter the user fixed and checks that each
candidate model accepts the given model arguments; :meth:`SearchSpace.suggest` turns
an Optuna trial into the trial's :class:`~texseg.training.config.TrainConfig`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from texseg.models import create_model, list_models
from texseg.training.config import OPTIMIZERS, SCHEDULES, TrainConfig

if TYPE_CHECKING:
    import optuna

__all__ = ["SearchSpace", "build_space"]

METRIC = "iou"  # the objective: final validation IoU (eval mode, held-out set)
# seed-cnn's shared BatchNorm makes its eval-mode predictions broken (see README), so
# searching it wastes trials; it can still be named with ``models``.
EXCLUDED_MODELS = ("seed-cnn",)
WIDTHS = (8, 16, 32)
WIDTH_ARGS = {"unet": "base_width", "cnn": "num_channels", "seed-cnn": "num_channels"}
LOSSES = {2: ("bce", "dice", "bce+dice", "mse"), 3: ("ce", "dice", "ce+dice", "mse")}  # 3: any K > 2
BATCH_SIZES = (2, 4, 8, 16)
LR_RANGE = (1e-4, 1e-1)
SEARCHABLE = ("model", "width", "loss", "optimizer", "lr", "schedule", "batch_size")


@dataclass(frozen=True)
class SearchSpace:
    """What is searched: each dimension is searched unless the user fixed it."""
    models: tuple[str, ...]
    losses: tuple[str, ...]
    searched: tuple[str, ...]  # names from SEARCHABLE

    def suggest(self, trial: optuna.Trial, base: TrainConfig) -> TrainConfig:
        """The trial's training config: ``base`` with the searched fields sampled."""
        s = self.searched
        model = trial.suggest_categorical("model", self.models) if "model" in s else base.model
        kwargs = dict(base.model_kwargs or {})
        width_arg = WIDTH_ARGS.get(model)
        if "width" in s and width_arg is not None and width_arg not in kwargs:
            kwargs[width_arg] = trial.suggest_categorical("width", WIDTHS)
        return replace(
            base,
            model=model,
            # None (nothing set or searched): the device's arguments for the trial's model
            model_kwargs=kwargs if kwargs or base.model_kwargs is not None else None,
            loss=trial.suggest_categorical("loss", self.losses) if "loss" in s else base.loss,
            optimizer=trial.suggest_categorical("optimizer", OPTIMIZERS) if "optimizer" in s else base.optimizer,
            lr=trial.suggest_float("lr", *LR_RANGE, log=True) if "lr" in s else base.lr,
            schedule=trial.suggest_categorical("schedule", SCHEDULES) if "schedule" in s else base.schedule,
            batch_size=trial.suggest_categorical("batch_size", BATCH_SIZES) if "batch_size" in s
            else base.batch_size,
        )

    def describe(self) -> dict[str, Any]:
        """JSON description (stored with the study and shown in summary.md)."""
        all_dims: dict[str, Any] = {
            "model": list(self.models),
            "width": {m: [WIDTH_ARGS[m], list(WIDTHS)] for m in self.models if m in WIDTH_ARGS},
            "loss": list(self.losses),
            "optimizer": list(OPTIMIZERS),
            "lr": f"log-uniform {LR_RANGE[0]:g}..{LR_RANGE[1]:g}",
            "schedule": list(SCHEDULES),
            "batch_size": list(BATCH_SIZES),
        }
        return {k: v for k, v in all_dims.items() if k in self.searched}


def build_space(base: TrainConfig, fixed: Mapping[str, Any], models: Sequence[str] | None = None) -> SearchSpace:
    """The search space for ``base``, leaving out what the user fixed.

    Args:
        base: the validated base config (scene, budget, evaluation, ...).
        fixed: the TrainConfig fields the user gave explicitly; those are not searched
            (``model_kwargs`` fixes the width when it holds the model's width argument).
        models: candidate models; default every registered model but seed-cnn.

    Raises:
        ValueError: ``models`` together with a fixed model, a candidate model that rejects
            the given model arguments, or nothing left to search.
    """
    if "model" in fixed and models is not None:
        raise ValueError("models and `model` exclude each other: give the candidates or fix one model")
    if "model" in fixed:
        candidates: tuple[str, ...] = (base.model,)
    else:
        candidates = tuple(models) if models else tuple(m for m in list_models() if m not in EXCLUDED_MODELS)
    widths = any(WIDTH_ARGS.get(m) not in (None, *(base.model_kwargs or {})) for m in candidates)
    searched = [name for name in SEARCHABLE if name not in fixed
                and not (name == "model" and len(candidates) < 2) and not (name == "width" and not widths)]
    if not searched:
        raise ValueError("nothing to search: the given options fix every searched parameter")
    losses = LOSSES[2] if base.regions == 2 else LOSSES[3]
    for name in candidates:  # every candidate must accept the given model arguments
        _check_model_args(name, base, searched)
    return SearchSpace(candidates, losses, tuple(searched))


def _check_model_args(name: str, base: TrainConfig, searched: Sequence[str]) -> None:
    """Build ``name`` with the given kwargs (and the widest width) on the meta device."""
    kwargs = dict(base.model_kwargs or {})
    width_arg = WIDTH_ARGS.get(name)
    if "width" in searched and width_arg is not None and width_arg not in kwargs:
        kwargs[width_arg] = max(WIDTHS)
    with torch.device("meta"):
        create_model(name, num_classes=base.model_num_classes, **kwargs)
