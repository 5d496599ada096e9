"""Reading image files and arrays into what a model was trained on.

Every input becomes one float32 luminance image (H, W):

1. decode with Pillow (PNG, JPEG, BMP, GIF, ...) or tifffile (TIFF, 8/16-bit, float;
   the first page of a multi-page file);
2. integers are scaled to [0, 1] by their type's maximum (uint8 / 255, uint16 / 65535,
   ...), floats are kept as they are, booleans become 0/1;
3. colour becomes luminance with the ITU-R BT.601 weights Pillow uses,
   Y = 0.299 R + 0.587 G + 0.114 B; an alpha channel is ignored (not composited), a
   gray+alpha image keeps its gray channel;
4. :func:`normalize_image` then applies the generator's normalisation to the *whole*
   image: min-max to [0, 1] (a constant image becomes all zeros). Because of this last
   step, step 2's scale factor never changes what the model sees.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from texseg.errors import ImageReadError

__all__ = ["IMAGE_EXTENSIONS", "MIN_SIZE", "list_images", "normalize_image", "read_image", "to_luminance"]

#: Extensions recognised when a folder is given.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp")
#: Smallest height and width accepted (the models' minimum input size).
MIN_SIZE = 16
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _decode(path: Path) -> np.ndarray:
    """The file's pixels as an array, or ImageReadError naming the file."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import logging

        import tifffile

        log = logging.getLogger("tifffile")
        level = log.level
        log.setLevel(logging.CRITICAL)  # its warnings about broken files would be a second line
        try:
            return tifffile.imread(path, key=0)
        except (tifffile.TiffFileError, ValueError, IndexError, EOFError, KeyError) as e:
            raise ImageReadError(f"{path}: not a readable TIFF image ({e})") from None
        finally:
            log.setLevel(level)
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()  # decode now: a truncated file fails here, not later
                if im.mode in ("1",):
                    im = im.convert("L")
                elif im.mode not in ("L", "LA", "RGB", "RGBA", "I", "I;16", "I;16B", "I;16L", "F"):
                    im = im.convert("RGBA" if "A" in im.mode or "transparency" in im.info else "RGB")
                return np.asarray(im)
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file (or a format Pillow cannot read)") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise ImageReadError(f"{path}: too large to decode safely ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError)):
            raise ImageReadError(f"{path}: {e.strerror}") from None
        raise ImageReadError(f"{path}: cannot decode ({e})") from None


def to_luminance(array: np.ndarray, name: str = "image") -> np.ndarray:
    """(H, W) or (H, W, C) pixels -> (H, W) float32 luminance (see the module docstring).

    Args:
        array: C in {1, 2 (gray+alpha), 3 (RGB), 4 (RGBA)}; bool, integer or float dtype.
        name: how errors name the input.

    Raises:
        ValueError: another shape or dtype (complex, object, ...), or NaN/inf values.
    """
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] in (1, 2, 3, 4):
        channels = a.shape[2]
    elif a.ndim == 2:
        channels = 0
    else:
        raise ValueError(f"{name} must be (H, W) or (H, W, C) with C in 1..4 channels, got shape {a.shape}")
    if not (a.dtype == bool or np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"{name} must hold numbers (bool, integer or float), got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if channels in (3, 4):
        # Channel by channel: the float32 copy of the (H, W, C) array is never made, the
        # peak is the output plus one (H, W) float32 channel.
        out = _channel(a, 0)
        out *= _LUMA[0]
        for c in (1, 2):
            plane = _channel(a, c)
            plane *= _LUMA[c]
            out += plane
        return out
    out = _channel(a, 0) if channels else _channel(a, None)
    # Never hand back the caller's own buffer: normalize_image works in place.
    return out.copy() if np.shares_memory(out, array) else out


def _channel(a: np.ndarray, c: int | None) -> np.ndarray:
    """One channel (all of ``a`` for c=None) as a C-contiguous float32 array, integers scaled by their type's max.

    Same values as ``a.astype(np.float32) / max`` but the scaling is done in place (no
    second full-size temporary). Signed integers (rare: 32-bit 'I' PNGs) are scaled by
    their max as well; min-max follows.
    """
    plane = a if c is None else a[..., c]
    if np.issubdtype(a.dtype, np.floating):
        return np.ascontiguousarray(plane, dtype=np.float32)
    out = np.array(plane, dtype=np.float32, order="C")
    if np.issubdtype(a.dtype, np.integer):
        out /= np.float32(np.iinfo(a.dtype).max)
    return out


def _check_size(shape: tuple[int, ...], name: str) -> None:
    h, w = shape[:2]
    if h < MIN_SIZE or w < MIN_SIZE:
        raise ImageReadError(f"{name}: image is {w}x{h} pixels; width and height must be >= {MIN_SIZE}")


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as (H, W) float32 luminance (not yet min-max normalised).

    Raises:
        ImageReadError: missing, zero-byte, unreadable, truncated, non-image or too-small files,
            the message naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    array = _decode(path)
    if array.ndim not in (2, 3) or array.size == 0:
        raise ImageReadError(f"{path}: no image data, or an unsupported pixel layout {array.shape}")
    if array.ndim == 3 and array.shape[2] not in (1, 2, 3, 4) and array.shape[0] in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # planar TIFF (C, H, W)
    _check_size(array.shape, str(path))
    try:
        return to_luminance(array, name=str(path))
    except ValueError as e:
        raise ImageReadError(str(e)) from None


def normalize_image(image: np.ndarray) -> np.ndarray:
    """Min-max normalise a whole (H, W) float image to [0, 1] in place (the generator's rule).

    A constant image has no texture to segment; it becomes all zeros rather than NaN.
    """
    lo, hi = float(image.min()), float(image.max())
    image -= lo
    if hi > lo:
        image /= np.float32(hi - lo)
    return image


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files directly inside ``folder`` (by extension, sorted by name)."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
