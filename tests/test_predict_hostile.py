"""`texseg predict` under hostile use: outputs that are inputs, stop signals, memory it cannot have."""

from __future__ import annotations

import os
import signal
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import torch

import texseg
import texseg.device
import texseg.images
from conftest import run_main
from texseg.checkpoint import save_model
from texseg.inference import predict_tiled
from texseg.signals import Interrupted, catch_stop_signals

P = sys.modules["texseg.inference.predict"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = texseg.create_model("cnn", num_channels=8)
    d = tmp_path_factory.mktemp("run")
    save_model(model, d, name="cnn", kwargs={"num_channels": 8}, num_regions=2)
    return d


def _png(path, seed: int = 0, shape=(40, 40)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, (np.random.default_rng(seed).random(shape) * 255).astype(np.uint8))


# ----------------------------------------------------------------------------- 1. outputs never replace inputs


@pytest.mark.parametrize("extra", [[], ["--overwrite"]])
def test_an_input_folder_is_refused_as_out_and_the_users_files_are_untouched(capsys, run_dir, tmp_path, extra):
    same = tmp_path / "same"
    _png(same / "a.png", 0)
    _png(same / "a.mask.png", 1)  # the user's own file, named like an output
    before = {p.name: p.read_bytes() for p in same.iterdir()}
    code, _, err = run_main(capsys, "predict", str(run_dir), str(same), "--out", str(same), "--quiet", *extra)
    assert code == 2 and err.startswith("texseg: error: --out ") and "also an input folder" in err
    assert len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in same.iterdir()} == before


def test_an_output_that_is_an_input_file_is_refused_for_that_file(capsys, run_dir, tmp_path):
    d = tmp_path / "d"
    _png(d / "a.png", 0)
    _png(d / "a.mask.png", 1)
    mine = (d / "a.mask.png").read_bytes()
    code, out, err = run_main(capsys, "predict", str(run_dir), str(d / "a.png"), str(d / "a.mask.png"),
                              "--out", str(d), "--overwrite", "--quiet")
    assert code == 2 and (d / "a.mask.png").read_bytes() == mine
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "a.png: its output" in lines[0] and "is also an input; choose another --out" in lines[0]
    assert "1 segmented" in out  # a.mask.png itself, as the explicit input it is


def test_texsegs_own_outputs_in_an_input_folder_are_not_read_as_inputs(capsys, run_dir, tmp_path):
    src, first, second = tmp_path / "in", tmp_path / "o1", tmp_path / "o2"
    _png(src / "a.png")
    assert run_main(capsys, "predict", str(run_dir), str(src), "--out", str(first), "--quiet")[0] == 0
    for p in first.iterdir():  # the outputs end up next to the images
        (src / p.name).write_bytes(p.read_bytes())
    code, out, _ = run_main(capsys, "predict", str(run_dir), str(src), "--out", str(second), "--quiet")
    assert code == 0 and "1 segmented" in out and "2 of texseg's own outputs skipped" in out
    assert sorted(p.name for p in second.iterdir()) == ["a.mask.png", "a.overlay.png", "a.prob.npy"]


def test_predict_file_refuses_to_write_over_its_input(run_dir, tmp_path):
    model = texseg.load_model(run_dir)
    _png(tmp_path / "x.png")
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "x.mask.png").symlink_to(tmp_path / "x.png")  # an output that *is* the input
    before = (tmp_path / "x.png").read_bytes()
    with pytest.raises(ValueError, match=r"x\.png: its output x\.mask\.png would replace the input itself"):
        texseg.predict_file(model, tmp_path / "x.png", tmp_path / "o", texseg.PredictSettings(overwrite=True))
    assert (tmp_path / "x.png").read_bytes() == before


# ----------------------------------------------------------------------------- 3. stop signals


