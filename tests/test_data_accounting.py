"""Every file of a data folder is used or named: building a split counts the files found, used and
skipped with their reasons (datasets/inventory.py), in every loader that lists a folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import validate
from datasets import DatasetLayoutError, files_report
from datasets.instances import SkippedImageWarning
from datasets.inventory import MAX_NAMED
from engine.checks import run_main
from tests.ondisk import build, labels, write_coco_json, write_image, write_mask, box_annotation, coco_image
from tests.test_real_datasets import write_binary_pairs, write_coco2017, write_isic, write_ocid, write_voc

MASK = labels({255: (10, 5, 40, 30)})


def skipped(dataset) -> dict[str, list[str]]:
    """reason -> names of the skipped files, of a dataset's inventory."""
    return {reason: sorted(path.name for path, _ in files) for reason, files in dataset.inventory.skipped.items()}


def write_messy_folder(root: Path) -> None:
    """Images a..f with masks, and what users leave beside them: a sub-folder of images, a text
    file, a mask without an image, an image without a mask, an animated GIF."""
    for i, stem in enumerate("abcdef"):
        write_image(root / "images" / f"{stem}.png", seed=i)
        write_mask(root / "masks" / f"{stem}.png", MASK)
    write_image(root / "images" / "holiday" / "g.png")
    write_image(root / "images" / "holiday" / "h.png")
    (root / "images" / "notes.txt").write_text("labelled by hand")
    write_mask(root / "masks" / "z.png", MASK)
    write_image(root / "images" / "lonely.png")
    frames = [Image.fromarray(np.full((40, 60, 3), v, np.uint8)) for v in (0, 200)]
    frames[0].save(root / "images" / "moving.gif", save_all=True, append_images=frames[1:])
    write_mask(root / "masks" / "moving.png", MASK)


def test_a_folder_split_counts_and_names_every_file(tmp_path):
    write_messy_folder(tmp_path)
    # sorted pairs a b c d e f lonely moving: 2:1 puts c and f in the eval split
    test = build("folder", tmp_path, "test", "dataset.interleave=2")
    assert [r.image.name for r in test.records] == ["c.png", "f.png"]
    inventory = test.inventory
    assert inventory.found == 18 and inventory.used == 2 and inventory.elsewhere == 6
    assert skipped(test) == {"in a sub-folder": ["holiday"], "format not read": ["notes.txt"],
                             "mask without an image": ["z.png"]}
    train = build("folder", tmp_path, "train", "dataset.interleave=2")
    assert [r.image.name for r in train.records][-1] == "moving.gif"  # read, then refused by name when loaded
    assert len(train) == 5 and skipped(train)["image without a mask"] == ["lonely.png"]
    lines = files_report([train.inventory, test.inventory]).splitlines()
    assert lines[0] == (f"Dataset 'folder', train split: 18 files found in '{tmp_path / 'images'}', "
                        f"'{tmp_path / 'masks'}'; 5 images used, 2 in the other splits; 4 skipped (in a sub-folder: "
                        "1, format not read: 1, mask without an image: 1, image without a mask: 1).")
    assert f"  skipped '{tmp_path / 'images' / 'holiday'}': a sub-folder (2 files), not read" in lines
    assert f"  skipped '{tmp_path / 'images' / 'lonely.png'}': an image without a mask (no " \
           f"'{tmp_path / 'masks' / 'lonely.png'}')" in lines
    assert f"  skipped '{tmp_path / 'masks' / 'z.png'}': a mask without an image (no image named 'z')" in lines
    assert lines[5].startswith("Dataset 'folder', test split: 18 files found") and len(lines) == 6  # named once


def test_a_report_names_at_most_max_named_files_per_reason(tmp_path):
    write_image(tmp_path / "images" / "a.png")
    write_mask(tmp_path / "masks" / "a.png", MASK)
    for i in range(MAX_NAMED + 3):
        (tmp_path / "images" / f"note{i:02d}.txt").write_text("")
    lines = files_report([build("folder", tmp_path, "train", "dataset.interleave=1").inventory]).splitlines()
    assert len(lines) == 1 + MAX_NAMED + 1 and lines[-1] == "  ... and 3 more (format not read)"


