"""COCO-format datasets: COCO 2017 (the paper's natural images), COCO-C (the same images with one
corruption) and `coco`, any COCO instances json with an image folder (custom data).

Annotations become instances in file order, polygons and RLE decoded with pycocotools, the box
prompt being the annotation's bbox (x, y, w, h -> XYXY). Which annotations count follows
`CocoRules` (config dataset.coco.crowd, max_masks, zero_size): by default crowd annotations,
zero-size boxes and empty segmentations are dropped; the paper configs load COCO as the authors'
loader does (crowd kept, at most 151 masks, their zero-size rule). Images without an annotation
that counts are dropped.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from datasets.files import (IMAGE_EXTENSIONS, FileDataset, ImageRecord, ImagesOnlyDataset, Layout, check_same_size,
                            drop_empty_masks, interleave, labels_optional, missing_labels, read_image)
from datasets.instances import SampleError

COCO2017_INTERLEAVE = 6  # the authors' 6:1 split of val2017, on sorted image ids

COCO2017_TREE = """
<root>/
  val2017/000000000139.jpg ...             the 5,000 COCO val2017 images
  annotations/instances_val2017.json
"""
COCO_C_TREE = """
<root>/                                    the coco2017 root, plus:
  annotations/instances_val2017.json
  corruption/<dataset.corruption>/000000000139.jpg ...   val2017 with one corruption (tools/make_coco_c.py)
"""
CUSTOM_TREE = """
<root>/
  <dataset.coco.images>/<file_name>        the images; file_name as in the json
  <dataset.coco.annotations>               one COCO instances json, split k:1 by dataset.interleave,
or per split: <dataset.coco.train>, <dataset.coco.val>, <dataset.coco.test> (one json each)
prompt_source=auto: the training split needs no json; without one it is every image of the folder
(not in the val / test json, or the k part of the interleave when there is none)
"""


# The authors' zero-size rule, `w == 0 or h == 0 and pixels < 100` as Python reads it: a zero-width
# box is always skipped, a zero-height one only when its mask has fewer than this many pixels.
AUTHORS_ZERO_HEIGHT_PIXELS = 100


@dataclass(frozen=True)
class CocoRules:
    """Which annotations of an image become instances (see the module docstring)."""

    crowd: bool = False  # keep crowd annotations
    max_masks: int = 0  # at most this many instances per image, in file order (0: all)
    zero_size: str = "drop"  # "drop" zero-size boxes and empty segmentations, or the "authors" rule

    @classmethod
    def from_config(cls, cfg) -> CocoRules:
        options = cfg.dataset.coco
        return cls(options.crowd, options.max_masks, options.zero_size)

    def listed(self, annotation: dict[str, Any]) -> bool:
        """Whether an annotation is read at all (the checks that need no decoding)."""
        width, height = (annotation.get("bbox") or [0, 0, 0, 0])[2:]
        if annotation.get("iscrowd", 0) and not self.crowd:
            return False
        if self.zero_size == "authors":
            return width != 0
        return width > 0 and height > 0 and bool(annotation.get("segmentation"))

    def kept(self, box: list[float], mask: np.ndarray) -> bool:
        """Whether a listed annotation, decoded to `mask`, is kept (the authors' zero-height check)."""
        return self.zero_size != "authors" or box[3] != 0 or np.count_nonzero(mask) >= AUTHORS_ZERO_HEIGHT_PIXELS


@dataclass(frozen=True)
class CocoRecord:
    image: Path
    image_id: int
    height: int | None  # as annotated; None: the image's own
    width: int | None
    annotations: tuple[dict[str, Any], ...]  # listed annotations (segmentation, bbox), in file order


def read_coco(path: Path, layout: Layout, image_folder: Path, rules: CocoRules) -> list[CocoRecord]:
    """Every image of a COCO instances json, sorted by id, with its annotations that `rules` list
    (maybe none); images are image_folder / file_name."""
    try:
        data = json.loads(path.read_text())
        usable: defaultdict[int, list[dict[str, Any]]] = defaultdict(list)
        for a in data["annotations"]:
            if rules.listed(a):
                usable[a["image_id"]].append({"segmentation": a["segmentation"], "bbox": a["bbox"]})
        return [CocoRecord(image_folder / image["file_name"], image["id"], image.get("height"), image.get("width"),
                           tuple(usable[image["id"]])) for image in sorted(data["images"], key=lambda i: i["id"])]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise layout.error(f"'{path}' is not a COCO instances json ({type(error).__name__}: {error})") from error


def annotated(records: list[CocoRecord]) -> list[CocoRecord]:
    """The records with a usable annotation."""
    return [record for record in records if record.annotations]


def decode_segmentation(segmentation: list | dict, height: int, width: int) -> np.ndarray:
    """H x W bool mask of a COCO segmentation: polygons, uncompressed RLE or compressed RLE."""
    if not segmentation:  # listed under the authors' rule: an instance without pixels
        return np.zeros((height, width), bool)
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle).astype(bool)


