"""Reading image files and arrays into what a model was trained on: see :mod:`texseg.images`.

The reader lives in :mod:`texseg.images` (a core module) so that data folders, benchmark
suites and texture pools use the very same code; this module keeps its historical names.
"""

from __future__ import annotations

from texseg.images import (
    IMAGE_EXTENSIONS,
    MAX_PIXELS,
    MIN_SIZE,
    list_images,
    normalize_image,
    read_image,
    read_layout,
    read_pixels,
    to_color,
    to_luminance,
)

__all__ = ["IMAGE_EXTENSIONS", "MAX_PIXELS", "MIN_SIZE", "list_images", "normalize_image", "read_image",
           "read_layout", "read_pixels", "to_color", "to_luminance"]
