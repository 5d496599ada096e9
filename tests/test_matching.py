"""Label matching for permutation-invariant scores, on hand-made cases."""

import numpy as np
import pytest
import torch

from texseg.evaluation import metrics_from_confusion
from texseg.evaluation.matching import best_assignment, match_confusion, relabel


def test_swapped_binary_labels_are_matched_back():
    cm = torch.tensor([[0, 90], [80, 0]])  # every pixel labelled the other way round
    matched, perm = match_confusion(cm)
    assert perm.tolist() == [1, 0]
    assert matched.tolist() == [[90, 0], [0, 80]]
    assert metrics_from_confusion(matched)["accuracy"] == 1.0


def test_three_label_permutation_and_relabel():
    truth = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    pred = torch.tensor([2, 2, 0, 0, 1, 1, 0])  # 2->0, 0->1, 1->2, one pixel wrong
    cm = torch.zeros(3, 3, dtype=torch.long)
    for t, p in zip(truth, pred):
        cm[t, p] += 1
    perm = best_assignment(cm)
    assert perm.tolist() == [2, 0, 1]
    assert relabel(pred, perm).tolist() == [0, 0, 1, 1, 2, 2, 1]


def test_identity_stays_identity():
    cm = np.array([[5, 1], [2, 7]])
    assert best_assignment(cm).tolist() == [0, 1]


# --- per-image matching -------------------------------------------------------------------------

def _blobs(n: int, size: int = 16, k: int = 2, seed: int = 0) -> torch.Tensor:
    """(n, 1, size, size) labels 0..k-1 in vertical bands whose widths vary per image."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.zeros(n, 1, size, size, dtype=torch.long)
    for i in range(n):
        cuts = sorted(torch.randperm(size - 2, generator=gen)[:k - 1].add(1).tolist())
        for region, cut in enumerate(cuts, start=1):
            labels[i, 0, :, cut:] = region
    return labels


def test_labels_swapped_on_half_the_images_score_one_per_image_and_about_half_per_set():
    from texseg.evaluation import ConfusionMatrix

    labels = _blobs(8)
    mask = (labels == 0).long()  # texseg's two-region target: 1 = label 0
    logits = torch.where(mask.bool(), 5.0, -5.0)
    logits[::2] = -logits[::2]  # every other image predicts the other label for each region
    scores = {}
    for matching in ("none", "image", "set"):
        cm = ConfusionMatrix(2, matching)
        for i in range(0, 8, 3):  # batches of 3, 3, 2: per-image matching does not depend on them
            cm.update(logits[i:i + 3], mask[i:i + 3])
        scores[matching] = cm.compute()
    assert scores["image"]["iou"] == 1.0 and scores["image"]["accuracy"] == 1.0 and scores["image"]["matched"] == 1.0
    assert scores["set"]["accuracy"] == pytest.approx(0.5, abs=0.1) and scores["set"]["iou"] < 0.5
    assert scores["set"]["matched_set"] == 1.0 and "matched" not in scores["set"]
    assert scores["none"]["accuracy"] == pytest.approx(0.5, abs=0.1) and "matched" not in scores["none"]


@pytest.mark.parametrize("k", [2, 3, 5, 7])  # 7: above ENUMERATE_UP_TO, the Hungarian path
def test_match_images_is_the_best_assignment_of_each_image(k):
    from texseg.evaluation.matching import ENUMERATE_UP_TO, match_images

    gen = torch.Generator().manual_seed(k)
    cms = torch.randint(0, 50, (6, k, k), generator=gen)
    matched, perms = match_images(cms)
    assert matched.shape == cms.shape and perms.shape == (6, k)
    for c, m, p in zip(cms, matched, perms):
        best = best_assignment(c)
        assert int(m.trace()) == int(c[torch.arange(k), torch.as_tensor(best)].sum())  # as many pixels agree
        assert torch.equal(m, c[:, p])
    assert (k > ENUMERATE_UP_TO) == (k == 7)
    # Ties keep the identity (a perfect prediction is not renamed).
    eye, _ = match_images(torch.eye(k, dtype=torch.long)[None] * 3)
    assert torch.equal(eye[0], torch.eye(k, dtype=torch.long) * 3)


def test_per_image_matching_of_k_regions_and_its_trivial_baseline():
    from texseg.evaluation import ConfusionMatrix
    from texseg.evaluation.metrics import confusion_matrices

    k = 3
    labels = _blobs(6, k=k, seed=3)
    perm = torch.tensor([[2, 0, 1], [1, 2, 0], [0, 1, 2], [2, 1, 0], [0, 2, 1], [1, 0, 2]])
    renamed = torch.stack([p[lab] for p, lab in zip(perm, labels)])  # each image names its regions its own way
    logits = 5.0 * torch.nn.functional.one_hot(renamed[:, 0], k).permute(0, 3, 1, 2).float()
    cm = ConfusionMatrix(k, "image")
    cm.update(logits, labels)
    assert cm.compute()["iou"] == 1.0
    # One region everywhere, matched per image: right on each image's most common region.
    constant = ConfusionMatrix(k, "image")
    constant.update(torch.zeros(6, k, 16, 16).index_fill_(1, torch.tensor([0]), 1.0), labels)
    m = constant.compute()
    assert m["majority_prediction"] == 1.0
    assert m["iou"] == pytest.approx(m["trivial_iou"]) and m["accuracy"] == pytest.approx(m["trivial_accuracy"])
    per_image = confusion_matrices(renamed, labels, k, per_image=True)
    assert torch.equal(per_image.sum(0), confusion_matrices(renamed, labels, k))
    assert m["trivial_accuracy"] == pytest.approx(float(per_image.sum(2).amax(1).sum() / labels.numel()))


def test_default_confusion_matrix_is_torchmetrics_one():
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    from texseg.evaluation.metrics import confusion_matrices

    gen = torch.Generator().manual_seed(0)
    pred, target = torch.randint(0, 4, (3, 1, 9, 9), generator=gen), torch.randint(0, 4, (3, 1, 9, 9), generator=gen)
    assert torch.equal(confusion_matrices(pred, target, 4),
                       multiclass_confusion_matrix(pred.flatten(), target.flatten(), 4).long())


def test_per_image_scores_are_the_benchmarks_mean_over_images():
    """miou of each image as region_metrics scores it (a region absent from both left out), averaged."""
    from texseg.evaluation import ConfusionMatrix
    from texseg.evaluation.region_metrics import region_metrics

    k = 3
    labels = _blobs(5, k=k, seed=1)
    labels[0] = labels[0].clamp(max=1)  # image 0 has no region 2
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(5, k, 16, 16, generator=gen) + 4.0 * torch.nn.functional.one_hot(
        labels[:, 0], k).permute(0, 3, 1, 2)
    logits[0, 2] = -10.0  # ... and the prediction has none either
    expected = sum(region_metrics(lab, logits[i:i + 1].argmax(1), k)["miou"] for i, lab in enumerate(labels)) / 5
    for batch in (1, 2, 5):
        cm = ConfusionMatrix(k, "image")
        for i in range(0, 5, batch):
            cm.update(logits[i:i + batch], labels[i:i + batch])
        m = cm.compute()
        assert m["iou"] == pytest.approx(expected, abs=1e-12) and m["mean_iou"] == m["iou"]
        assert m["iou_2"] == pytest.approx(sum(region_metrics(lab, logits[i:i + 1].argmax(1), k)["iou_2"]
                                               for i, lab in enumerate(labels) if i) / 4)  # left out of image 0
