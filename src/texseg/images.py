"""The one image reader of texseg: every image file it opens (predict, training folders,
benchmark folder suites, mosaic textures, label files) goes through :func:`read_pixels`.

Reading is in two steps, so a hostile file costs nothing before it is refused:

1. the **header** gives the pixel layout (width, height, channels, sample type) without
   decoding: Pillow's lazy ``Image.open`` (PNG, JPEG, BMP, GIF, WebP, ...), tifffile's
   first page (TIFF, 8/16-bit, float);
2. :func:`check_layout` refuses, with one line naming the file: sides under
   :data:`MIN_SIZE`, more than ``max_pixels`` pixels (default :data:`MAX_PIXELS`, the same
   for every format), channel counts other than 1 (gray), 2 (gray+alpha), 3 (RGB) or 4
   (RGBA), sample types that are not numbers, and files whose decoding would not fit in
   the memory left to the process (:func:`texseg.device.cpu_available_bytes`: RAM,
   ``RLIMIT_AS`` and the cgroup limit);
3. only then the pixels are decoded; any failure there is ``FILE: cannot decode (why)``.

:func:`read_image` then gives what the models see, one float32 luminance image (H, W):
integers are scaled to [0, 1] by their type's maximum (uint8 / 255, uint16 / 65535, ...),
floats are kept (NaN/inf refused), booleans become 0/1; colour becomes luminance with the
ITU-R BT.601 weights Pillow uses, Y = 0.299 R + 0.587 G + 0.114 B; an alpha channel is
ignored (not composited). ``color=True`` keeps the colour channels instead (RGB; a grey image
is repeated to three channels, alpha dropped): what a colour model (``in_channels=3``) reads,
:func:`color_for_channels` telling which from a model's channel count. Finally
:func:`normalize_image` applies the generator's normalisation to the *whole* image:
min-max to [0, 1] (a constant image becomes all zeros).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from texseg.device import cpu_available_bytes
from texseg.errors import ImageReadError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "MIN_SIZE",
    "Layout",
    "check_layout",
    "color_for_channels",
    "list_images",
    "normalize_image",
    "image_planes",
    "read_image",
    "read_layout",
    "read_pixels",
    "to_color",
    "to_luminance",
]

#: Extensions recognised when a folder is given.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp")
#: Smallest height and width accepted (the models' minimum input size).
MIN_SIZE = 16
#: Largest image accepted by default, in pixels (2**30: 32768 x 32768), for every format.
#: A decompression bomb (a few MB declaring billions of pixels) is refused from its header.
MAX_PIXELS = 2**30
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_TIFF = (".tif", ".tiff")
# Pillow's own bomb check is a module-wide setting; it is switched off (and texseg's
# limit applied instead) only while a file is opened, under this lock.
_PIL_LOCK = threading.Lock()


@dataclass(frozen=True)
class Layout:
    """What an image file declares in its header: (height, width, channels) and the sample type."""
    height: int
    width: int
    channels: int
    dtype: np.dtype

    @property
    def pixels(self) -> int:
        return self.height * self.width

    @property
    def decoded_bytes(self) -> int:
        """Bytes of the decoded array."""
        return self.pixels * self.channels * self.dtype.itemsize


def check_layout(path: str | os.PathLike[str], layout: Layout, *, max_pixels: int | None = MAX_PIXELS,
                 min_size: int = MIN_SIZE, extra_bytes: int = 0) -> None:
    """Refuse a layout texseg cannot or should not decode (see the module docstring).

    Args:
        path: names the file in messages.
        layout: from :func:`read_layout`.
        max_pixels: the pixel limit; None: no limit.
        min_size: smallest accepted height and width.
        extra_bytes: memory the caller needs besides the decoded array (its float32 copy...).

    Raises:
        ImageReadError: one line naming the file and, where a setting can change the
            outcome, the setting (```max_pixels```).
    """
    h, w, c = layout.height, layout.width, layout.channels
    if c not in (1, 2, 3, 4):
        raise ImageReadError(f"{path}: {c} channels; texseg reads gray (1), gray+alpha (2), RGB (3) or "
                             "RGBA (4) images")
    kind = layout.dtype.kind
    if kind not in "biuf":
        raise ImageReadError(f"{path}: samples of type {layout.dtype} are not numbers texseg can read "
                             "(bool, integer or float)")
    if h < min_size or w < min_size:
        raise ImageReadError(f"{path}: image is {w}x{h} pixels; width and height must be >= {min_size}")
    if max_pixels is not None and layout.pixels > max_pixels:
        raise ImageReadError(f"{path}: {w}x{h} is {layout.pixels:,} pixels, over the limit of {max_pixels:,} "
                             "(`max_pixels`); raise `max_pixels` only for a file you trust")
    needed = layout.decoded_bytes + extra_bytes
    available = cpu_available_bytes()
    if available is not None and needed > available:
        raise ImageReadError(f"{path}: reading its {w}x{h} pixels needs about {needed / 2**30:.1f} GiB but only "
                             f"{available / 2**30:.1f} GiB of memory is available")


@contextmanager
def _quiet_tifffile() -> Iterator[None]:
    # tifffile logs warnings about broken files: they would be a second line next to ours
    log = logging.getLogger("tifffile")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


@contextmanager
def _pillow_unlimited() -> Iterator[None]:
    """Pillow's bomb check off: texseg's own limit (the same for every format) applies instead."""
    with _PIL_LOCK:
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def _pil_layout(im: object, palette: bool) -> Layout:
    """The layout of an opened (not yet decoded) Pillow image, after texseg's mode conversion."""
    mode = im.mode  # type: ignore[attr-defined]
    w, h = im.size  # type: ignore[attr-defined]
    if mode.startswith("I;16"):
        return Layout(h, w, 1, np.dtype(np.uint16))
    if mode in ("I", "F"):
        return Layout(h, w, 1, np.dtype(np.int32 if mode == "I" else np.float32))
    if mode in ("1", "L") or (mode == "P" and palette):
        return Layout(h, w, 1, np.dtype(np.uint8))
    if mode in ("LA", "RGB", "RGBA"):
        return Layout(h, w, len(mode), np.dtype(np.uint8))
    return Layout(h, w, 4 if _has_alpha(im) else 3, np.dtype(np.uint8))


