"""The fast inference path (inference_mode, channels-last, bf16 where native) gives the fp32 masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.optimize import linear_sum_assignment

import texseg
from conftest import run_main
from test_predict import _scene, _train_tiny_cnn
from texseg.checkpoint import save_model
from texseg.device import fast_bf16
from texseg.inference.embedding import segment_embedded
from texseg.inference.inferer import forward, resolve_precision
from texseg.inference.predict import labels_from_probs, predict_image


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return _train_tiny_cnn()


def _agreement_up_to_permutation(a: np.ndarray, b: np.ndarray) -> float:
    """Share of pixels with the same label once b's labels are matched to a's (most frequent pairs)."""
    k = int(max(a.max(), b.max())) + 1
    counts = np.zeros((k, k), np.int64)
    np.add.at(counts, (a.ravel(), b.ravel()), 1)
    rows, cols = linear_sum_assignment(-counts)
    return counts[rows, cols].sum() / a.size


def test_precision_auto_is_bf16_exactly_where_the_hardware_has_it():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == (torch.bfloat16 if fast_bf16(cpu) else None)
    assert resolve_precision("fp32", cpu) is None and resolve_precision("bf16", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16"):
        resolve_precision("fp16", cpu)


def test_bf16_masks_agree_with_fp32_masks(model):
    image, truth = _scene(512, seed=5, sigma=64)
    fp32 = labels_from_probs(predict_image(model, image.copy(), precision="fp32"))
    for kwargs in ({"precision": "bf16"}, {"precision": "bf16", "tile": 128}, {}):
        fast = labels_from_probs(predict_image(model, image.copy(), **kwargs))
        assert (fast == fp32).mean() >= 0.999, kwargs
    assert (fp32 == truth).mean() > 0.9  # a model that does something


def test_default_prediction_is_the_fast_path_on_this_machine(model):
    image, _ = _scene(128, seed=2)
    default = texseg.predict(model, image)
    assert torch.equal(default, texseg.predict(model, image, precision="bf16" if fast_bf16(torch.device("cpu"))
                                               else "fp32"))


def test_forward_leaves_the_model_and_outputs_ordinary():
    m = texseg.create_model("cnn").eval()
    weights = [p.clone() for p in m.parameters()]
    out = forward(m, torch.rand(2, 1, 40, 24))
    out += 1  # an ordinary tensor (not an inference-mode one): in-place works
    assert out.shape == (2, 1, 40, 24) and out.dtype == torch.float32 and out.is_contiguous()
    assert all(p.is_contiguous() and torch.equal(p, w) for p, w in zip(m.parameters(), weights))


def test_general_model_bf16_labels_agree_with_fp32():
    general = texseg.load_pretrained("general")
    image, _ = _scene(256, seed=7, sigma=48)
    fp32 = segment_embedded(general, image.copy(), regions=2, precision="fp32")
    bf16 = segment_embedded(general, image.copy(), regions=2, precision="bf16")
    assert _agreement_up_to_permutation(fp32, bf16) >= 0.999


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"precision": "fp16"}, "precision must be one of auto, fp32, bf16"),
    ({"tile": 8}, "tile"), ({"overlap": 0.95}, "overlap"), ({"batch_size": 0}, "batch_size"),
    ({"window": "box"}, "window must be one of gaussian, ramp"), ({"scale": 0}, "scale"),
])
def test_predict_settings_refuse_bad_values_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        texseg.PredictSettings(**kwargs)


def test_cli_precision_flag_is_checked_in_one_line(capsys, tmp_path):
    (tmp_path / "run").mkdir()
    save_model(texseg.create_model("cnn"), tmp_path / "run", name="cnn", kwargs={}, num_regions=2)
    image, _ = _scene(32, seed=1)
    Image.fromarray((image * 255).astype(np.uint8)).save(tmp_path / "a.png")
    code, _, err = run_main(capsys, "predict", str(tmp_path / "run"), str(tmp_path / "a.png"), "--out",
                            str(tmp_path / "o"), "--precision", "half")
    assert code == 2 and err.startswith("texseg: error: --precision must be one of auto, fp32, bf16")
    assert len(err.splitlines()) == 1
