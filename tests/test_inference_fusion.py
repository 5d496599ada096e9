"""The fused inference copy (BatchNorm folded, ReLU fused, weights cast once) computes what the model computes."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import texseg
from texseg.inference.fusion import ConvAct, build_inference_model, channels_last, inference_model, model_cache
from texseg.inference.inferer import forward
from texseg.inference.predict import check_predict_memory


def _with_batchnorm_statistics(model: nn.Module, seed: int = 1) -> nn.Module:
    """Running statistics and affine parameters away from their defaults, negative scales included."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) * 2.5 - 1)  # about 40% negative
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


MODELS = [("cnn", {}), ("cnn", {"kernel_size": 3, "num_blocks": 2, "bias": False}),
          ("cnn", {"kernel_size": 31, "num_blocks": 1, "num_channels": 4}), ("unet", {}),
          ("unet", {"norm": "group", "depth": 2}), ("seed-cnn", {})]


@pytest.mark.parametrize(("name", "kwargs"), MODELS)
@pytest.mark.parametrize("shape", [(2, 1, 64, 48), (1, 1, 16, 20), (1, 1, 83, 131)])
def test_fused_copy_gives_the_model_s_fp32_outputs(name, kwargs, shape):
    torch.manual_seed(0)
    model = _with_batchnorm_statistics(texseg.create_model(name, **kwargs))
    fused = build_inference_model(model)
    x = torch.rand(*shape)
    with torch.no_grad():
        want, got = model(x), fused(channels_last(x))
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), float((got - want).abs().max())


def test_cnn_batchnorms_are_folded_away_and_borders_stay_exact():
    torch.manual_seed(0)
    model = _with_batchnorm_statistics(texseg.create_model("cnn"))
    fused = build_inference_model(model)
    kinds = {type(m) for m in fused.modules()}
    assert nn.BatchNorm2d not in kinds and nn.ReLU not in kinds and ConvAct in kinds
    # The BatchNorm shifts folded into the next convolutions are exact only inside the image:
    # the border fix is what makes the first and last rows and columns right.
    x = torch.rand(1, 1, 40, 56)
    with torch.no_grad():
        want = model(x)
        got = fused(channels_last(x))
    for sl in ((..., 0, slice(None)), (..., -1, slice(None)), (..., slice(None), 0), (..., slice(None), -1)):
        assert torch.allclose(got[sl], want[sl], atol=1e-5)


def test_general_model_fused_copy_gives_its_embeddings():
    general = texseg.load_pretrained("general")
    x = torch.rand(1, 1, 96, 80)
    with torch.no_grad():
        want, got = general(x), build_inference_model(general)(channels_last(x))
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)


def test_users_model_is_left_unchanged_and_still_trains():
    torch.manual_seed(0)
    model = _with_batchnorm_statistics(texseg.create_model("cnn"))
    before = copy.deepcopy(model.state_dict())
    params = list(model.parameters())
    forward(model, torch.rand(1, 1, 32, 32), precision="fp32")
    forward(model, torch.rand(1, 1, 32, 32), precision="bf16")
    assert list(model.parameters()) == params and all(p.requires_grad for p in params)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert {type(m) for m in model.modules()} >= {nn.BatchNorm2d, nn.ReLU, nn.Conv2d}
    model.train()
    loss = model(torch.rand(4, 1, 32, 32)).square().mean()
    loss.backward()
    assert all(p.grad is not None for p in params)