def test_a_split_left_without_images_says_which_files_were_skipped(tmp_path):
    write_image(tmp_path / "images" / "a.png")
    write_mask(tmp_path / "masks" / "b.png", MASK)
    with pytest.raises(DatasetLayoutError, match=r"the train split has no images \(of the files found, skipped: "
                                                 r"mask without an image: 1 \(e.g. '.*b.png'\); image without a "
                                                 r"mask: 1 \(e.g. '.*a.png'\)\)"):
        build("folder", tmp_path, "train", "dataset.interleave=1")


def test_images_without_masks_stay_in_a_training_split_of_automatic_prompts(tmp_path):
    write_messy_folder(tmp_path)
    train = build("folder", tmp_path, "train", "dataset.interleave=2", "prompt_source=auto")
    assert "lonely.png" in [r.image.name for r in train.records] and "image without a mask" not in skipped(train)


# the paper's loaders

def test_camo_masks_of_the_other_split_are_not_skipped(tmp_path):
    write_binary_pairs(tmp_path / "Images" / "Train", tmp_path / "GT", ["c1", "c3"])
    write_binary_pairs(tmp_path / "Images" / "Test", tmp_path / "GT", ["c2"])
    write_mask(tmp_path / "GT" / "c9.png", MASK)
    test = build("camo", tmp_path, "test")
    assert test.inventory.used == 1 and test.inventory.elsewhere == 2
    assert skipped(test) == {"mask without an image": ["c9.png"]}


def test_cod10k_names_the_images_whose_mask_is_empty(tmp_path):
    stems = [f"COD10K-CAM-{i}" for i in range(7)]
    write_binary_pairs(tmp_path / "Test" / "Image", tmp_path / "Test" / "GT_Object", stems, empty=(stems[1],))
    train = build("cod10k", tmp_path, "train")
    assert skipped(train) == {"mask without an instance": ["COD10K-CAM-1.jpg"]}
    detail = train.inventory.skipped["mask without an instance"][0][1]
    assert detail == (f"mask '{tmp_path / 'Test' / 'GT_Object' / 'COD10K-CAM-1.png'}' has no instance: every pixel is "
                      "background (grey 127 or less)")


def test_voc_names_masks_without_an_image_and_counts_images_without_a_mask(tmp_path):
    base = write_voc(tmp_path)
    (base / "JPEGImages" / "2007_000003.jpg").unlink()
    for i in range(5):
        write_image(base / "JPEGImages" / f"2008_{i:06d}.jpg")  # VOC's images with no instance mask
    train = build("voc2012", tmp_path, "train")
    assert skipped(train) == {"mask without an image": ["2007_000003.png"]}
    assert train.inventory.notes == [f"5 images of '{base / 'JPEGImages'}' have no instance mask (VOC's design), "
                                     "not read"]


def test_kvasir_names_files_its_json_does_not_list_and_entries_without_a_file(tmp_path):
    entries = {}
    for i, stem in enumerate(["k1", "k2", "k3", "k4", "k5", "k6", "k7"]):
        write_image(tmp_path / "images" / f"{stem}.jpg", seed=i)
        write_mask(tmp_path / "masks" / f"{stem}.jpg", MASK)
        entries[stem] = {"height": 40, "width": 60, "bbox": [{"label": "polyp", "xmin": 10, "ymin": 5, "xmax": 39,
                                                               "ymax": 29}]}
    entries["k0"] = entries["k1"]  # listed, no file
    write_image(tmp_path / "images" / "extra.jpg")
    (tmp_path / "kavsir_bboxes.json").write_text(json.dumps({"k0": entries.pop("k0"), **entries}))
    train = build("kvasir", tmp_path, "train")
    assert skipped(train) == {"not in kavsir_bboxes.json": ["extra.jpg"], "listed without a file": ["k0.jpg"]}


def test_isic_names_files_its_csv_does_not_list(tmp_path):
    write_isic(tmp_path)
    write_image(tmp_path / "ISBI2016_ISIC_Part1_Test_Data" / "ISIC_9999999.jpg")
    test = build("isic2016", tmp_path, "test")
    assert skipped(test) == {"not in ISBI2016_ISIC_Part1_Test_GroundTruth.csv": ["ISIC_9999999.jpg"]}
    assert len(test.inventory.folders) == 2


