"""Camouflaged objects: CAMO, COD10K and CHAMELEON.

Binary ground truths (grey > 127 is foreground), one foreground instance per image, as the
authors' decode of the thresholded mask. Masks are matched to images by file name (stem).
"""

from __future__ import annotations

from datasets.files import LabelMapDataset
from datasets.inventory import Inventory
from datasets.layout import Layout, interleave, labelled, mask_records
from datasets.spec import DatasetSpec

COD_INTERLEAVE = 4  # the authors' 4:1 split of the COD10K test set, also used for CHAMELEON

CAMO_TREE = """
<root>/                      CAMO-V.1.0-CVIU2019
  Images/Train/<name>.jpg    1,000 images
  Images/Test/<name>.jpg     250 images
  GT/<name>.png              the masks of both
"""
COD10K_TREE = """
<root>/                      COD10K-v2 (only its test set is used)
  Test/Image/<name>.jpg      2,026 images
  Test/GT_Object/<name>.png
"""
CHAMELEON_TREE = """
<root>/                      CHAMELEON, as in the COD TestDataset release
  Imgs/<name>.jpg            76 images
  GT/<name>.png
"""


def _binary_dataset(layout: Layout, image_folder: str, mask_folder: str, spec: DatasetSpec, split: str,
                    k: int | None, drop_empty: bool = False, other_images: str | None = None) -> LabelMapDataset:
    """Images of image_folder with the binary masks of mask_folder; all of them, or their k:1
    interleave. `other_images`: the folder of the other split's images, whose masks share mask_folder."""
    inventory = Inventory(layout.dataset, split)
    images = layout.files_by_stem(layout.folder(image_folder), inventory=inventory)
    masks = layout.folder(mask_folder)
    others = layout.files_by_stem(layout.root / other_images) if other_images and \
        (layout.root / other_images).is_dir() else {}
    records = mask_records(images, layout.files_by_stem(masks, inventory=inventory), masks, inventory=inventory,
                           elsewhere=list(others))
    chosen = records if k is None else interleave(records, k, split)
    inventory.assign(records, chosen)
    if others:  # their masks are the other split's
        inventory.elsewhere = len(others)
    if not spec.labels_optional(split):
        chosen = labelled(chosen, inventory)
    return LabelMapDataset(chosen, layout, split, spec.sample, binary=True, drop_empty=drop_empty,
                           inventory=inventory)


def build_camo(spec: DatasetSpec, split: str) -> LabelMapDataset:
    """CAMO: the official train / test images ("val" is test). An image whose mask has another size
    is skipped when loaded (the authors drop them)."""
    layout = Layout.at("camo", spec.root, CAMO_TREE)
    images, others = ("Images/Train", "Images/Test") if split == "train" else ("Images/Test", "Images/Train")
    return _binary_dataset(layout, images, "GT", spec, split, None, other_images=others)


def build_cod10k(spec: DatasetSpec, split: str) -> LabelMapDataset:
    """COD10K-v2 test set, 4:1 interleave on sorted names ("val" and "test" are both the 1 part);
    images whose mask is empty are dropped (after the split)."""
    layout = Layout.at("cod10k", spec.root, COD10K_TREE)
    return _binary_dataset(layout, "Test/Image", "Test/GT_Object", spec, split, COD_INTERLEAVE,
                           drop_empty=not spec.labels_optional(split))


def build_chameleon(spec: DatasetSpec, split: str) -> LabelMapDataset:
    """CHAMELEON. The authors have no loader for it (their tables report it), so it is split as
    COD10K: 4:1 interleave on sorted names ("val" and "test" are both the 1 part), empty masks dropped."""
    layout = Layout.at("chameleon", spec.root, CHAMELEON_TREE)
    return _binary_dataset(layout, "Imgs", "GT", spec, split, COD_INTERLEAVE,
                           drop_empty=not spec.labels_optional(split))
