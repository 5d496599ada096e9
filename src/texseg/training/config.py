"""Typed configuration of a training run.

One flat dataclass: every field is a ``texseg train`` option of the same name (with
dashes) and a key of the JSON config file, and its ``help`` metadata is the option's
help text. Each field declares its bounds or choices beside it (:func:`_opt`), so
``validate()`` is one loop over the fields plus the few rules that relate two fields.
Field types are read once, with :func:`typing.get_type_hints` (:func:`field_types`).
"""

from __future__ import annotations

import math
import os
import types
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cache
from typing import Any

from texseg._validate import check_choice
from texseg.data.mosaic import SPLITS as TEXTURE_SPLITS
from texseg.data.scene import SceneSpec
from texseg.data.textures import FAMILIES as TEXTURE_FAMILIES
from texseg.io import read_json
from texseg.models import list_models
from texseg.training.losses import create_loss

OPTIMIZERS = ("sgd", "momentum", "rmsprop", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")
PRECISIONS = ("auto", "fp32", "bf16")
LR_SCALINGS = ("none", "linear", "sqrt")
LABEL_MODES = ("fixed", "any")
MAX_SEED = 2**63 - 1
EVALS_PER_RUN = 20  # default evaluation cadence: curves with shape, whatever the budget


def _model_names() -> list[str]:
    return list_models()


def _opt(help: str, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
         lt: float | None = None, choices: tuple[str, ...] | Callable[[], list[str]] | None = None,
         **kw: Any) -> Any:
    """A config field: its help text and what values it allows (bounds for numbers, choices for names)."""
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    return field(metadata={"help": help, "bounds": bounds, "choices": choices}, **kw)


@dataclass
class TrainConfig:
    """Everything that defines a training run.

    Defaults are texseg's best short run; ``batch_size``, ``lr`` and ``compile`` left at None
    take the values measured for the device the run trains on (:mod:`texseg.training.defaults`).
    """
    # scene (the notebook's section 3.3 difficulty by default)
    image_size: int = _opt("image side N in pixels (>= 16)", ge=16, le=1_000_000, default=128)
    sigma1: float = _opt("texture width in Omega_1 (region 0)", gt=0, default=0.2)
    sigma2: float = _opt("texture width in Omega_2 (region 1)", gt=0, default=1.2)
    sigma: float | None = _opt("partition smoothness; default image_size/5", gt=0, default=None)
    regions: int = _opt("number of regions K (>= 2)", ge=2, le=256, default=2)
    sigmas: list[float] | None = _opt(
        "texture widths of all K regions (overrides sigma1/sigma2); default for K>2: geometric "
        "from sigma1 to sigma2",
        gt=0,
        default=None,
    )
    smoothing: float = _opt("final smoothing sigma of each image", gt=0, default=1.0)
    # training on an image folder instead of generated scenes
    data: str | None = _opt("train on this folder of images and label images (texseg's export, or images/ + "
                            "masks/ or labels/); image_size is the crop size", default=None)
    val_data: str | None = _opt("held-out folder for data (default: val_fraction of data's images)", default=None)
    val_fraction: float = _opt("share of data's images held out when val_data is not given", gt=0, lt=1,
                               default=0.2)
    label_mode: str | None = _opt("fixed: label k is a region's identity (Gaussian scenes, annotated data); any: "
                                  "label numbers are arbitrary (textures from a pool), so the loss and metrics "
                                  "take the best label matching; default: any for mosaics, else fixed",
                                  choices=LABEL_MODES, default=None)
    # starting point and what to keep
    init_from: str | None = _opt("start from the weights of this run directory (fine-tuning; same model "
                                 "and regions)", default=None)
    keep_best: bool = _opt("also keep the weights of the best held-out IoU in RUN/best/ (a loadable model)",
                           default=False)
    early_stop: int | None = _opt("stop when the held-out IoU has not improved for this many evaluations",
                                  ge=1, default=None)
    # model
    model: str = _opt("registered model name (see `texseg models`)", choices=_model_names, default="unet")
    model_kwargs: dict[str, Any] | None = _opt("constructor arguments of the model; default: the device's for "
                                               "that model (see `texseg devices`), else the model's own",
                                               default=None)
    # objective and optimisation
    loss: str | None = _opt("loss: mse, bce, dice, bce+dice (2 regions); ce, dice, ce+dice, mse (K>2); "
                            "default bce for 2 regions, ce for more", default=None)
    optimizer: str = _opt("sgd, momentum (SGD + momentum), rmsprop, adam, adamw", choices=OPTIMIZERS,
                          default="adam")
    lr: float | None = _opt("learning rate; default: the device's (see `texseg devices`)", gt=0, default=None)
    momentum: float | None = _opt("momentum of sgd, momentum or rmsprop; default 0.9 for `momentum`, "
                                  "0 for sgd and rmsprop (as in the notebook)", ge=0, lt=1, default=None)
    nesterov: bool = _opt("Nesterov momentum (sgd/momentum)", default=False)
    weight_decay: float = _opt("weight decay", ge=0, default=0.0)
    schedule: str = _opt("learning-rate schedule over the run: constant, cosine, onecycle", choices=SCHEDULES,
                         default="cosine")
    warmup: float = _opt("linear warm-up, as a fraction of the run (0..0.5)", ge=0, le=0.5, default=0.0)
    batch_size: int | None = _opt("training images per step; default: the device's (see `texseg devices`)", ge=1,
                                  le=65536, default=None)
    skip_nonfinite: bool = _opt("skip (and count) a step whose loss or gradient is NaN/inf instead of "
                                "stopping as diverged", default=False)
    # length of the run: whichever comes first
    iterations: int | None = _opt("stop after this many steps", ge=1, default=None)
    time_budget: float | None = _opt("stop after this many seconds of training (eval excluded)", gt=0,
                                     default=30.0)
    # evaluation
    eval_every: int | None = _opt("evaluate on the validation set every N steps; default: about `evals` times per "
                                  "run, whatever its length", ge=1, default=None)
    evals: int = _opt("evaluations per run when eval_every is not given, the last one at its end on the whole "
                      "validation set (1: only that one, as an experiment's learning-rate tuning runs do)", ge=1,
                      le=10_000, default=EVALS_PER_RUN)
    val_size: int = _opt("images in the held-out validation set", ge=1, le=100_000, default=64)
    val_seed: int = _opt("seed of the validation set (never the training stream)", ge=0, le=MAX_SEED,
                         default=987654321)
    # run
    seed: int = _opt("seed of the initial weights and the training stream", ge=0, le=MAX_SEED, default=0)
    device: str = _opt("auto (CUDA if available), cpu, cuda or cuda:N", default="auto")
    figures: bool = _opt("draw samples.png and curves.png when the run ends", default=True)
    tensorboard: bool = _opt("also log to TensorBoard event files in the run directory (needs "
                             "pip install 'texseg[tensorboard]')", default=False)
    threads: int | None = _opt("CPU threads for torch; default the cores other programs leave free, followed "
                               "during the run", ge=1, le=1024, default=None)
    # data parallelism (torchrun): every rank draws its own stream of scenes
    streams: int = _opt("independent scene streams a batch is drawn from (batch_size/streams each): a run with "
                        "streams=N sees exactly the scenes of an N-process distributed run", ge=1, le=1024,
                        default=1)
    scale_lr: str = _opt("distributed runs: scale lr with the number of ranks: none, linear, sqrt",
                         choices=LR_SCALINGS, default="none")
    sync_batchnorm: bool = _opt("distributed runs on CUDA: BatchNorm statistics over all ranks' images",
                                default=False)
    dist_timeout: float = _opt("distributed runs: seconds a rank waits for the others before failing",
                               gt=0, default=300.0)
    compile: bool | None = _opt("compile the model with torch.compile (its start-up time counts in the budget); "
                                "default: the device's (see `texseg devices`)", default=None)
    sync_every: int | None = _opt("training steps queued between two reads of the loss from the device; default: "
                                  "1 on CPU, adaptive (about every 50 ms) on CUDA", ge=1, le=4096, default=None)
    precision: str = _opt("training arithmetic: auto (bf16 autocast where the hardware has fast bf16, "
                          "else fp32), fp32, bf16; evaluation is always fp32", choices=PRECISIONS, default="auto")
    # texture families and real-texture mosaics (see texseg.data.textures / texseg.data.mosaic)
    texture: str = _opt("texture family: gaussian (the notebook's), oriented, powerlaw, bandpass, mosaic, mixed "
                        "(each scene's family drawn at random from the first four)",
                        choices=TEXTURE_FAMILIES, default="gaussian")
    textures: str | None = _opt("mosaic textures: 'builtin' (scikit-image's brick, grass, gravel), 'skimage' "
                                "(those and 8 texture-like crops of its other bundled images) or a folder of "
                                "texture images", default=None)
    texture_split: str = _opt("mosaic textures used: all, or the train / test side of a seeded split of the "
                              "texture set", choices=TEXTURE_SPLITS, default="all")
    texture_rotate: bool = _opt("mosaic: rotate each texture crop by a random angle", default=False)
    texture_zoom: float | None = _opt("mosaic: zoom each crop by a random factor in [1/Z, Z] (Z > 1)", gt=1,
                                      default=None)
    color: bool = _opt("colour images: generated scenes in colour (per-region colour statistics), `data` read as "
                       "RGB, a model with 3 input channels; default luminance", default=False)

    # ---------------------------------------------------------------- derived
    def scene(self) -> SceneSpec:
        """The training scene described by the scene fields."""
        return SceneSpec(self.image_size, self.partition_sigma, tuple(self.texture_sigmas()), self.smoothing,
                         texture=self.texture, textures=self.textures, texture_split=self.texture_split,
                         rotate=self.texture_rotate, max_zoom=self.texture_zoom, color=self.color)

    @property
    def partition_sigma(self) -> float:
        return self.image_size / 5 if self.sigma is None else self.sigma

    def texture_sigmas(self) -> list[float]:
        if self.sigmas is not None:
            return list(self.sigmas)
        if self.regions == 2:
            return [self.sigma1, self.sigma2]
        ratio = (self.sigma2 / self.sigma1) ** (1 / (self.regions - 1))
        return [self.sigma1 * ratio**k for k in range(self.regions)]

    @property
    def loss_name(self) -> str:
        """The loss to use: ``loss``, or bce (two regions) / ce (K > 2) by default."""
        if self.loss is not None:
            return self.loss
        return "bce" if self.regions == 2 else "ce"

    @property
    def labels(self) -> str:
        """The label mode in effect: ``label_mode``, or ``any`` for mosaics and mixed families, else ``fixed``."""
        if self.label_mode is not None:
            return self.label_mode
        return "any" if self.texture in ("mosaic", "mixed") and self.data is None else "fixed"

    @property
    def model_num_classes(self) -> int:
        """Output channels: one logit (of Omega_1) for two regions, K logits otherwise."""
        return 1 if self.regions == 2 else self.regions

    @property
    def model_in_channels(self) -> int:
        """Input channels: 3 with ``color``, else 1 (luminance)."""
        return 3 if self.color else 1

    @property
    def model_init_kwargs(self) -> dict[str, Any]:
        """Every constructor argument of the model, as ``model.json`` records them.

        ``in_channels`` appears only for colour models: a grey run's record stays what it always
        was (a ``model.json`` without it is a 1-channel model).
        """
        channels = {"in_channels": self.model_in_channels} if self.color else {}
        return {**(self.model_kwargs or {}), "num_classes": self.model_num_classes, **channels}

    # ------------------------------------------------------------- validation
    def validate(self) -> TrainConfig:
        """Check every field; raise ValueError naming the first bad one. Returns self."""
        for f in fields(self):
            _check_field(f.name, getattr(self, f.name), field_types()[f.name], f.metadata)
        # Rules that relate two fields.
        if self.sigmas is not None and len(self.sigmas) != self.regions:
            raise ValueError(f"sigmas must list one texture width per region ({self.regions}), got {self.sigmas!r}")
        if self.iterations is None and self.time_budget is None:
            raise ValueError("give iterations and/or time_budget: a run needs a stopping rule")
        if self.batch_size is not None and self.batch_size % self.streams:
            raise ValueError(f"batch_size must be a multiple of streams ({self.streams}), got {self.batch_size}")
        reserved = sorted(set(self.model_kwargs or {}) & {"num_classes", "in_channels"})
        if reserved:
            raise ValueError(f"model_kwargs cannot set {reserved[0]}: num_classes follows `regions` (1 output for "
                             "two regions, K otherwise) and in_channels follows `color` (3 for colour, else 1)")
        if self.seed == self.val_seed:
            raise ValueError("seed must differ from val_seed: the validation set must not be training data")
        if self.val_data is not None and self.data is None:
            raise ValueError("val_data needs `data` (the training folder)")
        if self.texture == "mosaic" and self.textures is None:
            raise ValueError("textures must be 'builtin' or a folder of texture images when texture is mosaic")
        create_loss(self.loss_name, self.regions)  # the loss must exist for K regions
        self.scene()  # the scene's own checks
        return self

    # -------------------------------------------------------------- file I/O
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build a config from a mapping, refusing unknown keys by name.

        Args:
            d: field name -> value (JSON types); the defaults fill in the rest.
        """
        if not isinstance(d, dict):
            raise ValueError(f"a config must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown config key(s): {', '.join(unknown)}")
        merged = {**cls().to_dict(), **d}
        if d.get("sigmas") is not None and "regions" not in d and isinstance(d["sigmas"], list):
            merged["regions"] = len(d["sigmas"])  # one texture width per region says how many
        if "iterations" in d and "time_budget" not in d:
            # Asking for N steps means N steps, not "N steps or the default 30 s".
            merged["time_budget"] = None
        for f in fields(cls):  # type-check JSON values before they reach arithmetic
            _check_json_type(f.name, merged[f.name])
        return cls(**merged)

    @classmethod
    def read_json(cls, path: str | os.PathLike[str]) -> dict[str, Any]:
        """The options a JSON config file gives (checked), as a dict to merge overrides into."""
        try:
            data = read_json(path)
        except ValueError as e:
            raise ValueError(f"config file {e}") from None
        cls.from_dict(data)  # refuses unknown keys and wrong types, naming them
        return data

    @classmethod
    def from_json_file(cls, path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> TrainConfig:
        """A config from a JSON file, with ``overrides`` (e.g. command-line options) on top."""
        return cls.from_dict({**cls.read_json(path), **(overrides or {})})


@dataclass(frozen=True)
class FieldType:
    """A config field's type: its base (int, float, str, bool, list, dict) and whether None is allowed."""
    base: type
    optional: bool

    @property
    def name(self) -> str:
        return {list: "list of numbers", dict: "mapping"}.get(self.base, self.base.__name__)


@cache
def field_types() -> dict[str, FieldType]:
    """Field name -> :class:`FieldType` of every :class:`TrainConfig` field, from its annotation."""
    out = {}
    for name, hint in typing.get_type_hints(TrainConfig).items():
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
            else (hint,)
        optional = type(None) in args
        base = next(a for a in args if a is not type(None))
        out[name] = FieldType(typing.get_origin(base) or base, optional)
    return out


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def _describe_bounds(bounds: dict[str, float]) -> str:
    lo = f"[{_num(bounds['ge'])}" if "ge" in bounds else f"({_num(bounds['gt'])}" if "gt" in bounds else None
    hi = f"{_num(bounds['le'])}]" if "le" in bounds else f"{_num(bounds['lt'])})" if "lt" in bounds else None
    if lo and hi:
        return f"in {lo}, {hi}"
    if lo:
        return (">= " if lo[0] == "[" else "> ") + lo[1:]
    return ("<= " if hi.endswith("]") else "< ") + hi[:-1] if hi else ""


def _check_number(name: str, value: object, kind: type, bounds: dict[str, float]) -> None:
    allowed = _describe_bounds(bounds)
    what = f"an integer {allowed}" if kind is int else f"a finite number {allowed}"
    ok_type = isinstance(value, int) if kind is int else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be {what.strip()}, got {value!r}")
    v = float(value)
    if (("ge" in bounds and v < bounds["ge"]) or ("gt" in bounds and v <= bounds["gt"])
            or ("le" in bounds and v > bounds["le"]) or ("lt" in bounds and v >= bounds["lt"])):
        raise ValueError(f"{name} must be {what.strip()}, got {value!r}")


def _check_field(name: str, value: Any, kind: FieldType, meta: Any) -> None:
    """Check one field's value against its type, bounds and choices (raises ValueError naming it)."""
    if value is None:
        if kind.optional:
            return
        raise ValueError(f"{name} must be given (it cannot be null)")
    choices = meta.get("choices")
    if choices is not None:
        check_choice(name, value, choices() if callable(choices) else choices)
    elif kind.base in (int, float):
        _check_number(name, value, kind.base, meta.get("bounds", {}))
    elif kind.base is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
    elif kind.base is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name} must be a list of numbers, got {value!r}")
        for i, v in enumerate(value):
            _check_number(f"{name}[{i}]", v, float, meta.get("bounds", {}))
    elif kind.base is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{name} must be a mapping, got {value!r}")
    elif kind.base is str and not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {value!r}")


