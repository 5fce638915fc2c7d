"""Mask files read as their authors mean them, or refused naming the file: binary masks saved as
JPEG or drawn with smoothed edges, inverted masks (255 as background), masks drawn in the alpha
channel alone, and animated or stacked files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from datasets.images import read_image
from datasets.instances import SampleError, SkippedImageWarning
from datasets.layout import DataWarning
from datasets.masks import read_label_map
from tests.ondisk import HEIGHT, WIDTH, build, labels, write_image, write_mask

OBJECT = (5, 5, 40, 30)  # XYXY, exclusive ends


def object_mask(value: int = 255) -> np.ndarray:
    """H x W uint8: `value` on the object rectangle, 0 elsewhere."""
    return labels({value: OBJECT})


def folder_with_mask(root: Path, save) -> None:
    """A folder dataset of one image, its mask written by save(path_without_suffix)."""
    write_image(root / "images" / "a.png")
    (root / "masks").mkdir(parents=True, exist_ok=True)
    save(root / "masks" / "a")


def folder_masks(root: Path) -> np.ndarray:
    """The instances (N x H x W) of the folder dataset's one image."""
    return build("folder", root, "train", "dataset.interleave=1").load(0)[1]


def camo_with_mask(root: Path, save) -> None:
    """A CAMO dataset (binary masks) of one test image, its mask written by save(path_without_suffix)."""
    write_image(root / "Images" / "Test" / "a.jpg")
    (root / "GT").mkdir(parents=True, exist_ok=True)
    save(root / "GT" / "a")


def camo_masks(root: Path) -> np.ndarray:
    return build("camo", root, "test").load(0)[1]


# binary masks saved as JPEG, or with smoothed edges

@pytest.mark.parametrize("quality", [50, 75, 95])
def test_a_binary_mask_saved_as_jpeg_is_one_instance(tmp_path, quality):
    path = tmp_path / "mask.jpg"
    Image.fromarray(object_mask()).save(path, quality=quality)
    assert len(np.unique(np.array(Image.open(path)))) > 2  # the compression noise that made one value per level
    folder_with_mask(tmp_path, lambda stem: Image.fromarray(object_mask()).save(f"{stem}.jpg", quality=quality))
    masks = folder_masks(tmp_path)
    assert masks.shape == (1, HEIGHT, WIDTH)
    np.testing.assert_array_equal(masks[0], object_mask() > 0)


def test_a_binary_mask_in_colour_jpeg_is_one_instance(tmp_path):
    rgb = np.repeat(object_mask()[..., None], 3, axis=2)
    folder_with_mask(tmp_path, lambda stem: Image.fromarray(rgb).save(f"{stem}.jpg", quality=75))
    np.testing.assert_array_equal(folder_masks(tmp_path), (object_mask() > 0)[None])


def test_an_anti_aliased_binary_png_is_one_instance(tmp_path):
    smooth = cv2.GaussianBlur(object_mask(), (5, 5), 0)  # a drawing tool's soft edge: 0 and 255 inside, blends between
    assert len(np.unique(smooth)) > 10
    folder_with_mask(tmp_path, lambda stem: Image.fromarray(smooth).save(f"{stem}.png"))
    masks = folder_masks(tmp_path)
    assert masks.shape == (1, HEIGHT, WIDTH)
    np.testing.assert_array_equal(masks[0], smooth > 127)


def test_a_jpeg_label_map_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "labels.jpg"
    Image.fromarray(labels({50: (5, 5, 20, 15), 100: (30, 10, 55, 35)})).save(path, quality=75)
    with pytest.raises(SampleError, match=r"mask '.*labels.jpg' is a JPEG label map of \d+ grey values: JPEG "
                                          r"compression changes label values .* Save label maps as PNG"):
        read_label_map(path)


