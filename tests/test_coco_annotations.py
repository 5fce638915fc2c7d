"""COCO annotations one by one: one that cannot be a region is skipped with a warning naming its
id while the other annotations of its image are kept; fields that disagree are said, never used
silently. And a json as a whole: parts that disagree (unknown image ids, repeated ids and file names,
images without a file) are named with counts, repeated image ids stop, a json without annotations (or
whose annotations are all dropped) says so, unless it is a training split of automatic prompts."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import validate
from datasets import DatasetLayoutError
from datasets.files import ImagesOnlyDataset
from datasets.layout import DataWarning
from tests.conftest import TINY, cli
from tests.ondisk import (HEIGHT, WIDTH, box_annotation, build, coco_image, compressed_rle, labels, uncompressed_rle,
                          write_image)

GOOD = box_annotation(1, 5, 5, 25, 15)  # a 20 x 10 rectangle


def write_json(root: Path, annotations: list[dict], images: list[dict] | None = None) -> None:
    """Image 1 (40 x 60) with `annotations` (ids 1, 2, ... in order), as one json for the val split."""
    write_image(root / "images" / "1.png")
    annotations = [{"id": i + 1, "iscrowd": 0, "category_id": 1, **a} for i, a in enumerate(annotations)]
    (root / "val.json").write_text(json.dumps({"images": images or [coco_image(1, "1.png")],
                                               "annotations": annotations, "categories": [{"id": 1}]}))


def read(root: Path, *overrides: str) -> tuple[np.ndarray, list[str]]:
    """The masks of image 1 and the DataWarnings met building and loading the split."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        masks = build("coco", root, "val", "dataset.coco.val=val.json", *overrides).load(0)[1]
    return masks, [str(w.message) for w in caught if issubclass(w.category, DataWarning)]


def one_warning(messages: list[str], text: str) -> str:
    found = [m for m in messages if text in m]
    assert len(found) == 1, messages
    return found[0]


