"""The inference copy of a model: BatchNorm folded into convolutions, ReLU fused, weights cast once.

:func:`inference_model` returns a copy of an eval-mode model that computes the same
function with fewer passes over memory, for :func:`texseg.inference.inferer.forward`:

* a BatchNorm right after a convolution (``unet``) is folded into it
  (:func:`torch.nn.utils.fusion.fuse_conv_bn_weights`);
* a ReLU right after a convolution is run inside it (oneDNN's post-op, through
  ``torch.ops.mkldnn._convolution_pointwise`` on the CPU; a plain ``relu_`` elsewhere);
* a BatchNorm after the ReLU (``cnn``'s conv -> ReLU -> BatchNorm) is an affine map
  ``y = a * relu(z) + c``: ``|a|`` goes into the convolution (``|a| relu(z) = relu(|a| z)``),
  the sign and the shift ``c`` into the next convolution's weights and bias. The shift is
  exact only where the next convolution's window lies inside the image (zero padding
  pads ``y``, not ``relu(z)``), so its border rows and columns -- ``2 * padding`` wide --
  are recomputed from ``y`` as the model would; where there is no next convolution the
  affine map stays one elementwise pass;
* convolution weights are stored channels-last (explicit strides, also for one input
  channel, whose strides are otherwise ambiguous and make oneDNN fall back to plain NCHW
  with reorders around every layer) and in the working dtype (bf16: no cast per call).

The results are the model's up to float rounding (tests/test_inference_fusion.py: within
1e-4 in fp32). The copy is cached per model object and rebuilt when a parameter, buffer or
submodule of the model changes (training steps and ``load_state_dict`` bump the tensors'
version counters; after an in-place change through ``param.data``, which bypasses them, call
``model_cache.clear(model)``); the user's model is never modified. Models in train mode, models
without parameters (an ONNX session), models with forward hooks and models holding modules
other than torch.nn's and texseg's own (which may keep state or act when called) run as they are.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from texseg.device import fast_bf16
from texseg.models.cnn import CNN

__all__ = ["ConvAct", "InputShift", "build_inference_model", "channels_last", "inference_model", "model_cache",
           "model_state_key"]


def channels_last(t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A 4-D tensor with channels-last strides that torch recognises, whatever its channel count.

    ``contiguous(memory_format=torch.channels_last)`` returns a one-channel tensor as it
    is (both layouts hold the same bytes), whose strides then read as NCHW.
    """
    return torch.empty(t.shape, dtype=dtype or t.dtype, device=t.device,
                       memory_format=torch.channels_last).copy_(t)


def _fused_relu_available(x: torch.Tensor) -> bool:
    """Whether oneDNN's fused convolution runs ``x``: a CPU with oneDNN enabled, float32, or bf16 where native."""
    return (x.device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
            and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
            and (x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and fast_bf16(x.device))))


@dataclass(frozen=True)
class InputShift:
    """An affine map folded into a convolution's input: it is given ``r`` and stands for ``y = sign * r + shift``.

    Attributes:
        sign, shift: (C_in,) float32, per input channel.
        weight, bias: the convolution acting on ``y`` (for the border rows and columns).
    """

    sign: torch.Tensor
    shift: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor


