"""``seed-cnn``: the lab notebook's ``MyFirtsCNN``, reproduced layer for layer.

Kept as the reference baseline, bug included: one ``BatchNorm2d`` instance is shared by
the three blocks, so its running statistics average three different layers and
eval-mode predictions are unreliable. Use ``cnn`` for the fixed design.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from texseg.models.base import SegmentationModel
from texseg.models.cnn import check_conv_args
from texseg.models.registry import register_model

__all__ = ["SeedCNN"]


class _SharedBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` that reports a missing ``num_batches_tracked`` instead of inventing it.

    The stock layer fills that key in when a state dict has no version metadata, as with
    safetensors files. safetensors' ``load_model`` stores a shared layer under one of its
    names and expects the other names to be reported missing; invented keys make a strict
    load fail. Forward and state-dict keys are those of ``nn.BatchNorm2d``.
    """

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        nn.Module._load_from_state_dict(self, *args, **kwargs)  # skip _NormBase's fill-in


@register_model(
    "seed-cnn",
    description="The lab notebook's MyFirtsCNN, layer for layer (13,681 parameters at defaults).",
    warning=(
        "its three blocks share one BatchNorm, whose running statistics mix three layers, "
        "so eval-mode predictions are unreliable; use 'cnn' unless you are reproducing the notebook"
    ),
)
class SeedCNN(SegmentationModel):
    """Three (conv -> ReLU -> shared BatchNorm) blocks, then a conv to logits.

    Attribute names match the notebook (``conv1``-``conv3``, ``out``, ``bn``) so its
    state dicts load as they are.

    Args:
        num_classes: output channels (the notebook: 1).
        in_channels: input channels (the notebook: 1).
        num_channels: width of the hidden blocks.
        kernel_size: odd kernel size of every conv ("same" padding).
        bias: whether the convs have a bias.

    Shapes:
        ``(B, in_channels, H, W) -> (B, num_classes, H, W)`` logits; the notebook's
        final sigmoid is left to the loss / post-processing.
    """

    def __init__(
        self,
        *,
        num_classes: int = 1,
        in_channels: int = 1,
        num_channels: int = 16,
        kernel_size: int = 5,
        bias: bool = True,
    ) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels)
        num_channels, kernel_size, bias = check_conv_args(num_channels, kernel_size, bias)
        pad = kernel_size // 2
        self.activation = nn.ReLU()
        # Deliberately ONE instance reused by all blocks: the notebook's bug, kept on purpose.
        self.bn = _SharedBatchNorm2d(num_channels)
        self.conv1 = nn.Sequential(
            nn.Conv2d(self.in_channels, num_channels, kernel_size, 1, pad, bias=bias), self.activation, self.bn
        )
        self.conv2 = nn.Sequential(
            nn.Conv2d(num_channels, num_channels, kernel_size, 1, pad, bias=bias), self.activation, self.bn
        )
        self.conv3 = nn.Sequential(
            nn.Conv2d(num_channels, num_channels, kernel_size, 1, pad, bias=bias), self.activation, self.bn
        )
        self.out = nn.Conv2d(num_channels, self.num_classes, kernel_size, 1, pad, bias=bias)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.conv3(self.conv2(self.conv1(x))))
