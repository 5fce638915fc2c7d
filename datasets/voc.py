"""Pascal VOC 2012 instance masks (SegmentationObject).

The object PNGs are palette images whose indices are instance ids: 0 is background and 255 the
boundary band, which is background too (the authors decode the 21-colour palette, which has no
colour for 255). Split: 6:1 interleave on the sorted file names ("val" and "test" are both the 1
part); the official VOC train/val lists are not used.
"""

from __future__ import annotations

from datasets.files import Layout, LabelMapDataset, MaskRecord, interleave
from datasets.spec import DatasetSpec

VOC_INTERLEAVE = 6
BACKGROUND = (0, 255)

TREE = """
<root>/                       dataset.root may also point at VOCdevkit/ or VOCdevkit/VOC2012/
  VOCdevkit/VOC2012/
    JPEGImages/<name>.jpg
    SegmentationObject/<name>.png   palette PNGs as released (2,913)
"""


def voc2012_folder(layout: Layout) -> str:
    """The VOC2012 folder below the root: VOCdevkit/VOC2012, VOC2012 or the root itself."""
    for candidate in ("VOCdevkit/VOC2012", "VOC2012", "."):
        if (layout.root / candidate / "SegmentationObject").is_dir():
            return candidate
    raise layout.error(f"no VOCdevkit/VOC2012/SegmentationObject folder below '{layout.root}'")


def build_voc2012(spec: DatasetSpec, split: str, **common) -> LabelMapDataset:
    layout = Layout.at("voc2012", spec.root, TREE)
    base = voc2012_folder(layout)
    images = layout.folder(f"{base}/JPEGImages")
    masks = layout.files_by_stem(layout.folder(f"{base}/SegmentationObject"), (".png",))
    records = [MaskRecord(images / f"{stem}.jpg", mask, BACKGROUND) for stem, mask in masks.items()]
    return LabelMapDataset(interleave(records, VOC_INTERLEAVE, split), layout, split, exif=spec.exif, **common)