def test_a_grey_label_map_keeps_its_values(tmp_path):
    """Solid regions of other values than 0 and 255 are labels, thin ones included: no threshold."""
    label_map = labels({50: (5, 5, 20, 15), 255: (30, 10, 55, 35), 7: (0, 39, 60, 40)})  # a one-pixel line
    path = tmp_path / "labels.png"
    Image.fromarray(label_map).save(path)
    np.testing.assert_array_equal(read_label_map(path), label_map)


# inverted masks: 255 as background

def test_an_inverted_label_map_is_read_inverted_with_a_warning(tmp_path):
    folder_with_mask(tmp_path, lambda stem: write_mask(Path(f"{stem}.png"), 255 - object_mask()))
    with pytest.warns(DataWarning, match=r"mask '.*a.png' looks inverted: its value 255 covers the whole border of "
                                         r"the image \(64% of it\) .* read inverted"):
        masks = folder_masks(tmp_path)
    np.testing.assert_array_equal(masks, (object_mask() > 0)[None])


def test_an_inverted_binary_mask_is_read_inverted_with_a_warning(tmp_path):
    camo_with_mask(tmp_path, lambda stem: write_mask(Path(f"{stem}.png"), 255 - object_mask()))
    with pytest.warns(DataWarning, match=r"mask '.*a.png' looks inverted: its foreground \(grey > 127\) covers"):
        masks = camo_masks(tmp_path)
    np.testing.assert_array_equal(masks, (object_mask() > 0)[None])


def test_an_inverted_jpeg_binary_mask_is_read_inverted(tmp_path):
    folder_with_mask(tmp_path, lambda stem: Image.fromarray(255 - object_mask()).save(f"{stem}.jpg", quality=75))
    with pytest.warns(DataWarning, match="looks inverted"):
        np.testing.assert_array_equal(folder_masks(tmp_path), (object_mask() > 0)[None])


@pytest.mark.parametrize("rects", [
    {255: (0, 0, 60, 40)},  # the object is the whole image: no background to speak of
    {255: (0, 0, 60, 30)},  # a large object touching three borders
    {255: (0, 0, 30, 40), 1: (30, 0, 60, 40)},  # two labels: a label map, not a binary mask
], ids=["whole image", "three borders", "two labels"])
def test_masks_that_only_look_large_are_not_inverted(tmp_path, rects, recwarn):
    folder_with_mask(tmp_path, lambda stem: write_mask(Path(f"{stem}.png"), labels(rects)))
    masks = folder_masks(tmp_path)
    assert len(masks) == len(rects)
    assert not [w for w in recwarn if issubclass(w.category, DataWarning)]


def test_robotic_label_maps_are_never_inverted(tmp_path, recwarn):
    """OSD's floor (label 1) covers the border by design: its background is (0, 1), not 0 alone."""
    for i in range(2):
        write_image(tmp_path / "image_color" / f"learn{i}.png", seed=i)
        write_mask(tmp_path / "annotation" / f"learn{i}.png", labels({1: (0, 0, 60, 40), 0: (10, 10, 20, 20),
                                                                     5: (30, 10, 40, 20)}))
    masks = build("osd", tmp_path, "train", "dataset.interleave=1").load(0)[1]
    np.testing.assert_array_equal(masks, labels({1: (30, 10, 40, 20)}).astype(bool)[None])
    assert not [w for w in recwarn if issubclass(w.category, DataWarning)]


# masks drawn in the alpha channel

def alpha_drawn(colour: int) -> np.ndarray:
    """H x W x 4: every pixel of one colour, the object drawn opaque on a transparent background."""
    rgba = np.full((HEIGHT, WIDTH, 4), colour, np.uint8)
    rgba[..., 3] = cv2.GaussianBlur(object_mask(), (3, 3), 0)  # a soft brush: partly transparent edges
    return rgba


