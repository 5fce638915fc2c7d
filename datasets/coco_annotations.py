"""Which annotations of a COCO instances json can be regions, and whether their own fields agree.

An annotation that cannot be a region is skipped, the other annotations of its image kept: a bbox
that is not 4 numbers (width and height not negative) or lies outside its image, no segmentation,
polygons of fewer than 3 points or of other things than numbers (pycocotools would read a 2-point
polygon as a box, and fail), an RLE of another size than its image, an uncompressed RLE whose runs
do not cover the image, a segmentation without a pixel, anything else pycocotools cannot encode.
Polygons of fewer than 3 points beside good ones are dropped from their annotation.

Fields that disagree are said, and used as they are: a bbox that is not the extent of the
segmentation (the box prompt is the bbox, the mask the segmentation), an area far from the mask's
pixel count, iscrowd=1 with polygons (COCO's crowds are RLE), a bbox reaching beyond its image.

Each kind of problem is one DataWarning per json, naming the annotation ids (MAX_IDS of them) and
what is wrong with each.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pycocotools import mask as mask_utils

from datasets.layout import DataWarning

MAX_IDS = 20  # annotation ids named per kind of problem; the rest are counted
EXTENT_TOLERANCE = 2.0  # pixels between a bbox side and its segmentation's extent (polygon rounding)
AREA_FACTOR = 2.0  # an area this many times above or below its mask's pixel count disagrees with it
MIN_AREA_GAP = 16  # ... when it differs by more than this many pixels too (small masks)

SKIPPED = "cannot be a region and are skipped (the other annotations of their images are kept)"
EMPTY_KEPT = ("have no pixel and are kept as instances without pixels (dataset.coco.zero_size=authors, as the "
              "authors' loader)")


class AnnotationCheck:
    """What the annotations of one json have wrong: kind -> [(annotation id, detail)]."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.found: dict[str, list[tuple[Any, str]]] = {}

    def add(self, kind: str, annotation: dict[str, Any], detail: str) -> None:
        self.found.setdefault(kind, []).append((annotation.get("id", "without an id"), detail))

    def warn(self) -> None:
        """One DataWarning per kind found."""
        for kind, items in self.found.items():
            named = "; ".join(f"id {annotation_id}: {detail}" for annotation_id, detail in items[:MAX_IDS])
            more = f"; and {len(items) - MAX_IDS} more" if len(items) > MAX_IDS else ""
            warnings.warn(f"COCO json '{self.path}': {len(items)} annotation(s) {kind} ({named}{more}).", DataWarning)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_coordinates(values: list) -> bool:
    """Whether a flat list holds finite numbers only (as pycocotools reads them)."""
    try:
        return bool(np.isfinite(np.asarray(values, dtype=np.float64)).all())
    except (TypeError, ValueError):
        return False


def usable_annotation(annotation: dict[str, Any], size: tuple[int, int] | None, check: AnnotationCheck,
                      listed: Callable[[dict[str, Any]], bool], keep_empty: bool) -> dict[str, Any] | None:
    """The fields of an annotation to use (segmentation, bbox, id), or None when it is not used:
    `listed` (the rules of dataset.coco) leaves it out (said, but for crowds), or it cannot be a
    region (said in `check`). `size` is its image's (height, width) in the json, None when the json
    has none. With `keep_empty` (the authors' zero-size rule) an annotation without pixels is kept."""
    bbox = annotation.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(is_number, bbox))) or min(bbox[2:]) < 0:
        check.add(SKIPPED, annotation, f"its bbox {bbox!r} is not [x, y, width, height] (4 numbers, no negative size)")
        return None
    segmentation = annotation.get("segmentation")
    if not listed(annotation):
        if not annotation.get("iscrowd"):
            check.add("are left out by dataset.coco.zero_size (a zero-size bbox or no segmentation)", annotation,
                      f"bbox {bbox}" + ("" if segmentation else ", no segmentation"))
        return None
    if not segmentation:  # listed under the authors' rule
        check.add(EMPTY_KEPT, annotation, "no segmentation")
        return {"segmentation": segmentation, "bbox": bbox, "id": annotation.get("id")}
    if isinstance(segmentation, list):
        segmentation = usable_polygons(annotation, segmentation, check)
    elif not (isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation):
        check.add(SKIPPED, annotation, "its segmentation is neither polygons nor an RLE ({'size', 'counts'})")
        return None
    if segmentation is None:
        return None
    if size is not None and not agrees_with_image(annotation, segmentation, bbox, size, check, keep_empty):
        return None
    if annotation.get("iscrowd") and isinstance(segmentation, list):
        check.add("are crowds (iscrowd=1) drawn as polygons, where COCO's crowds are RLE; they are used as they are",
                  annotation, "polygons")
    return {"segmentation": segmentation, "bbox": bbox, "id": annotation.get("id")}


