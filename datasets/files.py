"""The datasets read from files, on which every file-based loader builds: `FileDataset` (records of
image files, their EXIF orientation tags looked for), `ImagesOnlyDataset` (no labels:
prompt_source=auto) and `LabelMapDataset` (one mask file per image).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from datasets.images import ORIENTATIONS, file_header, read_image, size_as_read
from datasets.instances import InstanceDataset, SampleError
from datasets.inventory import NO_INSTANCE, Inventory
from datasets.layout import DataWarning, Layout, MaskRecord
from datasets.masks import BINARY_THRESHOLD, check_same_size, label_instances, read_label_map, upright
from datasets.spec import SampleOptions


class FileDataset(InstanceDataset):
    """A dataset read from disk: `records` describe one image each (its file is `record.image`, and
    `record.mask` its mask file if it has one); an empty split is an error. `inventory` says what
    became of every file of the folders the split is read from (datasets/inventory.py).

    Its `options` (datasets/spec.py SampleOptions) hold dataset.exif, which says whether EXIF
    orientation tags are applied to images and mask files: "apply", "ignore", or "auto", the
    loader's convention `EXIF_CONVENTION`. A dataset with labels looks for such tags when built and
    warns (DataWarning) if it finds any."""

    EXIF_CONVENTION = "ignore"  # COCO's and the paper datasets': annotations follow the stored pixels

    def __init__(self, records: list, layout: Layout, split: str, options: SampleOptions,
                 inventory: Inventory | None = None) -> None:
        super().__init__(options, train=split == "train")
        records = self.usable(records, inventory)
        if not records:
            skips = f" (of the files found, skipped: {inventory.skips()})" if inventory and inventory.skipped else ""
            raise layout.error(f"the {split} split has no images{skips}")
        self.records = records
        self.inventory = inventory
        if inventory is not None:
            inventory.used = len(records)
        if self.has_labels:
            self.check_files(layout.dataset, split)

    @property
    def apply_exif(self) -> bool:
        """Whether this loader applies orientation tags (dataset.exif "auto": its convention, PREPARE.md)."""
        exif = self.options.exif
        return (self.EXIF_CONVENTION if exif == "auto" else exif) == "apply"

    def usable(self, records: list, inventory: Inventory | None) -> list:
        """The records of the split that this dataset uses (all; LabelMapDataset may drop some)."""
        return records

    def check_files(self, dataset: str, split: str) -> None:
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
        self.warn_orientation(dataset, split, tagged)
        self.check_sizes(split, sizes)

    def check_sizes(self, split: str, sizes: list[tuple[int, int] | None]) -> None:
        """Check the (width, height) of each record's image as read (None: unreadable) against what
        the labels expect, before any work; loaders whose labels state a size override this."""

    def warn_orientation(self, dataset: str, split: str, tagged: dict[str, list[tuple[Path, int]]]) -> None:
        """Warn if image or mask files (`tagged`: kind -> [(path, orientation)]) carry an EXIF
        orientation tag."""
        if not (tagged["image"] or tagged["mask"]):
            return
        exif = self.options.exif
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


class LabelMapDataset(FileDataset):
    """Images with one mask file each (MaskRecord): a label map giving one instance per value not
    in the record's background, or with `binary` a grey mask thresholded at > 127, which gives
    one foreground instance. `drop_empty` removes images whose mask has no instance (it reads
    every mask of the split once; the loaders turn it off for a training split whose labels are
    not read, prompt_source=auto)."""

    def __init__(self, records: list[MaskRecord], layout: Layout, split: str, options: SampleOptions,
                 binary: bool = False, drop_empty: bool = False, inventory: Inventory | None = None) -> None:
        self.binary = binary
        self.drop_empty = drop_empty
        super().__init__(records, layout, split, options, inventory)

    def usable(self, records: list[MaskRecord], inventory: Inventory | None) -> list[MaskRecord]:
        """The records, without those whose mask has no instance with `drop_empty` (skipped in the inventory)."""
        if not self.drop_empty:
            return records
        kept = []
        for record in records:
            if self._has_instances(record):
                kept.append(record)
            elif inventory is not None:
                inventory.skip(record.image, NO_INSTANCE, self.no_instance(record))
        return kept

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
