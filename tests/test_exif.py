"""EXIF orientation tags, as phones write them (issue 25): the folder loader reads photos and masks as
displayed (dataset.exif=apply), COCO as stored (its convention), each said once when the split is built;
with the tag ignored, a mask of the displayed size is named as turned by 90 degrees, and so are COCO
images not of the json's size; predict.py writes masks on the stored pixels and says so; the cache of
automatic instances tells the two readings apart."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import predict
from datasets.instances import SkippedImageWarning
from datasets.layout import DataWarning
from tests.conftest import TINY
from tests.ondisk import box_annotation, build, coco_image, write_coco_json, write_mask


def tagged_photo(path: Path, displayed: np.ndarray, orientation: int = 6) -> None:
    """Save `displayed` (H x W x 3) as a phone does: stored pixels turned so that EXIF `orientation`
    (6: shown rotated 90 degrees clockwise) displays it."""
    stored = np.ascontiguousarray(np.rot90(displayed, k=1)) if orientation == 6 else displayed
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(stored).save(path, exif=exif)


def phone_folder(root: Path, height: int = 48, width: int = 72) -> tuple[np.ndarray, np.ndarray]:
    """A folder dataset (one pooled pair of folders, interleave 1) of one phone photo whose mask was
    drawn on the picture as displayed; returns the displayed picture and its mask."""
    mask = np.zeros((height, width), np.uint8)
    mask[5:20, 10:30] = 1
    displayed = np.repeat(np.where(mask > 0, 230, 20).astype(np.uint8)[..., None], 3, axis=2)  # the object shows
    for stem in ("a", "b"):
        tagged_photo(root / "images" / f"{stem}.jpg", displayed)
        write_mask(root / "masks" / f"{stem}.png", mask)
    return displayed, mask


def test_exif_phone_photos_are_read_as_displayed_by_the_folder_loader(tmp_path):
    displayed, mask = phone_folder(tmp_path)
    with pytest.warns(DataWarning, match=r"(?s)1 image file\(s\) of 1 .*rotated 90 degrees clockwise.*"
                                         r"folder loader's convention.*dataset.exif=ignore"):
        dataset = build("folder", tmp_path, "val", "dataset.interleave=1")
    image, masks, _ = dataset.load(0)
    assert image.shape == displayed.shape
    assert image[mask > 0].mean() > 200 and image[mask == 0].mean() < 50  # JPEG: close pixels, exact geometry
    np.testing.assert_array_equal(masks, mask[None].astype(bool))


def test_exif_ignored_says_so_when_the_sizes_disagree(tmp_path):
    phone_folder(tmp_path)
    with pytest.warns(DataWarning, match=r"as stored, the tag ignored \(dataset.exif=ignore\).*dataset.exif=apply"):
        dataset = build("folder", tmp_path, "val", "dataset.interleave=1", "dataset.exif=ignore")
    with pytest.warns(SkippedImageWarning, match=r"mask '.*png' is 72x48 but image '.*jpg' is 48x72 .*turned by "
                                                 r"90 degrees: an EXIF orientation tag.*dataset.exif"):
        assert dataset[0]["skipped"] == [0]


def test_exif_on_square_photos_is_still_named(tmp_path):
    """Square photos give no size mismatch: the warning when the dataset is built is what tells."""
    phone_folder(tmp_path, 40, 40)
    with pytest.warns(DataWarning, match=r"1 image file\(s\) of 1.*set dataset.exif=apply"):
        build("folder", tmp_path, "val", "dataset.interleave=1", "dataset.exif=ignore")


def test_exif_coco_follows_the_stored_pixels_and_says_so(tmp_path):
    displayed = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    tagged_photo(tmp_path / "images/a.png", displayed)
    write_coco_json(tmp_path / "annotations.json", [coco_image(1, "a.png", 40, 40)], [box_annotation(1, 2, 3, 20, 30)])
    with pytest.warns(DataWarning, match=r"coco loader's convention.*drawn on the stored pixels.*dataset.exif=apply"):
        dataset = build("coco", tmp_path, "val", "dataset.coco.val=annotations.json")
    np.testing.assert_array_equal(dataset.load(0)[0], np.rot90(displayed, k=1))
    with pytest.warns(DataWarning, match=r"\(dataset.exif=apply\)"):
        dataset = build("coco", tmp_path, "val", "dataset.coco.val=annotations.json", "dataset.exif=apply")
    np.testing.assert_array_equal(dataset.load(0)[0], displayed)


def test_exif_tag_on_a_mask_file_turns_it_too(tmp_path):
    """Masks saved with the photo's tag (stored like the photo) line up once both are displayed."""
    displayed = np.random.default_rng(1).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    mask = np.zeros((30, 50), np.uint8)
    mask[2:9, 20:45] = 255
    for stem in ("a", "b"):
        tagged_photo(tmp_path / "images" / f"{stem}.png", displayed)
        tagged_photo(tmp_path / "masks" / f"{stem}.png", np.repeat(mask[..., None], 3, axis=2))
    with pytest.warns(DataWarning, match=r"1 image file\(s\) of 1 .*; 1 mask file\(s\) of 1"):
        dataset = build("folder", tmp_path, "val", "dataset.interleave=1")
    image, masks, _ = dataset.load(0)
    np.testing.assert_array_equal(image, displayed)
    np.testing.assert_array_equal(masks, mask[None] > 0)


