"""Texture families, intensity changes and real-texture mosaics: their statistics and contracts."""

from __future__ import annotations

import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from texseg.data import SceneSpec, generate
from texseg.data.mosaic import BUILTIN_TEXTURES, fill_mosaic, split_names, texture_pool
from texseg.data.textures import (
    bandpass_amplitude,
    filter_noise,
    intensity_transform,
    oriented_amplitude,
    powerlaw_amplitude,
    radial_power,
    spectral_orientation,
    standardize,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def noise() -> torch.Tensor:
    return torch.randn(16, 1, 128, 128, generator=gen(0))


@pytest.mark.parametrize("beta", [1.0, 2.0, 3.0])
def test_powerlaw_spectrum_has_slope_minus_beta(noise, beta):
    f, p = radial_power(filter_noise(noise, powerlaw_amplitude(128, beta)))
    slope = np.polyfit(np.log(f.numpy()), np.log(p.numpy()), 1)[0]
    assert slope == pytest.approx(-beta, abs=0.15)


@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0, 135.0])
def test_oriented_texture_streaks_follow_the_angle(noise, angle):
    got = spectral_orientation(filter_noise(noise, oriented_amplitude(128, 1.5, 4.0, angle)))
    assert min(abs(got - angle), 180 - abs(got - angle)) < 3


