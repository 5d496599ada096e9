"""Tests of the model registry and every registered model."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from torch import nn

import texseg
from notebook_reference import MyFirtsCNN
from texseg.models import count_parameters, create_model, list_models, model_spec, register_model
from texseg.models.base import SegmentationModel
from texseg.models.registry import MAX_PARAMETERS

MODELS = list_models()
SIZES = [(2, 1, 17, 23), (1, 1, 16, 16), (2, 1, 33, 31)]


def make(name: str, seed: int = 0, **kwargs) -> nn.Module:
    """Create a model deterministically."""
    torch.manual_seed(seed)
    return create_model(name, **kwargs)


# --- every registered model ----------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_forward_shape_and_finite(name, size):
    model = make(name)
    torch.manual_seed(1)
    out = model(torch.randn(size))
    assert out.shape == size
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_num_classes(name):
    out = make(name, num_classes=3)(torch.randn(2, 1, 17, 23))
    assert out.shape == (2, 3, 17, 23)


@pytest.mark.parametrize("name", MODELS)
def test_in_channels(name):
    out = make(name, in_channels=3)(torch.randn(1, 3, 16, 16))
    assert out.shape == (1, 1, 16, 16)


@pytest.mark.parametrize("name", MODELS)
def test_backward_gives_finite_gradients(name):
    model = make(name)
    torch.manual_seed(1)
    model(torch.randn(2, 1, 17, 23)).square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", MODELS)
def test_count_parameters(name):
    model = make(name)
    assert count_parameters(model) > 0
    model.requires_grad_(False)
    assert count_parameters(model) == 0  # only trainable parameters count


@pytest.mark.parametrize("name", MODELS)
def test_train_and_eval_modes_run(name):
    model = make(name)
    x = torch.randn(2, 1, 16, 16)
    train_out = model.train()(x)
    with torch.no_grad():
        eval_out = model.eval()(x)
    assert train_out.shape == eval_out.shape == x.shape
    assert torch.isfinite(eval_out).all()


@pytest.mark.parametrize("name", MODELS)
def test_safetensors_round_trip(name, tmp_path):
    model = make(name, seed=0)
    # One train-mode step so BatchNorm running statistics differ from their initial values.
    model.train()(torch.randn(2, 1, 16, 16))
    path = tmp_path / "model.safetensors"
    save_model(model, str(path))

    fresh = make(name, seed=1)  # different weights, overwritten by the load
    load_model(fresh, str(path))  # strict: raises on missing or unexpected keys
    for key, value in model.state_dict().items():  # buffers too (running stats, batch counts)
        assert torch.equal(fresh.state_dict()[key], value), key
    x = torch.randn(2, 1, 17, 23)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), model.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", MODELS)
def test_spec(name):
    spec = model_spec(name)
    assert spec.name == name and spec.description
    with pytest.raises(AttributeError):  # frozen
        spec.name = "other"  # type: ignore[misc]


# --- seed-cnn and cnn ----------------------------------------------------------------


def test_seed_cnn_matches_notebook_parameter_count():
    assert count_parameters(make("seed-cnn")) == 13_681
    assert count_parameters(MyFirtsCNN()) == 13_681


def test_seed_cnn_shares_one_batchnorm():
    m = make("seed-cnn")
    assert m.conv1[2] is m.conv2[2] is m.conv3[2] is m.bn
    assert sum(isinstance(mod, nn.BatchNorm2d) for mod in m.modules()) == 1


def test_create_model_is_a_pure_look_up():
    """No warning at creation (the caveat is the training/eval commands' to show) and no patched attributes."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = create_model("seed-cnn")
    assert "BatchNorm" in model_spec("seed-cnn").warning
    assert isinstance(m, SegmentationModel) and m.run_info is None and m.num_regions == 2


@pytest.mark.parametrize("name", MODELS)
def test_every_model_shares_the_base_checks(name):
    with pytest.raises(ValueError, match="in_channels must be an integer"):
        create_model(name, in_channels=0)
    with pytest.raises(ValueError, match="num_classes must be an integer"):
        create_model(name, num_classes=10**6)
    m = make(name, num_classes=3)
    assert m.num_regions == 3
    with pytest.raises(ValueError, match=r"input must have shape \(B, 1, H, W\)"):
        m(torch.zeros(1, 2, 16, 16))
    probs = texseg.predict(m, torch.rand(2, 1, 16, 16))
    assert probs.shape == (2, 3, 16, 16) and torch.allclose(probs.sum(1), torch.ones(2, 16, 16), atol=1e-5)


def test_cnn_has_one_batchnorm_per_block():
    m = make("cnn")
    bns = [mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)]
    assert len(bns) == 3 and len({id(bn) for bn in bns}) == 3
    assert len([mod for mod in make("cnn", num_blocks=5).modules() if isinstance(mod, nn.BatchNorm2d)]) == 5


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_seed_cnn_logits_match_notebook_sigmoid(mode):
    ours = make("seed-cnn")
    notebook = MyFirtsCNN()
    notebook.load_state_dict(ours.state_dict())  # same attribute names, strict
    ours.train(mode == "train")
    notebook.train(mode == "train")
    torch.manual_seed(1)
    x = torch.randn(2, 1, 17, 23)
    with torch.no_grad():
        logits, probs = ours(x), notebook(x)
    torch.testing.assert_close(torch.sigmoid(logits), probs)
    torch.testing.assert_close(logits, torch.logit(probs), atol=1e-4, rtol=1e-4)


