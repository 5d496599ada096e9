"""texseg's one image reader under hostile files: every place that opens an image refuses the same way.

predict, `train --data` folders, benchmark folder suites and mosaic texture folders all
read through :mod:`texseg.images`; each test feeds a file that once got through one of them.
"""

from __future__ import annotations

import io

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from PIL import Image

import texseg.images
from texseg.benchmark.suites import SuiteError, resolve_suite
from texseg.data.color import as_channels
from texseg.data.folder import validate_folder
from texseg.data.mosaic import texture_pool
from texseg.errors import DataError, ImageReadError
from texseg.images import MAX_PIXELS, read_image, read_layout


def tiff_bomb(path, side: int = 61440) -> None:
    """A 560-byte tiled zlib TIFF whose header declares side x side pixels (a decompression bomb)."""
    tifffile.imwrite(path, np.zeros((64, 64), np.uint8), tile=(16, 16), compression="zlib")
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages[0].tags["ImageWidth"].overwrite(side)
        tif.pages[0].tags["ImageLength"].overwrite(side)


def corrupt_tiff(path) -> None:
    """A zlib TIFF whose compressed data is byte-flipped (zlib: 'Error -3 while decompressing data')."""
    tifffile.imwrite(path, (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8), compression="zlib")
    with tifffile.TiffFile(path) as tif:
        off, n = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
    data = bytearray(path.read_bytes())
    for i in range(off + 10, off + n - 10, 7):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _gray(seed: int = 0, shape=(32, 32)) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)


def test_a_tiff_bomb_is_refused_from_its_header_without_decoding(tmp_path):
    bomb = tmp_path / "bomb.tif"
    tiff_bomb(bomb)
    assert bomb.stat().st_size < 4096
    assert read_layout(bomb).pixels == 61440**2  # the header alone
    with pytest.raises(ImageReadError, match=r"bomb\.tif: 61440x61440 is 3,774,873,600 pixels, over the limit "
                                             r"of 1,073,741,824") as e:
        read_image(bomb)
    assert "`max_pixels`" in str(e.value) and "\n" not in str(e.value)


def test_without_the_pixel_limit_the_memory_left_decides_before_decoding(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.tif"
    tiff_bomb(bomb)
    monkeypatch.setattr(texseg.images, "cpu_available_bytes", lambda: 2**30)
    with pytest.raises(ImageReadError, match=r"bomb\.tif: reading its 61440x61440 pixels needs about 31\.6 GiB "
                                             r"but only 1\.0 GiB"):
        read_image(bomb, max_pixels=None)


def test_one_pixel_limit_for_every_format_with_an_override(tmp_path, monkeypatch):
    # Pillow's own bomb threshold is not texseg's limit: an image over it reads (the docs
    # promise any size up to MAX_PIXELS), and max_pixels refuses PNG and TIFF alike.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 64x64 = 4096 > 2 x 500: Pillow's error
    a = _gray(1, (64, 64))
    iio.imwrite(tmp_path / "a.png", a)
    tifffile.imwrite(tmp_path / "a.tif", a)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), read_image(tmp_path / "a.tif"))
    assert Image.MAX_IMAGE_PIXELS == 500  # restored after the read
    for name in ("a.png", "a.tif"):
        with pytest.raises(ImageReadError, match=rf"{name}: 64x64 is 4,096 pixels, over the limit of 4,000 "):
            read_image(tmp_path / name, max_pixels=4000)
        assert read_image(tmp_path / name, max_pixels=4096).shape == (64, 64)
    assert MAX_PIXELS == 2**30


def test_corrupt_tiff_data_is_cannot_decode_naming_the_file(tmp_path):
    bad = tmp_path / "flipped.tif"
    corrupt_tiff(bad)
    with pytest.raises(ImageReadError, match=r"flipped\.tif: cannot decode \(Error -3 while decompressing"):
        read_image(bad)


def test_odd_channel_counts_and_nan_are_refused_clearly(tmp_path):
    tifffile.imwrite(tmp_path / "five.tif", np.zeros((32, 32, 5), np.uint8), photometric="minisblack",
                     planarconfig="contig")
    with pytest.raises(ImageReadError, match=r"five\.tif: 5 channels; texseg reads gray \(1\), gray\+alpha \(2\)"):
        read_image(tmp_path / "five.tif")
    nan = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    nan[3, 3] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", nan)
    with pytest.raises(ImageReadError, match=r"nan\.tif contains NaN"):
        read_image(tmp_path / "nan.tif")