class ConvAct(nn.Module):
    """A 2-D convolution with an optional fused ReLU and an optional affine map folded into its input.

    With ``border`` (the previous layer's output ``r`` stands for ``y = sign * r + shift``,
    per channel), ``weight``/``bias`` act on ``r`` and ``border.weight``/``border.bias`` on
    ``y``: the ``2 * padding`` border rows and columns are recomputed from ``y`` so that
    the zero padding pads ``y``, as in the model.

    Args:
        weight, bias: the convolution acting on the input it is given.
        like: the ``nn.Conv2d`` whose padding, stride, dilation and groups it has.
        relu: apply a ReLU to the output.
        border: the affine map folded in (stride 1, dilation 1, groups 1 and "same" padding only).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, like: nn.Conv2d, relu: bool = False,
                 border: InputShift | None = None) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.padding, self.stride = list(like.padding), list(like.stride)
        self.dilation, self.groups = list(like.dilation), like.groups
        self.relu = relu
        self.shifted = border is not None
        for name in ("sign", "shift", "border_weight", "border_bias"):
            self.register_buffer(name, None if border is None else getattr(border, name.removeprefix("border_")))

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x.to(weight.dtype)
        if _fused_relu_available(x):
            return torch.ops.mkldnn._convolution_pointwise(
                x, weight, bias, self.padding, self.stride, self.dilation, self.groups,
                "relu" if self.relu else "none", [], "")
        out = F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        return out.relu_() if self.relu else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._conv(x, self.weight, self.bias)
        if self.shifted:
            self._fix_borders(x, out)
        return out

    def _fix_borders(self, r: torch.Tensor, out: torch.Tensor) -> None:
        """Overwrite the border rows/columns of ``out`` with the convolution of ``y = sign * r + shift``.

        The top and bottom ``2 * padding`` rows of ``r`` are stacked into one strip (each
        half's outer ``padding`` output rows see only its own rows and the zero padding),
        the left and right columns into another: two small convolutions per layer.
        """
        ph, pw = self.padding
        h, w = r.shape[-2:]
        if h <= 4 * ph or w <= 4 * pw:  # small input: all of it is border
            out.copy_(self._conv(self._affine(r), self.border_weight, self.border_bias))
            return
        if ph:
            rows = self._conv(self._affine(torch.cat([r[..., :2 * ph, :], r[..., h - 2 * ph:, :]], dim=-2)),
                              self.border_weight, self.border_bias)
            out[..., :ph, :] = rows[..., :ph, :]
            out[..., h - ph:, :] = rows[..., 3 * ph:, :]
        if pw:
            cols = self._conv(self._affine(torch.cat([r[..., :2 * pw], r[..., w - 2 * pw:]], dim=-1)),
                              self.border_weight, self.border_bias)
            out[..., :pw] = cols[..., :pw]
            out[..., w - pw:] = cols[..., 3 * pw:]

    def _affine(self, r: torch.Tensor) -> torch.Tensor:
        """``sign * r + shift`` per channel, channels-last, in the weights' dtype."""
        dt = self.border_weight.dtype
        y = torch.addcmul(self.shift.to(dt).view(1, -1, 1, 1), r.to(dt), self.sign.to(dt).view(1, -1, 1, 1))
        return y if y.is_contiguous(memory_format=torch.channels_last) else channels_last(y)


class _Affine(nn.Module):
    """``y = sign * x + shift`` per channel: what is left of a BatchNorm after a ReLU with no conv after it."""

    def __init__(self, sign: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("sign", sign)
        self.register_buffer("shift", shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift.to(x.dtype).view(1, -1, 1, 1), x, self.sign.to(x.dtype).view(1, -1, 1, 1))


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) of an eval-mode BatchNorm, float64: ``bn(x) = scale * x + shift``."""
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    return scale, shift


def _foldable_bn(m: nn.Module) -> bool:
    return type(m) is nn.BatchNorm2d and m.running_mean is not None and m.running_var is not None


def _plain_conv(m: nn.Module) -> bool:
    return type(m) is nn.Conv2d and m.padding_mode == "zeros" and not isinstance(m.padding, str)


def _shiftable(conv: nn.Conv2d) -> bool:
    """Whether a shift can be folded into ``conv`` with the border fix ("same" size, stride 1)."""
    kh, kw = conv.kernel_size
    return (conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and kh % 2 == 1 and kw % 2 == 1 and tuple(conv.padding) == (kh // 2, kw // 2))


def _fuse_chain(mods: list[nn.Module], dtype: torch.dtype) -> list[nn.Module]:
    """The modules of a sequential chain with conv -> BN -> ReLU and conv -> ReLU -> BN folded."""
    out: list[nn.Module] = []
    pending: tuple[torch.Tensor, torch.Tensor] | None = None  # (sign, shift) the next conv must absorb
    i = 0
    while i < len(mods):
        m = mods[i]
        if pending is not None and not (_plain_conv(m) and _shiftable(m)):
            out.append(_Affine(*(t.to(torch.float32) for t in pending)))  # nothing to fold it into
            pending = None
        if not _plain_conv(m):
            out.append(m)
            i += 1
            continue
        w = m.weight.detach().double()
        b = m.bias.detach().double() if m.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64,
                                                                               device=w.device)
        j = i + 1
        if j < len(mods) and _foldable_bn(mods[j]):  # conv -> BN
            w, b = (t.detach() for t in fuse_conv_bn_weights(w, b, *_bn_state(mods[j])))
            j += 1
        relu = j < len(mods) and type(mods[j]) is nn.ReLU
        j += relu
        after = None
        if relu and j < len(mods) and _foldable_bn(mods[j]):  # conv -> ReLU -> BN: |a| relu(z) = relu(|a| z)
            scale, shift = _bn_affine(mods[j])
            w, b = w * scale.abs().view(-1, 1, 1, 1), b * scale.abs()
            after = (torch.where(scale < 0, -1.0, 1.0).to(scale), shift)
            j += 1
        border = None
        if pending is not None:
            sign, shift = pending
            border = InputShift(sign.to(torch.float32), shift.to(torch.float32), channels_last(w, dtype), b.to(dtype))
            b = b + (w * shift.view(1, -1, 1, 1)).sum(dim=(1, 2, 3))
            w = w * sign.view(1, -1, 1, 1)
        out.append(ConvAct(channels_last(w, dtype), b.to(dtype), m, relu, border))
        pending = after
        i = j
    if pending is not None:
        out.append(_Affine(*(t.to(torch.float32) for t in pending)))
    return out


def _bn_state(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor | None,
                                           torch.Tensor | None]:
    """The arguments ``fuse_conv_bn_weights`` takes after the conv's weight and bias, in float64."""
    def f64(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.detach().double()
    return f64(bn.running_mean), f64(bn.running_var), bn.eps, f64(bn.weight), f64(bn.bias)


def _flatten(seq: nn.Sequential) -> list[nn.Module]:
    """The leaves of nested ``nn.Sequential`` containers (the same function as ``seq``)."""
    return [leaf for m in seq for leaf in (_flatten(m) if type(m) is nn.Sequential else [m])]


def _fuse_module(module: nn.Module, dtype: torch.dtype) -> None:
    """Fuse every ``nn.Sequential`` inside ``module`` in place and cast the remaining convolutions."""
    for name, child in list(module.named_children()):
        if type(child) is nn.Sequential:
            fused = nn.Sequential(*_fuse_chain(_flatten(child), dtype))
            _fuse_module(fused, dtype)  # what is left in it: its convolutions cast, its containers fused
            setattr(module, name, fused)
        elif type(child) in (nn.Conv2d, nn.ConvTranspose2d):
            _cast_conv(child, dtype)
        elif not isinstance(child, (ConvAct, _Affine)):
            _fuse_module(child, dtype)


def _cast_conv(conv: nn.Module, dtype: torch.dtype) -> None:
    """Store a convolution's weights channels-last in ``dtype`` (autocast then has nothing to cast)."""
    conv.weight = nn.Parameter(channels_last(conv.weight.detach(), dtype), requires_grad=False)
    if conv.bias is not None:
        conv.bias = nn.Parameter(conv.bias.detach().to(dtype), requires_grad=False)


def build_inference_model(model: nn.Module, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A fused copy of eval-mode ``model`` (uncached; see :func:`inference_model`).

    Args:
        model: in eval mode; left unchanged.
        dtype: the working dtype of the convolutions (float32, or bfloat16 for bf16 inference).

    Returns:
        A new module in eval mode, its tensors without gradients.
    """
    fused = copy.deepcopy(model).eval().requires_grad_(False)
    if type(fused) is CNN:  # CNN.logits is out(blocks(x)): one chain, so the last BatchNorm folds too
        fused.blocks = nn.Sequential(*_fuse_chain([*_flatten(fused.blocks), fused.out], dtype))
        fused.out = nn.Identity()
    _fuse_module(fused, dtype)
    return fused


class _Cache:
    """Per model object, per tag: a value and the state of the model it was computed from."""

    def __init__(self) -> None:
        self._entries: weakref.WeakKeyDictionary[nn.Module, dict[Any, tuple[tuple, Any]]] = (
            weakref.WeakKeyDictionary())
        self._lock = threading.Lock()

    def get(self, model: nn.Module, tag: Any, build: Callable[[], Any]) -> Any:
        """``build()``'s value for ``model`` and ``tag``, rebuilt when the model's tensors or submodules change."""
        key = model_state_key(model)
        if key is None:
            return build()
        with self._lock:
            hit = self._entries.get(model, {}).get(tag)
        if hit is not None and hit[0] == key:
            return hit[1]
        value = build()
        with self._lock:
            self._entries.setdefault(model, {})[tag] = (key, value)
        return value

    def clear(self, model: nn.Module) -> None:
        """Forget what was cached for ``model`` (after changing its weights through ``.data``, which no
        version counter sees)."""
        with self._lock:
            self._entries.pop(model, None)


def model_state_key(model: nn.Module) -> tuple | None:
    """What changes when the model's weights, buffers or submodules change (tensor versions and storage).

    None when a tensor is an inference tensor (made in ``torch.inference_mode``: it has no
    version counter, so a change could not be seen).
    """
    tensors = (*model.parameters(), *model.buffers())
    if any(t.is_inference() for t in tensors):
        return None
    return (tuple((t.data_ptr(), t._version, t.dtype, t.device, tuple(t.shape)) for t in tensors),
            tuple(id(m) for m in model.modules()))


#: The one cache of inference copies and probes, per model object (weak: it never keeps a model alive).
model_cache = _Cache()


def _copyable(model: nn.Module) -> bool:
    """Whether running a copy is the same as running ``model``: only torch.nn layers and texseg's modules, no hooks.

    A module of another origin may keep state or act when called (count its calls, send
    a signal), and a hook expects to see the model's own modules: those run as they are.
    """
    return all(type(m).__module__.startswith(("torch.nn.", "texseg.")) and not (m._forward_hooks or
               m._forward_pre_hooks) for m in model.modules())


def inference_model(model: nn.Module, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The cached fused copy of ``model`` for inference in ``dtype`` (``model`` itself where none applies).

    Args:
        model: any module; a fused copy is made only for an eval-mode model with parameters.
        dtype: float32, or bfloat16 (the convolutions' weights cast once, for bf16 autocast).

    Returns:
        A module computing what ``model`` computes up to float rounding.
    """
    if model.training or next(model.parameters(), None) is None or not _copyable(model) or \
            model_state_key(model) is None:
        return model
    return model_cache.get(model, ("fused", dtype), lambda: build_inference_model(model, dtype))