def test_seed_cnn_loads_notebook_safetensors(tmp_path):
    torch.manual_seed(0)
    notebook = MyFirtsCNN()
    notebook.train()(torch.randn(2, 1, 16, 16))  # non-trivial running statistics
    save_model(notebook, str(tmp_path / "nb.safetensors"))
    ours = make("seed-cnn", seed=1)
    load_model(ours, str(tmp_path / "nb.safetensors"))
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(torch.sigmoid(ours.eval()(x)), notebook.eval()(x))


# --- unet ----------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_unet_any_size(norm):
    m = make("unet", depth=4, norm=norm, base_width=4)
    out = m(torch.randn(2, 1, 37, 53))
    assert out.shape == (2, 1, 37, 53) and torch.isfinite(out).all()


def test_unet_depth_6_small_input():
    # Padding 16 -> 64 exceeds what one reflect pad allows; must still work.
    m = make("unet", depth=6, base_width=2).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 1, 16, 17)).shape == (1, 1, 16, 17)


def test_unet_padding_is_reflection():
    from texseg.models.unet import _pad_to_multiple

    x = torch.randn(2, 3, 17, 23)
    assert torch.equal(_pad_to_multiple(x, 8), F.pad(x, (0, 1, 0, 7), mode="reflect"))
    assert _pad_to_multiple(torch.randn(1, 1, 2, 3), 64).shape == (1, 1, 64, 64)


def test_unet_rejects_degenerate_input():
    with pytest.raises(ValueError, match="height and width"):
        make("unet")(torch.randn(1, 1, 1, 16))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", MODELS)
def test_backward_deterministic_on_cuda(name, monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)  # raises on ops without a deterministic kernel
    try:
        grads = []
        for _ in range(2):
            model = make(name).cuda()
            x = torch.randn(2, 1, 33, 31, generator=torch.Generator().manual_seed(1)).cuda()
            model(x).square().mean().backward()
            grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        assert torch.equal(*grads)
    finally:
        torch.use_deterministic_algorithms(False)


# --- registry errors -----------------------------------------------------------------


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="model must be one of") as err:
        create_model("resnet")
    msg = str(err.value)
    assert ", ".join(sorted(MODELS)) in msg and "'resnet'" in msg


def test_unknown_kwarg_names_it_and_the_accepted_ones():
    with pytest.raises(ValueError, match="num_chanels") as err:
        create_model("cnn", num_chanels=8)
    assert "num_channels" in str(err.value) and "kernel_size" in str(err.value)


@pytest.mark.parametrize(
    ("name", "kwargs", "arg"),
    [
        ("seed-cnn", {"kernel_size": 4}, "kernel_size"),
        ("cnn", {"kernel_size": 2}, "kernel_size"),
        ("cnn", {"num_channels": 0}, "num_channels"),
        ("seed-cnn", {"num_channels": 2048}, "num_channels"),
        ("cnn", {"num_blocks": 0}, "num_blocks"),
        ("cnn", {"bias": "yes"}, "bias"),
        ("unet", {"base_width": 0}, "base_width"),
        ("unet", {"base_width": 10**9}, "base_width"),
        ("unet", {"depth": 7}, "depth"),
        ("unet", {"depth": 2.0}, "depth"),
        ("unet", {"norm": "layer"}, "norm"),
        ("unet", {"num_classes": 0}, "num_classes"),
        ("cnn", {"in_channels": True}, "in_channels"),
    ],
)
def test_invalid_options_raise_value_error(name, kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        make(name, **kwargs)


def test_absurd_combination_refused_before_allocating():
    # Each option is in range, but together they would need ~32e9 parameters.
    with pytest.raises(ValueError, match=f"{MAX_PARAMETERS:,}"):
        create_model("unet", base_width=512, depth=6)


def test_register_model_rejects_duplicates_and_bad_constructors():
    with pytest.raises(ValueError, match="already registered"):
        register_model("cnn", description="dup")(lambda num_classes=1, in_channels=1: nn.Identity())
    with pytest.raises(TypeError, match="in_channels"):
        register_model("no-in-channels", description="bad")(lambda num_classes=1: nn.Identity())
    assert "no-in-channels" not in list_models()
