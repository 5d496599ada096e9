"""Per-region colour statistics of colour scenes: a mean colour and a 3x3 mixing of texture fields.

Each region of a colour scene carries three independent texture fields ``t`` (its family's
texture made from three noise fields). The region's colour transform maps them to RGB::

    rgb = scale * mean + M @ t

with ``mean`` uniform in [-1, 1]^3, ``scale`` the scene's texture standard deviation (so
colour differences are on the scale of the texture's own), and ``M`` a 3x3 matrix of
standard-normal entries whose columns past a random ``rank`` in {1, 2, 3} are zero (a
region's colour varies along 1, 2 or 3 colour directions), scaled to Frobenius norm sqrt(3):
the texture's energy summed over the channels is three times the grey texture's, so the
amplitude cue of the grey scenes survives the colour change. In
:data:`SHARED_PROBABILITY` of the scenes every region takes region 0's transform, so the
regions differ in texture only. Everything is drawn from the scene's generator, after the
noise, in one fixed order, so a seed reproduces the colours.
"""

from __future__ import annotations

import torch

__all__ = ["SHARED_PROBABILITY", "apply_color_transforms", "as_channels", "color_transforms", "luminance"]

#: Share of colour scenes in which all regions have the same colour transform (texture tells them apart).
SHARED_PROBABILITY = 0.25


def color_transforms(batch_size: int, num_regions: int, generator: torch.Generator | None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random colour transforms of every region of every scene (see the module docstring).

    Args:
        batch_size: B scenes.
        num_regions: K regions per scene.
        generator: the scene generator (None: the global CPU RNG).

    Returns:
        means: (B, K, 3) float64 in [-1, 1]; mixing: (B, K, 3, 3) float64, on the CPU.
    """
    dev = generator.device if generator is not None else None
    b, k = batch_size, num_regions
    means = torch.rand((b, k, 3), generator=generator, device=dev, dtype=torch.float64).cpu() * 2 - 1
    mixing = torch.randn((b, k, 3, 3), generator=generator, device=dev, dtype=torch.float64).cpu()
    rank = torch.randint(1, 4, (b, k), generator=generator, device=dev).cpu()
    shared = torch.rand((b,), generator=generator, device=dev, dtype=torch.float64).cpu() < SHARED_PROBABILITY
    columns = torch.arange(3)[None, None, None, :] < rank[..., None, None]  # (B, K, 1, 3)
    mixing = mixing * columns
    mixing = mixing * (3**0.5 / mixing.flatten(-2).norm(dim=-1).clamp(min=1e-12))[..., None, None]
    means[shared] = means[shared][:, :1].expand(-1, k, -1)
    mixing[shared] = mixing[shared][:, :1].expand(-1, k, -1, -1)
    return means, mixing


def apply_color_transforms(fields: torch.Tensor, labels: torch.Tensor, num_regions: int,
                           generator: torch.Generator | None) -> torch.Tensor:
    """Map each region's three texture fields through its colour transform.

    Args:
        fields: (B, 3, N, N) float, region k's pixels holding region k's three texture fields.
        labels: (B, 1, N, N) int64 labels 0..K-1.
        num_regions: K.
        generator: draws the transforms (:func:`color_transforms`).

    Returns:
        (B, 3, N, N) RGB of the same dtype and device (not yet normalised).
    """
    b = fields.shape[0]
    means, mixing = color_transforms(b, num_regions, generator)
    means, mixing = means.to(fields.device, fields.dtype), mixing.to(fields.device, fields.dtype)
    scale = fields.std(dim=(1, 2, 3)).clamp(min=1e-12)[:, None]  # (B, 1): colour on the texture's scale
    out = torch.zeros_like(fields)
    for region in range(num_regions):
        rgb = torch.einsum("bij,bjhw->bihw", mixing[:, region], fields)
        rgb = rgb + (scale * means[:, region])[..., None, None]
        out = torch.where(labels == region, rgb, out)
    return out


def luminance(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> (B, 1, H, W) luminance with the ITU-R BT.601 weights texseg reads files with."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype, device=images.device)
    return torch.einsum("bchw,c->bhw", images, weights)[:, None]


def as_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """(B, 1 or 3, H, W) images as ``channels`` (1 or 3) channels, as texseg reads files.

    Colour to grey: BT.601 luminance (:func:`texseg.data.color.luminance`) min-max normalised per
    image, as ``texseg predict`` reads a colour file for a grey model; grey to colour: the channel
    repeated. Images that already have ``channels`` are returned as they are.
    """
    if images.shape[1] == channels:
        return images
    if channels == 1:
        grey = luminance(images)
        lo = grey.amin(dim=(-2, -1), keepdim=True)
        return (grey - lo) / (grey.amax(dim=(-2, -1), keepdim=True) - lo).clamp(min=1e-12)
    if channels == 3 and images.shape[1] == 1:
        return images.expand(-1, 3, -1, -1)
    raise ValueError(f"cannot turn images of {images.shape[1]} channels into {channels}; texseg uses 1 or 3")
