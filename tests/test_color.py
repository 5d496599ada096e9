"""Colour images end to end: generation, models, training on RGB folders, predict, benchmark (issue 25, item 3)."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

import texseg
from conftest import run_main
from texseg.benchmark.suites import get_suite
from texseg.checkpoint import load_model, save_model
from texseg.data import SceneSpec, generate
from texseg.data.color import as_channels, color_transforms, luminance
from texseg.data.export import export_dataset
from texseg.data.folder import ImageFolderDataset, read_labels, validate_folder
from texseg.data.procedural import CollageSpec, generate_collage
from texseg.images import color_for_channels, read_image
from texseg.inference import predict_file
from texseg.models import create_model, list_models
from texseg.segmenters.classical import LocalEnergy
from texseg.segmenters.model import ModelSegmenter

LUMA = np.array([0.299, 0.587, 0.114])


def _gen(spec: SceneSpec, seed: int, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    return generate(spec, n, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- generation

@pytest.mark.parametrize("texture", ["gaussian", "oriented", "powerlaw", "bandpass", "mixed"])
def test_colour_scenes_are_seed_exact_rgb_in_unit_range(texture):
    spec = SceneSpec(48, texture=texture, color=True)
    a, la = _gen(spec, 3)
    b, lb = _gen(spec, 3)
    c, _ = _gen(spec, 4)
    assert a.shape == (4, 3, 48, 48) and la.shape == (4, 1, 48, 48)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(a, c)
    assert torch.allclose(a.amin(dim=(1, 2, 3)), torch.zeros(4)) and torch.allclose(a.amax(dim=(1, 2, 3)),
                                                                                     torch.ones(4))
    assert (a[:, 0] - a[:, 1]).abs().mean() > 0.02  # real colour, not grey copied three times


def test_grey_scenes_do_not_change_and_do_not_record_color():
    spec = SceneSpec(48)
    assert "color" not in spec.to_dict()  # model.json / manifest of grey runs stay as they were
    assert SceneSpec.from_dict(spec.to_dict()) == spec
    colour = SceneSpec(48, color=True)
    assert colour.to_dict()["color"] is True and SceneSpec.from_dict(colour.to_dict()) == colour
    image, labels = _gen(spec, 3)
    assert image.shape == (4, 1, 48, 48)
    # the same partitions in colour as in grey for a seed: the partition is drawn first either way
    assert torch.equal(labels, _gen(colour, 3)[1])
    with pytest.raises(ValueError, match="color must be true or false"):
        SceneSpec(48, color="yes")


def test_regions_get_their_own_colour_unless_shared():
    means, mixing = color_transforms(400, 3, torch.Generator().manual_seed(0))
    same = (means[:, 1:] == means[:, :1]).all(dim=(1, 2))
    assert 0.15 < same.double().mean() < 0.35  # about SHARED_PROBABILITY of the scenes: texture only
    assert torch.allclose(mixing.flatten(-2).norm(dim=-1), torch.full((400, 3), 3**0.5, dtype=torch.float64))
    ranks = torch.linalg.matrix_rank(mixing.flatten(0, 1))
    assert set(ranks.tolist()) == {1, 2, 3}
    # measured on images: two regions of distinct transforms have distinct mean colours
    image, labels = _gen(SceneSpec(64, texture_sigmas=(1.0, 1.0), color=True), 1, 16)
    gaps = []
    for i in range(16):
        m0 = image[i][:, labels[i, 0] == 0].mean(dim=1)
        m1 = image[i][:, labels[i, 0] == 1].mean(dim=1)
        gaps.append(float((m0 - m1).abs().max()))
    assert np.median(gaps) > 0.05  # equal sigmas: regions that differ in colour only


def test_colour_mosaics_are_real_in_colour_with_the_grey_mosaics_partitions():
    grey, real = get_suite("real"), get_suite("real-color")
    gi, gl = grey.load("test", 6)
    ci, cl = real.load("test", 6)
    assert gi.shape == (6, 1, 128, 128) and ci.shape == (6, 3, 128, 128)
    assert torch.equal(gl, cl)  # the same scenes, read in colour
    assert (ci[:, 0] - ci[:, 2]).abs().amax(dim=(1, 2)).max() > 0.2  # a colour photograph in some scene


def test_colour_collages_are_seed_exact_and_grey_ones_keep_their_shape():
    spec = CollageSpec(48, color=True)
    a, la = generate_collage(spec, 3, generator=torch.Generator().manual_seed(2))
    b, lb = generate_collage(spec, 3, generator=torch.Generator().manual_seed(2))
    assert a.shape == (3, 3, 48, 48) and torch.equal(a, b) and torch.equal(la, lb)
    grey, _ = generate_collage(CollageSpec(48), 3, generator=torch.Generator().manual_seed(2))
    assert grey.shape == (3, 1, 48, 48)


def test_colour_export_writes_rgb_pngs_read_back_by_the_folder_dataset(tmp_path):
    spec = SceneSpec(32, color=True)
    export_dataset(spec, tmp_path / "e", 3, seed=1)
    manifest = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert manifest["scene"]["color"] is True
    assert iio.imread(tmp_path / "e" / "images" / "00000.png").shape == (32, 32, 3)
    data = ImageFolderDataset(validate_folder(tmp_path / "e"), 32, augment=False, color=True)
    image, labels = data.full(0)
    expected, expected_labels = _gen(spec, 1, 3)
    assert image.shape == (3, 32, 32) and torch.equal(labels, expected_labels[0, 0])
    assert (image - expected[0]).abs().max() <= 1 / 255 + 1e-6  # 8-bit rounding, normalised as a whole
    crops, crop_labels = data.sample(4, torch.Generator().manual_seed(0))
    assert crops.shape == (4, 3, 32, 32) and crop_labels.shape == (4, 1, 32, 32)
    grey = ImageFolderDataset(validate_folder(tmp_path / "e"), 32, augment=False)
    assert grey.full(0)[0].shape == (32, 32)  # luminance stays the default


# ----------------------------------------------------------------------------- models

@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_takes_three_channels(name):
    model = create_model(name, in_channels=3, num_classes=3).eval()
    assert model.in_channels == 3
    assert model(torch.rand(2, 3, 24, 24)).shape == (2, 3, 24, 24)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(2, 1, 24, 24))


def test_model_json_records_in_channels_and_old_files_mean_one(tmp_path):
    model = create_model("cnn", in_channels=3)
    save_model(model, tmp_path, name="cnn", kwargs={"in_channels": 3, "num_classes": 1}, num_regions=2)
    assert json.loads((tmp_path / "model.json").read_text())["kwargs"]["in_channels"] == 3
    assert load_model(tmp_path).in_channels == 3
    old = tmp_path / "old"
    old.mkdir()
    save_model(create_model("cnn"), old, name="cnn", kwargs={"num_classes": 1}, num_regions=2)
    assert load_model(old).in_channels == 1


# ----------------------------------------------------------------------------- training on an RGB folder

def _hue_folder(root: Path) -> Path:
    """Two regions of the same luminance texture, told apart by a hue shift of zero luminance only."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    _, labels = generate(SceneSpec(64, 12.8), 12, generator=torch.Generator().manual_seed(5))
    rng = np.random.default_rng(0)
    shift = np.array([0.3, -0.2, 0.0])
    shift[2] = -(shift @ LUMA) / LUMA[2]
    for i, lab in enumerate(labels[:, 0].numpy()):
        base = 0.5 + 0.15 * rng.standard_normal((64, 64))
        rgb = base[..., None] + np.where(lab[..., None] == 0, 0.5, -0.5) * shift
        iio.imwrite(root / "images" / f"{i}.png", (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8))
        iio.imwrite(root / "masks" / f"{i}.png", np.where(lab == 0, 255, 0).astype(np.uint8))
    return root


