"""Reading datasets from disk, shared by every file-based loader: path checks whose errors show
the expected layout, reading images and masks, label maps to instances, split rules, and the
datasets that pair each image with a mask file.

A dataset module only says where its files are (a `Layout` tree), how it splits, and its label
quirks (which values are background, binary masks, ...).
"""

from __future__ import annotations

import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, TypeVar

import numpy as np
from PIL import Image, ImageOps

from configs.base_config import CHOICES
from datasets.instances import InstanceDataset, SampleError
from datasets.inventory import IMAGE_EXTENSIONS, NO_IMAGE, NO_INSTANCE, NO_MASK, Inventory

T = TypeVar("T")

BINARY_THRESHOLD = 127  # a grey mask pixel above this is foreground (the authors' binary GTs)
MAX_GREY_SPREAD = 100  # channel spread above which a binary mask's pixel is a colour, not a lossy grey
# PIL modes whose pixel values are labels as stored: grey, palette indices, 16- and 32-bit integers
LABEL_MODES = ("L", "P", "I;16", "I;16B", "I;16L", "I")
# PIL modes with an alpha channel (a mask may be drawn in it alone)
ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
# PIL formats whose compression changes pixel values (label values with them)
LOSSY_FORMATS = ("JPEG", "MPO")
# PIL modes of greyscale images with more than 8 bits per pixel
WIDE_GREY_MODES = ("I;16", "I;16B", "I;16L", "I")
ORIENTATION_TAG = 0x0112  # EXIF orientation
# EXIF orientations other than 1 (as stored): how the picture is displayed
ORIENTATIONS = {2: "mirrored", 3: "rotated 180 degrees", 4: "flipped upside down", 5: "transposed",
                6: "rotated 90 degrees clockwise", 7: "transversed", 8: "rotated 90 degrees counter-clockwise"}
SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # those that swap width and height


class DatasetLayoutError(FileNotFoundError):
    """A dataset folder or file is missing, or the dataset does not have the expected layout."""


@dataclass(frozen=True)
class Layout:
    """Where a dataset lives: its name, root folder and the tree expected below the root, so that
    every path check can say what is missing and what was expected."""

    dataset: str
    root: Path
    tree: str  # the expected layout, <root> standing for dataset.root

    @classmethod
    def at(cls, dataset: str, root: str, tree: str) -> Layout:
        """The layout of `dataset` at `root` (dataset.root), which must be an existing folder."""
        layout = cls(dataset, Path(root), tree)
        if not root:
            raise layout.error("dataset.root is empty; set it to the dataset's folder")
        layout.folder(".")
        return layout

    def error(self, problem: str) -> DatasetLayoutError:
        tree = textwrap.indent(textwrap.dedent(self.tree).strip("\n"), "  ")
        return DatasetLayoutError(f"Dataset '{self.dataset}': {problem}.\nExpected layout (<root> = dataset.root "
                                  f"= '{self.root}'):\n{tree}\nSee PREPARE.md for how to get and arrange it.")

    def folder(self, relative: str | Path) -> Path:
        """root / relative, which must be a folder."""
        path = self.root / relative
        if not path.is_dir():
            raise self.error(f"folder '{path}' not found")
        return path

    def file(self, relative: str | Path) -> Path:
        """root / relative (an absolute `relative` stays as is), which must be a file."""
        path = self.root / relative
        if not path.is_file():
            raise self.error(f"file '{path}' not found")
        return path

    def files_by_stem(self, folder: Path, extensions: Sequence[str] = IMAGE_EXTENSIONS,
                      inventory: Inventory | None = None, sub_folders: bool = False) -> dict[str, Path]:
        """{stem: path} of the files in `folder` (a checked folder, see `folder`) with one of
        `extensions` (any case), sorted by stem; with `sub_folders` its folders too, by name. The
        `inventory` counts the folder's entries and skips the others (Inventory.scan)."""
        inventory = inventory or Inventory(self.dataset, "")
        files: dict[str, Path] = {}
        for path in inventory.scan(folder, extensions, sub_folders):
            stem = path.name if path.is_dir() else path.stem
            if stem in files:
                raise self.error(f"'{files[stem]}' and '{path}' have the same name; keep one of them")
            files[stem] = path
        return dict(sorted(files.items()))


def interleave(items: Sequence[T], k: int, split: str) -> list[T]:
    """The authors' k:1 split: of every k + 1 consecutive items, the first k are "train" and the
    last is the eval split (returned for "val" and "test" alike)."""
    evaluation = split != "train"
    return [item for i, item in enumerate(items) if (i % (k + 1) == k) == evaluation]


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


