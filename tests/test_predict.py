"""`texseg predict` and texseg.predict on real image files: sizes, tiling, formats, bad files."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

import texseg
from conftest import run_main
from texseg.checkpoint import save_model
from texseg.data import SceneSpec, generate, target_from_labels
from texseg.data.folder import read_labels
from texseg.errors import ImageReadError
from texseg.inference import (
    labels_from_probs,
    predict_image,
    predict_tiled,
    read_image,
    tile_starts,
    weight_window,
)
from texseg.training.losses import create_loss


def _train_tiny_cnn(steps: int = 250, lr: float = 3e-3) -> torch.nn.Module:
    """A cnn trained briefly at the notebook's difficulty: not constant, not perfect.

    lr 3e-3: at 1e-2 whether it learns depended on the thread count (one thread: constant output).
    """
    torch.manual_seed(0)
    model = texseg.create_model("cnn", num_channels=8)
    opt = torch.optim.Adam(model.parameters(), lr)
    loss_fn = create_loss("bce")
    gen = torch.Generator().manual_seed(0)
    spec = SceneSpec.notebook(64, 0.2, 1.2, 12.8)
    for _ in range(steps):
        x, labels = generate(spec, 8, generator=gen)
        loss = loss_fn(model(x), target_from_labels(labels, 2))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _save_tiny_run(model: torch.nn.Module, tmp_path_factory) -> Path:
    """A run folder (model.json + weights) of the tiny cnn, in a fresh temporary folder."""
    d = tmp_path_factory.mktemp("run")
    save_model(model, d, name="cnn", kwargs={"num_channels": 8}, num_regions=2)
    return d


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return _train_tiny_cnn()


@pytest.fixture(scope="module")
def run_dir(model, tmp_path_factory):
    return _save_tiny_run(model, tmp_path_factory)


run = run_main


def _scene(n: int, seed: int, sigma: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    spec = SceneSpec.notebook(n, 0.2, 1.2, sigma or n / 5)
    x, labels = generate(spec, 1, generator=torch.Generator().manual_seed(seed))
    return x[0, 0].numpy(), labels[0, 0].numpy()


# ----------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("shape", [(37, 53), (16, 16), (53, 37), (130, 17)])
def test_api_returns_probabilities_at_the_input_size(model, shape):
    rng = np.random.default_rng(0)
    for x in (
        rng.random(shape),
        (rng.random(shape + (3,)) * 255).astype(np.uint8),
        Image.fromarray((rng.random(shape) * 255).astype(np.uint8)),
    ):
        p = texseg.predict(model, x)
        assert p.shape == (1, 1, *shape) and p.dtype == torch.float32
        assert float(p.min()) >= 0 and float(p.max()) <= 1
    for tile, scale in ((16, 1.0), (None, 0.7), (None, 1.9), (32, 1.3)):
        if min(round(shape[0] * scale), round(shape[1] * scale)) < 16:
            continue
        assert texseg.predict(model, rng.random(shape), tile=tile, scale=scale).shape == (1, 1, *shape)


def test_tensor_input_is_unchanged(model):
    x = torch.rand(3, 1, 37, 53)
    with torch.no_grad():
        expected = torch.sigmoid(model(x))
    assert torch.allclose(texseg.predict(model, x, precision="fp32"), expected, atol=1e-6)
    fp32 = texseg.predict(model, x, precision="fp32")
    assert torch.equal(texseg.predict(model, x, batch_size=2, precision="fp32"), fp32)
    assert not hasattr(texseg.checkpoint, "predict") and not hasattr(model, "predict")  # one predict path
    assert texseg.predict(model, x[0, 0]).shape == (1, 1, 37, 53)


def test_cli_outputs_have_the_exact_input_size(capsys, run_dir, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    iio.imwrite(src / "odd.png", (np.random.default_rng(1).random((37, 53)) * 255).astype(np.uint8))
    code, _, err = run(capsys, "predict", str(run_dir), str(src / "odd.png"), "--out", str(tmp_path / "o"))
    assert code == 0, err
    mask = read_labels(tmp_path / "o" / "odd.mask.png")
    prob = np.load(tmp_path / "o" / "odd.prob.npy")
    overlay = iio.imread(tmp_path / "o" / "odd.overlay.png")
    assert mask.shape == (37, 53) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    assert prob.shape == (37, 53) and prob.dtype == np.float32
    assert overlay.shape == (37, 53, 3)
    np.testing.assert_array_equal(mask, (prob <= 0.5).astype(np.uint8))  # label 0 = P(label 0) > 0.5


def test_k_region_model_writes_k_probability_planes(capsys, tmp_path):
    torch.manual_seed(0)
    m = texseg.create_model("cnn", num_classes=3, num_channels=4)
    (tmp_path / "run").mkdir()
    save_model(m, tmp_path / "run", name="cnn", kwargs={"num_classes": 3, "num_channels": 4}, num_regions=3)
    iio.imwrite(tmp_path / "a.png", (np.random.default_rng(2).random((40, 29)) * 255).astype(np.uint8))
    code, _, err = run(capsys, "predict", str(tmp_path / "run"), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"))
    assert code == 0, err
    prob = np.load(tmp_path / "o" / "a.prob.npy")
    assert prob.shape == (3, 40, 29)
    np.testing.assert_allclose(prob.sum(0), 1, atol=1e-5)
    assert read_labels(tmp_path / "o" / "a.mask.png").max() <= 2


# ----------------------------------------------------------------------------- tiling


def test_tiles_cover_the_image_and_end_on_the_border():
    for length, tile, overlap in ((1024, 256, 0.25), (1000, 256, 0.5), (100, 256, 0.25), (257, 256, 0.0)):
        starts = tile_starts(length, tile, overlap)
        t = min(tile, length)
        assert starts[0] == 0 and starts[-1] == length - t
        assert all(b - a <= t for a, b in itertools.pairwise(starts))  # no gap
    w = weight_window(64, 48)
    assert w.shape == (64, 48) and float(w.max()) == 1.0 and float(w.min()) >= 0.999e-3
    assert float(weight_window(32, 32, "ramp").min()) > 0
    with pytest.raises(ValueError, match="^window"):
        weight_window(8, 8, "box")


def test_tiled_and_whole_image_masks_agree_on_a_1024_scene(model):
    image, truth = _scene(1024, seed=5, sigma=64)
    whole = labels_from_probs(predict_image(model, image.copy(), tile=0))
    tiled = labels_from_probs(predict_image(model, image.copy(), tile=256, overlap=0.25))
    # The model must do something: neither constant nor random on this scene.
    assert 0.05 < (whole == 0).mean() < 0.95
    assert (whole == truth).mean() > 0.9  # a model that learnt the scene (how well varies with the torch build)
    agreement = (whole == tiled).mean()
    assert agreement >= 0.999, agreement


def test_tiled_probabilities_are_a_weighted_mean_without_seams(model):
    # With a model whose output depends on each pixel only (1x1 conv), tiling changes nothing.
    m = torch.nn.Conv2d(1, 1, 1)
    image = torch.rand(100, 70)
    tiled = predict_tiled(m, image, tile=32, overlap=0.3, precision="fp32")
    with torch.no_grad():
        whole = torch.sigmoid(m(image[None, None]))[0].numpy()
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_normalisation_is_over_the_whole_image_not_per_tile(model):
    # An affine change of intensities is undone by the whole-image min-max: same probabilities.
    image, _ = _scene(96, seed=3)
    a = predict_image(model, image.copy(), tile=32, precision="fp32")
    b = predict_image(model, image * 0.3 + 0.5, tile=32, precision="fp32")
    np.testing.assert_allclose(a, b, atol=1e-4)


# ----------------------------------------------------------------------------- formats


def _luma_rgb(gray8: np.ndarray) -> np.ndarray:
    """An RGB image whose BT.601 luminance is exactly ``gray8`` (R = G = B)."""
    return np.repeat(gray8[..., None], 3, axis=2)


def test_rgb_rgba_and_16_bit_files_read_as_the_same_luminance(tmp_path, model):
    rng = np.random.default_rng(4)
    gray8 = (rng.random((40, 50)) * 255).astype(np.uint8)
    rgba = np.dstack([_luma_rgb(gray8), (rng.random((40, 50)) * 255).astype(np.uint8)])  # alpha is ignored
    iio.imwrite(tmp_path / "g.png", gray8)
    iio.imwrite(tmp_path / "rgb.png", _luma_rgb(gray8))
    iio.imwrite(tmp_path / "rgba.png", rgba)
    iio.imwrite(tmp_path / "rgb.bmp", _luma_rgb(gray8))
    iio.imwrite(tmp_path / "g.jpg", gray8, quality=100)
    tifffile.imwrite(tmp_path / "g16.tif", gray8.astype(np.uint16) * 257)
    tifffile.imwrite(tmp_path / "g8.tiff", gray8)
    tifffile.imwrite(tmp_path / "rgb16.tif", _luma_rgb(gray8).astype(np.uint16) * 257)
    iio.imwrite(tmp_path / "g16.png", gray8.astype(np.uint16) * 257)
    ref = gray8 / 255
    for name in ("g.png", "rgb.png", "rgba.png", "rgb.bmp", "g16.tif", "g8.tiff", "rgb16.tif", "g16.png"):
        got = read_image(tmp_path / name)
        assert got.shape == (40, 50) and got.dtype == np.float32
        np.testing.assert_allclose(got, ref, atol=1e-5, err_msg=name)
    assert np.abs(read_image(tmp_path / "g.jpg") - ref).max() < 0.02  # lossy, but close
    # The real luminance weights: pure red, green and blue pixels.
    colours = np.zeros((16, 48, 3), np.uint8)
    colours[:, :16, 0] = colours[:, 16:32, 1] = colours[:, 32:, 2] = 255
    iio.imwrite(tmp_path / "c.png", colours)
    np.testing.assert_allclose(read_image(tmp_path / "c.png")[0, [0, 16, 32]], [0.299, 0.587, 0.114], atol=1e-6)
    # Same probabilities through the model for 8-bit gray, RGB and 16-bit.
    p = [texseg.predict(model, tmp_path / n) for n in ("g.png", "rgba.png", "g16.tif")]
    assert torch.allclose(p[0], p[1], atol=1e-5) and torch.allclose(p[0], p[2], atol=1e-5)


def test_numpy_and_pil_inputs_match_files(tmp_path, model):
    gray8 = (np.random.default_rng(5).random((33, 47)) * 255).astype(np.uint8)
    iio.imwrite(tmp_path / "g.png", gray8)
    from_file = texseg.predict(model, str(tmp_path / "g.png"))
    assert torch.allclose(texseg.predict(model, gray8), from_file, atol=1e-6)
    assert torch.allclose(texseg.predict(model, Image.fromarray(gray8)), from_file, atol=1e-6)
    assert torch.allclose(texseg.predict(model, gray8 / 255.0), from_file, atol=1e-5)
    assert torch.allclose(texseg.predict(model, Image.fromarray(gray8).convert("P")), from_file, atol=1e-5)
    kept = gray8.astype(np.float32)
    texseg.predict(model, kept)
    assert kept.max() == gray8.max()  # the caller's array is not normalised in place


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.zeros((20, 20, 5)), "C in 1..4"),
        (np.zeros((2, 20, 20, 1)), "shape"),
        (np.zeros((20, 20), dtype=complex), "dtype"),
        (np.full((20, 20), np.nan), "NaN"),
        (np.zeros((20, 8)), "at least 16x16"),
        ([[0.0] * 20] * 20, "numpy array"),
    ],
)
def test_api_refuses_what_it_cannot_read(model, bad, match):
    with pytest.raises(ValueError, match=match):
        texseg.predict(model, bad)


# ----------------------------------------------------------------------------- bad files


def _bad_files(folder):
    good = (np.random.default_rng(6).random((40, 40)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(good).save(buf, format="PNG")
    png = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(good).save(buf, format="JPEG")
    jpg = buf.getvalue()
    files = {
        "zero.png": b"",
        "text.png": b"this is not an image\n" * 10,
        "truncated.png": png[: len(png) // 2],
        "cut.jpg": jpg[: len(jpg) // 2],
        "garbage.tif": b"II*\x00" + bytes(range(256)) * 4,
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    iio.imwrite(folder / "tiny.png", good[:8, :8])
    iio.imwrite(folder / "good.png", good)
    return sorted(files) + ["tiny.png"]


def test_every_bad_file_kind_is_refused_by_name(tmp_path):
    for name in _bad_files(tmp_path):
        with pytest.raises(ImageReadError) as exc:
            read_image(tmp_path / name)
        assert str(tmp_path / name) in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "missing.png")


def test_cli_reports_each_bad_file_in_one_line_and_processes_the_rest(capsys, run_dir, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    bad = _bad_files(src)
    code, out, err = run(
        capsys,
        "predict",
        str(run_dir),
        str(src),
        str(tmp_path / "missing.png"),
        "--out",
        str(tmp_path / "o"),
        "--quiet",
    )
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == len(bad) + 1 and all(line.startswith("texseg: error: ") for line in lines)
    for name in bad + ["missing.png"]:
        assert sum(name in line for line in lines) == 1, name
    assert "Traceback" not in err
    assert (tmp_path / "o" / "good.mask.png").is_file() and "1 segmented" in out
    assert not list((tmp_path / "o").glob("zero.*")) and not list((tmp_path / "o").glob(".*tmp"))


def test_existing_outputs_are_kept_unless_overwrite(capsys, run_dir, tmp_path):
    img = tmp_path / "a.png"
    iio.imwrite(img, (np.random.default_rng(7).random((30, 30)) * 255).astype(np.uint8))
    out = tmp_path / "o"
    assert run(capsys, "predict", str(run_dir), str(img), "--out", str(out))[0] == 0
    (out / "a.mask.png").write_bytes(b"mine")
    code, stdout, _ = run(capsys, "predict", str(run_dir), str(img), "--out", str(out))
    assert code == 0 and "1 kept" in stdout and (out / "a.mask.png").read_bytes() == b"mine"
    (out / "a.overlay.png").unlink()  # a missing output is written, the others kept
    assert run(capsys, "predict", str(run_dir), str(img), "--out", str(out))[0] == 0
    assert (out / "a.overlay.png").is_file() and (out / "a.mask.png").read_bytes() == b"mine"
    assert run(capsys, "predict", str(run_dir), str(img), "--out", str(out), "--overwrite")[0] == 0
    assert read_labels(out / "a.mask.png").shape == (30, 30)


def test_cli_refuses_bad_options_in_one_line(capsys, run_dir, tmp_path):
    img = tmp_path / "a.png"
    iio.imwrite(img, np.zeros((20, 20), np.uint8))
    for args, match in (
        (["--tile", "8"], "--tile"),
        (["--scale", "0"], "--scale"),
        (["--overlap", "0.95"], "--overlap"),
    ):
        code, _, err = run(capsys, "predict", str(run_dir), str(img), "--out", str(tmp_path / "o"), *args)
        assert code == 2 and err.startswith(f"texseg: error: {match}") and len(err.splitlines()) == 1


def test_predict_takes_any_scale_and_common_layouts_of_a_tensor(model):
    """0..255 floats and uint8 are normalised per image as training images are; (1,H,W) and (H,W) work."""
    x = generate(SceneSpec(32, 6.4, (0.2, 1.2)), 2, generator=torch.Generator().manual_seed(0))[0]
    base = texseg.predict(model, x)
    assert torch.allclose(texseg.predict(model, x * 255), base, atol=1e-5)
    quantised = texseg.predict(model, (x * 255).round().to(torch.uint8))  # 8-bit steps move a few pixels
    assert (quantised - base).abs().mean() < 0.01 and ((quantised > 0.5) == (base > 0.5)).float().mean() > 0.99
    assert texseg.predict(model, x[0]).shape == (1, 1, 32, 32)
    with pytest.raises(ValueError, match="colour images: pass a numpy array"):
        texseg.predict(model, torch.rand(1, 3, 32, 32))


def test_predict_off_a_terminal_writes_plain_progress_lines(capsys, run_dir, tmp_path):
    for i in range(3):
        iio.imwrite(tmp_path / f"p{i}.png", (np.random.default_rng(i).random((24, 24)) * 255).astype(np.uint8))
    code, stdout, err = run(capsys, "predict", str(run_dir), *(str(tmp_path / f"p{i}.png") for i in range(3)),
                            "--out", str(tmp_path / "o"))
    assert code == 0 and "3 segmented" in stdout
    assert "\r" not in err and "image 3  100%" in err  # one line per step of progress, as `texseg train` writes


def test_predict_on_a_busy_machine_uses_the_free_cores(capsys, run_dir, tmp_path, monkeypatch):
    """Threads that share their cores with other programs wait for each other: predict takes the free ones."""
    from texseg import threads

    iio.imwrite(tmp_path / "p.png", (np.random.default_rng(0).random((24, 24)) * 255).astype(np.uint8))
    monkeypatch.setattr(threads, "busy_cores", lambda *a, **k: 64.0)  # every core taken by other programs
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        code, stdout, _ = run(capsys, "predict", str(run_dir), str(tmp_path / "p.png"), "--out", str(tmp_path / "o"))
        assert code == 0 and "1 segmented" in stdout and torch.get_num_threads() == 1
        torch.set_num_threads(2)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's own setting decides
        code, _, _ = run(capsys, "predict", str(run_dir), str(tmp_path / "p.png"), "--out", str(tmp_path / "o2"))
        assert code == 0 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
