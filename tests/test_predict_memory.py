"""The memory-lean paths of predict_file give exactly what the straightforward code gives."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from texseg.inference import labels_from_probs, overlay_image, to_luminance

P = sys.modules["texseg.inference.predict"]  # the module (texseg.inference.predict is the function)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _reference_luminance(a: np.ndarray) -> np.ndarray:
    """The historical conversion: whole-array float32 copy, scaled, then channel weights."""
    f = a.astype(np.float32) / np.float32(np.iinfo(a.dtype).max) if a.dtype.kind in "iu" else a.astype(np.float32)
    if f.ndim == 3 and f.shape[2] >= 3:
        out = f[..., 0] * _LUMA[0]
        out += f[..., 1] * _LUMA[1]
        out += f[..., 2] * _LUMA[2]
        return out
    return f[..., 0] if f.ndim == 3 else f


@pytest.mark.parametrize("dtype,shape", [(np.uint8, (31, 45)), (np.uint16, (31, 45)), (np.uint8, (31, 45, 3)),
                                         (np.uint16, (31, 45, 4)), (np.uint8, (31, 45, 2)), (np.int32, (20, 17)),
                                         (bool, (20, 17)), (np.float64, (20, 17, 3))])
def test_luminance_is_bit_identical_to_the_whole_array_conversion(dtype, shape):
    rng = np.random.default_rng(0)
    if dtype is bool:
        a = rng.random(shape) > 0.5
    elif np.dtype(dtype).kind == "f":
        a = rng.random(shape).astype(dtype)
    else:
        a = rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    got = to_luminance(a)
    assert got.dtype == np.float32 and got.flags.c_contiguous and got.shape == shape[:2]
    np.testing.assert_array_equal(got, _reference_luminance(a.astype(np.float32) if dtype is bool else a))
    assert not np.shares_memory(got, a)


@pytest.mark.parametrize("k", [1, 3])
def test_row_blocked_labels_match_the_whole_array_rule(monkeypatch, k):
    monkeypatch.setattr(P, "_ROWS", 7)  # many blocks and a ragged last one
    probs = np.random.default_rng(1).random((k, 50, 23), dtype=np.float32)
    probs[0, 3, :5] = 0.5  # the threshold itself: label 1
    expected = (probs[0] <= 0.5) if k == 1 else probs.argmax(axis=0)
    got = labels_from_probs(probs)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected.astype(np.uint8))


def test_overlay_written_in_blocks_equals_the_overlay_array(monkeypatch, tmp_path):
    monkeypatch.setattr(P, "_OVERLAY_ROWS", 6)  # block edges cross region boundaries
    rng = np.random.default_rng(2)
    image = rng.random((41, 29), dtype=np.float32)
    labels = (rng.random((41, 29)) > 0.6).astype(np.uint8) + (np.arange(29) > 14).astype(np.uint8)
    whole = overlay_image(image, labels, rows=1000)
    np.testing.assert_array_equal(overlay_image(image, labels, rows=6), whole)
    P.write_overlay(tmp_path / "o.png", image, labels)
    with Image.open(tmp_path / "o.png") as im:
        assert im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), whole)
    # The boundaries are drawn (yellow) and the tint differs between regions.
    assert (whole == P._BOUNDARY).all(axis=-1).any()