class DataWarning(UserWarning):
    """The files of a dataset need a word before they are used (EXIF orientation tags, a COCO json
    whose parts disagree...): the message names the file, the count and the option or the fix."""


class FileDataset(InstanceDataset):
    """A dataset read from disk: `records` describe one image each (its file is `record.image`, and
    `record.mask` its mask file if it has one); an empty split is an error. `inventory` says what
    became of every file of the folders the split is read from (datasets/inventory.py).

    `exif` (dataset.exif) says whether EXIF orientation tags are applied to images and mask files:
    "apply", "ignore", or "auto", the loader's convention `EXIF_CONVENTION`. A dataset with labels
    looks for such tags when built and warns (DataWarning) if it finds any."""

    EXIF_CONVENTION = "ignore"  # COCO's and the paper datasets': annotations follow the stored pixels

    def __init__(self, records: list, layout: Layout, split: str, exif: str = "auto",
                 inventory: Inventory | None = None, **common) -> None:
        super().__init__(**common)
        if not records:
            skips = f" (of the files found, skipped: {inventory.skips()})" if inventory and inventory.skipped else ""
            raise layout.error(f"the {split} split has no images{skips}")
        self.records = records
        self.inventory = inventory
        if inventory is not None:
            inventory.used = len(records)
        self.apply_exif = self.exif_applied(exif)
        if self.has_labels:
            self.check_files(layout.dataset, split, exif)

    @classmethod
    def exif_applied(cls, exif: str) -> bool:
        """Whether dataset.exif = `exif` applies orientation tags in this loader."""
        if exif not in CHOICES["dataset.exif"]:  # "auto": the loader's convention (PREPARE.md)
            raise ValueError(f"exif must be one of {', '.join(CHOICES['dataset.exif'])}, got '{exif}'")
        return (cls.EXIF_CONVENTION if exif == "auto" else exif) == "apply"

    def check_files(self, dataset: str, split: str, exif: str) -> None:
        """Read the headers of the records' files: warn if image or mask files carry an EXIF
        orientation tag, saying how they are read and which dataset.exif reads them the other way;
        then `check_sizes`."""
        tagged: dict[str, list[tuple[Path, int]]] = {"image": [], "mask": []}
        sizes = []
        for record in self.records:
            for kind, path in (("image", record.image), ("mask", getattr(record, "mask", None))):
                orientation, size = file_header(path) if path is not None else (1, None)
                if orientation != 1:
                    tagged[kind].append((path, orientation))
                if kind == "image":
                    sizes.append(None if size is None else size_as_read(orientation, size, self.apply_exif))
        self.warn_orientation(dataset, split, exif, tagged)
        self.check_sizes(split, sizes)

    def check_sizes(self, split: str, sizes: list[tuple[int, int] | None]) -> None:
        """Check the (width, height) of each record's image as read (None: unreadable) against what
        the labels expect, before any work; loaders whose labels state a size override this."""

    def warn_orientation(self, dataset: str, split: str, exif: str, tagged: dict[str, list[tuple[Path, int]]]) -> None:
        """Warn if image or mask files (`tagged`: kind -> [(path, orientation)]) carry an EXIF
        orientation tag."""
        if not (tagged["image"] or tagged["mask"]):
            return
        found = "; ".join(f"{len(files)} {kind} file(s) of {len(self.records)} (e.g. '{files[0][0]}', "
                          f"{ORIENTATIONS[files[0][1]]} when displayed)" for kind, files in tagged.items() if files)
        how = "as displayed, the tag applied" if self.apply_exif else "as stored, the tag ignored"
        why = (f"dataset.exif=auto: the {dataset} loader's convention" if exif == "auto" else f"dataset.exif={exif}")
        drawn = "on the picture as displayed" if self.apply_exif else "on the stored pixels"
        other = "ignore" if self.apply_exif else "apply"
        warnings.warn(f"Dataset '{dataset}' ({split} split): {found} carry an EXIF orientation tag. They are read "
                      f"{how} ({why}), which is right for masks drawn {drawn}; if the masks were drawn the other way, "
                      f"set dataset.exif={other} (PREPARE.md, \"EXIF orientation\").", DataWarning)

    def load_image(self, index: int) -> np.ndarray:
        return read_image(self.records[index].image, self.apply_exif)

    def image_identity(self, index: int) -> str:
        """The image's path, size and modification time: a file replaced under the same name changes it;
        and whether its EXIF orientation turns the pixels read (dataset.exif)."""
        path = self.records[index].image
        try:
            stat = path.stat()
        except OSError:  # unreadable: loading it is reported as a skip
            return f"{path}:missing"
        turned = ":displayed" if self.apply_exif and file_header(path)[0] != 1 else ""
        return f"{path}:{stat.st_size}:{stat.st_mtime_ns}{turned}"


