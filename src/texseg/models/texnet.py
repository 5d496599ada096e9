"""``texnet``: a texture-agnostic network that maps an image to per-pixel texture embeddings.

Instead of logits of fixed classes ("region 0 is the fine texture"), it outputs a
``D``-dimensional vector per pixel, trained (``texseg train-general``, with the
discriminative loss of :mod:`texseg.training.general`) so that pixels of one texture lie
close together and pixels of different textures far apart, whatever the textures are.
Grouping the vectors of one image (k-means, :mod:`texseg.segmenters.general`) then gives
its regions, for any K and for textures never seen in training.

Architecture: the image is standardised (mean 0, std 1 per image: brightness and
contrast carry no meaning here), a stride-2 stem, residual blocks of dilated 3x3
convolutions at half resolution (receptive field ~ 4 * sum(dilations) * 2 pixels, ~500 px
with the defaults: a texture is judged by a wide neighbourhood) with GroupNorm (no
batch statistics, so train and eval modes agree), a 1x1 head, bilinear upsampling back to
the input size, and a full-resolution refinement that sees the image again so boundaries
are placed at pixel precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from texseg._validate import check_int

__all__ = ["TextureEmbeddingNet"]


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class _Block(nn.Module):
    """Pre-activation residual block of two dilated 3x3 convolutions."""

    def __init__(self, width: int, dilation: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _norm(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation, bias=False),
            _norm(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class TextureEmbeddingNet(nn.Module):
    """(B, in_channels, H, W) images -> (B, embedding_dim, H, W) texture embeddings.

    Args:
        in_channels: image channels (1: luminance).
        embedding_dim: D, the size of each pixel's embedding (2..64).
        width: channels of the residual blocks (8..256).
        dilations: one residual block per entry, with that dilation (1..64).
    """

    def __init__(self, in_channels: int = 1, embedding_dim: int = 8, width: int = 48,
                 dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 1, 2, 4, 8, 16)) -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, 1, 16)
        self.embedding_dim = check_int("embedding_dim", embedding_dim, 2, 64)
        self.width = check_int("width", width, 8, 256)
        if not isinstance(dilations, (tuple, list)) or not dilations:
            raise ValueError(f"dilations must be a non-empty list of integers in [1, 64], got {dilations!r}")
        self.dilations = tuple(check_int(f"dilations[{i}]", d, 1, 64) for i, d in enumerate(dilations))
        half = max(8, width // 2)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, half, 3, padding=1, bias=False), _norm(half), nn.ReLU(inplace=True),
            nn.Conv2d(half, width, 3, stride=2, padding=1, bias=False),
        )
        self.blocks = nn.Sequential(*[_Block(width, d) for d in self.dilations])
        self.head = nn.Sequential(_norm(width), nn.ReLU(inplace=True), nn.Conv2d(width, width, 1))
        self.refine = nn.Sequential(
            nn.Conv2d(width + in_channels, half, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(half, embedding_dim, 1),
        )

    def config(self) -> dict[str, object]:
        """The constructor's arguments (JSON types), to rebuild the same network."""
        return {"in_channels": self.in_channels, "embedding_dim": self.embedding_dim, "width": self.width,
                "dilations": list(self.dilations)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"input must have shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        x = x.float()
        mean = x.mean(dim=(-2, -1), keepdim=True)
        x = (x - mean) / x.std(dim=(-2, -1), keepdim=True).clamp(min=1e-6)
        h = self.head(self.blocks(self.stem(x)))
        h = F.interpolate(h, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.refine(torch.cat([h, x], dim=1))
