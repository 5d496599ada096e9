"""Memory a training run will need, estimated before anything large is allocated."""

from __future__ import annotations

import json
from functools import lru_cache

import torch

from texseg.data.scene import estimate_memory_bytes
from texseg.device import check_memory
from texseg.models import create_model
from texseg.training.config import TrainConfig


def activation_bytes(config: TrainConfig, batch_size: int, bytes_per_element: int = 4) -> tuple[int, int]:
    """Bytes of all module outputs of one forward pass (what backward keeps) and of the
    largest one (what a no-grad pass holds at a time, roughly), counted on the meta
    device, so nothing is allocated however large the request.
    """
    total, largest, _ = _model_elements(*_model_key(config), batch_size)
    return total * bytes_per_element, largest * bytes_per_element


def estimate_training_bytes(config: TrainConfig) -> int:
    """Rough peak memory of :func:`texseg.training.loop.train` for ``config``.

    Activations of a training batch twice (kept for backward, and their gradients), a
    few of the largest outputs of a no-grad evaluation batch, the validation set, the
    generator's buffers, and the parameters four times (weights, gradients, two
    optimizer moments).
    """
    n2 = config.image_size**2
    eval_batch = min(32, config.val_size)
    params = _model_elements(*_model_key(config), 1)[2]
    return (2 * activation_bytes(config, config.batch_size)[0]
            + 3 * activation_bytes(config, eval_batch)[1]
            + config.val_size * n2 * 12
            + estimate_memory_bytes(config.scene(), max(config.batch_size, 1))
            + 16 * params)


def check_training_memory(config: TrainConfig, device: torch.device) -> None:
    """Raise ValueError with the estimate if ``config`` cannot fit on ``device``."""
    what = (f"training {config.model} on {config.batch_size} images of {config.image_size}x{config.image_size} "
            f"with {config.val_size} held-out images")
    needed = estimate_training_bytes(config)
    val_bytes = config.val_size * config.image_size**2 * 12
    # Fields in backticks: the CLI names the flags that set them (--val-size, --image-size, --batch-size).
    if val_bytes > needed / 2:
        advice = "use a smaller `val_size`"
    elif val_bytes > needed / 4:
        advice = "use a smaller `val_size`, `image_size` or `batch_size`"
    else:
        advice = "use a smaller `image_size` or `batch_size`"
    check_memory(needed, device, what, advice)


def _model_key(config: TrainConfig) -> tuple[str, str, int, int]:
    """What the model's sizes depend on: name, constructor arguments (as JSON), input channels, image side."""
    return (config.model, json.dumps(config.model_init_kwargs, sort_keys=True), config.model_in_channels,
            config.image_size)


@lru_cache(maxsize=64)
def _model_elements(model: str, kwargs: str, channels: int, image_size: int, batch_size: int) -> tuple[int, int, int]:
    """(elements of all module outputs, of the largest one, parameters) of one forward pass on the meta device.

    Counted once per process and input size (about 25 ms each time otherwise: an experiment's
    trials, which mostly share them, paid it before every run).
    """
    total, largest = 0, 0

    def count(module: torch.nn.Module, inputs: object, output: object) -> None:
        nonlocal total, largest
        if isinstance(output, torch.Tensor):
            total += output.numel()
            largest = max(largest, output.numel())

    with torch.device("meta"):
        net = create_model(model, **json.loads(kwargs))
    hooks = [m.register_forward_hook(count) for m in net.modules() if not list(m.children())]
    with torch.device("meta"):
        net(torch.empty(batch_size, channels, image_size, image_size))
    for h in hooks:
        h.remove()
    return total, largest, sum(p.numel() for p in net.parameters())
