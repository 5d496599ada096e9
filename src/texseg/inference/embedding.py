"""Segmenting images with a texture-embedding network (``texnet``, e.g. ``texseg:general``).

Unlike a logits model, a texnet says nothing about *which* texture a pixel carries, only
which pixels carry the same one: an image's labels come from grouping its embeddings
(:mod:`texseg.inference.grouping`), with K given, K estimated, or a reference patch.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from texseg._validate import check_int, check_positive
from texseg.images import MIN_SIZE, normalize_image
from texseg.inference.grouping import MAX_REGIONS, GroupOptions, group_embeddings, reference_mask, with_gabor
from texseg.inference.inferer import forward
from texseg.models.texnet import TextureEmbeddingNet

__all__ = ["REFERENCE_SIDE", "embed", "embed_with_reference", "is_embedding_model", "segment_embedded"]

#: Largest image embedded in one pass (embeddings and activations grow with its area).
MAX_PIXELS = 4096 * 4096


def is_embedding_model(model: nn.Module) -> bool:
    """Whether ``model`` outputs texture embeddings (to be grouped) rather than logits (an ONNX one too)."""
    return isinstance(model, TextureEmbeddingNet) or getattr(model, "outputs", None) == "embeddings"


def embed(model: TextureEmbeddingNet, images: Tensor, batch_size: int = 8, precision: str = "auto") -> Tensor:
    """(B, 1, H, W) images -> (B, D, H, W) float32 embeddings (eval mode, on the images' device).

    ``precision``: ``auto`` (bf16 where the hardware has native bf16), ``fp32`` or ``bf16``;
    see :func:`texseg.inference.inferer.forward`.
    """
    check_int("batch_size", batch_size, minimum=1)
    was_training = model.training
    model.eval()
    try:
        out = [forward(model, images[s:s + batch_size], precision).to(images.device)
               for s in range(0, images.shape[0], batch_size)]
        return out[0] if len(out) == 1 else torch.cat(out)  # one batch: no (B, D, H, W) copy
    finally:
        model.train(was_training)


#: Width of the strip of mirrored reference texture set beside the image (one-shot).
REFERENCE_SIDE = 96


def embed_with_reference(model: TextureEmbeddingNet, image: np.ndarray, patch: np.ndarray, scale: float = 1.0,
                         precision: str = "auto", gabor_weight: float = 0.0) -> tuple[Tensor, Tensor]:
    """Embeddings of ``image`` and the mean embedding of the texture of ``patch``, in one pass.

    The patch is mirrored out (no seams) into a strip as tall as the image and set beside
    it, and the two are embedded together: the network then sees the reference texture
    with the same normalisation and at the same scale as the image (a small patch embedded
    alone would be judged by its own statistics and mostly by padding).

    Args:
        image: (H, W) luminance; patch: (h, w) luminance in the same units (e.g. both read
            from files; cropped to H rows if taller). They are normalised together.
        gabor_weight: > 0: the Gabor energies of image and strip set beside the embeddings
            (:func:`texseg.inference.grouping.with_gabor`), so D grows by the bank's 12 filters.

    Returns:
        (D, H', W') embeddings of the image (H', W' the scaled size) and the reference's (D,) mean.
    """
    h, w = image.shape
    patch = np.asarray(patch, dtype=np.float32)[:h]
    ph, pw = patch.shape
    side = max(REFERENCE_SIDE, pw)
    top, left = (h - ph) // 2, (side - pw) // 2
    strip = np.pad(patch, ((top, h - ph - top), (left, side - pw - left)), mode="symmetric")
    x = _network_input(np.concatenate([np.asarray(image, dtype=np.float32), strip], axis=1), scale)
    emb = embed(model, x, precision=precision)[0]
    if gabor_weight:
        emb = with_gabor(emb, x[0, 0], gabor_weight)
    width = emb.shape[-1] * w // (w + side)
    y0, y1 = round(top * scale), round((top + ph) * scale)
    x0, x1 = width + round(left * scale), width + round((left + pw) * scale)
    inner = emb[:, y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]
    return emb[:, :, :width], inner.reshape(inner.shape[0], -1).mean(1)


def _network_input(image: np.ndarray, scale: float) -> Tensor:
    """(1, 1, H', W'): the image normalised and resampled by ``scale``, as the network sees it."""
    check_positive("scale", scale)
    h, w = image.shape
    size = (round(h * scale), round(w * scale))
    if min(size) < MIN_SIZE:
        raise ValueError(f"scale {scale:g} makes the {w}x{h} image {size[1]}x{size[0]}; "
                         f"both sides must stay >= {MIN_SIZE}")
    if size[0] * size[1] > MAX_PIXELS:
        largest = scale * (MAX_PIXELS / (size[0] * size[1])) ** 0.5
        raise ValueError(f"scale: a {size[1]}x{size[0]} image is more than a texnet embeds in one pass "
                         f"({MAX_PIXELS:,} pixels); give a scale below {largest:.3g}")
    x = torch.from_numpy(normalize_image(image.copy()))[None, None]
    if size != (h, w):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
    return x


def segment_embedded(model: TextureEmbeddingNet, image: np.ndarray, *, regions: int | None = None,
                     reference: np.ndarray | None = None, scale: float = 1.0, precision: str = "auto",
                     options: GroupOptions | None = None) -> np.ndarray:
    """Labels of one (H, W) luminance image.

    Args:
        model: a texnet.
        image: (H, W) float luminance (min-max normalised here).
        regions: K (2..8); None: estimated.
        reference: a (h, w) luminance patch of the texture to find (one-shot): the result is
            1 where that texture is, 0 elsewhere; ``regions`` is then ignored.
        scale: resample the image (and the patch) by this factor first; labels are at (H, W).
        precision: of the forward pass: ``auto``, ``fp32`` or ``bf16`` (see :func:`embed`).
        options: k-means' seed and, K given, the weight of the image's Gabor energies beside
            the embeddings (default :class:`~texseg.inference.grouping.GroupOptions`).

    Returns:
        (H, W) uint8 labels.
    """
    if regions is not None:
        check_int("regions", regions, 2, MAX_REGIONS)
    options = options or GroupOptions()
    if reference is not None:
        emb, ref = embed_with_reference(model, image, reference, scale, precision, options.weight_for(None, True))
        labels = reference_mask(emb, ref)
    else:
        x = _network_input(image, scale)
        labels = group_embeddings(embed(model, x, precision=precision)[0], x[0, 0], regions, options)
    if labels.shape != image.shape:
        labels = F.interpolate(labels[None, None].float(), size=image.shape, mode="nearest")[0, 0].long()
    return labels.numpy().astype(np.uint8)