@pytest.fixture(scope="module")
def colour_runs(tmp_path_factory):
    """A colour and a grey cnn trained briefly (150 steps, ~5 s each) on the hue folder with `texseg train`."""
    from texseg.cli import main

    root = tmp_path_factory.mktemp("colour")
    folder = _hue_folder(root / "data")
    runs = {}
    for flag in ("--color", "--no-color"):
        out = root / flag.strip("-")
        with pytest.raises(SystemExit) as exc:
            main(["train", "--data", str(folder), flag, "--model", "cnn", "--model-arg", "num_channels=8",
                  "--model-arg", "num_blocks=2", "--iterations", "150", "--image-size", "32", "--batch-size", "8",
                  "--val-size", "16", "--no-figures", "--quiet", "--out", str(out)])
        assert exc.value.code == 0
        runs[flag] = out
    return folder, runs


@pytest.fixture(scope="module")
def colour_model(colour_runs):
    return colour_runs[1]["--color"]


def test_train_color_learns_an_rgb_folder_a_grey_model_cannot(colour_runs):
    _, runs = colour_runs
    scores = {}
    for flag, out in runs.items():
        summary = json.loads((out / "summary.json").read_text())
        assert summary["status"] == "completed"
        scores[flag] = (summary["val"]["iou"], summary["val"]["trivial_iou"])
        assert json.loads((out / "config.json").read_text())["color"] is (flag == "--color")
    assert json.loads((runs["--color"] / "model.json").read_text())["kwargs"]["in_channels"] == 3
    assert "in_channels" not in json.loads((runs["--no-color"] / "model.json").read_text())["kwargs"]
    iou, trivial = scores["--color"]
    assert iou > 0.9 and iou > trivial + 0.5  # colour alone tells the regions apart
    grey_iou, grey_trivial = scores["--no-color"]
    assert grey_iou < grey_trivial + 0.15  # their luminance is the same: a grey model cannot


