"""Region metrics on hand-made label maps whose values are worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from texseg.evaluation.region_metrics import (
    boundary_f_score,
    confusion,
    global_consistency_error,
    region_metrics,
)

HALVES = np.array([[0, 0, 1, 1]] * 4)  # 16 pixels, 8 per region


def test_swapped_labels_are_a_perfect_segmentation():
    m = region_metrics(HALVES, 1 - HALVES, 2)
    assert m["accuracy"] == 1 and m["miou"] == 1 and m["iou_0"] == 1 and m["iou_1"] == 1
    assert m["vi"] == 0 and m["are"] == 0 and m["gce"] == 0 and m["bf"] == 1


def test_one_region_predicted_for_two():
    m = region_metrics(HALVES, np.zeros_like(HALVES), 2)
    assert m["accuracy"] == 0.5
    assert m["iou_0"] == 0.5 and m["iou_1"] == 0.0 and m["miou"] == 0.25
    # VI in bits: no split, the merge loses exactly one bit
    assert m["vi_split"] == pytest.approx(0) and m["vi_merge"] == pytest.approx(1) and m["vi"] == pytest.approx(1)
    # adapted Rand over pixel pairs: P = (128-16)/(256-16) = 7/15, R = 1, error = 1 - 2PR/(P+R) = 8/22
    assert m["are"] == pytest.approx(8 / 22)
    # the truth refines the prediction: GCE is 0; no predicted boundary: boundary F is 0
    assert m["gce"] == pytest.approx(0) and m["bf"] == 0


def test_one_wrong_pixel_of_four():
    truth, pred = np.array([[0, 0, 1, 1]]), np.array([[0, 1, 1, 1]])
    m = region_metrics(truth, pred, 2)
    assert m["accuracy"] == 0.75 and m["iou_0"] == 0.5 and m["iou_1"] == pytest.approx(2 / 3)
    assert m["vi_split"] == pytest.approx(0.5)  # H(pred | truth): truth 0 is split 1:1
    h = -(1 / 3) * math.log2(1 / 3) - (2 / 3) * math.log2(2 / 3)
    assert m["vi_merge"] == pytest.approx(0.75 * h)  # H(truth | pred): pred 1 holds 1:2
    # cm = [[1,1],[0,2]]: min(4 - (1/2+1/2+4/2), 4 - (1/1+1/3+4/3)) / 4 = 1/4
    assert m["gce"] == pytest.approx(0.25)
    # pairs: sum n^2 = 6, rows 8, cols 10 -> P = 2/6, R = 2/4, error = 1 - 0.4
    assert m["are"] == pytest.approx(0.6)


def test_label_zero_is_not_ignored_by_the_rand_error():
    # scikit-image ignores label 0 by default: every mistake here involves label 0
    truth, pred = np.array([[0, 0, 1, 1]]), np.array([[0, 0, 0, 1]])
    assert region_metrics(truth, pred, 2)["are"] > 0.1


def test_global_consistency_error_of_a_confusion_matrix():
    assert global_consistency_error(np.array([[5, 0], [0, 5]])) == 0
    assert global_consistency_error(np.array([[1, 1], [0, 2]])) == pytest.approx(0.25)


def test_boundary_f_score_tolerance():
    truth = np.zeros((16, 16), dtype=np.int64)
    truth[:, 8:] = 1
    shifted = np.zeros_like(truth)
    shifted[:, 9:] = 1  # the boundary one pixel to the right
    assert boundary_f_score(truth, shifted, tolerance=2) == 1.0
    assert boundary_f_score(truth, shifted, tolerance=0) < 0.6
    far = np.zeros_like(truth)
    far[:, 14:] = 1
    assert boundary_f_score(truth, far, tolerance=2) == 0.0
    assert boundary_f_score(np.zeros_like(truth), np.zeros_like(truth)) == 1.0


def test_region_absent_from_both_is_left_out_of_the_mean():
    truth = np.array([[0, 0, 1, 1]])
    m = region_metrics(truth, truth, 3)
    assert math.isnan(m["iou_2"]) and m["miou"] == 1.0


@pytest.mark.parametrize("perm", [(1, 0, 2), (2, 0, 1), (1, 2, 0)])
def test_every_metric_is_invariant_to_renaming_the_predicted_labels(perm):
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, (20, 20))
    pred = np.where(rng.random((20, 20)) < 0.7, truth, rng.integers(0, 3, (20, 20)))
    renamed = np.array(perm)[pred]
    assert region_metrics(truth, renamed, 3) == pytest.approx(region_metrics(truth, pred, 3))


def test_confusion_is_square_even_with_fewer_predicted_labels():
    cm = confusion(np.array([[0, 1, 2]]), np.array([[0, 0, 0]]))
    assert cm.shape == (3, 3) and cm[:, 0].sum() == 3


def test_bad_inputs_are_refused_by_name():
    with pytest.raises(ValueError, match="^pred must have the shape"):
        region_metrics(HALVES, HALVES[:, :2])
    with pytest.raises(ValueError, match="^truth must hold integer labels"):
        region_metrics(HALVES.astype(float), HALVES)
