"""Image files to pixels: any mode PIL opens becomes H x W x 3 uint8 RGB, as stored or with its EXIF
orientation applied (dataset.exif); files that cannot be read, or that hold several frames, raise
SampleError naming the file and the reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from datasets.instances import SampleError

# PIL modes of greyscale images with more than 8 bits per pixel
WIDE_GREY_MODES = ("I;16", "I;16B", "I;16L", "I")
ORIENTATION_TAG = 0x0112  # EXIF orientation
# EXIF orientations other than 1 (as stored): how the picture is displayed
ORIENTATIONS = {2: "mirrored", 3: "rotated 180 degrees", 4: "flipped upside down", 5: "transposed",
                6: "rotated 90 degrees clockwise", 7: "transversed", 8: "rotated 90 degrees counter-clockwise"}
SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # those that swap width and height


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8, 1: as stored) of an opened image. A PNG whose EXIF comes after its
    pixels reports it only once loaded (looking earlier would decode every PNG of a dataset scan)."""
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    try:
        orientation = image.getexif().get(ORIENTATION_TAG, 1)
    except (OSError, SyntaxError, ValueError):  # a malformed EXIF block: the pixels are still readable
        return 1
    return orientation if orientation in ORIENTATIONS else 1


def file_header(path: Path) -> tuple[int, tuple[int, int] | None]:
    """The EXIF orientation and the stored (width, height) of an image file, from its header; 1 and
    None for a folder or a file that cannot be read (reading it is reported when it is loaded)."""
    try:
        with Image.open(path) as image:
            return exif_orientation(image), image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return 1, None


def size_as_read(orientation: int, size: tuple[int, int], apply_exif: bool) -> tuple[int, int]:
    """(width, height) of a stored image of `size` as read: turned when its orientation is applied and
    swaps the axes (5 to 8)."""
    return size[::-1] if apply_exif and orientation in SWAPPING_ORIENTATIONS else size


def oriented(image: Image.Image, apply_exif: bool) -> Image.Image:
    """The image as displayed (its EXIF orientation applied) with `apply_exif`, else as stored."""
    return ImageOps.exif_transpose(image) if apply_exif and exif_orientation(image) != 1 else image


def refuse_animated(image: Image.Image, path: Path, kind: str) -> None:
    """Raise SampleError for an opened file of several frames (animated GIF, PNG or WebP; a TIFF
    stack): which frame a mask belongs to is unknown."""
    if getattr(image, "is_animated", False):
        raise SampleError(f"{kind} '{path}' has {image.n_frames} frames (an animation or a stack): which of them "
                          f"the {'image' if kind == 'mask' else 'mask'} belongs to is unknown; save that frame alone "
                          f"(e.g. as PNG)")


def read_image(path: Path, apply_exif: bool = False) -> np.ndarray:
    """H x W x 3 uint8 RGB pixels of an image file of any mode PIL opens, as stored or with
    `apply_exif` as displayed (see dataset.exif). Raises SampleError, naming the file and the
    reason, if the file cannot be read, has several frames, or its mode cannot be made RGB."""
    try:
        with Image.open(path) as image:
            refuse_animated(image, path, "image")
            return image_pixels(oriented(image, apply_exif), path)
    except Image.UnidentifiedImageError as error:
        raise SampleError(f"cannot read image '{path}' ({error}; PIL cannot open this format, e.g. a multi-channel "
                          "float TIFF: save it as 8- or 16-bit PNG or TIFF)") from error
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise SampleError(f"cannot read image '{path}' ({error})") from error


def image_pixels(image: Image.Image, path: Path) -> np.ndarray:
    """H x W x 3 uint8 RGB of an opened image. 8-bit modes (grey, 1-bit, palette, with alpha, CMYK,
    YCbCr...) convert as PIL does (alpha is dropped; PIL reads 16-bit colour files as their high
    bytes); wider grey is scaled by the range of its type (wide_grey_to_uint8), where
    convert("RGB") would clip it to white; float grey ("F") is taken as 0-1 or 0-255 (float_to_uint8)."""
    if image.mode in WIDE_GREY_MODES:
        return np.repeat(wide_grey_to_uint8(np.array(image))[..., None], 3, axis=2)
    if image.mode == "F":
        return np.repeat(float_to_uint8(np.array(image), path)[..., None], 3, axis=2)
    try:
        return np.array(image.convert("RGB"))
    except ValueError as error:
        raise SampleError(f"image '{path}' has PIL mode '{image.mode}', which cannot be converted to RGB "
                          f"({error}); save it as 8-bit RGB or grey") from error


def wide_grey_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """H x W integer pixels -> uint8 scaled by the range of their type: 0-65535 for 16 bits, and for
    PIL's 32-bit mode "I" too when every value fits in it (PIL opens some 16-bit files so), else
    0 to 2^31 - 1 (negative values become 0)."""
    pixels = pixels.astype(np.int64).clip(min=0)
    fits_16_bits = pixels.max(initial=0) <= np.iinfo(np.uint16).max
    top = np.iinfo(np.uint16).max if fits_16_bits else np.iinfo(np.int32).max
    return np.round(pixels * (255.0 / top)).astype(np.uint8)


def float_to_uint8(pixels: np.ndarray, path: Path) -> np.ndarray:
    """H x W float pixels -> uint8: values in 0-1 (how float images are usually stored) are scaled
    by 255, values in 0-255 kept; anything else (negative, above 255, NaN) has no agreed meaning
    and raises SampleError."""
    finite = bool(np.isfinite(pixels).all())
    low, high = (float(pixels.min()), float(pixels.max())) if finite and pixels.size else (np.nan, np.nan)
    if not (low >= 0 and high <= 255):  # NaN fails both
        raise SampleError(f"image '{path}' is a float image with values in [{low:g}, {high:g}]; only 0-1 or 0-255 "
                          "can be read: rescale it to one of them, or save it as 8- or 16-bit")
    scale = 255.0 if high <= 1 else 1.0
    return np.round(pixels * scale).astype(np.uint8)
