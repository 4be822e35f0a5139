"""Images in, pixel values out: input checking, explicit conversion to RGB, and the preprocessing an artifact's
``preprocess`` section describes (resize, rescale, normalise, channels first), with Pillow and numpy only.

Accepted items: a file path (str or os.PathLike), the file's bytes, a PIL image, or a numpy array (HWC or HW,
uint8; uint16 is scaled to 8 bits). A 4-d array is a batch (NHWC). Modes are converted to RGB explicitly:
grayscale and 1-bit are repeated over the channels, alpha (RGBA, LA, palettes with transparency) is composited
onto white as transformers' ``convert_to_rgb`` does, 16-bit values are scaled to 8 bits (v / 257) instead of
clipped. Each refusal (not an image, a truncated file, more pixels than the limit, an unknown mode) is one
InputError sentence naming the item.

Pillow is imported only when images are given: it is the runtime's optional ``vision`` extra.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .checks import first_line, show
from .errors import InputError
from .sections import RESAMPLE, Preprocess

MAX_PIXELS = 40_000_000  # per image: a guard against decompression bombs (a tiny file that decodes to gigabytes)
WHAT = "a file path, the file's bytes, a PIL image or an HWC uint8 numpy array"
IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")


def pillow() -> Any:
    """The PIL.Image module, or one sentence saying how to install it."""
    try:
        from PIL import Image
    except ImportError:
        raise InputError("image input needs Pillow; install the runtime's vision extra: "
                         "pip install 'toolchain[vision]' (or pip install pillow).") from None
    return Image


def is_pil(value: Any) -> bool:
    return type(value).__module__.startswith("PIL.") and hasattr(value, "mode") and hasattr(value, "size")


def looks_like_image(value: Any) -> bool:
    """Whether VALUE is an image rather than text (for the text tasks' refusal; Pillow is not imported)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value[:4]).startswith(IMAGE_MAGIC)
    if isinstance(value, np.ndarray):
        return value.ndim in (2, 3, 4) and value.dtype.kind in "uifb"  # pixels, not an array of strings
    return is_pil(value)


def image_items(images: Any) -> list[Any]:
    """IMAGES as a list of items (one image -> a list of one); an empty list is refused in one sentence."""
    if isinstance(images, (str, bytes, bytearray, os.PathLike)) or is_pil(images):
        items = [images]
    elif isinstance(images, np.ndarray):
        if images.ndim not in (2, 3, 4):
            raise InputError(f"an image array must be HW, HWC or a batch NHWC, not {images.ndim}-d {images.shape}.")
        items = list(images) if images.ndim == 4 else [images]
    elif isinstance(images, (list, tuple)):
        items = list(images)
    else:
        raise InputError(f"images must be one image or a list of images ({WHAT} each), not {type(images).__name__}.")
    if not items:
        raise InputError(f"no images were given (an empty list); pass at least one image: {WHAT}.")
    return items


def load_images(items: list[Any], start: int = 0, max_pixels: int = MAX_PIXELS) -> list[Any]:
    """Each item as an RGB PIL image, or an InputError naming the item (numbered from START)."""
    return [to_rgb(open_image(item, start + i, max_pixels), start + i) for i, item in enumerate(items)]


def as_images(images: Any, max_pixels: int = MAX_PIXELS) -> list[Any]:
    """IMAGES (one or a list) as RGB PIL images."""
    return load_images(image_items(images), 0, max_pixels)


# -- opening -----------------------------------------------------------------------------------------
def _check_pixels(size: tuple[int, int], where: str, max_pixels: int) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise InputError(f"{where} has no pixels ({width}x{height}); pass a non-empty image.")
    if width * height > max_pixels:
        raise InputError(f"{where} is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,} "
                         "(a guard against decompression bombs); downscale it first.")


def _decode(Image: Any, source: Any, where: str, max_pixels: int) -> Any:
    """Open and fully decode an encoded image (a path or a file object), refusing what is not a whole image."""
    try:
        with Image.open(source) as im:
            _check_pixels(im.size, where, max_pixels)  # the header only: nothing decoded yet
            im.load()
            return im.copy()
    except Image.UnidentifiedImageError:
        raise InputError(f"{where} is not an image Pillow can read; pass a PNG, JPEG, GIF, BMP, TIFF or WebP "
                         "file.") from None
    except Image.DecompressionBombError:
        raise InputError(f"{where} has more pixels than Pillow's own limit (a guard against decompression bombs); "
                         "downscale it first.") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError(f"{where} is a truncated or damaged image ({first_line(exc)}); re-save or re-download "
                         "it.") from None


def open_image(item: Any, i: int, max_pixels: int = MAX_PIXELS) -> Any:
    """ITEM (number I of the call) as a decoded PIL image in its own mode."""
    Image = pillow()
    if is_pil(item):
        _check_pixels(item.size, f"image {i}", max_pixels)
        try:
            item.load()
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise InputError(f"image {i} is a truncated or damaged image ({first_line(exc)}); re-save it.") from None
        return item
    if isinstance(item, np.ndarray):
        return from_array(Image, item, i, max_pixels)
    if isinstance(item, (bytes, bytearray)):
        if not item:
            raise InputError(f"image {i} is empty bytes; pass the bytes of an image file.")
        return _decode(Image, io.BytesIO(bytes(item)), f"image {i} ({len(item):,} bytes)", max_pixels)
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        if not path.is_file():
            raise InputError(f"image {i} ({show(str(item))}) is not an existing image file; pass {WHAT}.")
        return _decode(Image, path, f"image {i} ({path.name})", max_pixels)
    raise InputError(f"image {i} is {type(item).__name__}, not an image; pass {WHAT}.")


def from_array(Image: Any, arr: np.ndarray, i: int, max_pixels: int = MAX_PIXELS) -> Any:
    """An HW or HWC array (1, 3 or 4 channels; uint8, or uint16 scaled to 8 bits) as a PIL image."""
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        raise InputError(f"image {i} is a {arr.shape} array, channels first; pass HWC: arr.transpose(1, 2, 0).")
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4)):
        raise InputError(f"image {i} is a {arr.shape} array; pass HW (grayscale) or HWC with 1, 3 or 4 channels.")
    if arr.dtype == np.uint16:
        arr = _sixteen_to_eight(arr)
    elif arr.dtype != np.uint8:
        raise InputError(f"image {i} is a {arr.dtype} array; pass uint8 pixels 0-255, such as "
                         "(arr * 255).round().astype(np.uint8) for values in 0..1.")
    _check_pixels((arr.shape[1], arr.shape[0]), f"image {i}", max_pixels)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return Image.fromarray(np.ascontiguousarray(arr))  # HW: L, HWC: RGB or RGBA


