"""``SegmentationModel``: what every texseg model shares.

As segmentation_models_pytorch's base class does, it owns the checks every model needs
(``in_channels`` and ``num_classes``) and the input check of ``forward``, so an
architecture file only builds its layers and implements :meth:`logits`. Probabilities
come from :func:`texseg.predict` (:mod:`texseg.inference`), the one inference path.

Vocabulary: ``num_classes`` is the number of output channels (1 for two regions: the
logit of Omega_1; K for K > 2 regions) and ``num_regions`` is K.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from texseg._validate import check_int

MAX_CHANNELS = 1024  # bound of num_classes and in_channels


class SegmentationModel(nn.Module):
    """Maps ``(B, in_channels, H, W)`` images to ``(B, num_classes, H, W)`` logits.

    Args:
        num_classes: output channels, in [1, 1024] (1 for two regions, K for K > 2).
        in_channels: input channels, in [1, 1024].

    Attributes:
        run_info: the ``model.json`` description when the model was loaded from a run
            directory by :func:`texseg.load_model` (None for a new model).
    """

    def __init__(self, *, num_classes: int = 1, in_channels: int = 1) -> None:
        super().__init__()
        self.num_classes = check_int("num_classes", num_classes, 1, MAX_CHANNELS)
        self.in_channels = check_int("in_channels", in_channels, 1, MAX_CHANNELS)
        self.run_info: dict[str, Any] | None = None

    @property
    def num_regions(self) -> int:
        """K: the number of regions the model segments into."""
        return 2 if self.num_classes == 1 else self.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_channels, H, W)`` images to ``(B, num_classes, H, W)`` logits."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"input must have shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        return self.logits(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The architecture's forward pass (inputs already checked)."""
        raise NotImplementedError