def test_ocid_names_labels_without_an_image_and_images_without_a_label(tmp_path):
    write_ocid(tmp_path)
    sequence = tmp_path / "ARID20" / "table" / "top" / "seq01"
    write_mask(sequence / "label" / "orphan.png", MASK)
    (sequence / "rgb" / "result_2018-08-20-03.png").rename(sequence / "rgb" / "result_2018-08-20-09.png")
    (sequence / "rgb" / "thumbs.db").write_bytes(b"")
    train = build("ocid", tmp_path, "train")
    assert skipped(train) == {"format not read": ["thumbs.db"],
                              "mask without an image": ["orphan.png", "result_2018-08-20-03.png"],
                              "image without a mask": ["result_2018-08-20-09.png"],
                              "mask without an instance": ["result_2018-08-20-01.png"]}


def test_coco_names_folder_files_its_json_does_not_list(tmp_path):
    write_coco2017(tmp_path)
    write_image(tmp_path / "val2017" / "000000000099.jpg")
    (tmp_path / "val2017" / "readme.md").write_text("")
    train = build("coco2017", tmp_path, "train")
    assert skipped(train) == {"not in instances_val2017.json": ["000000000099.jpg"],
                              "format not read": ["readme.md"], "no usable annotation": ["000000000003.jpg"]}


def test_coco_per_split_jsons_count_the_other_splits_files(tmp_path):
    for i in (1, 2, 3):
        write_image(tmp_path / "images" / f"{i}.png", seed=i)
    write_coco_json(tmp_path / "train.json", [coco_image(1, "1.png"), coco_image(2, "2.png")],
                    [box_annotation(1, 5, 5, 20, 20), box_annotation(2, 5, 5, 20, 20)])
    write_coco_json(tmp_path / "val.json", [coco_image(3, "3.png")], [box_annotation(3, 5, 5, 20, 20)])
    val = build("coco", tmp_path, "val", "dataset.coco.train=train.json", "dataset.coco.val=val.json")
    assert val.inventory.skipped == {}
    assert val.inventory.notes == [f"2 files of '{tmp_path / 'images'}' are not in 'val.json' (other splits' images, "
                                   "or not used), not read here"]


# what the scripts print

def test_validate_prints_the_split_and_counts_images_without_an_instance(tmp_path, capsys):
    for i, stem in enumerate("abcd"):
        write_image(tmp_path / "images" / f"{stem}.png", seed=i)
        write_mask(tmp_path / "masks" / f"{stem}.png", MASK if stem != "d" else labels({}))
    (tmp_path / "images" / "notes.txt").write_text("")
    out = tmp_path / "result.json"
    with pytest.warns(SkippedImageWarning, match=r"mask '.*d.png' has no instance: every pixel is background"):
        run_main(lambda: validate.main(["--out", str(out), "dataset.name=folder", f"dataset.root={tmp_path}",
                                        "dataset.interleave=1", "model.type=vit_tiny", "model.checkpoint=",
                                        "accelerator=cpu"]))
    printed = capsys.readouterr().out
    assert (f"Dataset 'folder', test split: 9 files found in '{tmp_path / 'images'}', '{tmp_path / 'masks'}'; "
            "2 images used, 2 in the other splits; 1 skipped (format not read: 1).") in printed
    assert f"  skipped '{tmp_path / 'images' / 'notes.txt'}'" in printed
    result = json.loads(out.read_text())
    assert result["skipped_images"] == 1 and result["num_images"] == 1


def test_predict_names_what_it_does_not_read_of_a_folder(tmp_path, capsys):
    import predict

    write_image(tmp_path / "a.png")
    write_image(tmp_path / "old" / "b.png")
    (tmp_path / "notes.txt").write_text("")
    assert predict.image_files(tmp_path) == [tmp_path / "a.png"]
    assert capsys.readouterr().out.splitlines() == [
        f"1 image(s) of '{tmp_path}' are read; not read:",
        f"  skipped '{tmp_path / 'notes.txt'}': a format not read (read: .jpg, .jpeg, .png, .bmp, .tif, .tiff, .webp, "
        ".gif)",
        f"  skipped '{tmp_path / 'old'}': a sub-folder (1 file), not read"]
