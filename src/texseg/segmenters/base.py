"""The segmenter interface, and the name -> classical method registry (it imports no segmenter).

A segmenter turns images into label maps::

    labels = segmenter.segment(images, num_regions)   # (B,1,H,W) float -> (B,1,H,W) int64

Trained models (a run directory) and classical methods (a registered name) share it, so
the benchmark scores both the same way. A classical method is a frozen dataclass whose
fields are its parameters (type, default and ``help`` metadata), registered with
:func:`register_segmenter`; :func:`segmenter_params` lists them and
:func:`parse_method_arg` turns a ``KEY=VALUE`` string into a typed, checked value.
"""

from __future__ import annotations

import dataclasses
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from torch import Tensor

from texseg._validate import check_int
from texseg.data.color import as_channels
from texseg.models.pretrained import list_pretrained

__all__ = [
    "ParamInfo",
    "Segmenter",
    "as_channels",
    "check_images",
    "list_segmenters",
    "parse_method_arg",
    "register_segmenter",
    "segmenter_class",
    "segmenter_params",
]


class Segmenter(ABC):
    """Something that segments images into ``num_regions`` regions.

    Attributes:
        name: short name shown in tables (a method name, or a run directory's name).
        supervised: True when :meth:`fit` must be called with training images first.
    """
    name: str = "segmenter"
    supervised: ClassVar[bool] = False

    def supports(self, num_regions: int) -> bool:
        """Whether this segmenter can split images into ``num_regions`` regions."""
        return num_regions >= 2

    def why_not(self, num_regions: int) -> str:
        """One line saying why ``num_regions`` is not supported."""
        return f"{self.name} does not segment into {num_regions} regions"

    def fit(self, images: Tensor, labels: Tensor) -> None:  # noqa: B027 - a no-op unless supervised
        """Learn from training images (B,1,H,W) float and labels (B,1,H,W) int64 (supervised only)."""
    @abstractmethod
    def segment(self, images: Tensor, num_regions: int) -> Tensor:
        """Label maps of ``images``.

        Args:
            images: (B, 1, H, W) float, values in [0, 1].
            num_regions: K >= 2, the number of regions to find.

        Returns:
            (B, 1, H, W) int64 labels in 0..K-1 on the device of ``images``. Label numbers
            of unsupervised methods are arbitrary: score them after matching.
        """
    def describe(self) -> dict[str, Any]:
        """What identifies this segmenter's results (name and parameters), JSON types.

        A dataclass segmenter is described by every field, so a new parameter can never be
        left out (cached benchmark results are keyed by this description).
        """
        params = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)} \
            if dataclasses.is_dataclass(self) else {}
        return {"name": self.name, **{k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}}


def check_images(images: object, num_regions: object) -> int:
    """Check the arguments of :meth:`Segmenter.segment`; return ``num_regions`` as an int.

    Images are (B, 1, H, W) grey or (B, 3, H, W) colour; each segmenter converts them to what
    it reads with :func:`as_channels`.
    """
    if (not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3)
            or not images.is_floating_point()):
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a float tensor of shape (B, 1, H, W) or (B, 3, H, W), got {shape}")
    return check_int("num_regions", num_regions, minimum=2)


# ---------------------------------------------------------------- registry of classical methods

@dataclass(frozen=True)
class ParamInfo:
    """One parameter of a classical method, as listed by ``texseg segmenters``."""
    name: str
    kind: str  # "int", "float", "bool", "str" or "floats" (comma-separated numbers)
    default: Any
    help: str


S = TypeVar("S", bound=type)
_REGISTRY: dict[str, tuple[type, str]] = {}


def register_segmenter(name: str, description: str) -> Callable[[S], S]:
    """Class decorator registering a dataclass :class:`Segmenter` under ``name``."""
    def decorator(cls: S) -> S:
        if name in _REGISTRY:
            raise ValueError(f"segmenter {name!r} is already registered")
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"segmenter {name!r} must be a dataclass")
        _REGISTRY[name] = (cls, description)
        return cls

    return decorator


def _registered() -> dict[str, tuple[type, str]]:
    # Filled by the implementations as they are imported: the package's __init__ imports them all.
    return _REGISTRY


def list_segmenters() -> dict[str, str]:
    """Registered classical methods: name -> one-line description."""
    return {name: desc for name, (_, desc) in sorted(_registered().items())}


def segmenter_class(name: str) -> type:
    """The dataclass registered as ``name``; a wrong name lists the valid ones (the shipped models too)."""
    reg = _registered()
    if name not in reg:
        names = [*sorted(reg), *(f"texseg:{n}" for n in list_pretrained())]
        raise ValueError(f"segmenter must be one of {', '.join(names)} or a run directory; got {name!r}")
    return reg[name][0]


def _kind(annotation: object) -> str:
    text = str(annotation)
    for kind in ("floats", "bool", "int", "float", "str"):
        if text == kind or text == f"<class '{kind}'>":
            return kind
    if "tuple[float" in text:
        return "floats"
    raise TypeError(f"unsupported parameter type {text}")


def segmenter_params(name: str) -> list[ParamInfo]:
    """The parameters of method ``name``: name, kind, default and help."""
    cls = segmenter_class(name)
    hints = typing.get_type_hints(cls)
    return [ParamInfo(f.name, _kind(hints[f.name]), f.default, f.metadata.get("help", ""))
            for f in dataclasses.fields(cls) if f.init]


def parse_method_arg(name: str, key: str, text: str) -> Any:
    """Turn the string ``text`` into a value of parameter ``key`` of method ``name``.

    Raises:
        ValueError: naming the method and parameter, when the key is unknown or the value
            does not parse (the range is checked when the method is built).
    """
    params = {p.name: p for p in segmenter_params(name)}
    if key not in params:
        raise ValueError(f"method argument {name}.{key}: {name} has no parameter {key!r}; "
                         f"its parameters: {', '.join(params)}")
    kind = params[key].kind
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "floats":
            return tuple(float(x) for x in text.split(",") if x.strip())
        if kind == "bool":
            lowered = text.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return lowered in ("true", "1", "yes")
        return text
    except ValueError:
        raise ValueError(f"method argument {name}.{key} must be {_KIND_WORDS[kind]}, got {text!r}") from None


_KIND_WORDS = {"int": "an integer", "float": "a number", "floats": "comma-separated numbers",
               "bool": "true or false", "str": "a string"}