def test_cache_is_reused_and_rebuilt_when_the_weights_change():
    torch.manual_seed(0)
    model = _with_batchnorm_statistics(texseg.create_model("cnn"))
    x = torch.rand(1, 1, 48, 48)
    first = inference_model(model)
    assert inference_model(model) is first  # cached per model object
    assert inference_model(model, torch.bfloat16) is not first  # and per dtype
    # A training step changes the weights (in place): the next prediction uses them.
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model(torch.rand(4, 1, 32, 32)).mean().backward()
    opt.step()
    assert inference_model(model) is model  # train mode: the model itself (BatchNorm uses batch statistics)
    model.eval()
    rebuilt = inference_model(model)
    assert rebuilt is not first
    with torch.no_grad():
        assert torch.allclose(forward(model, x, precision="fp32"), model(x), atol=1e-4)
    # load_state_dict copies in place: seen as well.
    other = _with_batchnorm_statistics(texseg.create_model("cnn"), seed=7)
    model.load_state_dict(other.state_dict())
    assert inference_model(model) is not rebuilt
    with torch.no_grad():
        assert torch.allclose(forward(model, x, precision="fp32"), other(x), atol=1e-4)
    # A replaced submodule too.
    model.out = nn.Conv2d(16, 1, 5, padding=2)
    with torch.no_grad():
        assert torch.allclose(forward(model, x, precision="fp32"), model(x), atol=1e-4)


def test_models_without_parameters_run_as_they_are():
    class Ones(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ones_like(x)

    ones = Ones().eval()
    assert inference_model(ones) is ones
    assert torch.equal(forward(ones, torch.rand(1, 1, 16, 16)), torch.ones(1, 1, 16, 16))


def test_channels_last_is_recognised_for_one_channel():
    t = torch.rand(1, 1, 8, 6)
    assert t.contiguous(memory_format=torch.channels_last).stride() == t.stride()  # the ambiguity
    cl = channels_last(t)
    assert cl.stride() == (48, 1, 6, 1) and torch.equal(cl, t)
    assert channels_last(t, torch.bfloat16).dtype == torch.bfloat16


def test_memory_probe_runs_once_per_model():
    model = texseg.create_model("cnn").eval()
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    check_predict_memory(model, 512, 512)
    check_predict_memory(model, 1024, 768)
    assert len(calls) == 1
    assert model_cache.get(model, "activation_bytes", lambda: None) is not None


def test_cache_clear_after_a_change_through_data():
    torch.manual_seed(0)
    model = _with_batchnorm_statistics(texseg.create_model("cnn"))
    x = torch.rand(1, 1, 32, 32)
    forward(model, x, precision="fp32")
    model.out.bias.data.add_(1.0)  # .data: no version counter sees it
    model_cache.clear(model)
    with torch.no_grad():
        assert torch.allclose(forward(model, x, precision="fp32"), model(x), atol=1e-4)


class _Counting(nn.Module):
    """A model of the user's own making that keeps state when called."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.calls = nn.Conv2d(1, 1, 3, padding=1), nn.BatchNorm2d(1), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.bn(self.conv(x))


def test_foreign_modules_and_hooked_models_run_as_they_are():
    counting = _Counting().eval()
    assert inference_model(counting) is counting
    forward(counting, torch.rand(1, 1, 16, 16))
    assert counting.calls == 1
    model = texseg.create_model("cnn").eval()
    seen = []
    model.blocks[0][2].register_forward_hook(lambda *a: seen.append(1))  # a hook on a BatchNorm folded away
    assert inference_model(model) is model
    forward(model, torch.rand(1, 1, 16, 16))
    assert seen == [1]


@pytest.mark.filterwarnings("ignore:TF32 acceleration")  # torch's own, from mkldnn.flags
def test_without_onednn_the_fused_copy_runs_plain_convolutions():
    torch.manual_seed(0)
    model = _with_batchnorm_statistics(texseg.create_model("cnn"))
    x = torch.rand(1, 1, 40, 40)
    with torch.no_grad():
        want = model(x)
        fused = build_inference_model(model)
        with torch.backends.mkldnn.flags(enabled=False):  # the F.conv2d + relu_ path (CUDA's too)
            got = fused(channels_last(x))
    assert torch.allclose(got, want, atol=1e-4)


def test_texseg_models_get_the_fused_copy():
    for name in ("cnn", "unet", "seed-cnn"):
        model = texseg.create_model(name).eval()
        assert inference_model(model) is not model, name
    general = texseg.load_pretrained("general")
    assert inference_model(general) is not general
