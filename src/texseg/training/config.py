"""Typed configuration of a training run.

One flat dataclass: every field is a ``texseg train`` option of the same name (with
dashes) and a key of the JSON config file, and its ``help`` metadata is the option's
help text. ``validate()`` checks every value and names the field that is wrong.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from texseg._validate import check_choice, check_int, check_positive
from texseg.data.scene import SceneSpec

OPTIMIZERS = ("sgd", "momentum", "rmsprop", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")
PRECISIONS = ("auto", "fp32", "bf16")


def _opt(help: str, **kw: Any) -> Any:
    return field(metadata={"help": help}, **kw)


@dataclass
class TrainConfig:
    """Everything that defines a training run. Defaults are texseg's best short CPU run."""

    # scene (the notebook's section 3.3 difficulty by default)
    image_size: int = _opt("image side N in pixels (>= 16)", default=128)
    sigma1: float = _opt("texture width in Omega_1 (region 0)", default=0.2)
    sigma2: float = _opt("texture width in Omega_2 (region 1)", default=1.2)
    sigma: float | None = _opt("partition smoothness; default image_size/5", default=None)
    regions: int = _opt("number of regions K (>= 2)", default=2)
    sigmas: list[float] | None = _opt(
        "texture widths of all K regions (overrides sigma1/sigma2); default for K>2: geometric "
        "from sigma1 to sigma2",
        default=None,
    )
    smoothing: float = _opt("final smoothing sigma of each image", default=1.0)
    # model
    model: str = _opt("registered model name (see `texseg models`)", default="unet")
    model_kwargs: dict[str, Any] = _opt("constructor arguments of the model", default_factory=dict)
    # objective and optimisation
    loss: str | None = _opt("loss: mse, bce, dice, bce+dice (2 regions); ce, dice, ce+dice, mse (K>2); "
                            "default bce for 2 regions, ce for more", default=None)
    optimizer: str = _opt("sgd, momentum (SGD + momentum), rmsprop, adam, adamw", default="adam")
    lr: float = _opt("learning rate", default=1e-2)
    momentum: float | None = _opt("momentum of sgd, momentum or rmsprop; default 0.9 for `momentum`, "
                                  "0 for sgd and rmsprop (as in the notebook)", default=None)
    nesterov: bool = _opt("Nesterov momentum (sgd/momentum)", default=False)
    weight_decay: float = _opt("weight decay", default=0.0)
    schedule: str = _opt("learning-rate schedule over the run: constant, cosine, onecycle",
                         default="cosine")
    warmup: float = _opt("linear warm-up, as a fraction of the run (0..0.5)", default=0.0)
    batch_size: int = _opt("training images per step", default=4)
    skip_nonfinite: bool = _opt("skip (and count) a step whose loss or gradient is NaN/inf instead of "
                                "stopping as diverged", default=False)
    # length of the run: whichever comes first
    iterations: int | None = _opt("stop after this many steps", default=None)
    time_budget: float | None = _opt("stop after this many seconds of training (eval excluded)",
                                     default=30.0)
    # evaluation
    eval_every: int = _opt("evaluate on the validation set every N steps", default=100)
    val_size: int = _opt("images in the held-out validation set", default=64)
    val_seed: int = _opt("seed of the validation set (never the training stream)", default=987654321)
    # run
    seed: int = _opt("seed of the initial weights and the training stream", default=0)
    device: str = _opt("auto (CUDA if available), cpu, cuda or cuda:N", default="auto")
    threads: int | None = _opt("CPU threads for torch; default all cores", default=None)
    precision: str = _opt("training arithmetic: auto (bf16 autocast where the hardware has fast bf16, "
                          "else fp32), fp32, bf16; evaluation is always fp32", default="auto")
    # texture families and real-texture mosaics (see texseg.data.textures / texseg.data.mosaic)
    texture: str = _opt("texture family: gaussian (the notebook's), oriented, powerlaw, bandpass, mosaic",
                        default="gaussian")
    textures: str | None = _opt("mosaic textures: 'builtin' (scikit-image's brick, grass, gravel) or a folder "
                                "of texture images", default=None)
    texture_split: str = _opt("mosaic textures used: all, or the train / test side of a seeded split of the "
                              "texture set", default="all")
    texture_rotate: bool = _opt("mosaic: rotate each texture crop by a random angle", default=False)
    texture_zoom: float | None = _opt("mosaic: zoom each crop by a random factor in [1/Z, Z] (Z > 1)", default=None)

    # ---------------------------------------------------------------- derived
    def scene(self) -> SceneSpec:
        """The training scene described by the scene fields."""
        return SceneSpec(self.image_size, self.partition_sigma, tuple(self.texture_sigmas()), self.smoothing,
                         texture=self.texture, textures=self.textures, texture_split=self.texture_split,
                         rotate=self.texture_rotate, max_zoom=self.texture_zoom)

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
    def model_num_classes(self) -> int:
        """Output channels: one logit (of Omega_1) for two regions, K logits otherwise."""
        return 1 if self.regions == 2 else self.regions

    # ------------------------------------------------------------- validation
    def validate(self) -> TrainConfig:
        """Check every field; raise ValueError naming the first bad one. Returns self."""
        check_int("image_size", self.image_size, minimum=16, maximum=1_000_000)
        check_positive("sigma1", self.sigma1)
        check_positive("sigma2", self.sigma2)
        if self.sigma is not None:
            check_positive("sigma", self.sigma)
        check_int("regions", self.regions, minimum=2, maximum=256)
        if self.sigmas is not None:
            if not isinstance(self.sigmas, (list, tuple)) or len(self.sigmas) != self.regions:
                raise ValueError(
                    f"sigmas must list one texture width per region ({self.regions}), got {self.sigmas!r}"
                )
            for k, s in enumerate(self.sigmas):
                check_positive(f"sigmas[{k}]", s)
        check_positive("smoothing", self.smoothing)
        if not isinstance(self.model_kwargs, dict):
            raise ValueError(f"model_kwargs must be a mapping, got {self.model_kwargs!r}")
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_positive("lr", self.lr)
        if self.momentum is not None:
            check_positive("momentum", self.momentum, allow_zero=True)
            if self.momentum >= 1:
                raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not isinstance(self.nesterov, bool):
            raise ValueError(f"nesterov must be true or false, got {self.nesterov!r}")
        check_positive("weight_decay", self.weight_decay, allow_zero=True)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_positive("warmup", self.warmup, allow_zero=True)
        if self.warmup > 0.5:
            raise ValueError(f"warmup must be a fraction of the run in [0, 0.5], got {self.warmup!r}")
        check_int("batch_size", self.batch_size, minimum=1, maximum=65536)
        if self.iterations is None and self.time_budget is None:
            raise ValueError("give iterations and/or time_budget: a run needs a stopping rule")
        if self.iterations is not None:
            check_int("iterations", self.iterations, minimum=1)
        if self.time_budget is not None:
            check_positive("time_budget", self.time_budget)
        if not isinstance(self.skip_nonfinite, bool):
            raise ValueError(f"skip_nonfinite must be true or false, got {self.skip_nonfinite!r}")
        check_int("eval_every", self.eval_every, minimum=1)
        check_int("val_size", self.val_size, minimum=1, maximum=100_000)
        check_int("val_seed", self.val_seed, minimum=0, maximum=2**63 - 1)
        check_int("seed", self.seed, minimum=0, maximum=2**63 - 1)
        if self.seed == self.val_seed:
            raise ValueError("seed must differ from val_seed: the validation set must not be training data")
        if not isinstance(self.device, str):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.threads is not None:
            check_int("threads", self.threads, minimum=1, maximum=1024)
        check_choice("precision", self.precision, PRECISIONS)
        if not isinstance(self.texture_rotate, bool):
            raise ValueError(f"texture_rotate must be true or false, got {self.texture_rotate!r}")
        if self.texture_zoom is not None and not (check_positive("texture_zoom", self.texture_zoom) > 1):
            raise ValueError(f"texture_zoom must be a finite number > 1, got {self.texture_zoom!r}")
        if self.texture == "mosaic" and self.textures is None:
            raise ValueError("textures must be 'builtin' or a folder of texture images when texture is mosaic")
        # Names are checked here too, so a bad config fails before any work starts.
        from texseg.models import list_models
        from texseg.training.losses import create_loss

        check_choice("model", self.model, list_models())
        create_loss(self.loss_name, self.regions)
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
            _check_json_type(f.name, merged[f.name], f.type)
        return cls(**merged)

    @classmethod
    def read_json(cls, path: str | os.PathLike[str]) -> dict[str, Any]:
        """The options a JSON config file gives (checked), as a dict to merge overrides into."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"config file {path} does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"config file {path} is not valid JSON: {e}") from None
        cls.from_dict(data)  # refuses unknown keys and wrong types, naming them
        return data

    @classmethod
    def from_json_file(cls, path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> TrainConfig:
        """A config from a JSON file, with ``overrides`` (e.g. command-line options) on top."""
        return cls.from_dict({**cls.read_json(path), **(overrides or {})})


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
    "list[float]": (list,),
    "dict[str, Any]": (dict,),
}


def _check_json_type(name: str, value: Any, annotation: Any) -> None:
    """Refuse a value whose JSON type does not fit the field (e.g. "lr": "fast")."""
    text = str(annotation)
    optional = "None" in text
    if value is None:
        if optional:
            return
        raise ValueError(f"config key {name} must not be null")
    base = text.replace(" | None", "")
    allowed = _JSON_TYPES.get(base)
    if allowed is None:
        return
    if isinstance(value, bool) and bool not in allowed:
        raise ValueError(f"config key {name} must be {base}, got {value!r}")
    if not isinstance(value, allowed):
        raise ValueError(f"config key {name} must be {base}, got {value!r}")
    if base == "float" and not math.isfinite(float(value)):
        raise ValueError(f"config key {name} must be finite, got {value!r}")