class ImagesOnlyDataset(FileDataset):
    """Images without labels (prompt_source=auto trains on them; nothing can be scored): one
    ImageRecord per image."""

    has_labels = False

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, None]:
        raise RuntimeError("an images-only dataset has no labels; prompt_source=auto reads its images with load_image")


@dataclass(frozen=True)
class ImageRecord:
    image: Path


def missing_labels(layout: Layout, split: str, what: str) -> DatasetLayoutError:
    """The error of a split without labels (`what` names what is missing) where they are needed."""
    if split == "train":
        need = ("the training prompts (prompt_source=labels) come from them; set prompt_source=auto to adapt "
                "without labels (README, \"Adapting with no labels\")")
    else:
        need = (f"the {split} split is evaluated (dataset.eval_split) and scoring needs labels, also with "
                "prompt_source=auto; give that split masks or annotations")
    return layout.error(f"{what}: labels are needed, as {need}")


@dataclass(frozen=True)
class MaskRecord:
    """An image and its mask file; `background` lists the mask values that are not instances."""

    image: Path
    mask: Path
    background: tuple[int, ...] = (0,)


def mask_records(images: dict[str, Path], masks: dict[str, Path], mask_folder: Path,
                 background: tuple[int, ...] = (0,), inventory: Inventory | None = None,
                 elsewhere: Sequence[str] = ()) -> list[MaskRecord]:
    """One record per image ({stem: path}, in that order) with the mask of the same stem; an image
    without one gets mask_folder / <stem>.png (`labelled` skips it). The `inventory` skips the masks
    of no image, but those of the `elsewhere` stems (another split's images, in a shared folder)."""
    if inventory is not None:
        for stem in sorted(set(masks) - set(images) - set(elsewhere)):
            inventory.skip(masks[stem], NO_IMAGE, f"a mask without an image (no image named '{stem}')")
    return [MaskRecord(image, masks.get(stem, mask_folder / f"{stem}.png"), background)
            for stem, image in images.items()]


def labelled(records: Sequence[T], inventory: Inventory) -> list[T]:
    """The records whose mask file (or folder) exists; the others are skipped as images without a
    mask, naming the file expected."""
    kept = []
    for record in records:
        if record.mask.exists():
            kept.append(record)
        else:
            inventory.skip(record.image, NO_MASK, f"an image without a mask (no '{record.mask}')")
    return kept


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


class LabelMapDataset(FileDataset):
    """Images with one mask file each (MaskRecord): a label map giving one instance per value not
    in the record's background, or with `binary` a grey mask thresholded at > 127, which gives
    one foreground instance. `drop_empty` removes images whose mask has no instance (it reads
    every mask of the split once; the loaders turn it off for a training split whose labels are
    not read, prompt_source=auto)."""

    def __init__(self, records: list[MaskRecord], layout: Layout, split: str, binary: bool = False,
                 drop_empty: bool = False, exif: str = "auto", inventory: Inventory | None = None, **common) -> None:
        self.binary = binary
        self.apply_exif = self.exif_applied(exif)  # read_masks needs it now
        if drop_empty:
            kept = []
            for record in records:
                if self._has_instances(record):
                    kept.append(record)
                elif inventory is not None:
                    inventory.skip(record.image, NO_INSTANCE, self.no_instance(record))
            records = kept
        super().__init__(records, layout, split, exif, inventory, **common)

    def read_masks(self, record: MaskRecord) -> np.ndarray:
        """N x H x W bool instances of a record's mask file; a binary map (0 / one value, `binary` or
        a background of 0 alone) that looks inverted is read inverted (upright)."""
        labels = read_label_map(record.mask, self.apply_exif, self.binary)
        if self.binary or record.background == (0,):
            labels = upright(labels, record.mask, self.binary)
        return label_instances(labels, record.background)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, None]:
        record = self.records[index]
        image = read_image(record.image, self.apply_exif)
        masks = self.read_masks(record)
        check_same_size(image, record.image, masks, record.mask)
        if not len(masks):
            raise SampleError(self.no_instance(record))
        return image, masks, None

    def _has_instances(self, record: MaskRecord) -> bool:
        try:
            return len(self.read_masks(record)) > 0
        except SampleError:
            return True  # kept, so that loading it is reported and counted as a skip

    def no_instance(self, record: MaskRecord) -> str:
        """Why a record's mask gives no instance (its masks are empty), naming the file."""
        background = f"grey {BINARY_THRESHOLD} or less" if self.binary else \
            f"value{'s' * (len(record.background) > 1)} {', '.join(map(str, record.background))}"
        return f"mask '{record.mask}' has no instance: every pixel is background ({background})"
