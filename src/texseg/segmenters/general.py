"""A texture-embedding network (``texseg:general`` or a ``train-general`` run) as a :class:`Segmenter`."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from texseg.checkpoint import WEIGHTS, load_model, load_pretrained
from texseg.inference.embedding import embed, embed_with_reference, is_embedding_model
from texseg.inference.grouping import (
    GABOR_WEIGHT,
    MAX_REGIONS,
    REFERENCE_GABOR_WEIGHT,
    GroupOptions,
    group_embeddings,
    reference_mask,
)
from texseg.models.pretrained import PREFIX, is_pretrained_name
from texseg.segmenters.base import Segmenter, as_channels, check_images

__all__ = ["EmbeddingSegmenter"]


class EmbeddingSegmenter(Segmenter):
    """Segments by grouping each image's texnet embeddings: any K from 2 to 8, any textures.

    Args:
        source: ``texseg:<name>`` (a shipped model) or a ``texseg train-general`` run folder.
        device: where the network runs (default CPU).
        batch_size: images per forward pass.
        seed: fixes k-means.
        gabor_weight: K given, the weight of each image's Gabor energies beside its
            embeddings (:func:`texseg.inference.grouping.with_gabor`); 0 (the default): the
            embeddings alone, as a network's validation measures them.
        reference_gabor_weight: the same for the one-shot mode (:meth:`find`).
    """

    supervised = False

    def __init__(self, source: str | os.PathLike[str], device: str | torch.device | None = None,
                 batch_size: int = 8, seed: int = 0, gabor_weight: float = GABOR_WEIGHT,
                 reference_gabor_weight: float = REFERENCE_GABOR_WEIGHT) -> None:
        self.options = GroupOptions(seed=seed, gabor_weight=gabor_weight, reference_gabor_weight=reference_gabor_weight)
        text = os.fspath(source)
        self.model = load_pretrained(text, device=device) if is_pretrained_name(text) else load_model(text, device)
        if not is_embedding_model(self.model):
            raise ValueError(f"{text} is not a texture-embedding model (texnet); use it as a run folder")
        self.source = text
        self.name = text if is_pretrained_name(text) else Path(text).resolve().name
        self.batch_size = batch_size

    @property
    def seed(self) -> int:
        """The seed of k-means (``options.seed``)."""
        return self.options.seed

    def supports(self, num_regions: int) -> bool:
        return 2 <= num_regions <= MAX_REGIONS

    def why_not(self, num_regions: int) -> str:
        return f"{self.name} segments 2 to {MAX_REGIONS} regions, not {num_regions}"

    def embeddings(self, images: Tensor) -> Tensor:
        """(B, 1, H, W) images -> (B, D, H, W) embeddings (colour images: their luminance)."""
        check_images(images, 2)
        return embed(self.model, as_channels(images, getattr(self.model, "in_channels", 1)), self.batch_size)

    def segment(self, images: Tensor, num_regions: int) -> Tensor:
        k = check_images(images, num_regions)
        if not self.supports(k):
            raise ValueError(f"num_regions: {self.why_not(k)}")
        return self._group(images, k)

    def estimate(self, images: Tensor) -> Tensor:
        """Label maps with the number of regions of each image estimated (K-free mode)."""
        check_images(images, 2)
        return self._group(images, None)

    def find(self, images: Tensor, reference: Tensor) -> Tensor:
        """One-shot: 1 where the texture of ``reference`` (a (1, 1, h, w) patch) is, else 0."""
        check_images(images, 2)
        check_images(reference, 2)
        patch = as_channels(reference, 1)[0, 0].detach().cpu().numpy()
        out = [reference_mask(*embed_with_reference(self.model, image[0].detach().cpu().numpy(), patch,
                                                    gabor_weight=self.options.weight_for(None, True)))
               for image in as_channels(images, 1)]
        return torch.stack(out)[:, None].to(images.device)

    def _group(self, images: Tensor, k: int | None) -> Tensor:
        grey = as_channels(images, 1)[:, 0].detach().cpu()
        out = [group_embeddings(e, image, k, self.options) for e, image in zip(self.embeddings(images), grey)]
        return torch.stack(out)[:, None].to(images.device)

    def describe(self) -> dict[str, Any]:
        state = self.model.state_dict()
        digest = hashlib.sha256(b"".join(t.detach().cpu().numpy().tobytes() for t in state.values())).hexdigest()
        return {"name": self.name, "source": self.source if self.source.startswith(PREFIX)
                else str(Path(self.source).resolve() / WEIGHTS), "model": "texnet", "weights_sha256": digest[:16],
                "seed": self.options.seed, "gabor_weight": self.options.gabor_weight,
                "reference_gabor_weight": self.options.reference_gabor_weight}
