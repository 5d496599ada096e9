"""texseg: neural segmentation of controllable synthetic textures.

Data -> models -> training -> evaluation, each a subpackage; the names most used are
re-exported here::

    import texseg
    image, mask = texseg.generate_data(8)             # the notebook's generator, fast
    model = texseg.create_model("unet")
    model = texseg.load_model("runs/...")             # a trained run, eval mode
    probs = texseg.predict(model, image)
    labels = texseg.load_segmenter("gabor-kmeans").segment(image, 2)   # a classical method
    general = texseg.load_segmenter("texseg:general")  # shipped, texture-agnostic: any textures
    labels = general.segment(image, 3)                 # K given; general.estimate(image): K estimated

The re-exports are resolved on first use (PEP 562), so ``import texseg.cli`` does not
import torch: the command line takes over Ctrl-C before the slow imports start.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "SceneSpec": "texseg.data",
    "generate": "texseg.data",
    "generate_data": "texseg.data",
    "create_model": "texseg.models",
    "list_models": "texseg.models",
    "load_model": "texseg.checkpoint",
    "load_pretrained": "texseg.checkpoint",
    "list_pretrained": "texseg.models.pretrained",
    "GeneralConfig": "texseg.training.general",
    "train_general": "texseg.training.general",
    "load_segmenter": "texseg.segmenters",
    "predict": "texseg.inference.predict",
    "PredictSettings": "texseg.inference.predict",
    "export_onnx": "texseg.deploy",
    "predict_file": "texseg.inference.predict",
    "TrainConfig": "texseg.training",
    "train": "texseg.training",
    "resume_training": "texseg.training",
    "configure_threads": "texseg.threads",  # call before importing torch: see texseg.threads
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # resolved once
        return value
    raise AttributeError(f"module 'texseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
