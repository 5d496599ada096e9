"""``cnn``: a plain stack of same-resolution conv blocks (the notebook's design, fixed)."""

from __future__ import annotations

import torch
from torch import nn

from texseg._validate import check_int
from texseg.models.base import MAX_CHANNELS, SegmentationModel
from texseg.models.registry import register_model

__all__ = ["CNN", "check_conv_args"]

MAX_KERNEL_SIZE = 31


def check_conv_args(num_channels: object, kernel_size: object, bias: object) -> tuple[int, int, bool]:
    """Validate the options shared by ``cnn`` and ``seed-cnn``; return them normalised."""
    num_channels = check_int("num_channels", num_channels, 1, MAX_CHANNELS)
    kernel_size = check_int("kernel_size", kernel_size, 1, MAX_KERNEL_SIZE)
    if kernel_size % 2 == 0:  # an even kernel cannot be padded symmetrically: H, W would change
        raise ValueError(f"kernel_size must be odd so that H and W are preserved, got {kernel_size}")
    if not isinstance(bias, bool):
        raise ValueError(f"bias must be True or False, got {bias!r}")
    return num_channels, kernel_size, bias


@register_model(
    "cnn", description="Stack of conv-ReLU-BatchNorm blocks at full resolution, one BatchNorm per block."
)
class CNN(SegmentationModel):
    """``num_blocks`` x (conv -> ReLU -> BatchNorm), then a conv to ``num_classes`` logits.

    Args:
        num_classes: output channels (1 for two regions, K for K > 2).
        in_channels: input channels.
        num_channels: width of every hidden block.
        kernel_size: odd kernel size of every conv ("same" padding).
        num_blocks: number of hidden blocks, in [1, 32].
        bias: whether the convs have a bias.

    Shapes:
        ``(B, in_channels, H, W) -> (B, num_classes, H, W)``.
    """

    def __init__(
        self,
        *,
        num_classes: int = 1,
        in_channels: int = 1,
        num_channels: int = 16,
        kernel_size: int = 5,
        num_blocks: int = 3,
        bias: bool = True,
    ) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels)
        num_channels, kernel_size, bias = check_conv_args(num_channels, kernel_size, bias)
        num_blocks = check_int("num_blocks", num_blocks, 1, 32)
        pad = kernel_size // 2
        # BatchNorm after the ReLU, as in the notebook, so the conv bias is not redundant.
        widths = [self.in_channels] + [num_channels] * num_blocks
        self.blocks = nn.Sequential(
            *(
                nn.Sequential(
                    nn.Conv2d(c_in, num_channels, kernel_size, 1, pad, bias=bias),
                    nn.ReLU(),
                    nn.BatchNorm2d(num_channels),
                )
                for c_in in widths[:-1]
            )
        )
        self.out = nn.Conv2d(num_channels, self.num_classes, kernel_size, 1, pad, bias=bias)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        # texseg.inference.fusion folds this as one chain (blocks, then out): keep it a chain.
        return self.out(self.blocks(x))
