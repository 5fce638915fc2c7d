"""Custom data as folders of images and masks (`folder`).

Each image images/<stem>.<ext> has either masks/<stem>.png, a label map with one instance per
non-zero value (grey, palette or 16-bit PNG; a binary 0/255 mask is one instance, also saved as
JPEG; a colour-coded PNG, one instance per colour on black), or a folder masks/<stem>/ with one PNG
per instance (its non-zero pixels). Other label maps must be lossless (PNG): JPEG ones are refused
(datasets/masks.py read_label_map). Sub-folders of images/ are not read (masks/<stem>/ would be
ambiguous); they are named when the split is built. EXIF orientation tags are applied by default
(dataset.exif=auto), as labelling tools draw on the displayed picture.

Splits: per-split folders <root>/<split>/{images,masks} when <root>/images does not exist; else
the k:1 interleave (k = dataset.interleave) of the images sorted by name ("val" and "test" are
both the 1 part). With prompt_source=auto the training split needs no masks folder (images only).
"""

from __future__ import annotations

import numpy as np

from datasets.files import ImagesOnlyDataset, LabelMapDataset
from datasets.instances import SampleError
from datasets.inventory import IMAGE_EXTENSIONS, Inventory
from datasets.layout import ImageRecord, Layout, MaskRecord, interleave, labelled, mask_records, missing_labels
from datasets.masks import drop_empty_masks, read_label_map
from datasets.spec import DatasetSpec

TREE = """
<root>/
  images/<stem>.jpg            (or .png, .bmp, .tif, .webp, .gif; not in sub-folders)
  masks/<stem>.png             a label map: one instance per non-zero value
  masks/<stem>/<any>.png       or one PNG per instance (non-zero pixels)
split k:1 by dataset.interleave; or with one such pair of folders per split:
<root>/train/{images,masks}/   <root>/val/{images,masks}/   <root>/test/{images,masks}/
(prompt_source=auto: the training images need no masks, e.g. <root>/train/images/ alone)
"""


class FolderDataset(LabelMapDataset):
    """Label-map masks, or folders of one mask file per instance."""

    # custom masks are mostly drawn in labelling tools, which show the picture as displayed
    EXIF_CONVENTION = "apply"

    def read_masks(self, record: MaskRecord) -> np.ndarray:
        if not record.mask.is_dir():
            return super().read_masks(record)
        files = sorted(p for p in record.mask.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise SampleError(f"mask folder '{record.mask}' holds no mask files")
        masks = [read_label_map(path, self.apply_exif) != 0 for path in files]
        for path, mask in zip(files, masks):
            if mask.shape != masks[0].shape:
                raise SampleError(f"instance mask '{path}' is {mask.shape[1]}x{mask.shape[0]} but '{files[0]}' is "
                                  f"{masks[0].shape[1]}x{masks[0].shape[0]} (width x height)")
        return drop_empty_masks(np.stack(masks))[0]

    def no_instance(self, record: MaskRecord) -> str:
        if record.mask.is_dir():
            return f"every instance mask of folder '{record.mask}' is empty (0 everywhere)"
        return super().no_instance(record)


def build_folder(spec: DatasetSpec, split: str) -> FolderDataset | ImagesOnlyDataset:
    """The split's images with their masks (an image without one, a mask without an image, a
    sub-folder of images/ and a file of another format are skipped, named in the inventory)."""
    layout = Layout.at("folder", spec.root, TREE)
    inventory = Inventory("folder", split)
    pooled = (layout.root / "images").is_dir()
    base = "." if pooled else split
    images = layout.files_by_stem(layout.folder(f"{base}/images"), inventory=inventory)
    mask_folder = layout.root / base / "masks"
    if not mask_folder.is_dir():
        if not spec.labels_optional(split):
            raise missing_labels(layout, split, f"folder '{mask_folder}' not found")
        records = [ImageRecord(path) for path in images.values()]
        chosen = interleave(records, spec.interleave, split) if pooled else records
        inventory.assign(records, chosen)
        return ImagesOnlyDataset(chosen, layout, split, spec.sample, inventory)
    masks = layout.files_by_stem(mask_folder, inventory=inventory, sub_folders=True)
    records = mask_records(images, masks, mask_folder, inventory=inventory)
    chosen = interleave(records, spec.interleave, split) if pooled else records
    inventory.assign(records, chosen)
    if not spec.labels_optional(split):
        chosen = labelled(chosen, inventory)
    return FolderDataset(chosen, layout, split, spec.sample, inventory=inventory)
