"""``unet``: a U-Net (Ronneberger et al., 2015) that accepts any input size."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from texseg._validate import check_choice, check_int
from texseg.models.base import SegmentationModel
from texseg.models.registry import register_model

__all__ = ["UNet"]

NORMS = ("batch", "group", "none")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        # Up to 8 groups; gcd keeps the group count a divisor of any width (e.g. base_width=3).
        return nn.GroupNorm(math.gcd(8, channels), channels)
    return nn.Identity()


def _double_conv(in_ch: int, out_ch: int, norm: str) -> nn.Sequential:
    bias = norm == "none"  # a bias right before a normalisation is redundant
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=bias),
        _norm(norm, out_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=bias),
        _norm(norm, out_ch),
        nn.ReLU(inplace=True),
    )


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad the bottom/right of ``x`` so that H and W are multiples of ``multiple``.

    Built from ``flip`` + ``cat`` because ``F.pad(mode="reflect")`` has no deterministic
    backward on CUDA. A reflection adds at most ``size - 1`` rows, so tiny inputs (e.g.
    16x16 at depth 6) are padded in steps, each reflecting the previous result.
    While being exported (ONNX, with symbolic H and W) it is one reflect pad, whose amount
    stays symbolic (the loop would fix it to the example's size); that needs each side
    to be more than ``multiple - 1`` pixels, which every input of >= 16 pixels is at depth <= 4.
    """
    if torch.compiler.is_exporting():
        return F.pad(x, (0, -x.shape[-1] % multiple, 0, -x.shape[-2] % multiple), mode="reflect")
    for dim in (-2, -1):
        while missing := -x.shape[dim] % multiple:
            size = x.shape[dim]
            step = min(missing, size - 1)
            x = torch.cat([x, x.narrow(dim, size - 1 - step, step).flip(dim)], dim=dim)
    return x


@register_model(
    "unet", description="U-Net: double 3x3 convs, max-pool down, transposed-conv up, skip connections."
)
class UNet(SegmentationModel):
    """U-Net with ``depth`` down-samplings; widths ``base_width * 2**level``.

    Up-sampling is a 2x2 stride-2 transposed conv (as in the paper) rather than bilinear
    interpolation, whose backward is not deterministic on CUDA.
    Inputs of any size are reflect-padded to a multiple of ``2**depth`` and the logits
    cropped back, so H and W need not be powers of two.

    Args:
        num_classes: output channels (1 for two regions, K for K > 2).
        in_channels: input channels.
        base_width: channels of the first level, in [1, 512].
        depth: number of down-samplings, in [1, 6].
        norm: ``"batch"``, ``"group"`` or ``"none"``.

    Shapes:
        ``(B, in_channels, H, W) -> (B, num_classes, H, W)``, any H, W >= 2. With
        ``norm="batch"``, training needs more than one value per channel at the bottleneck
        (e.g. B=1 with H, W <= 2**depth fails); ``"group"`` has no such limit.
    """

    def __init__(
        self,
        *,
        num_classes: int = 1,
        in_channels: int = 1,
        base_width: int = 16,
        depth: int = 3,
        norm: str = "batch",
    ) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels)
        base_width = check_int("base_width", base_width, 1, 512)
        depth = check_int("depth", depth, 1, 6)
        norm = check_choice("norm", norm, NORMS)
        self.depth = depth

        widths = [base_width * 2**level for level in range(depth + 1)]
        self.stem = _double_conv(self.in_channels, widths[0], norm)
        self.down = nn.ModuleList(_double_conv(widths[i], widths[i + 1], norm) for i in range(depth))
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, 2) for i in range(depth))
        # Input: up-sampled features concatenated with the skip of the same level.
        self.decode = nn.ModuleList(_double_conv(2 * widths[i], widths[i], norm) for i in range(depth))
        self.head = nn.Conv2d(widths[0], self.num_classes, 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h < 2 or w < 2:
            raise ValueError(f"input height and width must be >= 2, got {h}x{w}")
        x = self.stem(_pad_to_multiple(x, 2**self.depth))
        skips = []
        for block in self.down:
            skips.append(x)
            x = block(self.pool(x))
        for i in reversed(range(self.depth)):
            x = self.decode[i](torch.cat([skips[i], self.up[i](x)], dim=1))
        return self.head(x)[..., :h, :w]
