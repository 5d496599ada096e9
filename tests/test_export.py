"""ONNX export: onnxruntime gives PyTorch's masks at any size; `texseg export` and `predict model.onnx`."""

from __future__ import annotations

import os
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import torch

import texseg
from conftest import run_main
from test_predict import _save_tiny_run, _scene, _train_tiny_cnn
from texseg.data.folder import read_labels
from texseg.errors import CheckpointError
from texseg.inference.embedding import segment_embedded
from texseg.inference.onnx import load_onnx
from texseg.inference.predict import labels_from_probs, predict_image

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

run = run_main


@pytest.fixture(scope="module")
def trained():
    return _train_tiny_cnn()


@pytest.fixture(scope="module")
def run_dir(trained, tmp_path_factory):
    return _save_tiny_run(trained, tmp_path_factory)


@pytest.mark.parametrize(("name", "kwargs"), [("cnn", {}), ("unet", {}), ("unet", {"num_classes": 3}),
                                              ("seed-cnn", {})])
def test_onnx_masks_equal_pytorch_masks_at_any_size(tmp_path, name, kwargs):
    torch.manual_seed(0)
    model = texseg.create_model(name, **kwargs).eval()
    path = texseg.export_onnx(model, tmp_path / "m.onnx")
    onnx = load_onnx(path)
    for shape in ((37, 53), (130, 96)):  # dynamic height and width, neither a multiple of the U-Net's 8
        image = np.random.default_rng(1).random(shape).astype(np.float32)
        ref = labels_from_probs(predict_image(model, image.copy(), precision="fp32"))
        got = labels_from_probs(predict_image(onnx, image.copy()))
        assert (ref == got).mean() >= 0.999, shape
    batch = torch.rand(3, 1, 40, 24)  # dynamic batch
    with torch.no_grad():
        np.testing.assert_allclose(onnx(batch).numpy(), model(batch).numpy(), atol=1e-4)


def test_general_embedding_net_exports_and_groups_the_same(tmp_path):
    general = texseg.load_pretrained("general")
    onnx = load_onnx(texseg.export_onnx(general, tmp_path / "general.onnx"))
    assert onnx.outputs == "embeddings" and onnx.run_info["name"] == "texnet"
    image, _ = _scene(160, seed=4, sigma=40)
    ref = segment_embedded(general, image.copy(), regions=2, precision="fp32")
    got = segment_embedded(onnx, image.copy(), regions=2)
    assert (ref == got).mean() >= 0.999 or (ref == 1 - got).mean() >= 0.999


def test_cli_export_then_predict_the_onnx_file(capsys, run_dir, trained, tmp_path):
    image, _ = _scene(200, seed=3, sigma=40)
    iio.imwrite(tmp_path / "a.png", (image * 255).astype(np.uint8))
    out = tmp_path / "m.onnx"
    code, stdout, err = run(capsys, "export", str(run_dir), "--format", "onnx", "--out", str(out))
    assert code == 0 and out.is_file() and "wrote" in stdout, err
    code, _, err = run(capsys, "predict", str(out), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"))
    assert code == 0, err
    onnx_mask = read_labels(tmp_path / "o" / "a.mask.png")
    code, _, err = run(capsys, "predict", str(run_dir), str(tmp_path / "a.png"), "--out", str(tmp_path / "p"),
                       "--precision", "fp32")
    assert code == 0, err
    assert (onnx_mask == read_labels(tmp_path / "p" / "a.mask.png")).mean() >= 0.999
    code, _, _ = run(capsys, "export", str(run_dir))  # default: RUN/model.onnx
    assert code == 0 and (run_dir / "model.onnx").is_file()


def test_cli_export_bad_input_is_one_line_and_keeps_what_exists(capsys, run_dir, tmp_path):
    existing = tmp_path / "keep.onnx"
    existing.write_bytes(b"an earlier export")
    (tmp_path / "empty").mkdir()
    for args, match in (
        ([str(run_dir), "--format", "tflite", "--out", str(existing)], "--format must be one of onnx"),
        ([str(tmp_path / "empty"), "--out", str(existing)], "model.json"),
        ([str(run_dir), "--out", str(tmp_path / "no" / "such" / "m.onnx")], "--out"),
    ):
        code, _, err = run(capsys, "export", *args)
        assert code != 0 and err.startswith("texseg: error:") and len(err.splitlines()) == 1, err
        assert match in err, err
    assert existing.read_bytes() == b"an earlier export"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("keep")] == ["keep.onnx"]  # no temp files


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_cli_export_to_an_unwritable_folder_is_one_line(capsys, run_dir, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        code, _, err = run(capsys, "export", str(run_dir), "--out", str(ro / "m.onnx"))
        assert code != 0 and "not writable" in err and len(err.splitlines()) == 1
    finally:
        ro.chmod(0o700)


def test_missing_onnxruntime_is_one_clear_error(monkeypatch, tmp_path, capsys):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(CheckpointError, match=r"onnxruntime is not installed; install the ONNX extra"):
        load_onnx(path)
    iio.imwrite(tmp_path / "a.png", np.zeros((20, 20), np.uint8))
    code, _, err = run(capsys, "predict", str(path), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"))
    assert code != 0 and "onnxruntime is not installed" in err and len(err.splitlines()) == 1


def test_a_file_that_is_not_onnx_is_refused_in_one_line(capsys, tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"not a graph")
    iio.imwrite(tmp_path / "a.png", np.zeros((20, 20), np.uint8))
    code, _, err = run(capsys, "predict", str(path), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"))
    assert code != 0 and "is not an ONNX model" in err and len(err.splitlines()) == 1