class CocoDataset(FileDataset):
    """Images of COCO records; masks decoded from their annotations, boxes from their bboxes."""

    def __init__(self, records: list[CocoRecord], annotation_file: Path, layout: Layout, split: str,
                 rules: CocoRules, **common) -> None:
        super().__init__(records, layout, split, **common)
        self.annotation_file = annotation_file
        self.rules = rules

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        record = self.records[index]
        image = read_image(record.image)
        height, width = record.height or image.shape[0], record.width or image.shape[1]
        source = f"annotations of image id {record.image_id} in '{self.annotation_file}'"
        masks, boxes = [], []
        for annotation in record.annotations:
            if self.rules.max_masks and len(masks) >= self.rules.max_masks:
                break
            try:
                mask = decode_segmentation(annotation["segmentation"], height, width)
            except Exception as error:  # pycocotools raises bare Exceptions for malformed segmentations
                raise SampleError(f"cannot decode the {source} ({error})") from error
            if self.rules.kept(annotation["bbox"], mask):
                masks.append(mask)
                boxes.append(annotation["bbox"])
        masks = np.stack(masks) if masks else np.zeros((0, height, width), bool)
        check_same_size(image, record.image, masks, source)
        boxes = np.array(boxes, np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        if self.rules.zero_size == "authors":  # their loader keeps instances without pixels
            return image, masks, boxes
        return (image, *drop_empty_masks(masks, boxes))


def _coco2017_records(layout: Layout, split: str, image_folder: Path,
                      rules: CocoRules) -> tuple[list[CocoRecord], Path]:
    annotation_file = layout.file("annotations/instances_val2017.json")
    records = interleave(read_coco(annotation_file, layout, image_folder, rules), COCO2017_INTERLEAVE, split)
    return annotated(records), annotation_file


def build_coco2017(cfg, split: str, **common) -> CocoDataset:
    """COCO 2017 val: 6:1 interleave on sorted image ids ("val" and "test" are both the 1 part)."""
    layout = Layout.at("coco2017", cfg.dataset.root, COCO2017_TREE)
    rules = CocoRules.from_config(cfg)
    records, annotation_file = _coco2017_records(layout, split, layout.folder("val2017"), rules)
    return CocoDataset(records, annotation_file, layout, split, rules, **common)


def build_coco_c(cfg, split: str, **common) -> CocoDataset:
    """COCO-C: the coco2017 split and annotations, images from corruption/<dataset.corruption>/."""
    layout = Layout.at("coco_c", cfg.dataset.root, COCO_C_TREE)
    folder = layout.root / "corruption" / cfg.dataset.corruption
    if not folder.is_dir():
        present = sorted(p.name for p in folder.parent.iterdir() if p.is_dir()) if folder.parent.is_dir() else []
        raise layout.error(f"folder '{folder}' not found (dataset.corruption={cfg.dataset.corruption!r}; "
                           f"corruptions present: {', '.join(present) or 'none'})")
    rules = CocoRules.from_config(cfg)
    records, annotation_file = _coco2017_records(layout, split, folder, rules)
    return CocoDataset(records, annotation_file, layout, split, rules, **common)


def coco_images_only(cfg, layout: Layout, image_folder: Path, rules: CocoRules, **common) -> ImagesOnlyDataset:
    """The training split without a json: the images of image_folder (sorted by name) that the
    val / test json do not list, or without those json the k part of the k:1 interleave."""
    options = cfg.dataset.coco
    images = [path for path in sorted(image_folder.iterdir()) if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS]
    evaluated = {record.image for name in ("val", "test") if options[name]
                 for record in read_coco(layout.file(options[name]), layout, image_folder, rules)}
    if not (options.val or options.test):
        images = interleave(images, cfg.dataset.interleave, "train")
    return ImagesOnlyDataset([ImageRecord(path) for path in images if path not in evaluated], layout, "train",
                             **common)


def build_coco(cfg, split: str, **common) -> CocoDataset | ImagesOnlyDataset:
    """Custom COCO data: dataset.coco.<split> if set (the whole json is the split), else the k:1
    interleave (k = dataset.interleave) of dataset.coco.annotations ("val" and "test" alike).
    With prompt_source=auto the training split may have no json (coco_images_only)."""
    options = cfg.dataset.coco
    rules = CocoRules.from_config(cfg)
    layout = Layout.at("coco", cfg.dataset.root, CUSTOM_TREE)
    image_folder = layout.folder(options.images)
    json_name = options[split] or options.annotations
    if not (json_name and (layout.root / json_name).is_file()):
        if labels_optional(cfg, split):
            return coco_images_only(cfg, layout, image_folder, rules, **common)
        problem = f"file '{layout.root / json_name}' not found" if json_name else \
            f"neither dataset.coco.{split} nor dataset.coco.annotations is set"
        raise missing_labels(layout, cfg, split, problem)
    annotation_file = layout.file(json_name)
    records = read_coco(annotation_file, layout, image_folder, rules)
    if not options[split]:
        records = interleave(records, cfg.dataset.interleave, split)
    return CocoDataset(annotated(records), annotation_file, layout, split, rules, **common)
