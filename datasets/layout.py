"""Where a dataset's files are and which of them make a split: the layout checks, whose errors
(DatasetLayoutError) show the expected tree (`Layout`), the authors' k:1 split, and the records that
pair each image with its mask file; DataWarning, for files that need a word before they are used.

A dataset module says where its files are (a `Layout` tree), how it splits and its label quirks;
what the files hold is read by datasets/images.py and datasets/masks.py.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, TypeVar

from datasets.inventory import IMAGE_EXTENSIONS, NO_IMAGE, NO_MASK, Inventory

T = TypeVar("T")


class DatasetLayoutError(FileNotFoundError):
    """A dataset folder or file is missing, or the dataset does not have the expected layout."""


class DataWarning(UserWarning):
    """The files of a dataset need a word before they are used (EXIF orientation tags, a COCO json
    whose parts disagree...): the message names the file, the count and the option or the fix."""


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
