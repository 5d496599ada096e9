"""Property-based tests: every invalid value is a clean error, valid edge values work."""

from __future__ import annotations

import contextlib
import io
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from texseg import SceneSpec, generate, generate_data
from texseg.cli import main

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

bad_positive = st.one_of(st.floats(max_value=0.0), st.just(math.nan), st.just(math.inf), st.just(-math.inf))
bad_int = st.one_of(st.integers(max_value=0), st.floats(allow_nan=True), st.text(max_size=3), st.booleans())


@FAST
@given(sigma1=bad_positive)
def test_api_bad_sigma(sigma1):
    with pytest.raises(ValueError, match="texture_sigmas"):
        generate_data(1, 16, sigma1=sigma1)


@FAST
@given(batch=bad_int)
def test_api_bad_batch(batch):
    with pytest.raises(ValueError, match="batch_size"):
        generate_data(batch, 16)


@FAST
@given(size=st.one_of(st.integers(max_value=1), st.floats(), st.booleans()))
def test_api_bad_image_size(size):
    with pytest.raises(ValueError, match="image_size"):
        generate_data(1, size)


@FAST
@given(
    n=st.integers(min_value=2, max_value=40),
    batch=st.integers(min_value=1, max_value=3),
    sigmas=st.lists(st.floats(min_value=1e-3, max_value=1e3), min_size=2, max_size=4),
    partition=st.floats(min_value=1e-3, max_value=1e3),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_api_valid_edges_give_valid_scenes(n, batch, sigmas, partition, seed):
    img, labels = generate(SceneSpec(n, partition, tuple(sigmas)), batch,
                           generator=torch.Generator().manual_seed(seed))
    assert img.shape == labels.shape == (batch, 1, n, n)
    # A constant image cannot be normalised (0/0); any other must land in [0, 1].
    finite = torch.isfinite(img).flatten(1).all(1)
    assert finite.any()
    assert ((img[finite] >= 0) & (img[finite] <= 1)).all()
    assert labels.min() >= 0 and labels.max() < len(sigmas)


def _run_cli(args):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(args)
            code = 0
        except SystemExit as e:
            code = e.code
    return code, err.getvalue()


# (option, strategy of invalid values) for `texseg train`
INVALID = {
    "--lr": bad_positive,
    "--time-budget": bad_positive,
    "--sigma1": bad_positive,
    "--sigma2": bad_positive,
    "--sigma": bad_positive,
    "--smoothing": bad_positive,
    "--batch-size": st.integers(max_value=0),
    "--iterations": st.integers(max_value=0),
    "--eval-every": st.integers(max_value=0),
    "--val-size": st.integers(max_value=0),
    "--image-size": st.integers(max_value=15),
    "--regions": st.integers(max_value=1),
    "--seed": st.integers(max_value=-1),
    "--momentum": st.one_of(st.floats(min_value=1.0), st.floats(max_value=-1e-9), st.just(math.nan)),
    "--warmup": st.one_of(st.floats(min_value=0.5, exclude_min=True), st.floats(max_value=-1e-9)),
    "--weight-decay": st.one_of(st.floats(max_value=-1e-9), st.just(math.nan), st.just(math.inf)),
}


@pytest.mark.parametrize("option", sorted(INVALID))
def test_cli_invalid_numeric_options_are_one_line_errors(option, tmp_path):
    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(value=st.one_of(INVALID[option], st.text(alphabet="abcxyz,;", min_size=1, max_size=4)))
    def check(value):
        code, err = _run_cli(["train", option, str(value), "--iterations", "1", "--image-size", "16",
                              "--out", str(tmp_path / "never"), "--quiet"]
                             if option not in ("--iterations", "--image-size") else
                             ["train", option, str(value), "--out", str(tmp_path / "never"), "--quiet"])
        assert code not in (0, None), (option, value)
        assert err.count("\n") == 1 and err.startswith("texseg: error:"), (option, value, err)
        assert "Traceback" not in err
        assert not (tmp_path / "never").exists()

    check()


@pytest.mark.parametrize("args", [["--image-size", "16", "--batch-size", "1", "--model", "unet"],
                                  ["--image-size", "16", "--batch-size", "1", "--regions", "2"],
                                  ["--image-size", "16", "--sigma1", "0.001", "--sigma2", "1000"]])
def test_cli_valid_edge_values_train(args, tmp_path):
    code, err = _run_cli(["train", *args, "--iterations", "2", "--eval-every", "1", "--val-size", "2",
                          "--out", str(tmp_path / "r"), "--quiet"])
    assert code == 0, err