def rect(x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    return labels({1: (x1, y1, x2, y2)}).astype(bool)


# annotations that cannot be regions

@pytest.mark.parametrize("segmentation, detail", [
    ([[30, 5, 40, 15]], r"its polygon\(s\) have fewer than 3 points .* \(2 points\)"),  # pycocotools: a box
    ([[30, 5]], r"\(1 points\)"),
    ([[30, 5, 40, 15, 30]], r"\(not numbers\)|\(2.5 points\)"),
    ([["x", 5, 40, 15, 35, 20]], r"\(not numbers\)"),
    ({"size": [20, 30], "counts": "PPYo0"}, r"its RLE is of size \[20, 30\] \(\[height, width\]\) but the image is "
                                           r"\[40, 60\]"),
    ({"size": [40, 60], "counts": [10, 20]}, r"its uncompressed RLE runs cover 30 pixels, not the image's 40 x 60"),
    ({"size": [40, 60], "counts": "not an rle"}, r"pycocotools cannot read its segmentation"),
    ("a string", r"its segmentation is neither polygons nor an RLE"),
    ([[30, 5, 30, 15, 30, 25]], r"its segmentation covers no pixel"),  # three points on a line
], ids=["2 points", "1 point", "odd", "text", "rle size", "rle runs", "rle counts", "string", "line"])
def test_an_annotation_that_cannot_be_a_region_is_skipped_and_the_image_kept(tmp_path, segmentation, detail):
    write_json(tmp_path, [GOOD, {"image_id": 1, "bbox": [30, 5, 10, 10], "segmentation": segmentation}, GOOD])
    masks, messages = read(tmp_path)
    np.testing.assert_array_equal(masks, np.stack([rect(5, 5, 25, 15)] * 2))  # annotations 1 and 3
    message = one_warning(messages, "cannot be a region")
    assert message.startswith(f"COCO json '{tmp_path / 'val.json'}': 1 annotation(s) cannot be a region and are "
                              "skipped (the other annotations of their images are kept) (id 2: ")
    assert __import__("re").search(detail, message), message


@pytest.mark.parametrize("bbox, detail", [
    ([70, 5, 10, 10], r"its bbox \[70, 5, 10, 10\] lies outside the 60x40 image"),
    ([5, -30, 10, 10], r"its bbox \[5, -30, 10, 10\] lies outside"),
    ([5, 5, 10], r"its bbox \[5, 5, 10\] is not \[x, y, width, height\]"),
    ([5, 5, -10, 10], r"no negative size"),
    (None, r"its bbox None is not"),
])
def test_a_bbox_that_cannot_be_a_box_prompt_is_skipped(tmp_path, bbox, detail):
    write_json(tmp_path, [GOOD, {**box_annotation(1, 30, 5, 40, 15), "bbox": bbox}])
    masks, messages = read(tmp_path)
    np.testing.assert_array_equal(masks, rect(5, 5, 25, 15)[None])
    assert __import__("re").search(detail, one_warning(messages, "cannot be a region"))


def test_a_degenerate_polygon_beside_good_ones_is_dropped_from_its_annotation(tmp_path):
    two = {**box_annotation(1, 30, 5, 40, 15), "segmentation": [[30, 5, 40, 5, 40, 15, 30, 15], [50, 20, 55, 25]]}
    write_json(tmp_path, [GOOD, two])
    masks, messages = read(tmp_path)
    assert masks.shape == (2, HEIGHT, WIDTH) and masks[1].sum() == masks[1][5:16, 30:41].sum() > 0
    assert "id 2: 1 of 2 polygons (2 points)" in one_warning(messages, "polygons of fewer than 3 points")


def test_every_problem_names_its_ids_once_per_json(tmp_path):
    bad = {"image_id": 1, "bbox": [30, 5, 10, 10], "segmentation": [[30, 5, 40, 15]]}
    write_json(tmp_path, [GOOD, bad, bad, bad])
    _, messages = read(tmp_path)
    message = one_warning(messages, "cannot be a region")
    assert "3 annotation(s)" in message and all(f"id {i}:" in message for i in (2, 3, 4))


def test_an_rle_of_another_size_than_the_image_is_skipped_when_the_json_has_no_size(tmp_path):
    """Without a size in the json the RLE is checked against the image file when loaded."""
    small = {"image_id": 1, "bbox": [1, 1, 5, 5], "segmentation": compressed_rle(np.ones((20, 30), bool))}
    write_json(tmp_path, [GOOD, small], images=[{"id": 1, "file_name": "1.png"}])
    masks, messages = read(tmp_path)
    np.testing.assert_array_equal(masks, rect(5, 5, 25, 15)[None])
    assert "annotation id 2 of image id 1 cannot be a region: its RLE is of size [20, 30]" in one_warning(
        messages, "annotation id 2")


def test_an_image_whose_annotations_all_fail_is_dropped_by_name(tmp_path):
    write_image(tmp_path / "images" / "2.png")
    write_json(tmp_path, [GOOD, {"image_id": 2, "bbox": [1, 1, 5, 5], "segmentation": [[1, 1, 5, 5]]}],
               images=[coco_image(1, "1.png"), coco_image(2, "2.png")])
    with pytest.warns(DataWarning, match="cannot be a region"):
        dataset = build("coco", tmp_path, "val", "dataset.coco.val=val.json")
    assert [r.image_id for r in dataset.records] == [1]
    assert dataset.inventory.skipped["no usable annotation"] == [
        (tmp_path / "images" / "2.png", "image id 2 of 'val.json' has no usable annotation")]


# rules of dataset.coco: said, not silent

def test_annotations_left_out_by_the_zero_size_rule_are_named(tmp_path):
    empty = {**box_annotation(1, 30, 5, 40, 15), "segmentation": []}
    flat = {**box_annotation(1, 30, 5, 40, 15), "bbox": [30, 5, 10, 0]}
    write_json(tmp_path, [GOOD, empty, flat])
    masks, messages = read(tmp_path)
    assert len(masks) == 1
    message = one_warning(messages, "left out by dataset.coco.zero_size")
    assert "id 2: bbox [30, 5, 10, 10], no segmentation" in message and "id 3: bbox [30, 5, 10, 0]" in message


def test_the_authors_rule_keeps_annotations_without_pixels_and_says_so(tmp_path):
    write_json(tmp_path, [GOOD, {**box_annotation(1, 30, 5, 40, 15), "segmentation": []}])
    masks, messages = read(tmp_path, "dataset.coco.zero_size=authors")
    assert len(masks) == 2 and not masks[1].any()
    assert "id 2: no segmentation" in one_warning(messages, "kept as instances without pixels")


# fields that disagree: said, used as they are

def test_a_bbox_that_is_not_the_segmentations_extent_is_said(tmp_path):
    write_json(tmp_path, [GOOD, {**box_annotation(1, 30, 5, 40, 15), "bbox": [30, 5, 25, 30]}])
    masks, messages = read(tmp_path)
    assert len(masks) == 2
    assert "id 2: bbox [30, 5, 25, 30], segmentation extent [30.0, 5.0, 10.0, 10.0]" in one_warning(
        messages, "not the extent of their segmentation")


def test_a_polygons_extent_within_two_pixels_of_its_bbox_is_no_disagreement(tmp_path):
    rle_box = {"image_id": 1, "bbox": [30, 10, 10, 20], "segmentation": compressed_rle(rect(30, 10, 40, 30)),
               "area": 200}
    write_json(tmp_path, [GOOD, rle_box, {**GOOD, "bbox": [4, 4, 22, 12]}])
    _, messages = read(tmp_path)
    assert messages == []


def test_an_area_far_from_the_masks_is_said(tmp_path):
    write_json(tmp_path, [GOOD, {**box_annotation(1, 30, 5, 40, 15), "area": 1000}])
    _, messages = read(tmp_path)
    assert "id 2: area 1000, mask 100 pixels" in one_warning(messages, "area far from their mask's pixel count")


def test_a_crowd_drawn_as_polygons_is_said(tmp_path):
    write_json(tmp_path, [GOOD, {**box_annotation(1, 30, 5, 40, 15), "iscrowd": 1}])
    masks, messages = read(tmp_path, "dataset.coco.crowd=true")
    assert len(masks) == 2
    assert "id 2: polygons" in one_warning(messages, "crowds (iscrowd=1) drawn as polygons")


def test_a_bbox_reaching_beyond_its_image_is_said(tmp_path):
    write_json(tmp_path, [GOOD, {"image_id": 1, "bbox": [50, 30, 20, 20],
                                 "segmentation": uncompressed_rle(rect(50, 30, 60, 40))}])
    masks, messages = read(tmp_path)
    assert len(masks) == 2
    assert "id 2: bbox [50, 30, 20, 20], image 60x40" in one_warning(messages, "reaching beyond their image")


# --- a json as a whole

def write_raw_coco(path: Path, images: list[dict], annotations: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1}]}))


