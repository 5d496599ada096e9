"""A trained model (a run directory of ``texseg train``) as a :class:`Segmenter`."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from texseg.checkpoint import WEIGHTS, load_model
from texseg.segmenters.base import Segmenter, as_channels, check_images

__all__ = ["ModelSegmenter"]


class ModelSegmenter(Segmenter):
    """Segments with a trained model, in eval mode, in batches.

    A two-region model outputs one logit of P(label 0) (the notebook's Omega_1), so a
    pixel gets label 0 where that probability is > 0.5 and label 1 elsewhere -- the
    generator's labels. A K-region model gets the argmax of its K logits.

    Args:
        run_dir: a run directory (``model.json`` + ``model.safetensors``).
        device: where the model runs (default CPU).
        batch_size: images per forward pass.
    """
    supervised = False

    def __init__(self, run_dir: str | os.PathLike[str], device: str | torch.device | None = None,
                 batch_size: int = 16) -> None:
        self.run_dir = Path(run_dir)
        self.model = load_model(run_dir, device=device)
        info = self.model.run_info
        self.architecture: str = info["name"]
        self.num_regions: int = info["num_regions"]
        self.name = self.run_dir.resolve().name
        self.batch_size = batch_size

    def supports(self, num_regions: int) -> bool:
        return num_regions == self.num_regions

    def why_not(self, num_regions: int) -> str:
        return f"model segments {self.num_regions} regions, suite has {num_regions}"

    @torch.no_grad()
    def segment(self, images: Tensor, num_regions: int) -> Tensor:
        k = check_images(images, num_regions)
        if not self.supports(k):
            raise ValueError(f"num_regions must be {self.num_regions} for {self.name}: {self.why_not(k)}")
        device = next(self.model.parameters()).device
        images = as_channels(images, getattr(self.model, "in_channels", 1))  # what the model was trained on
        out = []
        for start in range(0, images.shape[0], self.batch_size):
            logits = self.model(images[start:start + self.batch_size].to(device))
            labels = (logits <= 0).long() if logits.shape[1] == 1 else logits.argmax(dim=1, keepdim=True)
            out.append(labels.to(images.device))
        return torch.cat(out)

    def describe(self) -> dict[str, Any]:

        # The weights' hash: a retrained run in the same directory is a different segmenter.
        digest = hashlib.sha256((self.run_dir / WEIGHTS).read_bytes()).hexdigest()[:16]
        return {"name": self.name, "run_dir": str(self.run_dir.resolve()), "model": self.architecture,
                "weights_sha256": digest}