class _SignalOnForward(torch.nn.Module):
    """Sends this process SIGINT during its first forward pass, and counts its passes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return self.conv(x)


def test_tiled_prediction_stops_between_window_batches():
    model = _SignalOnForward().eval()
    with catch_stop_signals(), pytest.raises(Interrupted):
        predict_tiled(model, torch.rand(256, 256), 32, 0.25, batch_size=2)
    assert model.calls == 1  # 100 windows, stopped after the first batch


def test_the_cli_stops_between_files_exit_130(capsys, run_dir, tmp_path, monkeypatch):
    for i in range(5):
        _png(tmp_path / "in" / f"{i}.png", i)
    real, calls = P.predict_file, []

    def first_file_gets_a_sigterm(*args, **kwargs):
        calls.append(args[1])
        result = real(*args, **kwargs)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(P, "predict_file", first_file_gets_a_sigterm)
    code, out, err = run_main(capsys, "predict", str(run_dir), str(tmp_path / "in"), "--out", str(tmp_path / "o"),
                              "--quiet")
    assert code == 130 and "interrupted by SIGTERM" in err and "Traceback" not in err
    assert len(calls) == 1 and "1 segmented" in out and "stopped early" in out
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["0.mask.png", "0.overlay.png", "0.prob.npy"]


# ----------------------------------------------------------------------------- 5. memory


@pytest.mark.parametrize("scale", ["1000", "1e300"])
def test_a_scale_that_cannot_fit_is_one_line_naming_scale_and_the_rest_goes_on(capsys, run_dir, tmp_path, scale):
    _png(tmp_path / "in" / "a.png", 0, (64, 64))
    _png(tmp_path / "in" / "b.png", 1, (64, 64))
    code, out, err = run_main(capsys, "predict", str(run_dir), str(tmp_path / "in" / "a.png"),
                              str(tmp_path / "in" / "b.png"), "--out", str(tmp_path / "o"), "--scale", scale,
                              "--quiet")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 2 and "Traceback" not in err, err
    assert all("--scale" in line and "internal error" not in line for line in lines)
    assert "2 failed" in out and not list((tmp_path / "o").glob("*.npy"))


def _limit_memory(monkeypatch, nbytes: int) -> None:
    monkeypatch.setattr(texseg.device, "cpu_available_bytes", lambda: nbytes)
    monkeypatch.setattr(texseg.images, "cpu_available_bytes", lambda: nbytes)


def test_whole_image_prediction_is_estimated_first_and_names_tile(capsys, run_dir, tmp_path, monkeypatch):
    _png(tmp_path / "big.png", 0, (1024, 1024))
    _png(tmp_path / "small.png", 1, (40, 40))
    _limit_memory(monkeypatch, 60 * 2**20)
    code, out, err = run_main(capsys, "predict", str(run_dir), str(tmp_path / "big.png"), str(tmp_path / "small.png"),
                              "--out", str(tmp_path / "o"), "--tile", "0", "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "big.png (1024x1024) whole needs about" in err and "use a smaller --scale or a --tile such as 512" in err
    assert "1 segmented" in out and (tmp_path / "o" / "small.mask.png").is_file()
    # In windows the same image fits.
    assert run_main(capsys, "predict", str(run_dir), str(tmp_path / "big.png"), "--out", str(tmp_path / "o"),
                    "--tile", "128", "--quiet")[0] == 0


@pytest.mark.parametrize("extra,gabor", [([], False), (["--regions", "2", "--gabor-weight", "1"], True)])
def test_the_general_model_is_refused_when_grouping_would_not_fit(capsys, tmp_path, monkeypatch, extra, gabor):
    """The estimate counts what grouping the embeddings holds (measured 343 bytes per pixel at 2048x2048,
    426 with the Gabor energies), not only the network's forward pass (233): with memory between the two,
    the image is refused before it is decoded."""
    from texseg.checkpoint import load_pretrained
    from texseg.inference.predict import estimate_predict_bytes

    model = load_pretrained("general")
    grouped = estimate_predict_bytes(model, 2048, 2048, tile=0, gabor=gabor)  # predicted whole, as predict does
    assert grouped >= (426 if gabor else 343) * 2048 * 2048  # the peaks measured above
    _png(tmp_path / "big.png", 0, (2048, 2048))
    _limit_memory(monkeypatch, int(0.95 * grouped))
    code, out, err = run_main(capsys, "predict", "texseg:general", str(tmp_path / "big.png"), "--out",
                              str(tmp_path / "o"), "--quiet", *extra)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "big.png (2048x2048) whole needs about" in err and not (tmp_path / "o" / "big.mask.png").exists()


def test_a_memory_failure_on_one_file_does_not_abort_the_others(capsys, run_dir, tmp_path, monkeypatch):
    _png(tmp_path / "in" / "a.png", 0)
    _png(tmp_path / "in" / "b.png", 1)
    real = P.predict_file

    def failing_on_a(model, path, *args, **kwargs):
        if path.name == "a.png":
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory")
        return real(model, path, *args, **kwargs)

    monkeypatch.setattr(P, "predict_file", failing_on_a)
    code, out, err = run_main(capsys, "predict", str(run_dir), str(tmp_path / "in"), "--out", str(tmp_path / "o"),
                              "--quiet")
    assert code == 2 and "internal error" not in err and "a.png: not enough memory" in err
    assert "1 segmented" in out and (tmp_path / "o" / "b.mask.png").is_file()


def test_the_pixel_limit_flag_applies_to_predict(capsys, run_dir, tmp_path):
    _png(tmp_path / "a.png", 0, (64, 64))
    code, _, err = run_main(capsys, "predict", str(run_dir), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"),
                            "--max-pixels", "1000", "--quiet")
    assert code == 2 and "over the limit" in err and "raise --max-pixels" in err
    assert run_main(capsys, "predict", str(run_dir), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"),
                    "--max-pixels", "0", "--quiet")[0] == 0


def test_bombs_and_corrupt_tiffs_are_one_line_each_and_the_rest_is_segmented(capsys, run_dir, tmp_path):
    from test_images import corrupt_tiff, tiff_bomb

    src = tmp_path / "in"
    _png(src / "good.png")
    tiff_bomb(src / "bomb.tif")
    corrupt_tiff(src / "flipped.tif")
    code, out, err = run_main(capsys, "predict", str(run_dir), str(src), "--out", str(tmp_path / "o"), "--quiet")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 2 and "internal error" not in err, err
    assert "bomb.tif: 61440x61440 is 3,774,873,600 pixels, over the limit" in lines[0] and "--max-pixels" in lines[0]
    assert "flipped.tif: cannot decode (Error -3 while decompressing data" in lines[1]
    assert "1 segmented" in out and (tmp_path / "o" / "good.mask.png").is_file()
