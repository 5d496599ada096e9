"""Label matching for permutation-invariant scores, on hand-made cases."""

import numpy as np
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
