"""Mask files read as their authors mean them (datasets/masks.py), or refused naming the file: binary
masks saved as JPEG or drawn with smoothed edges, inverted masks (255 as background), masks drawn in the
alpha channel alone, animated or stacked files; label maps of every kind (grey, palette, 16-bit, grey
saved as RGB, grey + alpha, 1-bit), one instance per value or per colour of a colour-coded mask, and
what cannot be read right (anti-aliased colours, 16-bit colour, float, a binary mask in colour)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from datasets.images import read_image
from datasets.instances import SampleError, SkippedImageWarning
from datasets.layout import DataWarning
from datasets.masks import label_instances, read_label_map
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


# --- label maps and colour-coded masks

def test_read_label_map_keeps_grey_palette_and_16_bit_values(tmp_path):
    grey = labels({7: (0, 0, 10, 10), 200: (20, 5, 30, 30)})
    write_mask(tmp_path / "grey.png", grey)
    np.testing.assert_array_equal(read_label_map(tmp_path / "grey.png"), grey)
    palette = labels({1: (0, 0, 10, 10), 2: (20, 5, 30, 30), 255: (10, 0, 12, 40)})
    write_mask(tmp_path / "palette.png", palette, palette=True)
    assert Image.open(tmp_path / "palette.png").mode == "P"
    np.testing.assert_array_equal(read_label_map(tmp_path / "palette.png"), palette)
    wide = labels({300: (0, 0, 10, 10), 65535: (20, 5, 30, 30)}, dtype=np.uint16)
    write_mask(tmp_path / "wide.png", wide)
    np.testing.assert_array_equal(read_label_map(tmp_path / "wide.png"), wide)


def test_label_instances_gives_one_instance_per_value_except_background():
    label_map = labels({3: (0, 0, 10, 10), 9: (20, 5, 30, 30), 255: (40, 0, 42, 40)})
    masks = label_instances(label_map)
    assert masks.shape == (3, 40, 60) and masks.dtype == bool
    for mask, value in zip(masks, (3, 9, 255)):
        np.testing.assert_array_equal(mask, label_map == value)
    assert len(label_instances(label_map, background=(0, 255))) == 2
    assert label_instances(np.zeros((4, 5), np.uint8)).shape == (0, 4, 5)


def colour_instances(height: int = 30, width: int = 40) -> tuple[np.ndarray, list[np.ndarray]]:
    """A colour-coded instance mask: red, green (as dark as grey 76) and a dark red on black."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rects = {(255, 0, 0): (2, 2, 15, 12), (0, 130, 0): (18, 2, 35, 12), (10, 0, 0): (5, 16, 30, 27)}
    masks = []
    for colour, (x1, y1, x2, y2) in rects.items():
        rgb[y1:y2, x1:x2] = colour
        mask = np.zeros((height, width), bool)
        mask[y1:y2, x1:x2] = True
        masks.append(mask)
    return rgb, masks


def test_colour_coded_masks_give_one_instance_per_colour(tmp_path):
    rgb, expected = colour_instances()
    (tmp_path / "masks").mkdir()
    for stem in ("a", "b"):
        write_image(tmp_path / "images" / f"{stem}.png", height=30, width=40)
        Image.fromarray(rgb).save(tmp_path / "masks" / f"{stem}.png")
    masks = build("folder", tmp_path, "val", "dataset.interleave=1").load(0)[1]
    assert len(masks) == 3  # red and green no longer merge, dark red no longer vanishes
    assert sorted(m.sum() for m in masks) == sorted(m.sum() for m in expected)
    for mask in expected:
        assert any(np.array_equal(mask, m) for m in masks)


def test_anti_aliased_colour_masks_are_refused_not_split(tmp_path):
    rgb, _ = colour_instances()
    smooth = cv2.GaussianBlur(rgb, (3, 3), 0)  # the blended edges a drawing tool's export leaves
    path = tmp_path / "smooth.png"
    Image.fromarray(smooth).save(path)
    with pytest.raises(SampleError, match=r"mask '.*smooth.png' is colour-coded .* no pixel whose 4 neighbours "
                                          r"share it: blended colours along edges from anti-aliasing or lossy"):
        read_label_map(path)
    jpeg = tmp_path / "lossy.jpg"
    Image.fromarray(rgb).save(jpeg, quality=80)
    with pytest.raises(SampleError, match="blended colours along edges"):
        read_label_map(jpeg)


def test_label_files_of_every_kind(tmp_path):
    """Grey saved as RGB, palette with a transparent index, grey + alpha, 1-bit, 16-bit colour, float."""
    labels = np.zeros((10, 12), np.uint8)
    labels[1:4, 1:5], labels[5:9, 6:11] = 3, 7
    Image.fromarray(np.repeat(labels[..., None], 3, axis=2)).save(tmp_path / "grey_as_rgb.png")
    np.testing.assert_array_equal(read_label_map(tmp_path / "grey_as_rgb.png"), labels)

    indices = np.where(labels == 0, 9, labels).astype(np.uint8)  # index 9, transparent, is the background
    palette = Image.fromarray(indices, "P")
    palette.putpalette(list(np.random.default_rng(0).integers(0, 256, 768)))
    palette.save(tmp_path / "palette.png", transparency=9)
    np.testing.assert_array_equal(read_label_map(tmp_path / "palette.png"), labels)

    alpha = np.where(labels > 0, 255, 0).astype(np.uint8)
    Image.fromarray(np.stack([np.where(labels > 0, labels, 200), alpha], axis=2).astype(np.uint8), "LA").save(
        tmp_path / "grey_alpha.png")
    np.testing.assert_array_equal(read_label_map(tmp_path / "grey_alpha.png"), labels)

    Image.fromarray(labels > 0).save(tmp_path / "one_bit.png")
    assert Image.open(tmp_path / "one_bit.png").mode == "1"
    np.testing.assert_array_equal(read_label_map(tmp_path / "one_bit.png"), np.where(labels > 0, 255, 0))

    cv2.imwrite(str(tmp_path / "wide_colour.png"), np.repeat(labels[..., None], 3, axis=2).astype(np.uint16) * 999)
    with pytest.raises(SampleError, match=r"mask '.*wide_colour.png' is 16-bit colour"):
        read_label_map(tmp_path / "wide_colour.png")
    Image.fromarray(labels.astype(np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(SampleError, match=r"mask '.*float.tif' is a float image"):
        read_label_map(tmp_path / "float.tif")


def test_binary_masks_in_colour_are_refused(tmp_path):
    rgb, _ = colour_instances()
    write_image(tmp_path / "Images/Test/a.jpg", height=30, width=40)
    (tmp_path / "GT").mkdir()
    Image.fromarray(rgb).save(tmp_path / "GT/a.png")  # red is grey 76: background by the > 127 threshold
    dataset = build("camo", tmp_path, "test")
    with pytest.warns(SkippedImageWarning, match=r"binary mask '.*a.png' is in colour \(e.g. RGB \(255, 0, 0\)"):
        assert dataset[0]["skipped"] == [0]
