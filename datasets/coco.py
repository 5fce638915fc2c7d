"""COCO-format datasets: COCO 2017 (the paper's natural images), COCO-C (the same images with one
corruption) and `coco`, any COCO instances json with an image folder (custom data).

Annotations become instances in file order, polygons and RLE decoded with pycocotools, the box
prompt being the annotation's bbox (x, y, w, h -> XYXY). Which annotations count follows the
rules of config dataset.coco (crowd, max_masks, zero_size: `listed`, `kept`): by default crowd
annotations, zero-size boxes and empty segmentations are dropped; the paper configs load COCO as
the authors' loader does (crowd kept, at most 151 masks, their zero-size rule). Images without an annotation
that counts are dropped. A json whose parts disagree is reported when read (check_coco), and so
are annotations that cannot be regions (skipped) or whose fields disagree (coco_annotations.py).
EXIF orientation tags are ignored by default (dataset.exif=auto), as COCO annotates the stored
pixels.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from datasets.coco_annotations import AnnotationCheck, usable_annotation
from datasets.files import FileDataset, ImagesOnlyDataset
from datasets.images import read_image
from datasets.instances import SampleError
from datasets.inventory import Inventory
from datasets.layout import DataWarning, ImageRecord, Layout, interleave, missing_labels
from datasets.masks import check_same_size, drop_empty_masks
from datasets.spec import CocoOptions, DatasetSpec, SampleOptions

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


def listed(annotation: dict[str, Any], rules: CocoOptions) -> bool:
    """Whether an annotation is read at all under the `rules` (dataset.coco.crowd: keep crowd
    annotations; dataset.coco.zero_size: "drop" zero-size boxes and empty segmentations, or the
    "authors" rule): the checks that need no decoding."""
    width, height = (annotation.get("bbox") or [0, 0, 0, 0])[2:]
    if annotation.get("iscrowd", 0) and not rules.crowd:
        return False
    if rules.zero_size == "authors":
        return width != 0
    return width > 0 and height > 0 and bool(annotation.get("segmentation"))


def kept(box: list[float], mask: np.ndarray, rules: CocoOptions) -> bool:
    """Whether a listed annotation, decoded to `mask`, is kept (the authors' zero-height check)."""
    return rules.zero_size != "authors" or box[3] != 0 or np.count_nonzero(mask) >= AUTHORS_ZERO_HEIGHT_PIXELS


@dataclass(frozen=True)
class CocoRecord:
    image: Path
    image_id: int
    height: int | None  # as annotated; None: the image's own
    width: int | None
    annotations: tuple[dict[str, Any], ...]  # usable annotations (segmentation, bbox, id), in file order


@dataclass(frozen=True)
class CocoJson:
    """A COCO instances json read: its images as records, how many annotations it has and how many
    of them the rules list."""

    path: Path
    records: list[CocoRecord]
    num_annotations: int
    num_listed: int


def read_coco(path: Path, layout: Layout, image_folder: Path, rules: CocoOptions) -> CocoJson:
    """Every image of a COCO instances json, sorted by id, with its annotations that `rules` list
    and that can be regions (maybe none); images are image_folder / file_name. Where the json's
    parts disagree, check_coco raises or warns; annotations that cannot be regions or whose fields
    disagree are named in a warning (datasets/coco_annotations.py)."""
    try:
        data = json.loads(path.read_text())
        images, annotations = data["images"], data["annotations"]
        check_coco(path, images, annotations, image_folder, layout)
        sizes = {image["id"]: (image["height"], image["width"]) if isinstance(image.get("height"), int)
                 and isinstance(image.get("width"), int) else None for image in images}
        check = AnnotationCheck(path)
        usable: defaultdict[int, list[dict[str, Any]]] = defaultdict(list)
        for a in annotations:
            if a["image_id"] in sizes:  # else named by check_coco
                usable_fields = usable_annotation(a, sizes[a["image_id"]], check,
                                                  lambda annotation: listed(annotation, rules),
                                                  rules.zero_size == "authors")
                if usable_fields is not None:
                    usable[a["image_id"]].append(usable_fields)
        check.warn()
        records = [CocoRecord(image_folder / image["file_name"], image["id"], image.get("height"), image.get("width"),
                              tuple(usable[image["id"]])) for image in sorted(images, key=lambda i: i["id"])]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise layout.error(f"'{path}' is not a COCO instances json ({type(error).__name__}: {error})") from error
    return CocoJson(path, records, len(annotations), sum(len(record.annotations) for record in records))


def check_coco(path: Path, images: list[dict[str, Any]], annotations: list[dict[str, Any]], image_folder: Path,
               layout: Layout) -> None:
    """Raise DatasetLayoutError if image ids repeat (an annotation's image would be ambiguous); warn
    (DataWarning, naming the json and the count) for annotations of no listed image, repeated
    annotation ids, file names listed under several image ids, and image files that do not exist."""
    ids = Counter(image["id"] for image in images)
    repeated = [i for i, n in ids.items() if n > 1]
    if repeated:
        raise layout.error(f"'{path}' lists {len(repeated)} image id(s) more than once (e.g. id {repeated[0]}, "
                           f"{ids[repeated[0]]} times): every image needs its own id, or its annotations are ambiguous")
    problems = []
    orphans = [a["image_id"] for a in annotations if a["image_id"] not in ids]
    if orphans:
        problems.append(f"{len(orphans)} of its {len(annotations)} annotations name an image id that is not among "
                        f"its images (e.g. id {orphans[0]}); they are not used")
    annotation_ids = Counter(a["id"] for a in annotations if "id" in a)
    twice = [i for i, n in annotation_ids.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} annotation id(s) appear more than once (e.g. id {twice[0]}); every copy is "
                        "an instance, scored again: remove the repeated annotations")
    names = Counter(image["file_name"] for image in images)
    shared = [name for name, n in names.items() if n > 1]
    if shared:
        problems.append(f"{len(shared)} file name(s) are listed under more than one image id (e.g. '{shared[0]}'); "
                        "each of those images is loaded and scored once per id")
    missing = [image["file_name"] for image in images if not (image_folder / image["file_name"]).is_file()]
    if missing:
        problems.append(f"{len(missing)} of its {len(images)} images have no file in '{image_folder}' (e.g. "
                        f"'{missing[0]}'); they are skipped, with a warning, when loaded")
    for problem in problems:
        warnings.warn(f"COCO json '{path}': {problem}.", DataWarning)


