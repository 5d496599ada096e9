"""Tests of texseg.evaluation.metrics against hand-computed confusion counts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from texseg.evaluation import ConfusionMatrix, metrics_from_confusion, notebook_precision, predict_labels


def binary_logits(pred: list[int] | torch.Tensor) -> torch.Tensor:
    """(1, 1, 1, N) logits whose thresholded labels are ``pred``."""
    pred = torch.as_tensor(pred, dtype=torch.float32)
    return ((pred * 2 - 1) * 3.0).view(1, 1, 1, -1)


def multiclass_logits(pred: list[int], k: int) -> torch.Tensor:
    """(1, K, 1, N) logits whose argmax is ``pred``."""
    return (F.one_hot(torch.tensor(pred), k).float() * 5.0).T.reshape(1, k, 1, -1)


def mask(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 1, -1)


# --- predict_labels --------------------------------------------------------------------------


def test_predict_labels_binary_thresholds_at_probability_half():
    logits = torch.tensor([-2.0, -1e-6, 0.0, 1e-6, 3.0]).view(1, 1, 1, 5)
    labels = predict_labels(logits)
    assert labels.dtype == torch.int64 and labels.shape == (1, 1, 1, 5)
    # Probability exactly 0.5 (logit 0) is not positive.
    assert labels.flatten().tolist() == [0, 0, 0, 1, 1]


def test_predict_labels_multiclass_argmax():
    logits = multiclass_logits([2, 0, 1, 1], 3)
    labels = predict_labels(logits)
    assert labels.shape == (1, 1, 1, 4) and labels.dtype == torch.int64
    assert labels.flatten().tolist() == [2, 0, 1, 1]


def test_predict_labels_rejects_non_4d():
    with pytest.raises(ValueError, match="logits"):
        predict_labels(torch.zeros(2, 8, 8))


# --- binary -----------------------------------------------------------------------------------


def test_binary_hand_example():
    truth = [1, 1, 1, 0, 0, 0, 0, 0]
    pred = [1, 1, 0, 1, 1, 0, 0, 0]  # TP=2, FN=1, FP=2, TN=3
    cm = ConfusionMatrix(2)
    cm.update(binary_logits(pred), mask(truth))
    assert cm.matrix.dtype == torch.int64
    assert cm.matrix.tolist() == [[3, 2], [1, 2]]  # rows = truth, cols = prediction
    m = cm.compute()
    assert set(m) == {"accuracy", "iou", "iou_omega1", "iou_0", "iou_1", "dice", "precision", "recall",
                      "trivial_accuracy", "trivial_iou", "majority_prediction"}
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["iou_omega1"] == m["iou_0"] == pytest.approx(2 / 5)  # Omega_1 (label 0): TP / (TP + FP + FN)
    assert m["iou_1"] == pytest.approx(3 / 6)  # the other region: TN / (TN + FN + FP)
    assert m["iou"] == pytest.approx((2 / 5 + 3 / 6) / 2)  # the headline: mean over both regions
    assert m["trivial_accuracy"] == pytest.approx(5 / 8) and m["trivial_iou"] == pytest.approx(5 / 16)
    assert m["majority_prediction"] == pytest.approx(4 / 8)
    assert m["dice"] == pytest.approx(4 / 7)
    assert m["precision"] == pytest.approx(2 / 4)
    assert m["recall"] == pytest.approx(2 / 3)
    # Dice is the F1 score of the positive class.
    f1 = 2 * m["precision"] * m["recall"] / (m["precision"] + m["recall"])
    assert m["dice"] == pytest.approx(f1)


def test_binary_matches_independent_computation():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 1, 16, 16, generator=g)
    target = (torch.rand(4, 1, 16, 16, generator=g) > 0.6).float()
    cm = ConfusionMatrix(2)
    cm.update(logits, target)
    m = cm.compute()

    p, y = (torch.sigmoid(logits) > 0.5), target.bool()
    tp = (p & y).sum().item()
    fp = (p & ~y).sum().item()
    fn = (~p & y).sum().item()
    tn = (~p & ~y).sum().item()
    assert tp + fp + fn + tn == target.numel()
    assert m["accuracy"] == pytest.approx((tp + tn) / target.numel())
    assert m["iou_omega1"] == pytest.approx(tp / (tp + fp + fn))
    assert m["iou"] == pytest.approx((tp / (tp + fp + fn) + tn / (tn + fn + fp)) / 2)
    assert m["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert m["precision"] == pytest.approx(tp / (tp + fp))
    assert m["recall"] == pytest.approx(tp / (tp + fn))


def test_accumulation_over_batches_equals_one_big_batch():
    g = torch.Generator().manual_seed(1)
    for k in (2, 4):
        channels = 1 if k == 2 else k
        logits = torch.randn(6, channels, 8, 8, generator=g)
        if k == 2:
            target = (torch.rand(6, 1, 8, 8, generator=g) > 0.5).float()
        else:
            target = torch.randint(0, k, (6, 8, 8), generator=g)
        whole = ConfusionMatrix(k)
        whole.update(logits, target)
        parts = ConfusionMatrix(k)
        for lo, hi in [(0, 1), (1, 4), (4, 6)]:  # uneven batch sizes
            parts.update(logits[lo:hi], target[lo:hi])
        assert torch.equal(parts.matrix, whole.matrix)
        assert parts.matrix.sum().item() == target.numel()
        assert parts.compute() == whole.compute()


def test_reset_and_target_layouts():
    cm = ConfusionMatrix(2)
    cm.update(binary_logits([1, 0]), mask([1, 1]))
    cm.reset()
    assert cm.matrix.tolist() == [[0, 0], [0, 0]]
    # (B, H, W) and bool masks are accepted.
    cm.update(binary_logits([1, 0]), torch.tensor([[[True, True]]]))
    assert cm.matrix.tolist() == [[0, 0], [1, 1]]


def test_absent_class_conventions_binary():
    # No positives anywhere: perfect, all metrics 1.0.
    m = metrics_from_confusion(torch.tensor([[5, 0], [0, 0]]))
    assert all(m[k] == 1.0 for k in ("accuracy", "iou", "iou_omega1", "dice", "precision", "recall"))
    # Positives exist but none predicted: precision 0/0 counts as a miss.
    m = metrics_from_confusion(torch.tensor([[5, 0], [3, 0]]))
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["iou_omega1"] == 0.0 and m["dice"] == 0.0
    assert m["majority_prediction"] == 1.0 and m["iou"] == pytest.approx(5 / 8 / 2)  # the trivial model
    # Positives predicted but none exist: recall 0/0 counts as a miss.
    m = metrics_from_confusion(torch.tensor([[5, 2], [0, 0]]))
    assert m["recall"] == 0.0 and m["precision"] == 0.0 and m["iou_omega1"] == 0.0


# --- K > 2 ------------------------------------------------------------------------------------


def test_multiclass_hand_example():
    truth = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    pred = [0, 0, 1, 1, 2, 2, 2, 2, 1]
    cm = ConfusionMatrix(3)
    cm.update(multiclass_logits(pred, 3), torch.tensor(truth).view(1, 1, 1, -1))
    assert cm.matrix.tolist() == [[2, 1, 0], [0, 1, 1], [0, 1, 3]]
    m = cm.compute()
    # TP = [2, 1, 3], FP = [0, 2, 1], FN = [1, 1, 1]
    iou = [2 / 3, 1 / 4, 3 / 5]
    dice = [4 / 5, 2 / 5, 6 / 8]
    precision = [1.0, 1 / 3, 3 / 4]
    recall = [2 / 3, 1 / 2, 3 / 4]
    assert m["accuracy"] == pytest.approx(6 / 9)
    for name, values in [("iou", iou), ("dice", dice), ("precision", precision), ("recall", recall)]:
        for i, v in enumerate(values):
            assert m[f"{name}_{i}"] == pytest.approx(v), f"{name}_{i}"
        assert m[f"mean_{name}"] == pytest.approx(sum(values) / 3)
        assert m[name] == m[f"mean_{name}"]  # alias, so callers can always read "iou"
    expected_keys = {"accuracy", "trivial_accuracy", "trivial_iou", "majority_prediction"} | {
        f"{p}{n}" for n in ("iou", "dice", "precision", "recall") for p in ("", "mean_")
    } | {f"{n}_{i}" for n in ("iou", "dice", "precision", "recall") for i in range(3)}
    assert set(m) == expected_keys


def test_multiclass_absent_class_is_perfect():
    # Class 2 never appears in truth or prediction.
    m = metrics_from_confusion(torch.tensor([[3, 1, 0], [0, 4, 0], [0, 0, 0]]))
    for name in ("iou", "dice", "precision", "recall"):
        assert m[f"{name}_2"] == 1.0
    assert m["iou_0"] == pytest.approx(3 / 4) and m["iou_1"] == pytest.approx(4 / 5)
    assert m["mean_iou"] == pytest.approx((3 / 4 + 4 / 5 + 1) / 3)


# --- notebook_precision -----------------------------------------------------------------------


def test_notebook_precision_differs_from_accuracy():
    probs = torch.tensor([0.05, 0.95, 0.6, 0.3, 0.1, 0.91]).view(1, 1, 1, -1)
    target = mask([0, 1, 1, 0, 0, 1])
    # Clipped: [0, 1, 0.6, 0.3, 0.1, 1] -> exact matches at 0, 1, 5 only.
    assert notebook_precision(probs, target) == pytest.approx(3 / 6)
    cm = ConfusionMatrix(2)
    cm.update(torch.logit(probs), target)
    assert cm.compute()["accuracy"] == 1.0  # every pixel is right at threshold 0.5


def test_notebook_precision_validation():
    with pytest.raises(ValueError, match="probabilities"):
        notebook_precision(torch.tensor([2.0]).view(1, 1, 1, 1), mask([1]))
    with pytest.raises(ValueError, match="mask"):
        notebook_precision(torch.full((1, 1, 1, 2), 0.5), mask([1, 0, 1]))


# --- argument errors --------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 0, True, 2.0, "3"])
def test_num_classes_must_be_int_at_least_2(k):
    with pytest.raises(ValueError, match="num_classes"):
        ConfusionMatrix(k)


def test_update_validation():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"logits must have shape \(B, 3, H, W\)"):
        cm.update(torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="target must have shape"):
        cm.update(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"target values must be in \[0, 2\]"):
        cm.update(torch.zeros(1, 3, 1, 2), torch.tensor([[[0, 3]]]))
    with pytest.raises(ValueError, match="integer label map"):
        cm.update(torch.zeros(1, 3, 1, 2), torch.zeros(1, 1, 2))
    with pytest.raises(ValueError, match="NaN"):
        cm.update(torch.full((1, 3, 1, 2), float("nan")), torch.zeros(1, 1, 2, dtype=torch.long))
    binary = ConfusionMatrix(2)
    with pytest.raises(ValueError, match="0/1 mask"):
        binary.update(torch.zeros(1, 1, 1, 2), mask([0, 1]) * 0.5)
    with pytest.raises(ValueError, match=r"logits must have shape \(B, 1, H, W\)"):
        binary.update(torch.zeros(1, 2, 1, 2), mask([0, 1]))
    with pytest.raises(RuntimeError, match="update"):
        binary.compute()


def test_metrics_from_confusion_validation():
    with pytest.raises(ValueError, match="cm"):
        metrics_from_confusion(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="cm"):
        metrics_from_confusion(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="cm"):
        metrics_from_confusion(torch.tensor([[1, -1], [0, 1]]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_state_lives_on_logits_device():
    cm = ConfusionMatrix(3)
    logits = torch.randn(2, 3, 8, 8, device="cuda")
    target = torch.randint(0, 3, (2, 8, 8), device="cuda")
    cm.update(logits, target)
    assert cm.matrix.device.type == "cuda"
    cpu = ConfusionMatrix(3)
    cpu.update(logits.cpu(), target.cpu())
    assert torch.equal(cm.matrix.cpu(), cpu.matrix)
    assert cm.compute() == cpu.compute()


# ---------------------------------------------------------------- validation's forward pass


def _trained_cnn() -> torch.nn.Module:
    """A cnn whose BatchNorm running statistics are not the identity (a few train-mode passes)."""
    from texseg.models import create_model

    torch.manual_seed(0)
    model = create_model("cnn")
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(4, 1, 32, 32))
    return model.eval()


def test_validation_scores_what_the_eager_model_scores_and_checks_its_precision():
    from texseg.evaluation import evaluate, score_batches

    model = _trained_cnn()
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(6, 1, 32, 32, generator=gen)
    targets = (torch.rand(6, 1, 32, 32, generator=gen) > 0.5).float()
    cm = ConfusionMatrix(2)
    with torch.no_grad():
        logits = model(images)
    cm.update(logits, targets)
    eager = cm.compute()
    fused = evaluate(model, images, targets, 2, batch_size=4, loss_fn=F.binary_cross_entropy_with_logits)
    for name, value in eager.items():
        assert fused[name] == pytest.approx(value, abs=1e-6), name
    assert fused["loss"] == pytest.approx(float(F.binary_cross_entropy_with_logits(logits, targets)), rel=1e-5)
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16"):
        score_batches(model, [(images, targets)], 2, precision="fp16")


class _CachesAGrid(torch.nn.Module):
    """A module from outside torch.nn and texseg (run as it is) that keeps a tensor it made in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)
        self.grid: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grid is None or self.grid.shape != x.shape:
            self.grid = torch.linspace(0, 1, x.shape[-1]).expand_as(x).clone()
        return self.conv(x) * self.grid  # backward needs the grid


_CachesAGrid.__module__ = "user_code"


def test_a_model_validated_as_it_is_still_trains_afterwards():
    from texseg.evaluation import evaluate

    model = _CachesAGrid()
    images, targets = torch.rand(2, 1, 16, 16), (torch.rand(2, 1, 16, 16) > 0.5).float()
    evaluate(model, images, targets, 2)  # made its grid during validation
    model.train()
    loss = F.binary_cross_entropy_with_logits(model(images), targets)
    loss.backward()  # an inference-mode grid could not be saved for backward
    assert model.conv.weight.grad is not None