def _has_alpha(im: object) -> bool:
    return "A" in im.mode or "transparency" in im.info  # type: ignore[attr-defined]


def _tiff_layout(page: object) -> Layout:
    p = page
    if getattr(p, "imagedepth", 1) > 1:
        raise ValueError(f"a volume of depth {p.imagedepth}, not a 2-D image")  # type: ignore[attr-defined]
    dtype = p.dtype  # type: ignore[attr-defined]
    if dtype is None:
        raise ValueError("sample format not supported")
    return Layout(int(p.imagelength), int(p.imagewidth), int(p.samplesperpixel), np.dtype(dtype))  # type: ignore


def read_layout(path: str | os.PathLike[str], *, palette: bool = False) -> Layout:
    """The layout an image file declares, read from its header only (nothing is decoded).

    Raises:
        ImageReadError: missing, empty, not an image, or a header that cannot be read.
    """
    path = _existing(path)
    if path.suffix.lower() in _TIFF:
        with _quiet_tifffile():
            try:
                with tifffile.TiffFile(path) as tif:
                    return _tiff_layout(tif.pages[0])
            except Exception as e:  # noqa: BLE001 - a broken file can raise nearly anything inside tifffile
                raise _cannot_decode(path, e) from None

    try:
        with _pillow_unlimited(), Image.open(path) as im:
            return _pil_layout(im, palette)
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file (or a format Pillow cannot read)") from None
    except Exception as e:  # noqa: BLE001 - image plug-ins raise many types for broken headers
        raise _cannot_decode(path, e) from None


