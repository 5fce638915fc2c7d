"""Medical images: Kvasir-SEG (polyps, endoscopy) and ISIC 2016 (skin lesions, dermoscopy).

Both have binary masks (grey > 127 is foreground). ISIC gives one instance per image; Kvasir
splits its foreground into one instance per box of kavsir_bboxes.json (the mask inside the box).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass

import numpy as np

from datasets.files import LabelMapDataset
from datasets.inventory import Inventory
from datasets.layout import Layout, MaskRecord, interleave, labelled
from datasets.masks import drop_empty_masks
from datasets.spec import DatasetSpec

KVASIR_INTERLEAVE = 5  # the authors' 5:1 split, in the order of kavsir_bboxes.json's keys

KVASIR_TREE = """
<root>/
  images/<id>.jpg
  masks/<id>.jpg
  kavsir_bboxes.json   {"<id>": {"height", "width", "bbox": [{"label", "xmin", "ymin", "xmax", "ymax"}, ...]}, ...}
"""
ISIC_TREE = """
<root>/
  ISBI2016_ISIC_Part1_Training_GroundTruth.csv   gbk text; a header line, then: index, image path, mask path
  ISBI2016_ISIC_Part1_Test_GroundTruth.csv       (paths relative to <root>)
  ISBI2016_ISIC_Part1_Training_Data/ISIC_0000000.jpg ...
  ISBI2016_ISIC_Part1_Training_GroundTruth/ISIC_0000000_Segmentation.png ...
  ISBI2016_ISIC_Part1_Test_Data/...  and  ISBI2016_ISIC_Part1_Test_GroundTruth/...
"""
# ISIC 2016 has no validation split: "val" is the official test split, as "test"
ISIC_CSV = {"train": "ISBI2016_ISIC_Part1_Training_GroundTruth.csv",
            "val": "ISBI2016_ISIC_Part1_Test_GroundTruth.csv",
            "test": "ISBI2016_ISIC_Part1_Test_GroundTruth.csv"}


@dataclass(frozen=True)
class KvasirRecord(MaskRecord):
    boxes: tuple[tuple[int, int, int, int], ...] = ()  # XYXY, inclusive pixel coordinates


def masks_in_boxes(foreground: np.ndarray, boxes: tuple[tuple[int, int, int, int], ...]) -> np.ndarray:
    """H x W bool foreground -> N x H x W: the foreground inside each inclusive XYXY box; empty
    ones dropped."""
    masks = np.zeros((len(boxes), *foreground.shape), bool)
    for mask, (x1, y1, x2, y2) in zip(masks, boxes):
        mask[y1:y2 + 1, x1:x2 + 1] = foreground[y1:y2 + 1, x1:x2 + 1]
    return drop_empty_masks(masks)[0]


class KvasirDataset(LabelMapDataset):
    """Kvasir-SEG: one instance per box of the record, cut from the binary mask."""

    def read_masks(self, record: KvasirRecord) -> np.ndarray:
        return masks_in_boxes(super().read_masks(record).any(axis=0), record.boxes)

    def no_instance(self, record: KvasirRecord) -> str:
        return (f"mask '{record.mask}' has no foreground (grey > 127) inside its {len(record.boxes)} box(es) of "
                "kavsir_bboxes.json")


def existing_images(records: list, inventory: Inventory, source: str) -> list:
    """The records whose image file exists; the others are skipped, naming the file `source` lists."""
    kept = []
    for record in records:
        if record.image.is_file():
            kept.append(record)
        else:
            inventory.skip(record.image, "listed without a file", f"listed in '{source}', but there is no such file")
    return kept


def build_kvasir(spec: DatasetSpec, split: str) -> KvasirDataset:
    """Kvasir-SEG: 5:1 interleave in the key order of kavsir_bboxes.json ("val" and "test" are
    both the 1 part)."""
    layout = Layout.at("kvasir", spec.root, KVASIR_TREE)
    inventory = Inventory("kvasir", split)
    images, masks = layout.folder("images"), layout.folder("masks")
    path = layout.file("kavsir_bboxes.json")
    try:
        entries = json.loads(path.read_text())
        records = [KvasirRecord(images / f"{stem}.jpg", masks / f"{stem}.jpg", boxes=tuple(
            (int(b["xmin"]), int(b["ymin"]), int(b["xmax"]), int(b["ymax"])) for b in entry["bbox"]))
            for stem, entry in entries.items()]
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError, ValueError) as error:
        raise layout.error(f"'{path}' does not have the kavsir_bboxes.json format "
                           f"({type(error).__name__}: {error})") from error
    listed = {f for r in records for f in (r.image, r.mask)}
    for folder in (images, masks):
        inventory.scan_listed(folder, listed, path)
    chosen = interleave(records, KVASIR_INTERLEAVE, split)
    inventory.assign(records, chosen)
    chosen = existing_images(chosen, inventory, path.name)
    if not spec.labels_optional(split):
        chosen = labelled(chosen, inventory)
    return KvasirDataset(chosen, layout, split, spec.sample, binary=True, inventory=inventory)


def build_isic2016(spec: DatasetSpec, split: str) -> LabelMapDataset:
    """ISIC 2016 (ISBI 2016 Part 1): the official training (900) and test (379) images; "val" is test.

    The CSVs are read as the authors' pandas call: gbk text, the first line a header, columns 1
    and 2 (0-based; column 0 is pandas' index) the image and mask paths relative to the root.
    """
    layout = Layout.at("isic2016", spec.root, ISIC_TREE)
    inventory = Inventory("isic2016", split)
    path = layout.file(ISIC_CSV[split])
    try:
        with path.open(encoding="gbk", newline="") as handle:
            rows = list(csv.reader(handle))[1:]
    except UnicodeDecodeError as error:
        raise layout.error(f"'{path}' is not gbk text ({error})") from error
    records = []
    for line, row in enumerate(rows, start=2):
        if not row:  # a blank line, which pandas skips too
            continue
        if len(row) < 3:
            raise layout.error(f"line {line} of '{path}' has {len(row)} columns; expected index, image path, mask path")
        records.append(MaskRecord(layout.root / row[1], layout.root / row[2]))
    folders = sorted({f.parent for r in records for f in (r.image, r.mask) if f.parent.is_dir()})
    listed = {f for r in records for f in (r.image, r.mask)}
    for folder in folders:
        inventory.scan_listed(folder, listed, path)
    inventory.assign(records, records)
    chosen = existing_images(records, inventory, path.name)
    if not spec.labels_optional(split):
        chosen = labelled(chosen, inventory)
    return LabelMapDataset(chosen, layout, split, spec.sample, binary=True, inventory=inventory)
