"""The generator against the notebook's direct convolution, and its contract."""

from __future__ import annotations

import math
import re
import warnings

import pytest
import torch

from notebook_reference import notebook_generate_data
from texseg.data import SceneSpec, gaussian_smooth, generate, generate_data

# (image_size, sigma1, sigma2, sigma): odd and even sizes, sigmas from 0.1 to 100.
CASES = [
    (15, 0.2, 1.2, 3.0),
    (16, 0.1, 100.0, 5.0),
    (32, 1.0, 0.2, 25.0),
    (33, 5.0, 0.5, 100.0),
    (64, 0.2, 1.2, 12.8),
    (129, 0.3, 2.5, 0.1),
]


def _compare(n, s1, s2, s, batch, dtype):
    torch.manual_seed(1234)
    ref_img, ref_mask, ref_field = notebook_generate_data(batch, n, s1, s2, s, dtype=dtype)
    torch.manual_seed(1234)
    img, mask = generate_data(batch, n, s1, s2, s, dtype=dtype)
    return ref_img, ref_mask, ref_field, img, mask


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("case", CASES, ids=[f"N{c[0]}-s{c[3]}" for c in CASES])
def test_matches_notebook(case, dtype, tol):
    n, s1, s2, s = case
    batch = 1 if n > 64 else 3
    ref_img, ref_mask, ref_field, img, mask = _compare(n, s1, s2, s, batch, dtype)
    assert img.shape == mask.shape == (batch, 1, n, n)
    assert img.dtype == mask.dtype == dtype
    mismatch = mask != ref_mask
    # A mask pixel may only differ where the partition field is zero up to rounding.
    eps = 1e-5 if dtype == torch.float32 else 1e-12
    assert mismatch.float().mean().item() <= 1e-4
    assert (ref_field[mismatch].abs() <= eps * ref_field.abs().max()).all()
    # Images of scenes whose masks agree must agree to the tolerance (a flipped mask
    # pixel legitimately changes the texture around it, so those images are skipped).
    same = ~mismatch.flatten(1).any(dim=1)
    assert same.any()
    assert (img[same] - ref_img[same]).abs().max().item() <= tol


def test_seed_and_generator_equivalence_and_global_state_untouched():
    torch.manual_seed(7)
    a_img, a_mask = generate_data(2, 32, 0.2, 1.2, 6.4)
    g = torch.Generator().manual_seed(7)
    torch.manual_seed(99)
    before = torch.get_rng_state()
    b_img, b_mask = generate_data(2, 32, 0.2, 1.2, 6.4, generator=g)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a_img, b_img) and torch.equal(a_mask, b_mask)


def test_same_generator_seed_same_batch_different_seed_different():
    spec = SceneSpec(32, 6.0, (0.2, 1.0, 3.0))
    a = generate(spec, 2, generator=torch.Generator().manual_seed(3))
    b = generate(spec, 2, generator=torch.Generator().manual_seed(3))
    c = generate(spec, 2, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_output_ranges_and_types():
    img, labels = generate(SceneSpec(20, 4.0, (0.5, 2.0, 1.0)), 5, generator=torch.Generator().manual_seed(0))
    assert img.shape == labels.shape == (5, 1, 20, 20)
    assert labels.dtype == torch.int64
    assert img.amin(dim=(-2, -1)).eq(0).all() and img.amax(dim=(-2, -1)).eq(1).all()
    assert set(labels.unique().tolist()) <= {0, 1, 2}


def test_k_regions_statistics():
    """Each of K labels is present with frequency ~1/K over a large batch (symmetric law)."""
    k = 4
    spec = SceneSpec(48, 6.0, tuple(0.5 + i for i in range(k)))
    _, labels = generate(spec, 64, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(labels.flatten(), minlength=k).double() / labels.numel()
    assert torch.allclose(freq, torch.full((k,), 1 / k, dtype=torch.float64), atol=0.05), freq
    # Regions are smooth blobs, not pixel noise: most neighbours share a label.
    same = (labels[..., 1:, :] == labels[..., :-1, :]).float().mean()
    assert same > 0.9


def test_two_regions_have_the_given_texture_widths():
    """Region k carries texture_sigmas[k]: the rougher texture has larger pixel differences."""
    spec = SceneSpec(64, 12.0, (0.2, 3.0), None)
    img, labels = generate(spec, 16, generator=torch.Generator().manual_seed(0))
    diff = (img[..., :, 1:] - img[..., :, :-1]).abs()
    inside = labels[..., :, 1:] == labels[..., :, :-1]
    rough = diff[inside & (labels[..., :, 1:] == 0)].mean()
    smooth = diff[inside & (labels[..., :, 1:] == 1)].mean()
    assert rough > 3 * smooth


def test_smoothing_is_the_notebook_convolution_on_random_input():
    import torch.nn.functional as F

    from texseg.data.kernels import gaussian_weights

    for n in (8, 9):
        x = torch.randn(2, 1, n, n, dtype=torch.float64)
        w = gaussian_weights(n, 2.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # even kernels under 'same'
            ref = F.conv2d(x, torch.outer(w, w)[None, None], padding="same")
        assert torch.allclose(gaussian_smooth(x, 2.0), ref, atol=1e-13)


def test_tiny_sigma_does_not_produce_nan():
    img, mask = generate_data(2, 16, sigma1=1e-3, sigma2=1e-4, sigma=1e-3)
    assert torch.isfinite(img).all()


def test_float64_and_memory_linear_in_batch():
    img, _ = generate_data(1, 16, dtype=torch.float64)
    assert img.dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    spec = SceneSpec(64, 12.8, (0.2, 1.2))
    a, la = generate(spec, 4, generator=torch.Generator().manual_seed(0))
    b, lb = generate(spec, 4, generator=torch.Generator().manual_seed(0), device="cuda")
    assert b.device.type == "cuda"
    assert (a - b.cpu()).abs().max() < 1e-4
    assert (la != lb.cpu()).float().mean() < 1e-3


BAD = [
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=2.5), "batch_size"),
    (dict(image_size=1), "image_size"),
    (dict(sigma1=0.0), "texture_sigmas[0]"),
    (dict(sigma2=-1.0), "texture_sigmas[1]"),
    (dict(sigma=math.nan), "partition_sigma"),
    (dict(sigma=math.inf), "partition_sigma"),
    (dict(device="tpu"), "device"),
    (dict(dtype=torch.int32), "dtype"),
]


@pytest.mark.parametrize("kwargs,name", BAD, ids=[b[1] for b in BAD])
def test_bad_arguments_name_the_argument(kwargs, name):
    args = dict(batch_size=1, image_size=8)
    args.update(kwargs)
    with pytest.raises(ValueError, match=re.escape(name)):
        generate_data(**args)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(texture_sigmas=(1.0,)), "texture_sigmas"),
        (dict(texture_sigmas=(1.0, 2.0, 0.0)), "texture_sigmas[2]"),
        (dict(smoothing_sigma=-1.0), "smoothing_sigma"),
        (dict(image_size=True), "image_size"),
    ],
)
def test_bad_scene_specs(kwargs, name):
    with pytest.raises(ValueError, match=re.escape(name)):
        SceneSpec(**kwargs)


def test_spec_round_trip_and_unknown_keys():
    spec = SceneSpec(32, 5.0, (0.2, 1.0, 2.0), None)
    assert SceneSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="bogus"):
        SceneSpec.from_dict({**spec.to_dict(), "bogus": 1})