def _check_json_type(name: str, value: Any) -> None:
    """Refuse a value whose JSON type does not fit the field (e.g. "lr": "fast"), naming the key."""
    kind = field_types()[name]
    if value is None:
        if not kind.optional:
            raise ValueError(f"config key {name} must not be null")
        return
    allowed = {float: (int, float), list: (list,), dict: (dict,)}.get(kind.base, (kind.base,))
    if (isinstance(value, bool) and kind.base is not bool) or not isinstance(value, allowed):
        raise ValueError(f"config key {name} must be {kind.name}, got {value!r}")


SCENE_FIELDS = ("image_size", "sigma1", "sigma2", "sigma", "regions", "sigmas", "smoothing", "texture", "textures",
                "texture_split", "texture_rotate", "texture_zoom", "color")
# TrainConfig scene field -> the SceneSpec field it sets directly.
_SCENE_NAMES = {"image_size": "image_size", "sigma": "partition_sigma", "smoothing": "smoothing_sigma",
                "texture": "texture", "textures": "textures", "texture_split": "texture_split",
                "texture_rotate": "rotate", "texture_zoom": "max_zoom", "color": "color"}


def override_scene(trained: SceneSpec, changes: dict[str, Any]) -> SceneSpec:
    """A scene like ``trained`` with some scene options changed (as ``texseg eval`` takes them).

    Args:
        trained: the scene a model was trained on (every parameter not changed is kept,
            the Python-only texture parameters too).
        changes: TrainConfig scene fields (:data:`SCENE_FIELDS`) to change.

    Raises:
        ValueError: an unknown or invalid field, or ``sigma1``/``sigma2`` for a scene of
            more than two regions (they would silently rewrite every width: give ``sigmas``).
    """
    unknown = sorted(set(changes) - set(SCENE_FIELDS))
    if unknown:
        raise ValueError(f"{unknown[0]} is not a scene option ({', '.join(SCENE_FIELDS)})")
    TrainConfig.from_dict(dict(changes)).validate()  # each given value, checked as for training
    k = changes.get("regions", len(changes["sigmas"]) if "sigmas" in changes else trained.num_regions)
    widths = [f for f in ("sigma1", "sigma2") if f in changes]
    if widths and max(k, trained.num_regions) > 2 and "sigmas" not in changes:
        raise ValueError(f"{widths[0]} sets the widths of two-region scenes; this scene has "
                         f"{max(k, trained.num_regions)} regions: give `sigmas` (one width per region)")
    if "sigmas" in changes:
        sigmas = tuple(changes["sigmas"])
    elif widths or k != trained.num_regions:
        sigmas = tuple(TrainConfig(regions=k, sigma1=changes.get("sigma1", trained.texture_sigmas[0]),
                                   sigma2=changes.get("sigma2", trained.texture_sigmas[-1])).texture_sigmas())
    else:
        sigmas = trained.texture_sigmas
    direct = {_SCENE_NAMES[f]: v for f, v in changes.items() if f in _SCENE_NAMES}
    return replace(trained, texture_sigmas=sigmas, **direct)
