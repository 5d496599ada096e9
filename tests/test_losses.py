"""Tests of texseg.training.losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from texseg.training.losses import LOSSES, create_loss, list_losses


@pytest.fixture
def binary_batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1, 8, 8, generator=g)
    target = (torch.rand(3, 1, 8, 8, generator=g) > 0.5).float()
    return logits, target


@pytest.fixture
def multiclass_batch():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 4, 8, 8, generator=g)
    target = torch.randint(0, 4, (3, 1, 8, 8), generator=g)
    return logits, target


def notebook_dice_loss(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The notebook's per-image formula with smooth = 1, averaged over images."""
    values = []
    for p, y in zip(probs, target):
        values.append(1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1))
    return torch.stack(values).mean()


def test_list_losses():
    assert list_losses() == list(LOSSES) == ["mse", "bce", "dice", "bce+dice", "ce", "ce+dice"]
    assert list_losses(2) == ["mse", "bce", "dice", "bce+dice"]
    assert list_losses(3) == ["mse", "dice", "ce", "ce+dice"]


def test_bce_matches_probability_form(binary_batch):
    logits, target = binary_batch
    loss = create_loss("bce")(logits, target)
    assert loss.shape == () and loss.dtype == torch.float32
    expected = F.binary_cross_entropy(torch.sigmoid(logits), target)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_bce_stable_for_huge_logits():
    logits = torch.tensor([1e4, -1e4, 1e4, -1e4]).view(1, 1, 2, 2).requires_grad_()
    target = torch.tensor([0.0, 1.0, 1.0, 0.0]).view(1, 1, 2, 2)
    p = torch.sigmoid(logits.detach())
    naive = -(target * p.log() + (1 - target) * (1 - p).log()).mean()
    # sigmoid saturates to exactly 0/1, log gives -inf (and 0 * -inf = nan).
    assert not torch.isfinite(naive)
    loss = create_loss("bce")(logits, target)
    # Two pixels are wrong by 1e4 (loss 1e4 each), two are right (loss ~0).
    assert torch.isfinite(loss) and loss.item() == pytest.approx(5e3)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_mse_matches_notebook_formula(binary_batch, multiclass_batch):
    logits, target = binary_batch
    expected = torch.mean((torch.sigmoid(logits) - target) ** 2)
    assert create_loss("mse")(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    logits, target = multiclass_batch
    one_hot = F.one_hot(target[:, 0], 4).permute(0, 3, 1, 2).float()
    expected = torch.mean((torch.softmax(logits, 1) - one_hot) ** 2)
    assert create_loss("mse", 4)(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_dice_matches_notebook_formula(binary_batch):
    logits, target = binary_batch
    expected = notebook_dice_loss(torch.sigmoid(logits), target)
    assert create_loss("dice")(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_dice_perfect_and_inverse_binary(binary_batch):
    _, target = binary_batch
    dice = create_loss("dice")
    confident = (target * 2 - 1) * 30.0
    assert dice(confident, target).item() == pytest.approx(0.0, abs=1e-6)
    # Inverse: no overlap, Dice = 1 / (64 + 1) per 8x8 image.
    assert dice(-confident, target).item() == pytest.approx(1 - 1 / 65, abs=1e-4)
    # An empty mask predicted empty is perfect thanks to smooth = 1.
    empty = torch.zeros(1, 1, 4, 4)
    assert dice(torch.full_like(empty, -30.0), empty).item() == pytest.approx(0.0, abs=1e-6)


def test_dice_perfect_and_inverse_multiclass(multiclass_batch):
    _, target = multiclass_batch
    dice = create_loss("dice", 4)
    confident = F.one_hot(target[:, 0], 4).permute(0, 3, 1, 2).float() * 30.0
    assert dice(confident, target).item() == pytest.approx(0.0, abs=1e-5)
    wrong = F.one_hot((target[:, 0] + 1) % 4, 4).permute(0, 3, 1, 2).float() * 30.0
    assert dice(wrong, target).item() > 0.95


def test_combined_losses_are_sums(binary_batch, multiclass_batch):
    logits, target = binary_batch
    combined = create_loss("bce+dice")(logits, target)
    parts = create_loss("bce")(logits, target) + create_loss("dice")(logits, target)
    assert combined.item() == pytest.approx(parts.item(), rel=1e-6)

    logits, target = multiclass_batch
    ce = create_loss("ce", 4)(logits, target)
    assert ce.item() == pytest.approx(F.cross_entropy(logits, target[:, 0]).item(), rel=1e-6)
    combined = create_loss("ce+dice", 4)(logits, target)
    dice = create_loss("dice", 4)(logits, target)
    assert combined.item() == pytest.approx(ce.item() + dice.item(), rel=1e-6)


def test_target_without_channel_dim(binary_batch, multiclass_batch):
    logits, target = binary_batch
    loss = create_loss("bce+dice")
    assert loss(logits, target[:, 0]).item() == loss(logits, target).item()
    logits, target = multiclass_batch
    loss = create_loss("ce+dice", 4)
    assert loss(logits, target[:, 0]).item() == loss(logits, target).item()


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_gradients_finite(k, scale):
    g = torch.Generator().manual_seed(2)
    channels = 1 if k == 2 else k
    for name in list_losses(k):
        logits = (torch.randn(2, channels, 6, 6, generator=g) * scale).requires_grad_()
        if k == 2:
            target = (torch.rand(2, 1, 6, 6, generator=g) > 0.5).float()
        else:
            target = torch.randint(0, k, (2, 6, 6), generator=g)
        loss = create_loss(name, k)(logits, target)
        assert loss.shape == () and torch.isfinite(loss), name
        loss.backward()
        assert torch.isfinite(logits.grad).all(), name


def test_low_precision_logits_give_float32_loss(binary_batch):
    logits, target = binary_batch
    loss = create_loss("bce+dice")(logits.bfloat16(), target)
    assert loss.dtype == torch.float32


# --- errors -----------------------------------------------------------------------------------


def test_unknown_name_lists_valid_names():
    valid = r"mse, bce, dice, bce\+dice, ce, ce\+dice"
    with pytest.raises(ValueError, match=f"loss must be one of {valid}"):
        create_loss("focal")


def test_binary_only_loss_with_k_regions():
    with pytest.raises(ValueError, match=r"num_classes=3.*valid losses are mse, dice, ce, ce\+dice$"):
        create_loss("bce", 3)
    with pytest.raises(ValueError, match="num_classes=5"):
        create_loss("bce+dice", 5)


def test_ce_with_two_regions_suggests_bce():
    valid = r"mse, bce, dice, bce\+dice"
    with pytest.raises(ValueError, match=f"num_classes=2.*valid losses are {valid}.*use 'bce'"):
        create_loss("ce", 2)
    with pytest.raises(ValueError, match="use 'bce'"):
        create_loss("ce+dice")


@pytest.mark.parametrize("k", [1, 0, 2.5, True])
def test_bad_num_classes(k):
    with pytest.raises(ValueError, match="num_classes"):
        create_loss("mse", k)
    with pytest.raises(ValueError, match="num_classes"):
        list_losses(k)


def test_shape_errors():
    with pytest.raises(ValueError, match=r"logits must have shape \(B, 1, H, W\)"):
        create_loss("bce")(torch.zeros(1, 2, 4, 4), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"logits must have shape \(B, 3, H, W\)"):
        create_loss("ce", 3)(torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="target must have shape"):
        create_loss("dice")(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="integer label map"):
        create_loss("ce", 3)(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4))
