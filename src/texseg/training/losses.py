"""Segmentation losses, by name.

Conventions: logits are (B, C, H, W). Two regions (``num_classes=2``): C = 1, target a
0/1 mask (B, 1, H, W). K > 2 regions: C = K, target an integer label map (B, 1, H, W)
or (B, H, W) with values 0..K-1.

=========  ==========  ============================================================
name       regions     definition
=========  ==========  ============================================================
mse        any         mean((p - y)^2); p = sigmoid (K = 2) or softmax (K > 2), y the
                       mask or one-hot target. The lab notebook's loss.
bce        2           binary cross-entropy on logits (log-sum-exp form, stable)
dice       any         1 - (2 sum(p y) + 1) / (sum(p) + sum(y) + 1) per image (and per
                       class for K > 2), averaged; smooth = 1 as in the notebook
bce+dice   2           bce + dice
ce         > 2         cross-entropy over the K channels
ce+dice    > 2         ce + dice
=========  ==========  ============================================================
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from texseg._validate import check_choice, check_int
from texseg.evaluation.matching import best_assignment

__all__ = ["LOSSES", "PermutationInvariantLoss", "SegmentationLoss", "create_loss", "create_permutation_invariant_loss",
           "list_losses"]

LOSSES: tuple[str, ...] = ("mse", "bce", "dice", "bce+dice", "ce", "ce+dice")
_BINARY_ONLY = frozenset({"bce", "bce+dice"})
_MULTICLASS_ONLY = frozenset({"ce", "ce+dice"})


def list_losses(num_classes: int | None = None) -> list[str]:
    """Loss names, all of them or those valid for ``num_classes`` regions."""
    if num_classes is None:
        return list(LOSSES)
    k = check_int("num_classes", num_classes, minimum=2)
    excluded = _MULTICLASS_ONLY if k == 2 else _BINARY_ONLY
    return [name for name in LOSSES if name not in excluded]


def _soft_dice_loss(probs: Tensor, target: Tensor, smooth: float = 1.0) -> Tensor:
    """1 - soft Dice per (image, channel) over the pixels, averaged.

    Args:
        probs, target: (B, C, H, W) float in [0, 1].
    """
    dims = tuple(range(2, probs.ndim))
    intersection = (probs * target).sum(dims)
    # smooth keeps an empty mask predicted empty at a Dice of 1 instead of 0/0.
    dice = (2 * intersection + smooth) / (probs.sum(dims) + target.sum(dims) + smooth)
    return 1 - dice.mean()


class SegmentationLoss(nn.Module):
    """A named loss from :data:`LOSSES`; build it with :func:`create_loss`.

    Args:
        name: one of :data:`LOSSES` valid for ``num_classes``.
        num_classes: number of regions K >= 2.
    """
    def __init__(self, name: str, num_classes: int = 2) -> None:
        super().__init__()
        self.num_classes = check_int("num_classes", num_classes, minimum=2)
        self.name = check_choice("loss", name, LOSSES)
        valid = list_losses(self.num_classes)
        if name not in valid:
            hint = "; use 'bce' or 'bce+dice' for two regions" if name in _MULTICLASS_ONLY else ""
            raise ValueError(
                f"loss {name!r} is not valid for num_classes={self.num_classes}: "
                f"valid losses are {', '.join(valid)}{hint}"
            )
        self.terms = tuple(name.split("+"))

    def extra_repr(self) -> str:
        return f"name={self.name!r}, num_classes={self.num_classes}"

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss of a batch.

        Args:
            logits: (B, C, H, W); C = 1 for K = 2, else C = K.
            target: (B, 1, H, W) or (B, H, W); 0/1 mask for K = 2 (any dtype, values are
                not checked to avoid a device sync per step), integer labels otherwise.

        Returns:
            Scalar float32 tensor.
        """
        target = self._checked(logits, target)
        k = self.num_classes
        # fp32 even under autocast: the sums over H*W pixels lose precision in fp16/bf16.
        logits = logits.float()
        needs_probs = "mse" in self.terms or "dice" in self.terms
        if k == 2:
            labels, dense = None, target.float()
            probs = logits.sigmoid() if needs_probs else None
        else:
            labels = target[:, 0].long()
            dense = F.one_hot(labels, k).permute(0, 3, 1, 2).float() if needs_probs else None
            probs = logits.softmax(dim=1) if needs_probs else None

        losses = []
        for term in self.terms:
            if term == "bce":
                losses.append(F.binary_cross_entropy_with_logits(logits, dense))
            elif term == "ce":
                losses.append(F.cross_entropy(logits, labels))
            elif term == "mse":
                losses.append((probs - dense).pow(2).mean())
            else:  # dice
                losses.append(_soft_dice_loss(probs, dense))
        return torch.stack(losses).sum()

    def _checked(self, logits: Tensor, target: Tensor) -> Tensor:
        """``target`` as (B, 1, H, W) once both fit the loss; a ValueError naming the argument otherwise."""
        k = self.num_classes
        channels = 1 if k == 2 else k
        if not isinstance(logits, Tensor) or logits.ndim != 4 or logits.shape[1] != channels:
            got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(
                f"logits must have shape (B, {channels}, H, W) for num_classes={k}, got {got}"
            )
        if not isinstance(target, Tensor):
            raise ValueError(f"target must be a tensor, got {type(target).__name__}")
        if target.ndim == 3:
            target = target.unsqueeze(1)
        expected = (logits.shape[0], 1, *logits.shape[2:])
        if tuple(target.shape) != expected:
            raise ValueError(
                f"target must have shape {expected} or {(expected[0], *expected[2:])}, "
                f"got {tuple(target.shape)}"
            )
        if k > 2 and (target.is_floating_point() or target.is_complex()):
            raise ValueError(
                f"target must be an integer label map for num_classes={k}, got {target.dtype}"
            )
        return target


