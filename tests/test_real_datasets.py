"""The paper's dataset loaders on tiny datasets written in each dataset's real on-disk layout."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from datasets import DATASETS, DatasetLayoutError
from datasets.files import LabelMapDataset
from datasets.instances import SkippedImageWarning
from tests.ondisk import (box_annotation, build, coco_image, compressed_rle, labels, split_sizes, uncompressed_rle,
                          write_coco_json, write_image, write_mask)


def rect(x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    """A 40 x 60 bool mask of an XYXY rectangle (exclusive ends)."""
    return labels({1: (x1, y1, x2, y2)}).astype(bool)


# COCO 2017 and COCO-C

def write_coco2017(root: Path, images_folder: str = "val2017") -> None:
    """Image ids 1..8 (listed out of order): id 1 has a polygon, a compressed RLE and a crowd
    annotation, id 2 an uncompressed RLE, id 3 only a zero-width box (so it is dropped)."""
    ids = [5, 1, 8, 3, 2, 7, 4, 6]
    for image_id in ids:
        write_image(root / images_folder / f"{image_id:012d}.jpg", seed=image_id)
    annotations = [
        box_annotation(1, 5, 5, 25, 15),
        {"image_id": 1, "bbox": [30, 10, 10, 20], "segmentation": compressed_rle(rect(30, 10, 40, 30))},
        {**box_annotation(1, 0, 0, 60, 40), "iscrowd": 1},
        {"image_id": 2, "bbox": [2, 3, 8, 4], "segmentation": uncompressed_rle(rect(2, 3, 10, 7))},
        {**box_annotation(3, 10, 10, 20, 20), "bbox": [10, 10, 0, 10]},
    ] + [box_annotation(i, 10, 10, 10 + 3 * i, 20) for i in (4, 5, 6, 7, 8)]
    write_coco_json(root / "annotations" / "instances_val2017.json",
                    [coco_image(i, f"{i:012d}.jpg") for i in ids], annotations)


def test_coco2017_splits_sorted_ids_6_to_1_and_drops_images_without_usable_annotations(tmp_path):
    write_coco2017(tmp_path)
    # sorted ids 1..8: positions 0-5 and 7 train (id 3 dropped), position 6 (id 7) eval
    assert split_sizes("coco2017", tmp_path) == {"train": 6, "val": 1, "test": 1}
    train = build("coco2017", tmp_path, "train")
    assert [r.image_id for r in train.records] == [1, 2, 4, 5, 6, 8]
    assert build("coco2017", tmp_path, "test").records[0].image == tmp_path / "val2017" / "000000000007.jpg"


def test_coco2017_decodes_polygons_and_both_rles_and_boxes_come_from_bboxes(tmp_path):
    write_coco2017(tmp_path)
    train = build("coco2017", tmp_path, "train")
    image, masks, boxes = train.load(0)  # id 1: polygon + compressed RLE; the crowd is skipped
    assert image.shape == (40, 60, 3) and masks.shape == (2, 40, 60) and masks.dtype == bool
    np.testing.assert_array_equal(boxes, [[5, 5, 25, 15], [30, 10, 40, 30]])
    np.testing.assert_array_equal(masks[1], rect(30, 10, 40, 30))
    # pycocotools rasterises a polygon's corners up to the far edge: the mask covers the box
    assert masks[0][5:15, 5:25].all() and not masks[0][:, 27:].any() and not masks[0][17:].any()
    _, masks, boxes = train.load(1)  # id 2: uncompressed RLE
    np.testing.assert_array_equal(masks, rect(2, 3, 10, 7)[None])
    np.testing.assert_array_equal(boxes, [[2, 3, 10, 7]])


AUTHORS_COCO = ("dataset.coco.crowd=true", "dataset.coco.max_masks=151", "dataset.coco.zero_size=authors")


def test_coco2017_as_the_authors_load_it_keeps_crowds_and_their_zero_size_rule(tmp_path):
    write_coco2017(tmp_path)
    # id 3's only annotation has a zero-width box: skipped by both rules, so its image is dropped
    assert split_sizes("coco2017", tmp_path, *AUTHORS_COCO)["train"] == 6
    train = build("coco2017", tmp_path, "train", *AUTHORS_COCO)
    _, masks, boxes = train.load(0)  # id 1: polygon, compressed RLE and the crowd, in file order
    assert masks.shape == (3, 40, 60)
    np.testing.assert_array_equal(boxes[2], [0, 0, 60, 40])
    assert masks[2].all()
    # dropping crowds again, with the authors' other rules
    _, masks, _ = build("coco2017", tmp_path, "train", *AUTHORS_COCO[1:]).load(0)
    assert masks.shape == (2, 40, 60)


def test_coco_authors_zero_height_rule_and_151_mask_cap(tmp_path):
    # Image 1: 160 small boxes, then a zero-height box whose polygon still covers 200 pixels.
    # Image 2: a zero-height box over fewer than 100 pixels, and a normal one.
    write_image(tmp_path / "images" / "a.jpg", seed=1, height=100, width=100)
    write_image(tmp_path / "images" / "b.jpg", seed=2, height=100, width=100)
    many = [box_annotation(1, i % 90, i // 90 * 10, i % 90 + 5, i // 90 * 10 + 5) for i in range(160)]
    flat_big = {**box_annotation(2, 0, 50, 20, 60), "bbox": [0, 50, 20, 0]}  # 200 pixels
    flat_small = {**box_annotation(2, 0, 80, 10, 85), "bbox": [0, 80, 10, 0]}  # 50 pixels
    write_coco_json(tmp_path / "all.json", [coco_image(1, "a.jpg", 100, 100), coco_image(2, "b.jpg", 100, 100)],
                    many + [flat_big, flat_small, box_annotation(2, 30, 30, 40, 40)])
    options = ("dataset.coco.train=all.json",)
    authors = build("coco", tmp_path, "train", *options, *AUTHORS_COCO)
    assert len(authors.load(0)[1]) == 151  # the cap, in file order
    _, masks, boxes = authors.load(1)
    np.testing.assert_array_equal(boxes, [[0, 50, 20, 50], [30, 30, 40, 40]])  # the small flat one is skipped
    assert masks[0].sum() == 200
    clean = build("coco", tmp_path, "train", *options)
    assert len(clean.load(0)[1]) == 160
    np.testing.assert_array_equal(clean.load(1)[2], [[30, 30, 40, 40]])


def test_coco_c_reads_the_corrupted_images_with_the_coco2017_annotations(tmp_path):
    write_coco2017(tmp_path)
    for image_id in range(1, 9):
        write_image(tmp_path / "corruption" / "fog" / f"{image_id:012d}.jpg", seed=100 + image_id)
    assert split_sizes("coco_c", tmp_path, "dataset.corruption=fog") == {"train": 6, "val": 1, "test": 1}
    train = build("coco_c", tmp_path, "train", "dataset.corruption=fog")
    assert train.records[0].image == tmp_path / "corruption" / "fog" / "000000000001.jpg"
    assert train.load(0)[1].shape == (2, 40, 60)
    with pytest.raises(DatasetLayoutError, match=r"corruption/snow' not found .*corruptions present: fog"):
        build("coco_c", tmp_path, "train", "dataset.corruption=snow")


# Pascal VOC 2012

def write_voc(root: Path, count: int = 8) -> Path:
    base = root / "VOCdevkit" / "VOC2012"
    for i in range(count):
        write_image(base / "JPEGImages" / f"2007_{i:06d}.jpg", seed=i)
        instances = {1: (5, 5, 20, 20), 2: (30, 10, 50, 35)}
        if i == 0:  # the boundary band (255) around instance 1
            instances = {255: (4, 4, 21, 21), 1: (5, 5, 20, 20), 2: (30, 10, 50, 35)}
        write_mask(base / "SegmentationObject" / f"2007_{i:06d}.png", labels(instances), palette=True)
    return base


@pytest.mark.parametrize("root", ["", "VOCdevkit", "VOCdevkit/VOC2012"])
def test_voc2012_splits_6_to_1_and_drops_the_boundary(tmp_path, root):
    write_voc(tmp_path)
    assert split_sizes("voc2012", tmp_path / root) == {"train": 7, "val": 1, "test": 1}
    train = build("voc2012", tmp_path / root, "train")
    assert build("voc2012", tmp_path / root, "test").records[0].image.name == "2007_000006.jpg"
    image, masks, boxes = train.load(0)
    assert image.shape == (40, 60, 3) and boxes is None and masks.shape == (2, 40, 60)
    np.testing.assert_array_equal(masks[0], rect(5, 5, 20, 20))
    np.testing.assert_array_equal(masks[1], rect(30, 10, 50, 35))


# Kvasir-SEG

def test_kvasir_splits_5_to_1_in_json_order_and_cuts_instances_by_box(tmp_path):
    stems = ["cju9", "cju1", "cju5", "cju3", "cju7", "cju2", "cju4"]
    entries = {}
    for i, stem in enumerate(stems):
        write_image(tmp_path / "images" / f"{stem}.jpg", seed=i)
        write_mask(tmp_path / "masks" / f"{stem}.jpg", labels({255: (5, 5, 20, 20), 250: (30, 10, 50, 35)}))
        boxes = [(5, 5, 19, 19), (30, 10, 49, 34)] if i == 0 else [(5, 5, 19, 19)]
        entries[stem] = {"height": 40, "width": 60, "bbox": [
            {"label": "polyp", "xmin": x1, "ymin": y1, "xmax": x2, "ymax": y2} for x1, y1, x2, y2 in boxes]}
    (tmp_path / "kavsir_bboxes.json").write_text(json.dumps(entries))
    assert split_sizes("kvasir", tmp_path) == {"train": 6, "val": 1, "test": 1}
    assert build("kvasir", tmp_path, "test").records[0].image.name == "cju2.jpg"  # the 6th key, not sorted
    train = build("kvasir", tmp_path, "train")
    _, masks, boxes = train.load(0)
    assert boxes is None and masks.shape == (2, 40, 60)
    np.testing.assert_array_equal(masks[0], rect(5, 5, 20, 20))  # inclusive box corners
    np.testing.assert_array_equal(masks[1], rect(30, 10, 50, 35))
    _, masks, _ = train.load(1)  # the blob outside every box is no instance
    np.testing.assert_array_equal(masks, rect(5, 5, 20, 20)[None])


# ISIC 2016

def write_isic(root: Path) -> None:
    for part, count in (("Training", 3), ("Test", 2)):
        rows = [["", "图像", "分割"]]  # a gbk header, as the CSVs pandas wrote
        for i in range(count):
            image = f"ISBI2016_ISIC_Part1_{part}_Data/ISIC_{i:07d}.jpg"
            mask = f"ISBI2016_ISIC_Part1_{part}_GroundTruth/ISIC_{i:07d}_Segmentation.png"
            write_image(root / image, seed=i)
            write_mask(root / mask, labels({255: (5 + i, 5, 30, 25), 60: (40, 0, 50, 10)}))
            rows.append([str(i), image, mask])
        with (root / f"ISBI2016_ISIC_Part1_{part}_GroundTruth.csv").open("w", encoding="gbk", newline="") as handle:
            csv.writer(handle).writerows(rows)


def test_isic2016_reads_the_gbk_csvs_of_the_official_splits(tmp_path):
    write_isic(tmp_path)
    assert split_sizes("isic2016", tmp_path) == {"train": 3, "val": 2, "test": 2}
    test = build("isic2016", tmp_path, "test")
    assert test.records[1].image == tmp_path / "ISBI2016_ISIC_Part1_Test_Data" / "ISIC_0000001.jpg"
    _, masks, _ = test.load(1)  # binary: grey 60 is background
    np.testing.assert_array_equal(masks, rect(6, 5, 30, 25)[None])


# camouflaged objects

def write_binary_pairs(images: Path, masks: Path, stems: list[str], empty: tuple[str, ...] = (),
                       tall: tuple[str, ...] = ()) -> None:
    for i, stem in enumerate(stems):
        write_image(images / f"{stem}.jpg", seed=i)
        shape = {"height": 41} if stem in tall else {}
        write_mask(masks / f"{stem}.png", labels({} if stem in empty else {255: (10, 5, 40, 30)}, **shape))


def test_camo_uses_the_official_splits_and_skips_a_mask_of_another_size(tmp_path):
    write_binary_pairs(tmp_path / "Images" / "Train", tmp_path / "GT", ["camourflage_00001", "camourflage_00003"])
    test_stems = ["camourflage_00002", "camourflage_00004", "camourflage_00005"]
    write_binary_pairs(tmp_path / "Images" / "Test", tmp_path / "GT", test_stems, tall=("camourflage_00004",))
    assert split_sizes("camo", tmp_path) == {"train": 2, "val": 3, "test": 3}
    test = build("camo", tmp_path, "test")
    np.testing.assert_array_equal(test.load(0)[1], rect(10, 5, 40, 30)[None])
    with pytest.warns(SkippedImageWarning, match="camourflage_00004.png' is 60x41"):
        assert test[1]["skipped"] == [1]


def test_cod10k_splits_its_test_set_4_to_1_and_drops_empty_masks(tmp_path):
    stems = [f"COD10K-CAM-{i}" for i in range(7)]
    write_binary_pairs(tmp_path / "Test" / "Image", tmp_path / "Test" / "GT_Object", stems, empty=(stems[1],))
    # positions 0-3 and 5-6 train (position 1 empty), position 4 eval
    assert split_sizes("cod10k", tmp_path) == {"train": 5, "val": 1, "test": 1}
    assert build("cod10k", tmp_path, "test").records[0].image.name == "COD10K-CAM-4.jpg"
    np.testing.assert_array_equal(build("cod10k", tmp_path, "train").load(0)[1], rect(10, 5, 40, 30)[None])


@pytest.mark.parametrize("name, images", [("cod10k", 6), ("osd", 7)])  # training images, one of them empty
def test_prompt_source_auto_reads_no_training_mask_to_drop_empty_images(tmp_path, monkeypatch, name, images):
    """The empty-image filter reads the masks; with automatic prompts the training split keeps every
    image and reads none of its masks (evaluation splits still filter)."""
    if name == "cod10k":
        stems = [f"COD10K-CAM-{i}" for i in range(7)]
        write_binary_pairs(tmp_path / "Test" / "Image", tmp_path / "Test" / "GT_Object", stems, empty=(stems[1],))
    else:
        for i in range(8):
            write_image(tmp_path / "image_color" / f"learn{i}.png", seed=i)
            write_mask(tmp_path / "annotation" / f"learn{i}.png", labels({} if i == 2 else {2: (5, 5, 15, 15)}))
    read = []
    real = LabelMapDataset.read_masks
    monkeypatch.setattr(LabelMapDataset, "read_masks", lambda self, record: read.append(record) or real(self, record))
    assert len(build(name, tmp_path, "train", "prompt_source=auto")) == images and read == []
    assert len(build(name, tmp_path, "train")) == images - 1 and len(read) == images


def test_chameleon_splits_4_to_1(tmp_path):
    write_binary_pairs(tmp_path / "Imgs", tmp_path / "GT", [f"animal-{i}" for i in range(1, 7)])
    assert split_sizes("chameleon", tmp_path) == {"train": 5, "val": 1, "test": 1}
    np.testing.assert_array_equal(build("chameleon", tmp_path, "test").load(0)[1], rect(10, 5, 40, 30)[None])


# robotic scenes

def write_ocid(root: Path) -> None:
    """Sorted: 4 images of a floor sequence, then 4 of a table sequence (the 2nd of them empty)."""
    floor = root / "ARID10" / "floor" / "bottom" / "fruits" / "seq02"
    table = root / "ARID20" / "table" / "top" / "seq01"
    for i in range(4):
        name = f"result_2018-08-20-{i:02d}.png"
        write_image(floor / "rgb" / name, seed=i)
        write_mask(floor / "label" / name, labels({1: (0, 30, 60, 40), 2: (5, 5, 15, 15), 300: (30, 5, 45, 20)},
                                                  dtype=np.uint16))
        write_image(table / "rgb" / name, seed=10 + i)
        objects = {} if i == 1 else {5: (30, 5, 45, 20)}
        write_mask(table / "label" / name, labels({1: (0, 30, 60, 40), 2: (0, 20, 60, 30), **objects}))


def test_ocid_drops_floor_and_table_labels_and_empty_images(tmp_path):
    root = tmp_path / "OCID-table-top"  # a root mentioning "table" must not change the floor sequences
    write_ocid(root)
    assert split_sizes("ocid", root) == {"train": 6, "val": 1, "test": 1}
    train = build("ocid", root, "train")
    _, masks, _ = train.load(0)  # floor: 1 is background, 2 is an object; 16-bit label 300 is kept
    assert masks.shape == (2, 40, 60)
    np.testing.assert_array_equal(masks, np.stack([rect(5, 5, 15, 15), rect(30, 5, 45, 20)]))
    _, masks, _ = train.load(4)  # the first table image: 1 and 2 are background
    np.testing.assert_array_equal(masks, rect(30, 5, 45, 20)[None])
    assert all("seq01/rgb/result_2018-08-20-01" not in str(r.image) for r in train.records)


def test_osd_drops_label_1_and_empty_images(tmp_path):
    for i in range(8):
        write_image(tmp_path / "image_color" / f"learn{i}.png", seed=i)
        objects = {} if i == 2 else {2: (5, 5, 15, 15), 3: (30, 5, 45, 20)}
        write_mask(tmp_path / "annotation" / f"learn{i}.png", labels({1: (0, 30, 60, 40), **objects}))
    assert split_sizes("osd", tmp_path) == {"train": 6, "val": 1, "test": 1}
    _, masks, _ = build("osd", tmp_path, "test").load(0)
    np.testing.assert_array_equal(masks, np.stack([rect(5, 5, 15, 15), rect(30, 5, 45, 20)]))


# layout errors

MISSING = {  # dataset -> the first path its loader needs below an empty root
    "coco2017": "annotations/instances_val2017.json", "coco_c": "corruption/gaussian_noise",
    "voc2012": "SegmentationObject", "kvasir": "images", "isic2016": "ISBI2016_ISIC_Part1_Training_GroundTruth.csv",
    "camo": "Images/Train", "cod10k": "Test/Image", "chameleon": "Imgs", "ocid": "**/*seq*/rgb/*.png",
    "osd": "image_color", "coco": "images", "folder": "train/images",
}


def test_every_file_dataset_is_covered():
    assert set(MISSING) == set(DATASETS) - {"synthetic"}


@pytest.mark.parametrize("name", sorted(MISSING))
def test_missing_files_raise_a_layout_error_naming_the_path(tmp_path, name):
    with pytest.raises(FileNotFoundError) as error:
        build(name, tmp_path, "train")
    message = str(error.value)
    assert isinstance(error.value, DatasetLayoutError)
    assert f"Dataset '{name}'" in message and MISSING[name] in message and str(tmp_path) in message
    assert "Expected layout" in message and "<root>" in message and "PREPARE.md" in message
    with pytest.raises(DatasetLayoutError, match="dataset.root is empty"):
        build(name, "", "train")