def test_color_is_kept_when_asked_luminance_by_default(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "c.png", rgb)
    color = read_image(tmp_path / "c.png", color=True)
    assert color.shape == (20, 24, 3) and color.dtype == np.float32
    np.testing.assert_allclose(color, rgb / 255, atol=1e-6)
    np.testing.assert_allclose(read_image(tmp_path / "c.png"), (rgb / 255) @ [0.299, 0.587, 0.114], atol=1e-5)


# ----------------------------------------------------------------------------- every caller


def _suite(tmp_path, images: dict[str, np.ndarray | bytes], masks: dict[str, np.ndarray]):
    root = tmp_path / "suite"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for name, data in images.items():
        if isinstance(data, bytes):
            (root / "images" / name).write_bytes(data)
        elif name.endswith(".tif"):
            tifffile.imwrite(root / "images" / name, data)
        else:
            iio.imwrite(root / "images" / name, data)
    for name, mask in masks.items():
        iio.imwrite(root / "masks" / name, mask)
    return root


def _half_mask(values=(0, 255)) -> np.ndarray:
    m = np.full((32, 32), values[0], np.uint8)
    m[:, 16:] = values[1]
    return m


def test_a_folder_suite_reads_colour_as_the_same_luminance_as_predict(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    root = _suite(tmp_path, {"a.png": rgb}, {"a.png": _half_mask()})
    images, _ = resolve_suite(root).load()
    assert images.shape == (1, 3, 32, 32)  # a colour folder is read in colour (issue 25)
    expected = read_image(root / "images" / "a.png")
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    # what a grey model or a classical method sees of it: the luminance predict reads
    grey = as_channels(images, 1)
    np.testing.assert_allclose(grey[0, 0].numpy(), expected, atol=1e-5)  # not the plain channel mean


def test_a_folder_suite_refuses_masks_that_are_not_labels(tmp_path):
    root = _suite(tmp_path, {"a.png": _gray()}, {"a.png": _half_mask((0, 5))})
    with pytest.raises(SuiteError, match=r"suite: the labels are 0, 5, so label\(s\) 1, 2, 3, 4 never appear"):
        resolve_suite(root)


@pytest.mark.parametrize("case", ["nan", "five", "bomb", "truncated", "flipped"])
def test_a_folder_suite_refuses_what_predict_refuses_naming_the_file(tmp_path, case):
    nan = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    nan[0, 0] = np.nan
    buf = io.BytesIO()
    Image.fromarray(_gray()).save(buf, format="PNG")
    images = {"nan": {"a.tif": nan}, "five": {"a.tif": np.zeros((32, 32, 5), np.uint8)},
              "truncated": {"a.png": buf.getvalue()[:300]}, "bomb": {"a.tif": _gray()},
              "flipped": {"a.tif": _gray()}}[case]
    root = _suite(tmp_path, images, {"a.png": _half_mask()})
    name = next(iter(images))
    if case == "bomb":
        tiff_bomb(root / "images" / name)
    if case == "flipped":
        corrupt_tiff(root / "images" / name)
    suite = resolve_suite(root)
    with pytest.raises(SuiteError) as e:
        suite.load()
    assert str(root / "images" / name) in str(e.value) and "\n" not in str(e.value)


def test_train_data_folders_report_bombs_and_corrupt_tiffs_as_file_problems(tmp_path):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for stem in ("bomb", "flipped", "good"):
        iio.imwrite(root / "labels" / f"{stem}.png", _half_mask((0, 1)))
    tiff_bomb(root / "images" / "bomb.tif")
    corrupt_tiff(root / "images" / "flipped.tif")
    tifffile.imwrite(root / "images" / "good.tif", _gray())
    with pytest.raises(DataError) as e:
        validate_folder(root)
    lines = str(e.value).splitlines()
    assert lines[0] == f"2 problem(s) in {root}:"
    assert "bomb.tif: 61440x61440" in lines[1] and "flipped.tif: cannot decode (Error -3" in lines[2]


def test_mosaic_texture_folders_use_the_same_reader(tmp_path):
    tiff_bomb(tmp_path / "bomb.tif")
    with pytest.raises(ImageReadError, match=r"bomb\.tif: 61440x61440"):
        texture_pool(str(tmp_path))


def test_benchmark_takes_the_pixel_limit_flag_for_folder_suites(capsys, tmp_path):
    from conftest import run_main

    root = _suite(tmp_path, {"a.png": _gray()}, {"a.png": _half_mask()})
    code, _, err = run_main(capsys, "benchmark", "--segmenters", "local-energy", "--suites", str(root),
                            "--out", str(tmp_path / "b"), "--max-pixels", "1000", "--quiet")
    assert code == 2 and "a.png: 32x32 is 1,024 pixels, over the limit of 1,000" in err, err
    assert "raise --max-pixels" in err
