"""Reading datasets from disk, shared by every file-based loader: path checks whose errors show
the expected layout, reading images and masks, label maps to instances, split rules, and the
datasets that pair each image with a mask file.

A dataset module only says where its files are (a `Layout` tree), how it splits, and its label
quirks (which values are background, binary masks, ...).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, TypeVar

import numpy as np
from PIL import Image

from datasets.instances import InstanceDataset, SampleError

T = TypeVar("T")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
BINARY_THRESHOLD = 127  # a grey mask pixel above this is foreground (the authors' binary GTs)
# PIL modes whose pixel values are labels as stored: grey, palette indices, 16- and 32-bit integers
LABEL_MODES = ("L", "P", "I;16", "I;16B", "I;16L", "I")
# PIL modes of greyscale images with more than 8 bits per pixel
WIDE_GREY_MODES = ("I;16", "I;16B", "I;16L", "I")


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
        layout = cls(dataset, Path(root).expanduser(), tree)
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

    def files_by_stem(self, folder: Path, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> dict[str, Path]:
        """{stem: path} of the files in `folder` (a checked folder, see `folder`) with one of
        `extensions` (any case), sorted by stem."""
        files: dict[str, Path] = {}
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in extensions:
                if path.stem in files:
                    raise self.error(f"'{files[path.stem]}' and '{path}' have the same name; keep one of them")
                files[path.stem] = path
        return dict(sorted(files.items()))


def interleave(items: Sequence[T], k: int, split: str) -> list[T]:
    """The authors' k:1 split: of every k + 1 consecutive items, the first k are "train" and the
    last is the eval split (returned for "val" and "test" alike)."""
    evaluation = split != "train"
    return [item for i, item in enumerate(items) if (i % (k + 1) == k) == evaluation]


def read_image(path: Path) -> np.ndarray:
    """H x W x 3 uint8 RGB pixels as stored (EXIF orientation is not applied, so they stay aligned
    with masks drawn on the stored pixels). Greyscale images of more than 8 bits (16-bit PNG and
    TIFF, as microscopes write) are scaled from the range of their type to 0-255, where
    convert("RGB") would clip them to white. Raises SampleError if the file cannot be read."""
    try:
        with Image.open(path) as image:
            if image.mode in WIDE_GREY_MODES:
                return np.repeat(wide_grey_to_uint8(np.array(image))[..., None], 3, axis=2)
            return np.array(image.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise SampleError(f"cannot read image '{path}' ({error})") from error


def wide_grey_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """H x W integer pixels -> uint8 scaled by the range of their type: 0-65535 for 16 bits, and for
    PIL's 32-bit mode "I" too when every value fits in it (PIL opens some 16-bit files so), else
    0 to 2^31 - 1 (negative values become 0)."""
    pixels = pixels.astype(np.int64).clip(min=0)
    fits_16_bits = pixels.max(initial=0) <= np.iinfo(np.uint16).max
    top = np.iinfo(np.uint16).max if fits_16_bits else np.iinfo(np.int32).max
    return np.round(pixels * (255.0 / top)).astype(np.uint8)


def read_label_map(path: Path) -> np.ndarray:
    """H x W mask or label map: grey, palette (as indices) and 16/32-bit PNGs as stored; colour
    files are converted to grey and 1-bit files to 0 / 255. Raises SampleError if unreadable."""
    try:
        with Image.open(path) as mask:
            return np.array(mask if mask.mode in LABEL_MODES else mask.convert("L"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise SampleError(f"cannot read mask '{path}' ({error})") from error


def check_same_size(image: np.ndarray, image_path: Path, masks: np.ndarray, mask_path: Path | str) -> None:
    """Raise SampleError unless masks (N x H x W) have the size of image (H x W x 3)."""
    if masks.shape[1:] != image.shape[:2]:
        raise SampleError(f"mask '{mask_path}' is {masks.shape[2]}x{masks.shape[1]} but image '{image_path}' is "
                          f"{image.shape[1]}x{image.shape[0]} (width x height)")


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


class FileDataset(InstanceDataset):
    """A dataset read from disk: `records` describe one image each (its file is `record.image`);
    an empty split is an error."""

    def __init__(self, records: list, layout: Layout, split: str, **common) -> None:
        super().__init__(**common)
        if not records:
            raise layout.error(f"the {split} split has no images")
        self.records = records

    def load_image(self, index: int) -> np.ndarray:
        return read_image(self.records[index].image)

    def image_identity(self, index: int) -> str:
        """The image's path, size and modification time: a file replaced under the same name changes it."""
        path = self.records[index].image
        try:
            stat = path.stat()
        except OSError:  # unreadable: loading it is reported as a skip
            return f"{path}:missing"
        return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"


class ImagesOnlyDataset(FileDataset):
    """Images without labels (prompt_source=auto trains on them; nothing can be scored): one
    ImageRecord per image."""

    has_labels = False

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, None]:
        raise RuntimeError("an images-only dataset has no labels; prompt_source=auto reads its images with load_image")


@dataclass(frozen=True)
class ImageRecord:
    image: Path


def labels_optional(cfg, split: str) -> bool:
    """Whether the `split` of the configured dataset may come without labels: the training split
    when its prompts come from the automatic instances (prompt_source=auto)."""
    return split == "train" and cfg.prompt_source == "auto"


def missing_labels(layout: Layout, cfg, split: str, what: str) -> DatasetLayoutError:
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
                 background: tuple[int, ...] = (0,)) -> list[MaskRecord]:
    """One record per image ({stem: path}, in that order) with the mask of the same stem; an image
    without one gets mask_folder / <stem>.png, so that loading it reports the missing file."""
    return [MaskRecord(image, masks.get(stem, mask_folder / f"{stem}.png"), background)
            for stem, image in images.items()]


class LabelMapDataset(FileDataset):
    """Images with one mask file each (MaskRecord): a label map giving one instance per value not
    in the record's background, or with `binary` a grey mask thresholded at > 127, which gives
    one foreground instance. `drop_empty` removes images whose mask has no instance (it reads
    every mask of the split once; the loaders turn it off for a training split whose labels are
    not read, prompt_source=auto)."""

    def __init__(self, records: list[MaskRecord], layout: Layout, split: str, binary: bool = False,
                 drop_empty: bool = False, **common) -> None:
        self.binary = binary
        if drop_empty:
            records = [r for r in records if self._has_instances(r)]
        super().__init__(records, layout, split, **common)

    def read_masks(self, record: MaskRecord) -> np.ndarray:
        """N x H x W bool instances of a record's mask file."""
        labels = read_label_map(record.mask)
        if self.binary:
            labels = (labels > BINARY_THRESHOLD).astype(np.uint8)
        return label_instances(labels, record.background)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, None]:
        record = self.records[index]
        image = read_image(record.image)
        masks = self.read_masks(record)
        check_same_size(image, record.image, masks, record.mask)
        return image, masks, None

    def _has_instances(self, record: MaskRecord) -> bool:
        try:
            return len(self.read_masks(record)) > 0
        except SampleError:
            return True  # kept, so that loading it is reported and counted as a skip
