"""Name -> constructor registry for segmentation models.

Every registered constructor returns a :class:`~texseg.models.base.SegmentationModel`
mapping ``(B, in_channels, H, W)`` images to ``(B, num_classes, H, W)`` logits, and
accepts ``num_classes: int = 1`` (one logit of the positive class for two regions, K
logits for K > 2 regions) and ``in_channels: int = 1``. :func:`create_model` is a pure
look-up: it builds the model and nothing else (a model's known caveat, ``warning``, is
for the commands that train or evaluate it to show).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from texseg._validate import check_choice

__all__ = [
    "MAX_PARAMETERS",
    "ModelSpec",
    "count_parameters",
    "create_model",
    "list_models",
    "model_spec",
    "register_model",
]

# Refuse configurations whose every argument is in range but whose product is absurd
# (e.g. a wide and deep U-Net): 100M float32 parameters is already 400 MB of weights.
MAX_PARAMETERS = 100_000_000

_REQUIRED_ARGS = ("num_classes", "in_channels")

C = TypeVar("C", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one model."""

    name: str
    description: str
    warning: str | None
    constructor: Callable[..., nn.Module]


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, *, description: str, warning: str | None = None) -> Callable[[C], C]:
    """Decorator registering a model constructor (class or function) under ``name``.

    Args:
        name: registry key, e.g. ``"unet"``.
        description: one line shown by ``texseg`` listings.
        warning: a caveat users of the model must be told (shown by the commands that
            train or evaluate it, and recorded in its runs' notes).

    Returns:
        The decorator, which returns the constructor unchanged.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")

    def decorator(constructor: C) -> C:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        params = inspect.signature(constructor).parameters
        missing = [arg for arg in _REQUIRED_ARGS if arg not in params]
        if missing:  # a programming error in texseg, not a user error
            raise TypeError(f"model {name!r} constructor must accept {', '.join(missing)}")
        _REGISTRY[name] = ModelSpec(name, description, warning, constructor)
        return constructor

    return decorator


def list_models() -> list[str]:
    """Return the registered model names, sorted."""
    return sorted(_REGISTRY)


def model_spec(name: str) -> ModelSpec:
    """Return the :class:`ModelSpec` of ``name``.

    Raises:
        ValueError: listing the valid names if ``name`` is not registered.
    """
    check_choice("model", name, list_models())
    return _REGISTRY[name]


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name``.

    Args:
        name: a name from :func:`list_models`.
        **kwargs: constructor options, e.g. ``num_classes=3``.

    Returns:
        The model, mapping ``(B, in_channels, H, W)`` to ``(B, num_classes, H, W)`` logits.

    Raises:
        ValueError: unknown name, unknown or invalid option, or more than
            :data:`MAX_PARAMETERS` parameters.
    """
    spec = model_spec(name)
    params = inspect.signature(spec.constructor).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        accepted = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
        for key in kwargs:
            if key not in params:
                raise ValueError(
                    f"{key} is not an option of model {name!r}; accepted: {', '.join(accepted)}"
                )

    # Dry run on the meta device: validates the arguments and counts parameters
    # without allocating any memory.
    with torch.device("meta"):
        n_params = count_parameters(spec.constructor(**kwargs))
    if n_params > MAX_PARAMETERS:
        raise ValueError(
            f"model {name!r} with {kwargs} would have {n_params:,} parameters; "
            f"at most {MAX_PARAMETERS:,} are allowed"
        )
    return spec.constructor(**kwargs)


def count_parameters(model: nn.Module) -> int:
    """Return the number of trainable parameters of ``model`` (shared ones counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