# ----------------------------------------------------------------------------- predict

def test_predict_with_a_colour_model_reads_rgb_grey_rgba_and_16_bit(colour_model, tmp_path):
    model = load_model(colour_model)
    assert model.in_channels == 3 and color_for_channels(model.in_channels)
    rng = np.random.default_rng(1)
    rgb = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
    grey = (rng.random((40, 48)) * 255).astype(np.uint8)
    iio.imwrite(tmp_path / "rgb.png", rgb)
    iio.imwrite(tmp_path / "rgba.png", np.dstack([rgb, np.full((40, 48), 7, np.uint8)]))
    iio.imwrite(tmp_path / "grey.png", grey)
    iio.imwrite(tmp_path / "grey3.png", np.repeat(grey[..., None], 3, -1))
    iio.imwrite(tmp_path / "grey16.png", grey.astype(np.uint16) * 257)
    probs = {}
    for name in ("rgb", "rgba", "grey", "grey3", "grey16"):
        result = predict_file(model, tmp_path / f"{name}.png", tmp_path / "out")
        assert result.shape[:2] == (40, 48)
        probs[name] = np.load(tmp_path / "out" / f"{name}.prob.npy")
        assert read_labels(tmp_path / "out" / f"{name}.mask.png").shape == (40, 48)
    np.testing.assert_array_equal(probs["rgba"], probs["rgb"])  # alpha dropped
    np.testing.assert_array_equal(probs["grey"], probs["grey3"])  # grey repeated to three channels
    np.testing.assert_allclose(probs["grey16"], probs["grey"], atol=1e-5)  # 16-bit read as today
    # the API reads the same file the same way; a colour model is not fed luminance
    api = texseg.predict(model, tmp_path / "rgb.png")[0, 0].numpy()
    np.testing.assert_allclose(api, probs["rgb"], atol=1e-6)
    lum = texseg.predict(model, np.repeat(read_image(tmp_path / "rgb.png")[..., None], 3, -1))[0, 0].numpy()
    assert np.abs(lum - probs["rgb"]).max() > 1e-3