def test_isotropic_texture_has_no_dominant_orientation(noise):
    # The moments of an isotropic spectrum are (nearly) equal: compare the two spreads.
    t = filter_noise(noise, oriented_amplitude(128, 1.5, 1.0, 0.0))
    power = (torch.fft.fft2(t.double()).abs() ** 2).mean((0, 1))
    fy = torch.fft.fftfreq(128, dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(128, dtype=torch.float64)[None, :]
    assert float((power * fx**2).sum() / (power * fy**2).sum()) == pytest.approx(1, abs=0.05)


@pytest.mark.parametrize("f0", [0.05, 0.15, 0.3])
def test_bandpass_energy_sits_in_its_band(noise, f0):
    t = filter_noise(noise, bandpass_amplitude(128, f0, 0.25))
    f, p = radial_power(t, bins=64)
    assert float(f[p.argmax()]) == pytest.approx(f0, rel=0.1)
    band = (f > f0 * 0.5) & (f < f0 * 1.5)
    assert float(p[band].sum() / p.sum()) > 0.9


def test_oriented_bandpass_is_gabor_like(noise):
    got = spectral_orientation(filter_noise(noise, bandpass_amplitude(128, 0.15, 0.25, angle=45.0)))
    assert abs(got - 45) < 3


def test_intensity_transform_sets_mean_contrast_and_a_monotone_non_gaussian_marginal(noise):
    t = standardize(noise)
    out = intensity_transform(t, mean=2.0, contrast=3.0)
    assert float(out.mean()) == pytest.approx(2.0, abs=1e-4) and float(out.std()) == pytest.approx(3.0, rel=1e-3)
    skewed = intensity_transform(t, gamma=4.0)
    flat = skewed.flatten()
    skewness = float(((flat - flat.mean()) ** 3).mean() / flat.std() ** 3)
    assert skewness > 0.5  # a Gaussian has 0
    order = torch.argsort(t[0].flatten())  # the remap is per image: check the order within one
    assert bool((skewed[0].flatten()[order].diff() >= -1e-6).all())  # monotone
    uniform = intensity_transform(t, gamma=1.0).flatten()
    kurtosis = float(((uniform - uniform.mean()) ** 4).mean() / uniform.var() ** 2)
    assert kurtosis == pytest.approx(1.8, abs=0.05)  # the uniform law's, not the Gaussian's 3


def test_default_scene_is_still_the_notebook_recipe():
    spec = SceneSpec(64, 12.8, (1.0, 0.2))
    a = generate(spec, 2, generator=gen(3))
    b = generate(SceneSpec.from_dict(spec.to_dict()), 2, generator=gen(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("family", ["oriented", "powerlaw", "bandpass"])
def test_families_share_the_partitions_and_are_normalised(family):
    base_img, base_lab = generate(SceneSpec(64, 12.8, (1.0, 2.0, 3.0)), 2, generator=gen(4))
    img, lab = generate(SceneSpec(64, 12.8, (1.0, 2.0, 3.0), texture=family), 2, generator=gen(4))
    assert torch.equal(lab, base_lab) and not torch.equal(img, base_img)
    assert torch.allclose(img.amin((-2, -1)), torch.zeros(2, 1)) and torch.allclose(
        img.amax((-2, -1)), torch.ones(2, 1)
    )


def test_region_means_separate_regions():
    spec = SceneSpec(64, 12.8, (1.0, 1.0), means=(0.0, 4.0))
    img, lab = generate(spec, 4, generator=gen(5))
    assert float(img[lab == 1].mean()) - float(img[lab == 0].mean()) > 0.3


def test_new_fields_round_trip_and_are_checked():
    spec = SceneSpec(
        32,
        5.0,
        (1.0, 2.0),
        texture="bandpass",
        frequencies=(0.1, 0.2),
        orientations=(0, 90),
        gammas=(1, 2),
        means=(0, 1),
        contrasts=(1, 2),
        bandwidth=0.3,
    )
    assert SceneSpec.from_dict(spec.to_dict()) == spec
    assert SceneSpec.from_dict({"image_size": 32}) == SceneSpec(32)  # old model.json files still load
    for kwargs, match in (
        ({"texture": "plaid"}, "^texture must be one of"),
        ({"betas": (1.0,)}, "^betas must list one number per region"),
        ({"frequencies": (0.1, 0.7)}, r"^frequencies\[1\]"),
        ({"anisotropy": 0.5}, "^anisotropy"),
        ({"texture": "mosaic"}, "^textures must be"),
        ({"max_zoom": 1.0}, "^max_zoom"),
        ({"texture_split": "val"}, "^texture_split"),
    ):
        with pytest.raises(ValueError, match=match):
            SceneSpec(32, 5.0, (1.0, 2.0), **kwargs)


# ----------------------------------------------------------------------------- mosaics


def test_builtin_textures_ship_with_scikit_image():
    pool = texture_pool("builtin")
    assert [n for n, _ in pool] == sorted(BUILTIN_TEXTURES)
    for _, t in pool:
        assert t.ndim == 2 and min(t.shape) >= 256 and 0 <= float(t.min()) < float(t.max()) <= 1


def test_builtin_mosaic_is_seed_exact_on_the_same_partitions():
    spec = SceneSpec(64, 12.8, (1.0, 1.0, 1.0), texture="mosaic", textures="builtin")
    img, lab = generate(spec, 3, generator=gen(6))
    again, lab2 = generate(spec, 3, generator=gen(6))
    assert torch.equal(img, again) and torch.equal(lab, lab2)
    base_lab = generate(SceneSpec(64, 12.8, (1.0, 1.0, 1.0)), 3, generator=gen(6))[1]
    assert torch.equal(lab, base_lab)  # the same random partitions as the Gaussian scenes


def test_each_region_is_an_exact_crop_of_a_different_texture():
    # Textures whose pixel values say which texture (integer part) and where (fraction).
    h, w = 80, 90
    pos = (torch.arange(h)[:, None] * w + torch.arange(w)[None, :]).float() / (h * w)
    pool = [(f"t{k}", k + pos) for k in range(4)]
    labels = generate(SceneSpec(32, 6.0, (1.0, 1.0, 1.0)), 4, generator=gen(9))[1]
    image = fill_mosaic(labels, 3, pool, gen(10))
    for i in range(4):
        used = []
        for region in range(3):
            sel = labels[i, 0] == region
            if not bool(sel.any()):
                continue
            values = image[i, 0][sel]
            ids = values.floor().unique()
            assert len(ids) == 1  # one texture per region
            used.append(int(ids))
            # Exact pixels of one window: value = k + (y0 + y) * w + (x0 + x), up to float32 rounding.
            ys, xs = torch.nonzero(sel, as_tuple=True)
            offset = (values - ids[0]) * (h * w) - (ys * w + xs).float()
            assert float(offset.max() - offset.min()) < 0.05
        assert len(set(used)) == len(used)  # different textures


def test_rotation_and_zoom_are_seeded_and_keep_sizes():
    spec = SceneSpec(48, 10.0, (1.0, 1.0), texture="mosaic", textures="builtin", rotate=True, max_zoom=2.0)
    a = generate(spec, 2, generator=gen(7))[0]
    assert a.shape == (2, 1, 48, 48) and torch.equal(a, generate(spec, 2, generator=gen(7))[0])
    assert not torch.equal(a, generate(spec, 2, generator=gen(8))[0])


def _texture_folder(folder, count: int = 6):
    rng = np.random.default_rng(0)
    for i in range(count):
        # Stripes of different periods: six clearly different textures.
        x = np.arange(96)
        stripes = 0.5 + 0.5 * np.sin(2 * math.pi * x / (3 + 2 * i))[None, :] * np.ones((96, 1))
        iio.imwrite(folder / f"tex{i}.png", ((stripes + 0.05 * rng.random((96, 96))) / 1.05 * 255).astype(np.uint8))
    return folder


def test_texture_split_divides_the_set_not_the_crops(tmp_path):
    names = [f"t{i}" for i in range(10)]
    train, test = split_names(names, "train"), split_names(names, "test")
    assert not set(train) & set(test) and sorted(train + test) == names and len(test) == 3
    assert split_names(names, "test", seed=1) != test  # a seeded choice, not the first ones
    folder = _texture_folder(tmp_path)
    spec = {
        "image_size": 32,
        "partition_sigma": 6.0,
        "texture_sigmas": (1.0, 1.0),
        "texture": "mosaic",
        "textures": str(folder),
    }
    train_pool = {n for n, _ in texture_pool(str(folder), "train")}
    test_pool = {n for n, _ in texture_pool(str(folder), "test")}
    assert train_pool.isdisjoint(test_pool) and len(train_pool | test_pool) == 6
    assert generate(SceneSpec(**spec, texture_split="train"), 2, generator=gen(0))[0].shape == (2, 1, 32, 32)
    with pytest.raises(ValueError, match="^textures: 3 regions need at least 3"):
        generate(SceneSpec(**{**spec, "texture_sigmas": (1.0,) * 3}, texture_split="test"), 1, generator=gen(0))


def test_bad_texture_sources_are_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="^textures must be 'builtin', 'skimage' or a folder"):
        generate(SceneSpec(32, 5.0, (1.0, 1.0), texture="mosaic", textures=str(tmp_path / "nope")), 1)
    with pytest.raises(ValueError, match="^textures: no image files"):
        generate(SceneSpec(32, 5.0, (1.0, 1.0), texture="mosaic", textures=str(tmp_path)), 1)
    iio.imwrite(tmp_path / "a.png", np.zeros((20, 20), np.uint8))
    iio.imwrite(tmp_path / "b.png", np.zeros((20, 20), np.uint8))
    with pytest.raises(ValueError, match="too small for 32x32 crops"):
        generate(SceneSpec(32, 5.0, (1.0, 1.0), texture="mosaic", textures=str(tmp_path)), 1)
