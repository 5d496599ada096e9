"""Segmentation models, looked up by name: ``create_model("unet", num_classes=3)``."""

from texseg.models.base import SegmentationModel
from texseg.models.registry import (
    ModelSpec,
    count_parameters,
    create_model,
    list_models,
    model_spec,
    register_model,
)

# Imported for their side effect: each module registers its model.
from texseg.models import cnn, seed_cnn, unet  # noqa: E402,F401  isort: skip

__all__ = ["ModelSpec", "SegmentationModel", "count_parameters", "create_model", "list_models", "model_spec",
           "register_model"]
