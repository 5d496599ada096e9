"""Inference on real images: reading files, whole-image or tiled prediction, outputs."""

from texseg.inference.inferer import PRECISIONS, forward, forward_probs
from texseg.inference.io import IMAGE_EXTENSIONS, list_images, normalize_image, read_image, to_luminance
from texseg.inference.predict import (
    PredictResult,
    PredictSettings,
    labels_from_probs,
    output_paths,
    overlay_image,
    predict,
    predict_file,
    predict_image,
)
from texseg.inference.tiling import predict_tiled, tile_starts, weight_window

__all__ = ["IMAGE_EXTENSIONS", "PRECISIONS", "PredictResult", "PredictSettings", "forward", "forward_probs",
           "labels_from_probs", "list_images", "normalize_image", "output_paths", "overlay_image", "predict",
           "predict_file", "predict_image", "predict_tiled", "read_image", "tile_starts", "to_luminance",
           "weight_window"]
