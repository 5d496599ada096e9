"""Segmenters: one interface for trained models and classical texture-segmentation methods."""

from texseg.segmenters.base import (
    ParamInfo,
    Segmenter,
    list_segmenters,
    load_segmenter,
    parse_method_arg,
    register_segmenter,
    segmenter_params,
)

__all__ = ["ParamInfo", "Segmenter", "list_segmenters", "load_segmenter", "parse_method_arg",
           "register_segmenter", "segmenter_params"]