def create_loss(name: str, num_classes: int = 2) -> Callable[[Tensor, Tensor], Tensor]:
    """Build the loss ``name`` for ``num_classes`` regions.

    Args:
        name: one of :data:`LOSSES`; ``bce``/``bce+dice`` need K = 2, ``ce``/``ce+dice`` K > 2.
        num_classes: number of regions K >= 2 (the binary model has one output channel).

    Returns:
        A module called as ``loss(logits, target)`` returning a scalar tensor.

    Raises:
        ValueError: unknown name, or a name not valid for ``num_classes``.
    """
    return SegmentationLoss(name, num_classes)


class PermutationInvariantLoss(nn.Module):
    """A named loss under the best relabelling of each image's target ("label meaning is arbitrary").

    When textures are drawn from a pool, which texture lands in which region is
    arbitrary: the task is to split the image, not to name the parts. Per image:

    * two regions: the smaller of the losses against the mask ``y`` and ``1 - y``;
    * K regions: the label assignment maximising the summed log-probability of the
      target under the model (Hungarian algorithm on the (K, K) score matrix, see
      :mod:`texseg.evaluation.matching`; no gradient through the matching), then the
      loss against the relabelled target.

    The result is the mean over images. ``mode`` is ``"permutation-invariant"``.

    Args:
        name: one of :data:`LOSSES` valid for ``num_classes``.
        num_classes: K >= 2.
    """
    mode = "permutation-invariant"

    def __init__(self, name: str, num_classes: int = 2) -> None:
        super().__init__()
        self.base = SegmentationLoss(name, num_classes)
        self.name, self.num_classes = self.base.name, self.base.num_classes

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean over images of the best-assignment loss; shapes as :class:`SegmentationLoss`."""
        if isinstance(target, Tensor) and target.ndim == 3:
            target = target.unsqueeze(1)
        self.base(logits[:1], target[:1])  # shape and dtype checks, with the base loss's messages
        losses = []
        for i in range(logits.shape[0]):
            x, y = logits[i:i + 1], target[i:i + 1]
            if self.num_classes == 2:
                losses.append(torch.minimum(self.base(x, y), self.base(x, 1 - y)))
            else:
                losses.append(self.base(x, _best_relabelling(x, y, self.num_classes)))
        return torch.stack(losses).mean()


def _best_relabelling(logits: Tensor, target: Tensor, k: int) -> Tensor:
    """``target`` with each true label t renamed to the channel the model best explains it with."""
    with torch.no_grad():
        logp = logits.float().log_softmax(dim=1)[0].reshape(k, -1)  # (K, pixels)
        onehot = F.one_hot(target.reshape(-1).long(), k).to(logp.dtype)  # (pixels, K)
        score = (logp @ onehot).T  # score[t, c] = sum over pixels of label t of log p_c
        perm = torch.as_tensor(best_assignment(score), device=target.device)
    return perm[target.long()]


def create_permutation_invariant_loss(name: str, num_classes: int = 2) -> PermutationInvariantLoss:
    """Build ``name`` as a :class:`PermutationInvariantLoss` for ``num_classes`` regions."""
    return PermutationInvariantLoss(name, num_classes)