def coco_folder(root: Path, count: int = 3) -> list[dict]:
    for i in range(1, count + 1):
        write_image(root / "images" / f"{i}.png", seed=i)
    return [coco_image(i, f"{i}.png") for i in range(1, count + 1)]


def annotation(annotation_id: int, image_id: int, **extra) -> dict:
    return {"id": annotation_id, "iscrowd": 0, "category_id": 1, **box_annotation(image_id, 2, 2, 20, 20), **extra}


def test_coco_json_whose_parts_disagree_is_named_with_counts(tmp_path):
    images = coco_folder(tmp_path)
    images.append({"id": 4, "file_name": "gone.png", "height": 40, "width": 60})
    images.append({"id": 5, "file_name": "1.png", "height": 40, "width": 60})
    annotations = [annotation(1, 1), annotation(2, 2), annotation(2, 3), annotation(4, 99), annotation(5, 98)]
    write_raw_coco(tmp_path / "annotations.json", images, annotations)
    with pytest.warns(DataWarning) as caught:
        dataset = build("coco", tmp_path, "val", "dataset.coco.val=annotations.json")
    messages = "\n".join(str(w.message) for w in caught)
    assert messages.count(str(tmp_path / "annotations.json")) == 4
    assert "2 of its 5 annotations name an image id that is not among its images (e.g. id 99)" in messages
    assert "1 annotation id(s) appear more than once (e.g. id 2)" in messages
    assert "1 file name(s) are listed under more than one image id (e.g. '1.png')" in messages
    assert "1 of its 5 images have no file" in messages and "'gone.png'" in messages
    assert len(dataset) == 3  # the ids with an annotation of their own: 1, 2, 3


def test_coco_json_with_repeated_image_ids_stops(tmp_path):
    images = coco_folder(tmp_path, 2)
    images[1]["id"] = 1
    write_raw_coco(tmp_path / "annotations.json", images, [annotation(1, 1)])
    with pytest.raises(DatasetLayoutError, match=r"lists 1 image id\(s\) more than once \(e.g. id 1, 2 times\)"):
        build("coco", tmp_path, "val", "dataset.coco.val=annotations.json")


def test_coco_json_without_annotations_says_so(tmp_path, capsys):
    images = coco_folder(tmp_path)
    write_raw_coco(tmp_path / "test.json", images, [])
    overrides = ["dataset.name=coco", f"dataset.root={tmp_path}", "dataset.coco.test=test.json", *TINY]
    code, message = cli(validate.main, overrides, capsys)
    assert code == 1 and f"'{tmp_path / 'test.json'}' has no annotations (3 images" in message
    assert "Traceback" not in message


def test_coco_json_whose_annotations_are_all_dropped_says_why(tmp_path):
    write_raw_coco(tmp_path / "test.json", coco_folder(tmp_path), [annotation(1, 1, iscrowd=1)])
    with pytest.raises(DatasetLayoutError, match=r"none of the 1 annotations of '.*test.json' is used: each is a "
                                                 r"crowd"):
        build("coco", tmp_path, "test", "dataset.coco.test=test.json")


def test_coco_training_json_without_annotations_is_images_only_with_auto_prompts(tmp_path):
    write_raw_coco(tmp_path / "train.json", coco_folder(tmp_path), [])
    dataset = build("coco", tmp_path, "train", "dataset.coco.train=train.json", "prompt_source=auto")
    assert isinstance(dataset, ImagesOnlyDataset) and len(dataset) == 3