def usable_polygons(annotation: dict[str, Any], polygons: list, check: AnnotationCheck) -> list | None:
    """The polygons of 3 points or more (flat lists of an even count of numbers); the others are
    dropped, said in `check`; None (skipped) if none is left."""
    numeric = [isinstance(p, list) and is_coordinates(p) for p in polygons]
    good = [p for p, ok in zip(polygons, numeric) if ok and len(p) >= 6 and len(p) % 2 == 0]
    if len(good) == len(polygons):
        return polygons
    points = ", ".join(f"{len(p) / 2:g} points" if ok else "not numbers"
                       for p, ok in zip(polygons, numeric) if not any(p is g for g in good))
    bad = [p for p in polygons if not any(p is g for g in good)]
    if not good:
        check.add(SKIPPED, annotation, f"its polygon(s) have fewer than 3 points or are not flat lists of x, y "
                                       f"numbers ({points})")
        return None
    check.add("have polygons of fewer than 3 points (or not of numbers) beside good ones; those polygons are "
              "dropped", annotation, f"{len(bad)} of {len(polygons)} polygons ({points})")
    return good


def agrees_with_image(annotation: dict[str, Any], segmentation: list | dict, bbox: list, size: tuple[int, int],
                      check: AnnotationCheck, keep_empty: bool) -> bool:
    """Whether the annotation can be a region of an image of `size` (height, width), with what
    disagrees said in `check`; False (said, skipped) when it cannot."""
    height, width = size
    x, y, w, h = bbox
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        check.add(SKIPPED, annotation, f"its bbox {bbox} lies outside the {width}x{height} image")
        return False
    if isinstance(segmentation, dict):
        rle_size = segmentation["size"]
        if list(rle_size) != [height, width]:
            check.add(SKIPPED, annotation, f"its RLE is of size {rle_size} ([height, width]) but the image is "
                                           f"[{height}, {width}]")
            return False
        counts = segmentation["counts"]
        if isinstance(counts, list) and sum(counts) != height * width:
            check.add(SKIPPED, annotation, f"its uncompressed RLE runs cover {sum(counts)} pixels, not the image's "
                                           f"{height} x {width} = {height * width}")
            return False
    try:
        rle = (mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width)) if isinstance(segmentation, list)
               else mask_utils.frPyObjects(segmentation, height, width) if isinstance(segmentation["counts"], list)
               else segmentation)
        if rle is segmentation:  # a compressed RLE: pycocotools checks its runs only when decoding it
            mask_utils.decode(rle)
        pixels = int(mask_utils.area(rle))
        extent = [float(v) for v in mask_utils.toBbox(rle)]
    except Exception as error:  # pycocotools raises bare Exceptions for what it cannot read
        check.add(SKIPPED, annotation, f"pycocotools cannot read its segmentation ({error})")
        return False
    if pixels == 0:
        if keep_empty:
            check.add(EMPTY_KEPT, annotation, "a segmentation covering no pixel")
            return True
        check.add(SKIPPED, annotation, "its segmentation covers no pixel")
        return False
    if x < -EXTENT_TOLERANCE or y < -EXTENT_TOLERANCE or x + w > width + EXTENT_TOLERANCE or \
            y + h > height + EXTENT_TOLERANCE:
        check.add("have a bbox reaching beyond their image; used as it is", annotation,
                  f"bbox {bbox}, image {width}x{height}")
    sides = (x, y, x + w, y + h)
    extent_sides = (extent[0], extent[1], extent[0] + extent[2], extent[1] + extent[3])
    if max(abs(a - b) for a, b in zip(sides, extent_sides)) > EXTENT_TOLERANCE:
        check.add("have a bbox that is not the extent of their segmentation; the box prompt is the bbox, the scored "
                  "mask the segmentation", annotation, f"bbox {bbox}, segmentation extent "
                                                       f"{[round(v, 1) for v in extent]}")
    area = annotation.get("area")
    if is_number(area) and abs(area - pixels) > MIN_AREA_GAP and not (
            pixels / AREA_FACTOR <= area <= pixels * AREA_FACTOR):
        check.add("have an area far from their mask's pixel count (the area is not used)", annotation,
                  f"area {area:g}, mask {pixels} pixels")
    return True