def _existing(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ImageReadError(f"{path}: {e.strerror}") from None
    if size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    return path


def _cannot_decode(path: Path, e: BaseException) -> ImageReadError:
    if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return ImageReadError(f"{path}: {e.strerror}")
    if isinstance(e, MemoryError):
        return ImageReadError(f"{path}: cannot decode (not enough memory)")
    why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return ImageReadError(f"{path}: cannot decode ({why})")


def read_pixels(path: str | os.PathLike[str], *, max_pixels: int | None = MAX_PIXELS, min_size: int = MIN_SIZE,
                palette: bool = False, extra_bytes_per_pixel: int = 0) -> np.ndarray:
    """An image file's pixels as stored: (H, W) or (H, W, C) with C in 1..4, after :func:`check_layout`.

    Args:
        path: the file.
        max_pixels: pixel limit (None: none); see :data:`MAX_PIXELS`.
        min_size: smallest accepted height and width.
        palette: keep a palette image's indices (label PNGs) instead of its colours.
        extra_bytes_per_pixel: memory per pixel the caller needs next to the array (for the check).

    Raises:
        ImageReadError: one line naming the file (see :func:`check_layout`, ``cannot decode (...)``).
    """
    path = _existing(path)
    if path.suffix.lower() in _TIFF:
        return _read_tiff(path, max_pixels, min_size, extra_bytes_per_pixel)
    try:
        with _pillow_unlimited(), Image.open(path) as im:
            layout = _pil_layout(im, palette)
            check_layout(path, layout, max_pixels=max_pixels, min_size=min_size,
                         extra_bytes=layout.pixels * extra_bytes_per_pixel)
            im.load()  # decode now: a truncated file fails here, not later
            if im.mode == "1" or (im.mode == "P" and palette):
                im = im.convert("L") if im.mode == "1" else im
            elif im.mode not in ("L", "LA", "RGB", "RGBA", "I", "F") and not im.mode.startswith("I;16"):
                im = im.convert("RGBA" if _has_alpha(im) else "RGB")
            array = np.asarray(im)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file (or a format Pillow cannot read)") from None
    except Exception as e:  # noqa: BLE001 - decoders raise OSError, SyntaxError, ValueError, zlib.error...
        raise _cannot_decode(path, e) from None
    return _as_hwc(path, array, layout)


def _read_tiff(path: Path, max_pixels: int | None, min_size: int, extra_per_pixel: int) -> np.ndarray:
    with _quiet_tifffile():
        try:
            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                layout = _tiff_layout(page)
                check_layout(path, layout, max_pixels=max_pixels, min_size=min_size,
                             extra_bytes=layout.pixels * extra_per_pixel)
                array = page.asarray()
                separate = layout.channels > 1 and int(getattr(page, "planarconfig", 1)) == 2
        except ImageReadError:
            raise
        except Exception as e:  # noqa: BLE001 - zlib.error, ValueError, IndexError... from a corrupt file
            raise _cannot_decode(path, e) from None
    if separate and array.ndim == 3:
        array = np.moveaxis(array, 0, -1)  # planar (C, H, W) -> (H, W, C)
    return _as_hwc(path, array, layout)


def _as_hwc(path: Path, array: np.ndarray, layout: Layout) -> np.ndarray:
    """The decoded array checked against its header: (H, W) or (H, W, C)."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    expected = (layout.height, layout.width) + ((layout.channels,) if layout.channels > 1 else ())
    if array.shape != expected:
        raise ImageReadError(f"{path}: cannot decode (pixels of shape {array.shape}, its header says {expected})")
    return array


def to_luminance(array: np.ndarray, name: str = "image") -> np.ndarray:
    """(H, W) or (H, W, C) pixels -> (H, W) float32 luminance (see the module docstring).

    Args:
        array: C in {1, 2 (gray+alpha), 3 (RGB), 4 (RGBA)}; bool, integer or float dtype.
        name: how errors name the input.

    Raises:
        ValueError: another shape or dtype (complex, object, ...), or NaN/inf values.
    """
    a, channels = _checked(array, name)
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


def to_color(array: np.ndarray, name: str = "image") -> np.ndarray:
    """(H, W) or (H, W, C) pixels -> (H, W, 3) float32 RGB scaled like :func:`to_luminance` (alpha dropped)."""
    a, channels = _checked(array, name)
    if channels in (3, 4):
        return np.stack([_channel(a, c) for c in range(3)], axis=-1)
    gray = _channel(a, 0) if channels else _channel(a, None)
    return np.repeat(gray[..., None], 3, axis=-1)


def _checked(array: np.ndarray, name: str) -> tuple[np.ndarray, int]:
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
    return a, channels


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


def read_image(path: str | os.PathLike[str], *, max_pixels: int | None = MAX_PIXELS, color: bool = False
               ) -> np.ndarray:
    """Read an image file as (H, W) float32 luminance (not yet min-max normalised).

    Args:
        path: the file.
        max_pixels: pixel limit (None: none); see :data:`MAX_PIXELS`.
        color: return (H, W, 3) float32 RGB instead of luminance (alpha dropped, gray repeated).

    Raises:
        ImageReadError: missing, zero-byte, unreadable, truncated, non-image, too small, too
            large, NaN/inf or odd-channel files, the message naming the file.
    """
    array = read_pixels(path, max_pixels=max_pixels, extra_bytes_per_pixel=12 if color else 8)
    try:
        return to_color(array, name=str(path)) if color else to_luminance(array, name=str(path))
    except ValueError as e:
        raise ImageReadError(str(e)) from None


def color_for_channels(channels: object) -> bool:
    """Whether a model with ``channels`` input channels reads images in colour (3) or as luminance (1).

    Raises:
        ValueError: any other count, in one line (texseg reads images as 1 or 3 channels).
    """
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ValueError(f"the model takes {channels!r} input channels; texseg reads images as 1 channel "
                         "(luminance, grey models) or 3 (RGB, colour models trained with --color)")
    return channels == 3


def image_planes(image: np.ndarray) -> np.ndarray:
    """(H, W) luminance or (H, W, 3) RGB -> (C, H, W) float32, C = 1 or 3: the layout models take."""
    return image[None] if image.ndim == 2 else np.ascontiguousarray(np.moveaxis(image, -1, 0))


def normalize_image(image: np.ndarray) -> np.ndarray:
    """Min-max normalise a whole (H, W) (or (H, W, 3): over all channels) float image to [0, 1] in place.

    The generator's rule.

    A constant image has no texture to segment; it becomes all zeros rather than NaN.
    """
    lo, hi = float(image.min()), float(image.max())
    image -= lo
    if hi > lo:
        image /= np.float32(hi - lo)
    return image


def list_images(folder: str | os.PathLike[str], *, skip_suffixes: tuple[str, ...] = ()) -> list[Path]:
    """Image files directly inside ``folder`` (by extension, sorted by name).

    Args:
        skip_suffixes: name endings to leave out (e.g. ``texseg predict``'s own ``.mask.png``).
    """
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not p.name.lower().endswith(tuple(s.lower() for s in skip_suffixes)))
