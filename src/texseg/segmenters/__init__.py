"""Segmenters: one interface for trained models and classical texture-segmentation methods.

:mod:`~texseg.segmenters.base` holds the interface and the registry and imports no segmenter;
this package imports the implementations (each classical method registers itself), as
:mod:`texseg.models` does.
"""

from texseg.segmenters.base import (
    ParamInfo,
    Segmenter,
    list_segmenters,
    parse_method_arg,
    register_segmenter,
    segmenter_params,
)
from texseg.segmenters.loading import load_segmenter

# Imported for their side effect: each module registers its methods.
from texseg.segmenters import classical, general, model  # noqa: E402,F401  isort: skip

__all__ = ["ParamInfo", "Segmenter", "list_segmenters", "load_segmenter", "parse_method_arg",
           "register_segmenter", "segmenter_params"]
