"""Mask files to instances (label decoding): a file becomes an H x W label map as its author meant it
(grey, palette, 16-bit and colour-coded maps; binary masks saved as JPEG or anti-aliased; masks
drawn in alpha; inverted masks), then one instance per label; files that cannot be read as labels
raise SampleError naming the file and the reason.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from datasets.images import oriented, refuse_animated
from datasets.instances import SampleError
from datasets.layout import DataWarning

BINARY_THRESHOLD = 127  # a grey mask pixel above this is foreground (the authors' binary GTs)
MAX_GREY_SPREAD = 100  # channel spread above which a binary mask's pixel is a colour, not a lossy grey
# PIL modes whose pixel values are labels as stored: grey, palette indices, 16- and 32-bit integers
LABEL_MODES = ("L", "P", "I;16", "I;16B", "I;16L", "I")
# PIL modes with an alpha channel (a mask may be drawn in it alone)
ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
# PIL formats whose compression changes pixel values (label values with them)
LOSSY_FORMATS = ("JPEG", "MPO")


def read_label_map(path: Path, apply_exif: bool = False, binary: bool = False) -> np.ndarray:
    """H x W integer label map of a mask file, as stored or with `apply_exif` as displayed.

    Grey, palette (as indices) and 16/32-bit files are read as stored; 1-bit as 0 / 255; transparent
    pixels (alpha 0, or a palette's transparent index) are 0, background. A colour file whose
    pixels are all grey is read as grey; otherwise it is colour-coded (colour_labels: each colour
    one label, black 0). A file of one colour whose alpha varies is drawn in its alpha: alpha > 127
    is 255, the rest 0 (alpha_drawing). A grey binary mask whose edges were blended (JPEG, anti-
    aliasing: only 0 and 255 fill regions) is thresholded to 0 / 255 (binary_like); any other JPEG
    label map is refused. With `binary` the map is 0 / 1, 1 where the file as grey (colour converted
    as PIL does, as the authors' loaders read their binary ground truths) is above BINARY_THRESHOLD.
    Raises SampleError, naming the file and the reason, if unreadable or refused.
    """
    try:
        with Image.open(path) as mask:
            refuse_animated(mask, path, "mask")
            if not binary and mask.mode not in LABEL_MODES and wide_colour(mask):
                raise SampleError(f"mask '{path}' is 16-bit colour, which PIL reads as 8 bits per channel (distinct "
                                  "colours may merge); save it as 8-bit colour, or as a 16-bit grey label map")
            lossy = mask.format in LOSSY_FORMATS
            mask = oriented(mask, apply_exif)
            drawn = alpha_drawing(mask)
            if drawn is not None:
                return (drawn > 0).astype(np.uint8) if binary else drawn
            if binary:
                return binary_pixels(mask, path)
            labels = label_pixels(mask, path)
            return labels if mask.mode in ("P", "PA") else binary_like(labels, path, lossy)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise SampleError(f"cannot read mask '{path}' ({error})") from error


def alpha_drawing(mask: Image.Image) -> np.ndarray | None:
    """H x W uint8 0 / 255 of a mask drawn in its alpha channel alone (every pixel the same colour,
    alpha varying: 255 where alpha > 127), or None for any other mask."""
    if mask.mode not in ALPHA_MODES:
        return None
    rgba = np.array(mask.convert("RGBA"))
    alpha = rgba[..., 3]
    if alpha.min(initial=0) == alpha.max(initial=0) or not (rgba[..., :3] == rgba[:1, :1, :3]).all():
        return None
    return np.where(alpha > 127, 255, 0).astype(np.uint8)


def interior(values: np.ndarray) -> np.ndarray:
    """H x W bool: pixels whose 4 neighbours share their value (False on the image border)."""
    inner = np.zeros(values.shape, bool)
    centre = values[1:-1, 1:-1]
    inner[1:-1, 1:-1] = ((centre == values[:-2, 1:-1]) & (centre == values[2:, 1:-1])
                         & (centre == values[1:-1, :-2]) & (centre == values[1:-1, 2:]))
    return inner


def binary_like(labels: np.ndarray, path: Path, lossy: bool) -> np.ndarray:
    """A label map (of a file not of palette indices) as meant: an 8-bit grey binary mask whose
    edges were blended (lossy compression or anti-aliasing: values between 0 and 255 along edges,
    but only 0 and 255 fill any region, i.e. have a pixel whose 4 neighbours share it) becomes
    0 / 255 at grey > BINARY_THRESHOLD, one instance instead of one per blended value. Any other
    label map (16-bit, colour-coded: not uint8) is kept as stored, unless it comes from a lossy
    format (JPEG), whose compression changes labels: SampleError."""
    values = np.unique(labels)
    if labels.dtype != np.uint8 or (set(values.tolist()) <= {0, 255} and not lossy):
        return labels
    solid = set(np.unique(labels[interior(labels)]).tolist())
    if solid <= {0, 255}:
        return np.where(labels > BINARY_THRESHOLD, 255, 0).astype(np.uint8)
    if lossy:
        raise SampleError(f"mask '{path}' is a JPEG label map of {len(values)} grey values: JPEG compression changes "
                          "label values along every edge, each of which would become an instance. Save label maps as "
                          "PNG (a binary 0 / 255 mask may be JPEG: it is read at grey > 127)")
    return labels


def binary_pixels(mask: Image.Image, path: Path) -> np.ndarray:
    """H x W 0 / 1 of an opened binary mask: 1 where its grey (colour converted as PIL does, as the
    authors' loaders read their ground truths) is above BINARY_THRESHOLD. A mask in clear colours
    (a channel 100 above another; lossy grey masks stay far below) is refused with SampleError:
    a red foreground is grey 76, which the threshold would make background."""
    if mask.mode in LABEL_MODES:
        return (np.array(mask) > BINARY_THRESHOLD).astype(np.uint8)
    # transparent pixels are background, as in a label map
    opaque = np.array(mask.getchannel("A")) > 0 if mask.mode in ALPHA_MODES else True
    if mask.mode not in ("1", "L", "LA", "La"):
        rgb = np.array(mask.convert("RGB")).astype(np.int16)
        spread = rgb.max(axis=2) - rgb.min(axis=2)
        if spread.max(initial=0) > MAX_GREY_SPREAD:
            y, x = np.unravel_index(int(spread.argmax()), spread.shape)
            raise SampleError(f"binary mask '{path}' is in colour (e.g. RGB {tuple(int(v) for v in rgb[y, x])} at "
                              f"x={x}, y={y}); this loader reads masks as grey > {BINARY_THRESHOLD}, which would "
                              "turn colours into background or foreground by their brightness: save it as a grey "
                              "0 / 255 mask")
    return ((np.array(mask.convert("L")) > BINARY_THRESHOLD) & opaque).astype(np.uint8)


def label_pixels(mask: Image.Image, path: Path) -> np.ndarray:
    """H x W labels of an opened mask file (see read_label_map)."""
    mode = mask.mode
    if mode in LABEL_MODES:
        labels = np.array(mask)
        if mode == "P":
            labels[np.isin(labels, transparent_indices(mask))] = 0
        return labels
    if mode == "1":
        return np.array(mask.convert("L"))
    if mode in ("LA", "La", "PA"):
        pixels = np.array(mask)
        return np.where(pixels[..., 1] == 0, 0, pixels[..., 0]).astype(np.uint8)
    if mode == "F":
        raise SampleError(f"mask '{path}' is a float image; a mask holds integer labels: save it as 8- or 16-bit "
                          "grey or palette PNG")
    try:
        rgba = np.array(mask.convert("RGBA"))
    except ValueError as error:
        raise SampleError(f"mask '{path}' has PIL mode '{mode}', which cannot be read as labels ({error}); save "
                          "it as grey, palette or RGB PNG") from error
    rgb, opaque = rgba[..., :3], rgba[..., 3] > 0
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return np.where(opaque, rgb[..., 0], 0).astype(np.uint8)
    return colour_labels(np.where(opaque[..., None], rgb, 0), path)


def wide_colour(image: Image.Image) -> bool:
    """Whether an opened, not yet loaded colour file stores more than 8 bits per channel."""
    for tile in image.tile:
        rawmode = tile[3] if isinstance(tile[3], str) else tile[3][0] if tile[3] else ""
        if isinstance(rawmode, str) and ";16" in rawmode:
            return True
    return False


def transparent_indices(mask: Image.Image) -> list[int]:
    """The fully transparent palette indices of a "P" image (PIL's info["transparency"]: one index,
    or the alpha of each index)."""
    transparency = mask.info.get("transparency")
    if isinstance(transparency, int):
        return [transparency]
    if isinstance(transparency, bytes):
        return [index for index, alpha in enumerate(transparency) if alpha == 0]
    return []


def colour_labels(rgb: np.ndarray, path: Path) -> np.ndarray:
    """H x W x 3 uint8 colour-coded instance mask -> H x W int32 labels: black is 0, every other
    colour one label (1, 2, ... in increasing RGB order). A mask whose edges were smoothed
    (anti-aliasing, lossy compression) has blended colours that would each become an instance: a
    colour with no pixel whose 4 neighbours share it (found only along edges, or an instance too
    thin to have an inner pixel) is taken for one and the mask is refused with SampleError."""
    codes = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    values, labels = np.unique(codes, return_inverse=True)
    labels = labels.reshape(codes.shape).astype(np.int32)
    if values[0] != 0:
        labels += 1  # no black: every colour is an instance
    inner = interior(codes)
    edge_only = np.setdiff1d(np.unique(labels[labels > 0]), np.unique(labels[inner & (labels > 0)]))
    if len(edge_only):
        example = values[edge_only[0] - (1 if values[0] == 0 else 0)]
        raise SampleError(
            f"mask '{path}' is colour-coded (one colour per instance, black background) but {len(edge_only)} of its "
            f"{len(values)} colours, e.g. RGB {((example >> 16) & 255, (example >> 8) & 255, example & 255)}, have "
            "no pixel whose 4 neighbours share it: blended colours along edges from anti-aliasing or lossy "
            "compression, each of which would become an instance (or instances too thin for a colour-coded "
            "mask). Export the mask without smoothing as PNG, or as a grey or palette label map")
    return labels


def check_same_size(image: np.ndarray, image_path: Path, masks: np.ndarray, mask_path: Path | str) -> None:
    """Raise SampleError unless masks (N x H x W) have the size of image (H x W x 3)."""
    if masks.shape[1:] != image.shape[:2]:
        turned = masks.shape[1:] == image.shape[1::-1]
        hint = (" (it matches the image turned by 90 degrees: an EXIF orientation tag read by one tool and not the "
                "other? See dataset.exif in PREPARE.md)") if turned else ""
        raise SampleError(f"mask '{mask_path}' is {masks.shape[2]}x{masks.shape[1]} but image '{image_path}' is "
                          f"{image.shape[1]}x{image.shape[0]} (width x height){hint}")


def label_instances(labels: np.ndarray, background: Sequence[int] = (0,)) -> np.ndarray:
    """H x W label map -> N x H x W bool, one instance per distinct value not in `background`, in
    increasing value order (the authors' decode_mask: soft or anti-aliased values become instances)."""
    values = np.unique(labels)
    values = values[~np.isin(values, background)]
    return labels[None] == values[:, None, None]


def drop_empty_masks(masks: np.ndarray, boxes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Masks (N x H x W) without pixels removed, with their boxes (N x 4) if given."""
    keep = masks.any(axis=(1, 2))
    return masks[keep], None if boxes is None else boxes[keep]


def upright(labels: np.ndarray, path: Path, binary: bool = False) -> np.ndarray:
    """A binary label map (0 and one value v) as meant: one whose v covers the whole border of the
    image while 0 is enclosed is taken for an inverted mask (255 as background) and read inverted,
    with a DataWarning naming the file; any other map is returned as is."""
    values = np.unique(labels)
    if len(values) != 2 or values[0] != 0 or min(labels.shape) < 3:
        return labels
    foreground = labels != 0
    if not (foreground[0].all() and foreground[-1].all() and foreground[:, 0].all() and foreground[:, -1].all()):
        return labels
    value = values[1].item()
    share = 100 * float(foreground.mean())
    what = f"foreground (grey > {BINARY_THRESHOLD})" if binary else f"value {value}"
    warnings.warn(f"mask '{path}' looks inverted: its {what} covers the whole border of the image ({share:.0f}% of "
                  "it) and the background only enclosed regions, so it is read inverted, the enclosed regions as the "
                  "object (PREPARE.md, \"Masks\"). Save masks with 0 as the background.", DataWarning)
    return np.where(foreground, 0, value).astype(labels.dtype)