# -- modes -------------------------------------------------------------------------------------------
def _sixteen_to_eight(values: np.ndarray) -> np.ndarray:
    return np.clip((values.astype(np.float64) / 257.0).round(), 0, 255).astype(np.uint8)


def _on_white(im: Any) -> Any:
    """Alpha composited onto white, then RGB (transformers' convert_to_rgb does the same)."""
    Image = pillow()
    rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _palette(im: Any) -> Any:
    return _on_white(im) if "transparency" in im.info or im.mode == "PA" else im.convert("RGB")


def _sixteen(im: Any) -> Any:
    Image = pillow()
    return Image.fromarray(_sixteen_to_eight(np.asarray(im)), "L").convert("RGB")


def _float(im: Any) -> Any:
    raise InputError("a 32-bit float image (mode F) has no agreed range; convert it to 8-bit RGB first.")


# Pillow mode -> its conversion to RGB; a mode not listed is refused in one sentence.
MODES: dict[str, Callable[[Any], Any]] = {
    "RGB": lambda im: im,
    "L": lambda im: im.convert("RGB"),
    "1": lambda im: im.convert("L").convert("RGB"),
    "P": _palette,
    "PA": _palette,
    "RGBA": _on_white,
    "RGBa": _on_white,
    "LA": _on_white,
    "La": _on_white,
    "RGBX": lambda im: im.convert("RGB"),
    "CMYK": lambda im: im.convert("RGB"),
    "YCbCr": lambda im: im.convert("RGB"),
    "I": _sixteen,
    "I;16": _sixteen,
    "I;16L": _sixteen,
    "I;16B": _sixteen,
    "I;16N": _sixteen,
    "F": _float,
}


def to_rgb(im: Any, i: int = 0) -> Any:
    """IM converted to an 8-bit RGB PIL image (see MODES)."""
    convert = MODES.get(im.mode)
    if convert is None:
        raise InputError(f"image {i} has mode {im.mode!r}, which is not converted here; convert it to RGB first "
                         f"(modes taken: {', '.join(MODES)}).")
    try:
        return convert(im)
    except (OSError, ValueError) as exc:
        raise InputError(f"image {i} (mode {im.mode}) cannot be converted to RGB ({first_line(exc)}); "
                         "convert it to RGB first.") from None


# -- preprocessing -----------------------------------------------------------------------------------
def pixel_values(images: list[Any], p: Preprocess) -> np.ndarray:
    """RGB PIL images as the graph's float32 (N, 3, height, width) input, as the preprocess section says."""
    Image = pillow()
    rows = []
    mean = np.asarray(p.mean, dtype=np.float32)
    std = np.asarray(p.std, dtype=np.float32)
    for im in images:
        if p.resize and im.size != (p.width, p.height):
            im = im.resize((p.width, p.height), resample=Image.Resampling(RESAMPLE.index(p.resample)))
        arr = np.asarray(im, dtype=np.float32)
        if arr.shape[:2] != (p.height, p.width):
            raise InputError(f"an image is {arr.shape[1]}x{arr.shape[0]} but the model takes {p.width}x{p.height} and "
                             "its artifact says not to resize; resize the images first.")
        if p.rescale:
            arr = arr * np.float32(p.rescale_factor)
        if p.normalize:
            arr = (arr - mean) / std
        rows.append(arr.transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(rows), dtype=np.float32)