def annotated_split(coco: CocoJson, records: list[CocoRecord], layout: Layout, split: str,
                    inventory: Inventory) -> list[CocoRecord]:
    """The records (of the json `coco`, given to `split`) with a usable annotation, the others
    skipped in the inventory; none is an error that says why: the json has no annotations, the
    rules list none, or the split got none."""
    kept = [record for record in records if record.annotations]
    for record in records:
        if not record.annotations:
            inventory.skip(record.image, "no usable annotation", f"image id {record.image_id} of '{coco.path.name}' "
                                                                 "has no usable annotation")
    if kept:
        return kept
    if coco.num_annotations == 0:
        raise layout.error(f"'{coco.path}' has no annotations ({len(coco.records)} images, an empty 'annotations' "
                           f"list), so the {split} split has nothing to score or train on; give it a json with "
                           "annotations")
    if coco.num_listed == 0:
        raise layout.error(f"none of the {coco.num_annotations} annotations of '{coco.path}' is used: each is a "
                           "crowd annotation (dataset.coco.crowd=False), has a zero-size box or no segmentation "
                           "(dataset.coco.zero_size), names no image of the json, or cannot be a region (the "
                           "warnings above name them)")
    raise layout.error(f"the {split} split has no images: it gets {len(records)} of the {len(coco.records)} images "
                       f"of '{coco.path}', none of them with a usable annotation")


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
                 options: SampleOptions, rules: CocoOptions, inventory: Inventory | None = None) -> None:
        self.annotation_file = annotation_file
        self.rules = rules
        super().__init__(records, layout, split, options, inventory)

    def check_sizes(self, split: str, sizes: list[tuple[int, int] | None]) -> None:
        """Warn (DataWarning, naming the json and the count) if images are not the size the json
        gives them: their masks could not be scored (they are skipped when loaded)."""
        wrong = [(record, size) for record, size in zip(self.records, sizes)
                 if size is not None and record.width and record.height and size != (record.width, record.height)]
        if not wrong:
            return
        record, (width, height) = wrong[0]
        turned = (height, width) == (record.width, record.height)
        exif = "applied" if self.apply_exif else "ignored"
        hint = (f": turned by 90 degrees, as an EXIF orientation tag read the other way would do (dataset.exif: tags "
                f"now {exif}; PREPARE.md, \"EXIF orientation\")") if turned else ""
        warnings.warn(f"COCO json '{self.annotation_file}': {len(wrong)} of the {len(self.records)} images of the "
                      f"{split} split are not the size it gives them (e.g. '{record.image}' is {width}x{height} "
                      f"as read, the json says {record.width}x{record.height}{hint}); they are skipped when loaded.",
                      DataWarning)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        record = self.records[index]
        image = read_image(record.image, self.apply_exif)
        height, width = record.height or image.shape[0], record.width or image.shape[1]
        source = f"annotations of image id {record.image_id} in '{self.annotation_file}'"
        masks, boxes = [], []
        for annotation in record.annotations:
            if self.rules.max_masks and len(masks) >= self.rules.max_masks:
                break
            mask = self.decode(annotation, record, height, width)
            if mask is not None and kept(annotation["bbox"], mask, self.rules):
                masks.append(mask)
                boxes.append(annotation["bbox"])
        masks = np.stack(masks) if masks else np.zeros((0, height, width), bool)
        check_same_size(image, record.image, masks, source)
        boxes = np.array(boxes, np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        if self.rules.zero_size != "authors":  # their loader keeps instances without pixels
            masks, boxes = drop_empty_masks(masks, boxes)
        if not len(masks):
            raise SampleError(f"no instance in the {source}: every mask is empty")
        return image, masks, boxes

    def decode(self, annotation: dict[str, Any], record: CocoRecord, height: int, width: int) -> np.ndarray | None:
        """H x W bool mask of an annotation of an image height x width; None, with a DataWarning
        naming its id, for one that cannot be decoded at that size (the json gave no image size to
        check it by when read)."""
        segmentation = annotation["segmentation"]
        if isinstance(segmentation, dict) and list(segmentation["size"]) != [height, width]:
            problem = f"its RLE is of size {segmentation['size']} ([height, width]), the image [{height}, {width}]"
        else:
            try:
                return decode_segmentation(segmentation, height, width)
            except Exception as error:  # pycocotools raises bare Exceptions for malformed segmentations
                problem = f"pycocotools cannot decode it ({error})"
        warnings.warn(f"COCO json '{self.annotation_file}': annotation id {annotation['id']} of image id "
                      f"{record.image_id} cannot be a region: {problem}; it is skipped, the image's other annotations "
                      "kept.", DataWarning)
        return None


def _coco2017_dataset(spec: DatasetSpec, split: str, layout: Layout, image_folder: Path) -> CocoDataset:
    inventory = Inventory(layout.dataset, split)
    annotation_file = layout.file("annotations/instances_val2017.json")
    coco = read_coco(annotation_file, layout, image_folder, spec.coco)
    inventory.scan_listed(image_folder, {record.image for record in coco.records}, coco.path, recursive=True)
    chosen = interleave(coco.records, COCO2017_INTERLEAVE, split)
    inventory.assign(coco.records, chosen)
    records = annotated_split(coco, chosen, layout, split, inventory)
    return CocoDataset(records, annotation_file, layout, split, spec.sample, spec.coco, inventory)


def build_coco2017(spec: DatasetSpec, split: str) -> CocoDataset:
    """COCO 2017 val: 6:1 interleave on sorted image ids ("val" and "test" are both the 1 part)."""
    layout = Layout.at("coco2017", spec.root, COCO2017_TREE)
    return _coco2017_dataset(spec, split, layout, layout.folder("val2017"))


def build_coco_c(spec: DatasetSpec, split: str) -> CocoDataset:
    """COCO-C: the coco2017 split and annotations, images from corruption/<dataset.corruption>/."""
    layout = Layout.at("coco_c", spec.root, COCO_C_TREE)
    folder = layout.root / "corruption" / spec.corruption
    if not folder.is_dir():
        present = sorted(p.name for p in folder.parent.iterdir() if p.is_dir()) if folder.parent.is_dir() else []
        raise layout.error(f"folder '{folder}' not found (dataset.corruption={spec.corruption!r}; "
                           f"corruptions present: {', '.join(present) or 'none'})")
    return _coco2017_dataset(spec, split, layout, folder)


def coco_images_only(spec: DatasetSpec, layout: Layout, image_folder: Path) -> ImagesOnlyDataset:
    """The training split without a json: the images of image_folder and its sub-folders (sorted by
    path) that the val / test json do not list, or without those json the k part of the k:1
    interleave."""
    options = spec.coco
    inventory = Inventory("coco", "train")
    images = inventory.scan(image_folder, recursive=True)
    evaluated = {record.image for name in (options.val, options.test) if name
                 for record in read_coco(layout.file(name), layout, image_folder, options).records}
    chosen = interleave(images, spec.interleave, "train") if not (options.val or options.test) else images
    chosen = [path for path in chosen if path not in evaluated]
    inventory.assign(images, chosen)
    return ImagesOnlyDataset([ImageRecord(path) for path in chosen], layout, "train", spec.sample, inventory)


def build_coco(spec: DatasetSpec, split: str) -> CocoDataset | ImagesOnlyDataset:
    """Custom COCO data: dataset.coco.<split> if set (the whole json is the split), else the k:1
    interleave (k = dataset.interleave) of dataset.coco.annotations ("val" and "test" alike).
    With prompt_source=auto the training split may have no json (coco_images_only), or a json
    without annotations (its images)."""
    options = spec.coco
    layout = Layout.at("coco", spec.root, CUSTOM_TREE)
    image_folder = layout.folder(options.images)
    json_name = options.split_json(split) or options.annotations
    if not (json_name and (layout.root / json_name).is_file()):
        if spec.labels_optional(split):
            return coco_images_only(spec, layout, image_folder)
        problem = f"file '{layout.root / json_name}' not found" if json_name else \
            f"neither dataset.coco.{split} nor dataset.coco.annotations is set"
        raise missing_labels(layout, split, problem)
    annotation_file = layout.file(json_name)
    coco = read_coco(annotation_file, layout, image_folder, options)
    inventory = Inventory("coco", split)
    per_split = bool(options.split_json(split))
    # file names may hold a folder: the sub-folders are read too
    inventory.scan_listed(image_folder, {record.image for record in coco.records}, coco.path, recursive=True,
                          whole=not per_split)
    records = coco.records if per_split else interleave(coco.records, spec.interleave, split)
    inventory.assign(coco.records, records)
    if spec.labels_optional(split) and coco.num_annotations == 0:
        return ImagesOnlyDataset([ImageRecord(record.image) for record in records], layout, split, spec.sample,
                                 inventory)
    return CocoDataset(annotated_split(coco, records, layout, split, inventory), annotation_file, layout, split,
                       spec.sample, options, inventory)
