"""The one forward pass of texseg's inference: every prediction path runs its batches through here.

:func:`forward` is what ``texseg.predict``, ``texseg predict``, the sliding windows of
:mod:`texseg.inference.tiling` and the texture-embedding path share (as MONAI's one
inferer is shared by validation and deployment). It runs the model

* under ``torch.inference_mode`` (no autograd bookkeeping, no version counters; ``no_grad``
  for a model that runs as it is, which may keep a tensor it made for a later training step);
* on a channels-last input (oneDNN's blocked convolutions), its strides set explicitly
  (:func:`texseg.inference.fusion.channels_last`: a one-channel image's otherwise read as NCHW);
* through the model's fused inference copy (:func:`texseg.inference.fusion.inference_model`:
  BatchNorm folded, ReLU fused, weights channels-last in the working dtype), so the
  user's model is left as it is and trains or saves unchanged;
* in bf16 autocast where the CPU has native bf16 (AVX512-BF16 or AMX) or the GPU
  supports it (``precision="auto"``).

``benchmarks/bench_inference.py`` measured it on a 2-core AMD EPYC (AVX-512, avx512_bf16),
1024x1024, against the code without the inference copy: see ``docs/how-to/deploy.md``. bf16 masks
agree with fp32 masks on >= 99.9% of the pixels of a trained model (tests/test_predict_fast.py);
``precision="fp32"`` gives the fp32 result (the model's up to float rounding: BatchNorm is folded).
"""

from __future__ import annotations

import torch
from torch import nn

from texseg._validate import check_choice
from texseg.device import fast_bf16
from texseg.inference.fusion import channels_last, inference_model

__all__ = ["PRECISIONS", "forward", "forward_probs", "model_device", "probs_of", "resolve_precision"]

#: Accepted ``precision`` settings: auto (bf16 where it is fast), fp32, bf16.
PRECISIONS = ("auto", "fp32", "bf16")


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``: bf16, or None for fp32.

    Raises:
        ValueError: ``precision`` is not one of :data:`PRECISIONS`.
    """
    check_choice("precision", precision, PRECISIONS)
    if precision == "fp32" or (precision == "auto" and not fast_bf16(device)):
        return None
    return torch.bfloat16


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def forward(model: nn.Module, x: torch.Tensor, precision: str = "auto") -> torch.Tensor:
    """The model's float32 outputs for a (B, C, H, W) batch, on the model's device.

    Args:
        model: in eval mode (callers set it and restore it).
        x: (B, C, H, W) float images.
        precision: see :data:`PRECISIONS`.

    Returns:
        (B, C_out, H, W) float32 outputs (logits or embeddings), contiguous.
    """
    device = model_device(model)
    dtype = resolve_precision(precision, device)
    net = inference_model(model, dtype or torch.float32)
    x = channels_last(x.to(device))
    # A model that runs as it is (not texseg's fused copy) may keep a tensor it made in forward;
    # made in inference mode, that tensor would break its next training step: no_grad there.
    grad_off = torch.inference_mode() if net is not model else torch.no_grad()
    with grad_off, torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        out = net(x)
    # Made outside inference mode: callers (and users of texseg.predict) get an ordinary tensor.
    result = out.to(torch.float32, memory_format=torch.contiguous_format)
    return out.clone(memory_format=torch.contiguous_format) if result is out else result


def probs_of(logits: torch.Tensor) -> torch.Tensor:
    """Probabilities of (B, C, H, W) logits: sigmoid for C = 1 (P(label 0)), softmax over C otherwise."""
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def forward_probs(model: nn.Module, x: torch.Tensor, precision: str = "auto") -> torch.Tensor:
    """:func:`forward` followed by :func:`probs_of`: (B, C, H, W) float32 probabilities."""
    return probs_of(forward(model, x, precision))