def test_coco_images_not_of_the_json_size_are_named_before_any_work(tmp_path):
    """Photos annotated as displayed, read as COCO's stored pixels: counted when the split is built."""
    for i in (1, 2):
        tagged_photo(tmp_path / f"images/{i}.png", np.zeros((40, 60, 3), np.uint8))  # displayed 60 wide
    write_coco_json(tmp_path / "test.json", [coco_image(i, f"{i}.png", 40, 60) for i in (1, 2)],
                    [box_annotation(i, 2, 3, 20, 30) for i in (1, 2)])
    with pytest.warns(DataWarning) as caught:
        dataset = build("coco", tmp_path, "test", "dataset.coco.test=test.json")
    sizes = [str(w.message) for w in caught if "not the size" in str(w.message)]
    assert len(sizes) == 1 and "2 of the 2 images of the test split" in sizes[0] and "is 40x60 as read" in sizes[0]
    assert "the json says 60x40: turned by 90 degrees" in sizes[0] and "tags now ignored" in sizes[0]
    with pytest.warns(DataWarning) as caught:
        build("coco", tmp_path, "test", "dataset.coco.test=test.json", "dataset.exif=apply")
    assert not any("not the size" in str(w.message) for w in caught)
    assert len(dataset) == 2


def test_predict_writes_masks_in_the_stored_orientation_and_says_so(tmp_path, capsys):
    displayed = np.random.default_rng(2).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    tagged_photo(tmp_path / "images/photo.png", displayed)
    predict.main(["--images", str(tmp_path / "images"), "--box", "2,2,20,40", "--out", str(tmp_path / "out"), *TINY])
    assert "aligned with the images' stored pixels (EXIF orientation tags are not applied" in capsys.readouterr().out
    assert np.array(Image.open(tmp_path / "out/photo.png")).shape == (50, 30)  # the stored 30-wide picture


def test_automatic_instances_of_a_turned_photo_are_not_those_of_the_stored_one(tmp_path):
    """The cache of automatic instances (keyed by image identity) tells the two readings apart."""
    phone_folder(tmp_path, 40, 40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shown, stored = (build("folder", tmp_path, "val", "dataset.interleave=1", f"dataset.exif={exif}")
                         for exif in ("apply", "ignore"))
    assert shown.image_identity(0) != stored.image_identity(0)
    assert stored.image_identity(0).endswith(str(stored.records[0].image.stat().st_mtime_ns))
