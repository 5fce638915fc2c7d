"""Robotic tabletop scenes: OCID and OSD (label maps, one instance per object label).

Label quirks (the authors'): 0 and 1 (the floor) are background, and so is 2 (the table) in
sequences whose path below the root contains "table". Images left without an object are dropped.
Split: 6:1 interleave on sorted paths ("val" and "test" are both the 1 part), then the drop; OSD's k:1
follows dataset.interleave (6, or 1 for the authors' first release: configs/paper/versions.py).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from datasets.files import Layout, LabelMapDataset, MaskRecord, interleave, mask_records
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


def build_ocid(spec: DatasetSpec, split: str, **common) -> LabelMapDataset:
    layout = Layout.at("ocid", spec.root, OCID_TREE)
    images = sorted(layout.root.glob("**/*seq*/rgb/*.png"))
    if not images:
        raise layout.error(f"no images matching '{layout.root}/**/*seq*/rgb/*.png'")
    records = [MaskRecord(image, image.parent.parent / "label" / image.name,
                          robotic_background(image.relative_to(layout.root))) for image in images]
    return LabelMapDataset(interleave(records, ROBOTIC_INTERLEAVE, split), layout, split,
                           drop_empty=not spec.labels_optional(split), exif=spec.exif, **common)


def build_osd(spec: DatasetSpec, split: str, **common) -> LabelMapDataset:
    layout = Layout.at("osd", spec.root, OSD_TREE)
    images = layout.files_by_stem(layout.folder("image_color"))
    masks = layout.folder("annotation")
    records = mask_records(images, layout.files_by_stem(masks), masks)
    records = [replace(r, background=robotic_background(r.mask.relative_to(layout.root))) for r in records]
    return LabelMapDataset(interleave(records, spec.interleave, split), layout, split,
                           drop_empty=not spec.labels_optional(split), exif=spec.exif, **common)
