"""Robotic tabletop scenes: OCID and OSD (label maps, one instance per object label).

Label quirks (the authors'): 0 and 1 (the floor) are background, and so is 2 (the table) in
sequences whose path below the root contains "table". Images left without an object are dropped.
Split: 6:1 interleave on sorted paths ("val" and "test" are both the 1 part), then the drop; OSD's k:1
follows dataset.interleave (6, or 1 for the authors' first release: configs/paper/versions.py).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from datasets.files import LabelMapDataset
from datasets.inventory import Inventory
from datasets.layout import Layout, MaskRecord, interleave, labelled, mask_records
from datasets.spec import DatasetSpec

ROBOTIC_INTERLEAVE = 6

OCID_TREE = """
<root>/                                   OCID-dataset
  <...>/<sequence with "seq" in its name>/rgb/<name>.png     e.g. ARID20/table/top/seq05/rgb/...
  <...>/<sequence with "seq" in its name>/label/<name>.png   the label map of the rgb image of that name
"""
OSD_TREE = """
<root>/                    OSD-0.2-depth
  image_color/<name>.png
  annotation/<name>.png    label maps
"""


def robotic_background(relative: Path) -> tuple[int, ...]:
    """Background labels of a label map at `relative` (its path below the root)."""
    return (0, 1, 2) if "table" in relative.as_posix() else (0, 1)


def build_ocid(spec: DatasetSpec, split: str) -> LabelMapDataset:
    """The rgb/ and label/ PNGs of every sequence folder ("seq" in its name) paired by name."""
    layout = Layout.at("ocid", spec.root, OCID_TREE)
    inventory = Inventory("ocid", split)
    records = []
    for sequence in sorted(path.parent for path in layout.root.glob("**/*seq*/rgb") if path.is_dir()):
        images = layout.files_by_stem(sequence / "rgb", (".png",), inventory)
        labels = sequence / "label"
        masks = layout.files_by_stem(labels, (".png",), inventory) if labels.is_dir() else {}
        records += mask_records(images, masks, labels, inventory=inventory)
    if not records:
        raise layout.error(f"no images matching '{layout.root}/**/*seq*/rgb/*.png'")
    records = sorted((replace(r, background=robotic_background(r.image.relative_to(layout.root))) for r in records),
                     key=lambda r: r.image)
    return _robotic_dataset(layout, inventory, records, interleave(records, ROBOTIC_INTERLEAVE, split), spec, split)


def build_osd(spec: DatasetSpec, split: str) -> LabelMapDataset:
    layout = Layout.at("osd", spec.root, OSD_TREE)
    inventory = Inventory("osd", split)
    images = layout.files_by_stem(layout.folder("image_color"), inventory=inventory)
    masks = layout.folder("annotation")
    records = mask_records(images, layout.files_by_stem(masks, inventory=inventory), masks, inventory=inventory)
    records = [replace(r, background=robotic_background(r.mask.relative_to(layout.root))) for r in records]
    return _robotic_dataset(layout, inventory, records, interleave(records, spec.interleave, split), spec, split)


def _robotic_dataset(layout: Layout, inventory: Inventory, records: list[MaskRecord], chosen: list[MaskRecord],
                     spec: DatasetSpec, split: str) -> LabelMapDataset:
    """The split `chosen` of `records`; with labels needed, its images without a mask and those
    without an object are skipped."""
    inventory.assign(records, chosen)
    labels_needed = not spec.labels_optional(split)
    return LabelMapDataset(labelled(chosen, inventory) if labels_needed else chosen, layout, split, spec.sample,
                           drop_empty=labels_needed, inventory=inventory)
