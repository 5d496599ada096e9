"""Segmenters: classical methods beat chance, one interface with trained models, one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import texseg
from texseg.benchmark import get_suite
from texseg.checkpoint import save_model
from texseg.evaluation.region_metrics import region_metrics
from texseg.models import create_model
from texseg.segmenters import list_segmenters, load_segmenter, parse_method_arg, segmenter_params
from texseg.segmenters.model import ModelSegmenter

# Mean matched IoU on the first 8 images of the `notebook` suite, measured here with the
# defaults (local-energy 0.909, gabor-kmeans 0.935, random-forest fitted on 4 training
# images 0.656), less a margin. Chance is 0.33: a constant labelling scores 0.331 and
# uniform random labels 0.326 on these images.
NOTEBOOK_IMAGES = 8
MIN_MIOU = {"local-energy": 0.85, "gabor-kmeans": 0.88, "random-forest": 0.58}


@pytest.fixture(scope="module")
def notebook():
    images, labels = get_suite("notebook").load("test", NOTEBOOK_IMAGES)
    return images, labels


def mean_miou(labels: torch.Tensor, pred: torch.Tensor) -> float:
    return float(np.mean([region_metrics(t.numpy(), p.numpy(), 2)["miou"] for t, p in zip(labels, pred)]))


@pytest.mark.parametrize("name", sorted(MIN_MIOU))
def test_classical_method_beats_chance_on_the_notebook_suite(name, notebook):
    images, labels = notebook
    seg = load_segmenter(name)
    if seg.supervised:
        seg.fit(*get_suite("notebook").load("train", 4))
    pred = seg.segment(images, 2)
    assert pred.shape == labels.shape and pred.dtype == torch.int64
    assert set(pred.unique().tolist()) <= {0, 1}
    chance = mean_miou(labels, torch.zeros_like(labels))
    miou = mean_miou(labels, pred)
    assert miou >= MIN_MIOU[name] > chance + 0.2, (name, miou, chance)


@pytest.mark.parametrize("name", ["local-energy", "gabor-kmeans"])
def test_unsupervised_methods_find_k_regions_deterministically(name):
    images, _ = get_suite("k4").load("test", 2)
    images = images[:, :, :48, :48].contiguous()
    a = load_segmenter(name).segment(images, 4)
    b = load_segmenter(name).segment(images, 4)
    assert torch.equal(a, b) and int(a.max()) <= 3 and int(a.min()) >= 0


def test_registry_lists_methods_with_typed_parameters():
    assert set(list_segmenters()) == {"local-energy", "gabor-kmeans", "random-forest"}
    assert "SUPERVISED" in list_segmenters()["random-forest"]
    params = {p.name: p for p in segmenter_params("gabor-kmeans")}
    assert params["orientations"].kind == "int" and params["frequencies"].kind == "floats"
    assert parse_method_arg("gabor-kmeans", "frequencies", "0.1,0.2") == (0.1, 0.2)
    assert parse_method_arg("local-energy", "window", "6") == 6.0
    assert load_segmenter("gabor-kmeans", orientations=6).orientations == 6


@pytest.mark.parametrize(("call", "message"), [
    (lambda: load_segmenter("nope"),
     "^segmenter must be one of gabor-kmeans, local-energy, random-forest, texseg:general or a run"),
    (lambda: load_segmenter("local-energy", foo=1), "^method argument local-energy.foo: .* no parameter 'foo'"),
    (lambda: load_segmenter("local-energy", window=-1.0), "^local-energy.window must be a finite number > 0"),
    (lambda: load_segmenter("gabor-kmeans", frequencies=(0.9,)), "^gabor-kmeans.frequencies must be <= 0.5"),
    (lambda: parse_method_arg("gabor-kmeans", "orientations", "x"), "^method argument gabor-kmeans.orientations must"),
    (lambda: load_segmenter("random-forest").segment(torch.rand(1, 1, 16, 16), 2), "^random-forest is supervised"),
    (lambda: load_segmenter("local-energy").segment(torch.rand(16, 16), 2), "^images must be a float tensor"),
])
def test_bad_arguments_give_one_line_errors(call, message):
    with pytest.raises(ValueError, match=message) as exc:
        call()
    assert "\n" not in str(exc.value)


class ConstantLogit(nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.tensor(value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x) + self.value


@pytest.fixture
def run_dir(tmp_path):
    save_model(create_model("cnn", num_channels=4), tmp_path, name="cnn", kwargs={"num_channels": 4},
               num_regions=2)
    return tmp_path


def test_a_run_directory_is_a_segmenter_in_the_generators_label_convention(run_dir):
    seg = texseg.load_segmenter(run_dir)
    assert isinstance(seg, ModelSegmenter) and seg.architecture == "cnn"
    assert seg.supports(2) and not seg.supports(4) and "2 regions" in seg.why_not(4)
    images = torch.rand(3, 1, 32, 32)
    # one logit of P(label 0): a confident "Omega_1" everywhere is label 0, the opposite label 1
    seg.model = ConstantLogit(5.0)
    assert int(seg.segment(images, 2).max()) == 0
    seg.model = ConstantLogit(-5.0)
    assert int(seg.segment(images, 2).min()) == 1
    with pytest.raises(ValueError, match="^method arguments apply to classical methods and texture-embedding models"):
        load_segmenter(run_dir, window=3)