def test_predict_colour_model_separates_the_hue_regions_of_a_file(colour_runs, colour_model, tmp_path):
    folder, _ = colour_runs
    model = load_model(colour_model)
    predict_file(model, folder / "images" / "0.png", tmp_path)
    mask = read_labels(tmp_path / "0.mask.png")
    truth = iio.imread(folder / "masks" / "0.png") == 0  # 255 = label 0
    assert ((mask == 1) == truth).mean() > 0.9


def test_a_model_of_another_channel_count_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "m2").mkdir()
    save_model(create_model("cnn", in_channels=2), tmp_path / "m2", name="cnn",
               kwargs={"in_channels": 2, "num_classes": 1}, num_regions=2)
    iio.imwrite(tmp_path / "x.png", (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8))
    with pytest.raises(ValueError, match="takes 2 input channels; texseg reads images as 1 channel"):
        predict_file(load_model(tmp_path / "m2"), tmp_path / "x.png", tmp_path / "o")
    code, _, err = run_main(capsys, "predict", str(tmp_path / "m2"), str(tmp_path / "x.png"), "--out",
                            str(tmp_path / "o"))
    assert code != 0 and "takes 2 input channels" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "x.mask.png").exists()
    with pytest.raises(ValueError, match="images have 3 channel"):
        texseg.predict(create_model("cnn"), torch.rand(1, 3, 32, 32))


# ----------------------------------------------------------------------------- benchmark

def test_segmenters_take_colour_classical_on_luminance_models_on_their_channels(colour_model):
    images, _ = get_suite("real-color").load("test", 2)
    grey = as_channels(images, 1)
    assert grey.shape == (2, 1, 128, 128)
    assert torch.allclose(grey.amin(dim=(-2, -1)), torch.zeros(2, 1))
    assert torch.allclose(luminance(images), torch.einsum("bchw,c->bhw", images,
                                                          torch.tensor(LUMA, dtype=torch.float32))[:, None])
    method = LocalEnergy()
    assert torch.equal(method.segment(images, 2), method.segment(grey, 2))
    colour = ModelSegmenter(colour_model)
    out = colour.segment(images, 2)
    assert out.shape == (2, 1, 128, 128)
    assert torch.equal(colour.segment(grey, 2), colour.segment(grey.expand(-1, 3, -1, -1), 2))


def test_a_colour_folder_suite_is_read_in_colour_and_a_grey_one_as_before(tmp_path):
    from texseg.benchmark.suites import suite_from_folder

    spec = SceneSpec(32, color=True)
    export_dataset(spec, tmp_path / "rgb", 3, seed=1)
    export_dataset(SceneSpec(32), tmp_path / "grey", 3, seed=1)
    colour, grey = suite_from_folder(tmp_path / "rgb"), suite_from_folder(tmp_path / "grey")
    images, labels = colour.load()
    assert colour.color and images.shape == (3, 3, 32, 32) and colour.describe()["color"] is True
    assert (images - _gen(spec, 1, 3)[0]).abs().max() <= 1 / 255 + 1e-6
    assert not grey.color and grey.load()[0].shape == (3, 1, 32, 32) and "color" not in grey.describe()


def test_benchmark_runs_classical_methods_and_a_colour_network_on_real_color(colour_model, tmp_path):
    from texseg.benchmark import BenchmarkSettings, run_benchmark

    suite = get_suite("real-color")
    small = type(suite)(suite.name, suite.description, 2, 8, suite.spec, suite.seed)
    result = run_benchmark(["local-energy", str(colour_model)], [small], tmp_path, BenchmarkSettings(progress=False),
                           report=False)
    done = {c.segmenter: c for c in result.cells}
    assert {c.status for c in done.values()} == {"done"}
    assert all(len(c.per_image["miou"]) == 8 for c in done.values())


def test_texseg_eval_scores_a_colour_model_on_its_rgb_folder(colour_runs, capsys):
    folder, runs = colour_runs
    code, out, err = run_main(capsys, "eval", str(runs["--color"]), "--data", str(folder), "--json")
    assert code == 0, err
    assert json.loads(out)["metrics"]["iou"] > 0.9
