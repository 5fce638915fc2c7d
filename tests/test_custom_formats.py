"""Custom data: the `coco` (COCO json + image folder) and `folder` (images/ + masks/) formats,
their splits, skipped images, and short adaptation runs on both."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import adaptation
from datasets import DatasetLayoutError, StepSampler, UnusableDatasetError
from datasets.instances import SkippedImageWarning
from datasets.layout import DataWarning
from tests.ondisk import (box_annotation, build, coco_image, compressed_rle, labels, split_sizes, write_coco_json,
                          write_corrupt, write_image, write_mask)
from utils.config import ConfigError, load_config


# coco

def write_coco(root: Path, count: int = 6, corrupt: tuple[int, ...] = (), taller: tuple[int, ...] = (),
               annotations: str = "annotations.json") -> None:
    """Images 1..count in images/ (id i in sub/ when even), each with a polygon and an RLE
    instance; `taller` ids are annotated as 41 pixels high, `corrupt` ids cannot be read."""
    images, anns = [], []
    for i in range(1, count + 1):
        name = f"sub/{i}.jpg" if i % 2 == 0 else f"{i}.png"
        if i in corrupt:
            write_corrupt(root / "images" / name)
        else:
            write_image(root / "images" / name, seed=i)
        images.append(coco_image(i, name, height=41 if i in taller else 40))
        mask = labels({1: (40, 20, 50, 35)}, height=images[-1]["height"]).astype(bool)
        anns += [box_annotation(i, 5, 5, 20, 15), {"image_id": i, "bbox": [40, 20, 10, 15],
                                                   "segmentation": compressed_rle(mask)}]
    write_coco_json(root / annotations, images, anns)


def test_coco_splits_one_json_by_the_configured_interleave(tmp_path):
    write_coco(tmp_path)
    assert len(build("coco", tmp_path, "train")) == 6  # the default 6:1 leaves none of 6 images to eval
    with pytest.raises(DatasetLayoutError, match="the test split has no images"):
        build("coco", tmp_path, "test")
    assert split_sizes("coco", tmp_path, "dataset.interleave=2") == {"train": 4, "val": 2, "test": 2}
    test = build("coco", tmp_path, "test", "dataset.interleave=2")
    assert [r.image_id for r in test.records] == [3, 6]
    assert test.records[1].image == tmp_path / "images" / "sub" / "6.jpg"
    image, masks, boxes = test.load(1)
    assert image.shape == (40, 60, 3) and masks.shape == (2, 40, 60)
    np.testing.assert_array_equal(boxes, [[5, 5, 20, 15], [40, 20, 50, 35]])


def test_interleave_must_be_positive():
    with pytest.raises(ConfigError, match="'dataset.interleave' is 0; it must be 1 or more"):
        load_config(overrides=["dataset.interleave=0"])


def test_coco_per_split_jsons_replace_the_interleave(tmp_path):
    write_coco(tmp_path, count=5, annotations="train.json")
    write_coco(tmp_path, count=2, annotations="test.json")
    overrides = ("dataset.coco.train=train.json", "dataset.coco.test=test.json", "dataset.coco.annotations=")
    assert len(build("coco", tmp_path, "train", *overrides)) == 5
    assert len(build("coco", tmp_path, "test", *overrides)) == 2
    with pytest.raises(DatasetLayoutError, match="neither dataset.coco.val nor dataset.coco.annotations is set"):
        build("coco", tmp_path, "val", *overrides)


def test_coco_images_without_a_size_in_the_json_take_the_image_size(tmp_path):
    write_image(tmp_path / "images" / "a.png")
    mask = labels({1: (40, 20, 50, 35)}).astype(bool)
    write_coco_json(tmp_path / "annotations.json", [{"id": 1, "file_name": "a.png"}],
                    [{"image_id": 1, "bbox": [40, 20, 10, 15], "segmentation": compressed_rle(mask)}])
    np.testing.assert_array_equal(build("coco", tmp_path, "train").load(0)[1], mask[None])


def test_coco_errors_name_the_missing_or_malformed_json(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetLayoutError, match=f"file '{tmp_path / 'annotations.json'}' not found"):
        build("coco", tmp_path, "train")
    (tmp_path / "annotations.json").write_text('{"images": []}')
    with pytest.raises(DatasetLayoutError, match="is not a COCO instances json"):
        build("coco", tmp_path, "train")


def test_coco_image_and_annotation_size_mismatch_is_skipped(tmp_path):
    write_coco(tmp_path, taller=(3,), corrupt=(6,))
    with pytest.warns(DataWarning, match=r"1 of the 2 images of the test split are not the size it gives them "
                                         r"\(e.g. '.*3.png' is 60x40 as read, the json says 60x41\)"):
        test = build("coco", tmp_path, "test", "dataset.interleave=2")
    with pytest.warns(SkippedImageWarning, match=r"annotations of image id 3 .* is 60x41 but image"):
        assert test[0]["skipped"] == [0]
    with pytest.warns(SkippedImageWarning, match=r"cannot read image '.*6.jpg'"):
        assert test[1]["skipped"] == [1]


# folder

def write_folder(root: Path, stems: list[str], corrupt: tuple[str, ...] = (), taller: tuple[str, ...] = ()) -> None:
    """Per stem: an image and a grey label map with values 50 and 100; stems starting with "p"
    get a folder of one PNG per instance instead."""
    for i, stem in enumerate(stems):
        path = root / "images" / f"{stem}.png"
        if stem in corrupt:
            write_corrupt(path)
        else:
            write_image(path, seed=i)
        height = 41 if stem in taller else 40
        if stem.startswith("p"):
            write_mask(root / "masks" / stem / "a.png", labels({1: (5, 5, 20, 15)}, height=height))
            write_mask(root / "masks" / stem / "b.png", labels({255: (40, 20, 50, 35)}, height=height))
        else:
            label_map = labels({50: (5, 5, 20, 15), 100: (40, 20, 50, 35)}, height=height)
            write_mask(root / "masks" / f"{stem}.png", label_map)


def test_folder_splits_by_interleave_and_reads_both_mask_forms(tmp_path):
    write_folder(tmp_path, ["a", "b", "c", "d", "p1", "p2"])
    assert split_sizes("folder", tmp_path, "dataset.interleave=2") == {"train": 4, "val": 2, "test": 2}
    test = build("folder", tmp_path, "test", "dataset.interleave=2")
    assert [r.image.name for r in test.records] == ["c.png", "p2.png"]
    expected = np.stack([labels({1: (5, 5, 20, 15)}), labels({1: (40, 20, 50, 35)})]).astype(bool)
    for index in (0, 1):
        image, masks, boxes = test.load(index)
        assert image.shape == (40, 60, 3) and boxes is None
        np.testing.assert_array_equal(masks, expected)


def test_folder_label_maps_may_be_palette_or_16_bit(tmp_path):
    write_folder(tmp_path, ["a", "b"])
    write_mask(tmp_path / "masks" / "a.png", labels({3: (5, 5, 20, 15), 9: (40, 20, 50, 35)}), palette=True)
    write_mask(tmp_path / "masks" / "b.png", labels({300: (5, 5, 20, 15), 9: (40, 20, 50, 35)}, dtype=np.uint16))
    train = build("folder", tmp_path, "train", "dataset.interleave=6")
    assert [len(train.load(i)[1]) for i in range(2)] == [2, 2]


def test_folder_per_split_subfolders(tmp_path):
    write_folder(tmp_path / "train", ["a", "b", "c"])
    write_folder(tmp_path / "test", ["d"])
    assert len(build("folder", tmp_path, "train")) == 3
    assert len(build("folder", tmp_path, "test")) == 1
    with pytest.raises(DatasetLayoutError, match=f"folder '{tmp_path / 'val' / 'images'}' not found"):
        build("folder", tmp_path, "val")


def write_broken_folder(root: Path) -> None:
    """Six images sorted a, b, c, e, p1, p2, of which only c can be used; e has no mask (skipped
    when the split is built)."""
    write_folder(root, ["a", "b", "c"], corrupt=("a",), taller=("b",))
    write_image(root / "images" / "e.png")  # no mask
    for stem in ("p1", "p2"):
        write_image(root / "images" / f"{stem}.png")
        write_mask(root / "masks" / stem / "a.png", labels({1: (5, 5, 20, 15)}))
    write_mask(root / "masks" / "p1" / "b.png", labels({1: (5, 5, 20, 15)}, height=41))
    write_corrupt(root / "masks" / "p2" / "b.png")


def test_folder_skips_unreadable_files_and_wrong_sizes_with_a_warning(tmp_path):
    write_broken_folder(tmp_path / "test")
    dataset = build("folder", tmp_path, "test")
    assert [r.image.name for r in dataset.records] == ["a.png", "b.png", "c.png", "p1.png", "p2.png"]
    assert dataset.inventory.skipped["image without a mask"] == [
        (tmp_path / "test/images/e.png", f"an image without a mask (no '{tmp_path / 'test/masks/e.png'}')")]
    reasons = {0: r"cannot read image '.*a.png'", 1: r"mask '.*b.png' is 60x41 but image '.*b.png' is 60x40",
               3: r"instance mask '.*p1/b.png' is 60x41 but '.*p1/a.png' is 60x40",
               4: r"cannot read mask '.*p2/b.png'"}
    for index, reason in reasons.items():
        with pytest.warns(SkippedImageWarning, match=reason):
            sample = dataset[index]
        assert sample["skipped"] == [index] and len(sample["masks"]) == 0
    assert dataset[2]["skipped"] == [] and len(dataset[2]["masks"]) == 2


def test_folder_training_uses_the_next_usable_image(tmp_path):
    write_broken_folder(tmp_path / "train")
    dataset = build("folder", tmp_path, "train")
    with pytest.warns(SkippedImageWarning):
        sample = dataset[(0, 0)]
    assert sample["index"] == 2 and sample["skipped"] == [0, 1]
    with pytest.warns(SkippedImageWarning):
        sample = dataset[(3, 0)]
    assert sample["index"] == 2 and sample["skipped"] == [3, 4, 0, 1]


# end to end: adaptation.py on custom data with broken images

def adapt(tiny_overrides: list[str], name: str, root: Path) -> dict:
    """A 4-step run (evaluations at steps 0, 2, 4) with a 2:1 split; returns summary.json."""
    with pytest.warns(SkippedImageWarning):
        result = adaptation.main(tiny_overrides + [f"dataset.name={name}", f"dataset.root={root}",
                                                   "dataset.interleave=2", "eval_interval=2"])
    summary = json.loads((Path(tiny_overrides[0].partition("=")[2]) / "summary.json").read_text())
    assert summary["dataset"] == name and summary["last"] == result["last"]
    assert [h["step"] for h in summary["history"]] == [0, 2, 4]
    return summary


@pytest.mark.slow
def test_adaptation_on_coco_counts_skipped_images(tiny_overrides, tmp_path):
    # 2:1 on ids 1..6: train 1, 2, 4, 5 (2 unreadable), eval 3 (annotated 41 high), 6
    write_coco(tmp_path / "data", corrupt=(2,), taller=(3,))
    with pytest.warns(DataWarning, match=r"1 of the 2 images of the test split are not the size it gives them"):
        summary = adapt(tiny_overrides, "coco", tmp_path / "data")
    # the 4 steps of batch 1 are one epoch of the 4 training images: the broken one is met once
    assert summary["skipped_images"] == {"train": 1, "eval": 1}
    for metrics in summary["history"]:
        assert metrics["skipped_images"] == 1 and metrics["num_images"] == 1 and metrics["num_instances"] == 2


@pytest.mark.slow
def test_adaptation_on_folder_counts_skipped_images_across_a_resume(tiny_overrides, tmp_path):
    # 2:1 on a, b, c, d, p1, p2: train a, b, d, p1, eval c, p2. The image met at step 1 is unreadable,
    # so only the checkpoint of the first 2 steps knows of it when the run resumes for steps 3-4.
    seed = load_config(overrides=tiny_overrides).seed
    first = ["a", "b", "d", "p1"][next(iter(StepSampler(4, 1, 1, 0, seed)))[0]]
    write_folder(tmp_path / "data", ["a", "b", "c", "d", "p1", "p2"], corrupt=(first,))
    with pytest.warns(SkippedImageWarning, match=f"{first}.png"):
        adaptation.main(tiny_overrides + ["dataset.name=folder", f"dataset.root={tmp_path / 'data'}",
                                          "dataset.interleave=2", "num_steps=2"])
    adaptation.main(["--resume", str(tmp_path / "run" / "checkpoints" / "last.ckpt"), "num_steps=4"])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [h["step"] for h in summary["history"]] == [0, 2, 4]
    assert summary["skipped_images"] == {"train": 1, "eval": 0}
    assert all(m["num_images"] == 2 and m["num_instances"] == 4 for m in summary["history"])


@pytest.mark.slow
def test_adaptation_stops_when_no_evaluation_image_is_usable(tiny_overrides, tmp_path):
    write_folder(tmp_path / "data", ["a", "b", "c"], corrupt=("a", "b", "c"))
    with pytest.warns(SkippedImageWarning), pytest.raises(UnusableDatasetError, match="None of the 1 evaluation"):
        adaptation.main(tiny_overrides + ["dataset.name=folder", f"dataset.root={tmp_path / 'data'}",
                                          "dataset.interleave=2"])
