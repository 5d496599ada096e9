"""Permutation-invariant loss and matched metrics on hand-made cases."""

from __future__ import annotations

import pytest
import torch

from texseg.evaluation import ConfusionMatrix
from texseg.evaluation.metrics import matched_metrics
from texseg.training.losses import PermutationInvariantLoss, create_loss, create_permutation_invariant_loss


def test_two_regions_take_the_smaller_of_y_and_one_minus_y_per_image():
    y = torch.zeros(2, 1, 4, 4)
    y[:, :, :, :2] = 1
    logits = torch.where(y.bool(), 5.0, -5.0)
    logits[1] = -logits[1]  # image 1 predicts the swapped labelling
    base = create_loss("bce")
    pi = create_permutation_invariant_loss("bce")
    assert pi.mode == "permutation-invariant"
    expected = torch.stack([base(logits[:1], y[:1]), base(logits[1:], 1 - y[1:])]).mean()
    assert float(pi(logits, y)) == pytest.approx(float(expected))
    assert float(pi(logits, y)) < 0.01 < float(base(logits, y))
    assert float(pi(logits, 1 - y)) == pytest.approx(float(pi(logits, y)))  # invariant


@pytest.mark.parametrize("name", ["ce", "dice", "mse"])
def test_k_regions_use_the_best_assignment(name):
    k = 3
    labels = torch.tensor([[0, 0, 1, 1], [2, 2, 1, 1], [2, 0, 0, 1]])[None, None]  # (1,1,3,4)
    perm = torch.tensor([2, 0, 1])  # the model calls true label t "perm[t]"
    logits = 6.0 * torch.nn.functional.one_hot(perm[labels[:, 0]], k).permute(0, 3, 1, 2).float()
    base = create_loss(name, k)
    pi = PermutationInvariantLoss(name, k)
    assert float(pi(logits, labels)) == pytest.approx(float(base(logits, perm[labels])))
    assert float(pi(logits, labels)) < float(base(logits, labels))
    # Any relabelling of the target gives the same loss.
    other = torch.tensor([1, 2, 0])[labels]
    assert float(pi(logits, other)) == pytest.approx(float(pi(logits, labels)), abs=1e-6)


def test_permutation_invariant_loss_has_gradients_and_checks_shapes():
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    loss = PermutationInvariantLoss("ce", 3)(logits, torch.randint(0, 3, (2, 1, 8, 8)))
    loss.backward()
    assert logits.grad is not None and bool(logits.grad.abs().sum() > 0)
    with pytest.raises(ValueError, match="^logits must have shape"):
        PermutationInvariantLoss("bce", 2)(torch.zeros(1, 2, 4, 4), torch.zeros(1, 1, 4, 4))


def test_matched_metrics_undo_a_label_swap():
    cm = torch.tensor([[0, 10], [30, 0]])  # every pixel predicted with the other label
    plain = ConfusionMatrix(2)
    plain._matrix = cm
    assert plain.compute()["accuracy"] == 0.0
    m = matched_metrics(cm)
    assert m["accuracy"] == 1.0 and m["iou"] == 1.0
    set_level = ConfusionMatrix(2, matching="set")
    set_level._matrix = cm
    assert set_level.compute() == {**m, "matched_set": 1.0}


def test_matched_metrics_for_k_regions():
    # True 0 -> predicted 2, true 1 -> predicted 0, true 2 -> predicted 1, with a few errors.
    cm = torch.tensor([[1, 0, 9], [8, 2, 0], [0, 7, 3]])
    m = matched_metrics(cm)
    assert m["accuracy"] == pytest.approx(24 / 30)
    assert m["iou_0"] == pytest.approx(9 / (9 + 1 + 3))
