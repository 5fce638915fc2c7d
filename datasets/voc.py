"""Pascal VOC 2012 instance masks (SegmentationObject).

The object PNGs are palette images whose indices are instance ids: 0 is background and 255 the
boundary band, which is background too (the authors decode the 21-colour palette, which has no
colour for 255). Split: 6:1 interleave on the sorted file names ("val" and "test" are both the 1
part); the official VOC train/val lists are not used.
"""

from __future__ import annotations

from datasets.files import LabelMapDataset
from datasets.inventory import NO_IMAGE, Inventory
from datasets.layout import Layout, MaskRecord, interleave
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


def build_voc2012(spec: DatasetSpec, split: str) -> LabelMapDataset:
    """The images of the SegmentationObject masks; a mask without its JPEGImages image is skipped,
    and the JPEGImages without an instance mask are counted (VOC annotates objects in 2,913 of them)."""
    layout = Layout.at("voc2012", spec.root, TREE)
    inventory = Inventory("voc2012", split)
    base = voc2012_folder(layout)
    images = layout.folder(f"{base}/JPEGImages")
    masks = layout.files_by_stem(layout.folder(f"{base}/SegmentationObject"), (".png",), inventory)
    records = [MaskRecord(images / f"{stem}.jpg", mask, BACKGROUND) for stem, mask in masks.items()]
    chosen = interleave(records, VOC_INTERLEAVE, split)
    inventory.assign(records, chosen)
    with_image = {record.mask for record in records if record.image.is_file()}
    for record in chosen:
        if record.mask not in with_image:
            inventory.skip(record.mask, NO_IMAGE, f"a mask without an image (no '{record.image}')")
    chosen = [record for record in chosen if record.mask in with_image]
    unmasked = sum(1 for path in images.iterdir() if path.suffix.lower() == ".jpg") - len(with_image)
    if unmasked > 0:
        inventory.note(f"{unmasked} images of '{images}' have no instance mask (VOC's design), not read")
    return LabelMapDataset(chosen, layout, split, spec.sample, inventory=inventory)
