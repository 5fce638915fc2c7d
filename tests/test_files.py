"""Shared file logic of the dataset loaders: layout checks and splits (datasets/layout.py), masks against
their images (datasets/masks.py), the mask-file dataset (datasets/files.py). Reading the files:
tests/test_image_reading.py, tests/test_mask_reading.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datasets.files import LabelMapDataset
from datasets.instances import SampleError, SkippedImageWarning
from datasets.layout import DatasetLayoutError, Layout, MaskRecord, interleave, mask_records
from datasets.masks import check_same_size, drop_empty_masks
from tests.ondisk import labels, sample_options, write_image, write_mask

TREE = """
<root>/
  images/<name>.jpg
"""


# splits

def test_interleave_takes_k_for_train_then_one_for_eval():
    items = list(range(15))
    assert interleave(items, 6, "train") == [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 14]
    assert interleave(items, 6, "val") == interleave(items, 6, "test") == [6, 13]
    assert interleave(items, 1, "train") == list(range(0, 15, 2))


@pytest.mark.parametrize("size, k, train, evaluation", [
    (5000, 6, 4286, 714),  # COCO val2017
    (2913, 6, 2497, 416),  # VOC SegmentationObject
    (1000, 5, 834, 166),  # Kvasir-SEG
    (2026, 4, 1621, 405),  # COD10K-v2 test
])
def test_interleave_sizes_match_the_authors_splits(size, k, train, evaluation):
    items = list(range(size))
    assert len(interleave(items, k, "train")) == train and len(interleave(items, k, "test")) == evaluation


# masks against their images

def test_drop_empty_removes_masks_without_pixels_and_their_boxes():
    masks = np.zeros((3, 4, 4), bool)
    masks[0, 1, 1] = masks[2, 2, 2] = True
    boxes = np.arange(12, dtype=np.float32).reshape(3, 4)
    kept, kept_boxes = drop_empty_masks(masks, boxes)
    assert len(kept) == 2 and kept_boxes.tolist() == boxes[[0, 2]].tolist()
    assert drop_empty_masks(masks)[1] is None


def test_check_same_size_names_both_files():
    image = np.zeros((40, 60, 3), np.uint8)
    check_same_size(image, Path("a.jpg"), np.zeros((2, 40, 60), bool), Path("a.png"))
    check_same_size(image, Path("a.jpg"), np.zeros((0, 40, 60), bool), Path("a.png"))
    with pytest.raises(SampleError, match=r"mask 'a.png' is 60x41 but image 'a.jpg' is 60x40"):
        check_same_size(image, Path("a.jpg"), np.zeros((1, 41, 60), bool), Path("a.png"))


# layout checks

def test_layout_errors_name_the_path_show_the_tree_and_point_to_prepare(tmp_path):
    with pytest.raises(DatasetLayoutError, match="dataset.root is empty"):
        Layout.at("demo", "", TREE)
    with pytest.raises(FileNotFoundError) as missing_root:
        Layout.at("demo", str(tmp_path / "nowhere"), TREE)
    message = str(missing_root.value)
    assert isinstance(missing_root.value, DatasetLayoutError)
    assert f"'{tmp_path / 'nowhere'}' not found" in message and "Dataset 'demo'" in message
    assert "images/<name>.jpg" in message and "PREPARE.md" in message
    layout = Layout.at("demo", str(tmp_path), TREE)
    with pytest.raises(DatasetLayoutError, match=f"folder '{tmp_path / 'images'}' not found"):
        layout.folder("images")
    with pytest.raises(DatasetLayoutError, match=f"file '{tmp_path / 'a.json'}' not found"):
        layout.file("a.json")


def test_a_relative_root_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    write_image(tmp_path / "data" / "images" / "a.jpg")
    monkeypatch.chdir(tmp_path)
    layout = Layout.at("demo", "data", TREE)
    assert layout.files_by_stem(layout.folder("images")) == {"a": Path("data/images/a.jpg")}


def test_files_by_stem_sorts_filters_and_refuses_duplicate_names(tmp_path):
    for name in ("b.jpg", "a.PNG", "c.txt", "d.jpeg"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "e.png").mkdir()
    layout = Layout.at("demo", str(tmp_path), TREE)
    files = layout.files_by_stem(tmp_path)
    assert list(files) == ["a", "b", "d"] and files["a"] == tmp_path / "a.PNG"
    assert list(layout.files_by_stem(tmp_path, (".jpg",))) == ["b"]
    (tmp_path / "b.png").write_bytes(b"")
    with pytest.raises(DatasetLayoutError, match="same name"):
        layout.files_by_stem(tmp_path)


def test_mask_records_pair_by_stem_and_point_missing_masks_at_the_expected_file(tmp_path):
    images = {"a": tmp_path / "a.jpg", "b": tmp_path / "b.jpg"}
    records = mask_records(images, {"a": tmp_path / "m" / "a.bmp"}, tmp_path / "m", background=(0, 1))
    assert records == [MaskRecord(tmp_path / "a.jpg", tmp_path / "m" / "a.bmp", (0, 1)),
                       MaskRecord(tmp_path / "b.jpg", tmp_path / "m" / "b.png", (0, 1))]


# the mask-file dataset

def mask_dataset(tmp_path: Path, maps: list[np.ndarray], **kwargs) -> LabelMapDataset:
    records = []
    for i, label_map in enumerate(maps):
        write_image(tmp_path / f"{i}.jpg", seed=i)
        write_mask(tmp_path / f"{i}.png", label_map)
        records.append(MaskRecord(tmp_path / f"{i}.jpg", tmp_path / f"{i}.png"))
    layout = Layout.at("demo", str(tmp_path), TREE)
    return LabelMapDataset(records, layout, "test", sample_options(), **kwargs)


def test_binary_masks_are_thresholded_into_one_instance(tmp_path):
    soft = labels({100: (0, 0, 10, 10), 200: (20, 5, 30, 30), 128: (40, 0, 45, 5)})
    dataset = mask_dataset(tmp_path, [soft], binary=True)
    _, masks, boxes = dataset.load(0)
    assert boxes is None and masks.shape == (1, 40, 60)
    np.testing.assert_array_equal(masks[0], soft > 127)
    assert len(mask_dataset(tmp_path, [soft]).load(0)[1]) == 3, "as a label map: one instance per value"


def test_drop_empty_removes_images_without_instances(tmp_path):
    maps = [labels({1: (0, 0, 5, 5)}), labels({}), labels({2: (5, 5, 9, 9)})]
    assert len(mask_dataset(tmp_path, maps)) == 3
    dataset = mask_dataset(tmp_path, maps, drop_empty=True)
    assert [r.image.name for r in dataset.records] == ["0.jpg", "2.jpg"]


def test_an_empty_split_is_a_layout_error(tmp_path):
    with pytest.raises(DatasetLayoutError, match="the test split has no images"):
        mask_dataset(tmp_path, [labels({})], drop_empty=True)


def test_a_mask_of_another_size_is_skipped_with_a_warning(tmp_path):
    dataset = mask_dataset(tmp_path, [labels({1: (0, 0, 5, 5)}), labels({1: (0, 0, 5, 5)}, height=41)])
    assert len(dataset[0]["masks"]) == 1
    with pytest.warns(SkippedImageWarning, match=r"skipping image 1: mask '.*1.png' is 60x41 but image '.*1.jpg'"):
        sample = dataset[1]
    assert sample["skipped"] == [1] and len(sample["masks"]) == 0