@pytest.mark.parametrize("colour", [0, 255], ids=["black", "white"])
def test_a_mask_drawn_in_alpha_alone_is_its_alpha(tmp_path, colour):
    rgba = alpha_drawn(colour)
    folder_with_mask(tmp_path, lambda stem: Image.fromarray(rgba, "RGBA").save(f"{stem}.png"))
    np.testing.assert_array_equal(folder_masks(tmp_path), (rgba[..., 3] > 127)[None])


@pytest.mark.parametrize("colour", [0, 255], ids=["black", "white"])
def test_a_binary_mask_drawn_in_alpha_alone_is_its_alpha(tmp_path, colour):
    rgba = alpha_drawn(colour)
    camo_with_mask(tmp_path, lambda stem: Image.fromarray(rgba, "RGBA").save(f"{stem}.png"))
    np.testing.assert_array_equal(camo_masks(tmp_path), (rgba[..., 3] > 127)[None])


def test_transparent_pixels_of_a_binary_mask_are_background(tmp_path):
    """White where transparent (left) and where opaque (the object): only the opaque white counts."""
    rgba = np.zeros((HEIGHT, WIDTH, 4), np.uint8)
    rgba[..., :3] = np.where(object_mask()[..., None] > 0, 255, 60)
    rgba[:, :3, :3] = 255  # white, but transparent
    rgba[..., 3] = np.where(object_mask() > 0, 255, 200)
    rgba[:, :3, 3] = 0
    camo_with_mask(tmp_path, lambda stem: Image.fromarray(rgba, "RGBA").save(f"{stem}.png"))
    np.testing.assert_array_equal(camo_masks(tmp_path), (object_mask() > 0)[None])


def test_a_fully_transparent_mask_is_an_image_without_instance(tmp_path):
    """No instance is a skip with its reason, counted in evaluation too."""
    rgba = np.zeros((HEIGHT, WIDTH, 4), np.uint8)
    folder_with_mask(tmp_path / "test", lambda stem: Image.fromarray(rgba, "RGBA").save(f"{stem}.png"))
    dataset = build("folder", tmp_path, "test")  # per-split folders: test/images, test/masks
    with pytest.warns(SkippedImageWarning, match=r"mask '.*a.png' has no instance: every pixel is background"):
        assert dataset[0]["skipped"] == [0]


# animated or stacked files

def save_frames(path: Path, count: int, **options) -> None:
    frames = [Image.fromarray(np.full((HEIGHT, WIDTH, 3), 40 * i, np.uint8)) for i in range(count)]
    frames[0].save(path, save_all=True, append_images=frames[1:], **options)


@pytest.mark.parametrize("suffix", [".gif", ".png", ".webp", ".tif"])
def test_an_animated_image_is_refused_naming_the_file(tmp_path, suffix):
    path = tmp_path / f"moving{suffix}"
    save_frames(path, 3)
    with pytest.raises(SampleError, match=rf"image '.*moving{suffix}' has 3 frames \(an animation or a stack\): "
                                          "which of them the mask belongs to is unknown"):
        read_image(path)


def test_an_animated_mask_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "moving.gif"
    save_frames(path, 2)
    with pytest.raises(SampleError, match=r"mask '.*moving.gif' has 2 frames"):
        read_label_map(path)


def test_a_single_frame_gif_is_read(tmp_path):
    path = tmp_path / "still.gif"
    save_frames(path, 1)
    assert read_image(path).shape == (HEIGHT, WIDTH, 3)


def test_an_animated_image_of_a_dataset_is_skipped_by_name(tmp_path):
    write_image(tmp_path / "images" / "a.png")
    save_frames(tmp_path / "images" / "b.gif", 2)
    for stem in ("a", "b"):
        write_mask(tmp_path / "masks" / f"{stem}.png", object_mask())
    dataset = build("folder", tmp_path, "val", "dataset.interleave=1")
    assert [r.image.name for r in dataset.records] == ["b.gif"]  # listed, not left out
    with pytest.warns(SkippedImageWarning, match=r"image '.*b.gif' has 2 frames"):
        assert dataset[0]["skipped"] == [0]
