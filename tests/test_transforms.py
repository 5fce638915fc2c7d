"""Geometry and augmentation: resize, padding, weak (flip) and strong (photometric) views."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from segment_anything.utils.transforms import ResizeLongestSide

from datasets.prompts import boxes_from_masks
from datasets.transforms import (Augment, pad_to_square, preprocess_shape, resize_image, resize_longest_side,
                                 resize_masks)
from utils.padding import pad_offsets

# albumentations round-trips boxes through coordinates normalised by the image size, which costs a
# few float32 ulps; anything beyond that would be a real geometric error.
BOX_ATOL = 1e-4


def flip_image(image: np.ndarray, flip: str) -> np.ndarray:
    """Flip an H x W x 3 image."""
    return {"none": image, "horizontal": image[:, ::-1], "vertical": image[::-1], "both": image[::-1, ::-1]}[flip]


def flip_masks(masks: np.ndarray, flip: str) -> np.ndarray:
    """Flip N x H x W masks."""
    return {"none": masks, "horizontal": masks[:, :, ::-1], "vertical": masks[:, ::-1],
            "both": masks[:, ::-1, ::-1]}[flip]


def scene(height: int = 30, width: int = 44) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random image with three asymmetrically placed rectangles, so every flip is distinguishable."""
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    rects = [(2, 3, 10, 12), (15, 1, 40, 8), (20, 14, 33, 29)]
    masks = np.zeros((len(rects), height, width), bool)
    for mask, (x1, y1, x2, y2) in zip(masks, rects):
        mask[y1:y2, x1:x2] = True
    return image, masks, np.array(rects, np.float32)


# preprocess_shape and resize_longest_side

@pytest.mark.parametrize("height, width, size", [
    (480, 640, 1024), (640, 480, 1024), (1024, 1024, 1024), (333, 777, 1024), (1, 1000, 256),
    (1000, 3, 256), (50, 30, 64), (97, 13, 256), (1500, 2001, 1024), (256, 256, 1024), (17, 23, 256),
])
def test_preprocess_shape_matches_segment_anything(height, width, size):
    assert preprocess_shape(height, width, size) == ResizeLongestSide.get_preprocess_shape(height, width, size)


def test_resize_longest_side_scales_image_masks_and_boxes_together():
    image, masks, boxes = scene(60, 90)
    new_image, new_masks, new_boxes = resize_longest_side(image, masks, boxes, 128)
    assert new_image.shape == (85, 128, 3) and new_image.dtype == np.uint8
    assert new_masks.shape == (3, 85, 128) and new_masks.dtype == bool
    scale = np.array([128 / 90, 85 / 60] * 2, np.float32)
    np.testing.assert_allclose(new_boxes, boxes * scale, rtol=1e-6)
    np.testing.assert_allclose(boxes_from_masks(new_masks), new_boxes, atol=2)


def test_resize_longest_side_downscales_consistently():
    image, masks, boxes = scene(60, 90)
    _, new_masks, new_boxes = resize_longest_side(image, masks, boxes, 45)
    assert new_masks.shape == (3, 30, 45)
    np.testing.assert_allclose(new_boxes, boxes / 2)
    np.testing.assert_allclose(boxes_from_masks(new_masks), new_boxes, atol=1)


def test_resize_longest_side_at_the_right_size_is_identity():
    image, masks, boxes = scene(30, 44)
    out = resize_longest_side(image, masks, boxes, 44)
    assert out[0] is image and out[1] is masks and out[2] is boxes


@pytest.mark.parametrize("height, width, size", [(60, 90, 128), (97, 61, 45), (33, 200, 64), (130, 129, 128)])
def test_resize_is_segment_anythings_own_image_resize(height, width, size):
    # Up and down, odd sizes: the pixels SamPredictor.set_image would feed, to the grey level.
    image = np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_image(image, size), ResizeLongestSide(size).apply_image(image))


def test_downscaling_anti_aliases_unlike_cv2_inter_linear():
    # A one-pixel checkerboard shrunk 2.56x: an anti-aliased resize averages it to mid-grey, an
    # interpolation from the two nearest pixels keeps near full-contrast pixels.
    board = (np.indices((256, 256)).sum(0) % 2 * 255).astype(np.uint8)
    small = resize_image(np.repeat(board[..., None], 3, axis=2), 100)
    assert np.abs(small.astype(int) - 128).max() <= 2
    assert np.abs(cv2.resize(board, (100, 100), interpolation=cv2.INTER_LINEAR).astype(int) - 128).max() > 100


def test_masks_are_resized_bilinear_then_rounded():
    # A 0/1 mask through SAM's bilinear resize: a pixel is kept where the interpolated value >= 0.5.
    masks = np.zeros((2, 50, 80), bool)
    masks[0, 10:33, 5:41] = True
    masks[1, 40:41, 60:61] = True  # one pixel: its interpolated value falls below 0.5 at a 2.5x shrink
    resized = resize_masks(masks, 32)
    expected = np.stack([ResizeLongestSide(32).apply_image(m.astype(np.uint8)) for m in masks]).astype(bool)
    np.testing.assert_array_equal(resized, expected)
    assert resized.shape == (2, 20, 32) and resized[0].any() and not resized[1].any()


def test_resize_longest_side_without_instances():
    image, _, _ = scene(60, 90)
    new_image, new_masks, new_boxes = resize_longest_side(image, np.zeros((0, 60, 90), bool),
                                                          np.zeros((0, 4), np.float32), 128)
    assert new_image.shape == (85, 128, 3)
    assert new_masks.shape == (0, 85, 128) and new_masks.dtype == bool
    assert new_boxes.shape == (0, 4)


# padding

@pytest.mark.parametrize("height, width, size, expected", [
    (64, 40, 64, (0, 12)), (41, 64, 64, (11, 0)), (64, 64, 64, (0, 0)), (10, 7, 64, (27, 28)),
])
def test_pad_offsets(height, width, size, expected):
    assert pad_offsets(height, width, size, "bottom_right") == (0, 0)
    assert pad_offsets(height, width, size, "center") == expected


def test_pad_offsets_unknown_mode_raises():
    with pytest.raises(ValueError, match="Unknown padding mode 'top_left'"):
        pad_offsets(10, 20, 32, "top_left")


@pytest.mark.parametrize("top, left", [(0, 0), (3, 7), (0, 14)])
def test_pad_to_square_image_places_content_at_offset(top, left):
    image = np.random.default_rng(0).integers(1, 256, (30, 30, 3), dtype=np.uint8)  # nonzero: padding is told apart
    padded = pad_to_square(image, top, left, 44, first_axis=0)
    assert padded.shape == (44, 44, 3) and padded.dtype == np.uint8
    np.testing.assert_array_equal(padded[top:top + 30, left:left + 30], image)
    outside = np.ones((44, 44), bool)
    outside[top:top + 30, left:left + 30] = False
    assert (padded[outside] == 0).all()


@pytest.mark.parametrize("top, left", [(0, 0), (7, 0), (14, 0)])
def test_pad_to_square_masks_places_content_at_offset(top, left):
    _, masks, _ = scene(30, 44)
    padded = pad_to_square(masks, top, left, 44, first_axis=1)
    assert padded.shape == (3, 44, 44) and padded.dtype == bool
    np.testing.assert_array_equal(padded[:, top:top + 30, left:left + 44], masks)
    assert padded.sum() == masks.sum()
    shifted = boxes_from_masks(masks) + np.array([left, top, left, top], np.float32)
    np.testing.assert_array_equal(boxes_from_masks(padded), shifted)


# Augment

def which_flip(original: np.ndarray, flipped: np.ndarray) -> str:
    matches = [name for name in ("none", "horizontal", "vertical", "both")
               if np.array_equal(flip_image(original, name), flipped)]
    assert len(matches) == 1, "the weak view is not exactly one flip of the image"
    return matches[0]


def test_weak_view_boxes_masks_and_image_flip_together():
    image, masks, boxes = scene()
    augment = Augment(flip=True, strong=False)
    seen = set()
    for seed in range(24):
        out_image, out_masks, out_boxes = augment.weak_view(image, masks, boxes, seed)
        assert out_image.shape == image.shape and out_image.dtype == np.uint8
        assert out_masks.shape == masks.shape and out_masks.dtype == bool
        assert out_boxes.shape == (3, 4) and out_boxes.dtype == np.float32
        flip = which_flip(image, out_image)
        np.testing.assert_array_equal(out_masks, flip_masks(masks, flip))
        np.testing.assert_allclose(out_boxes, boxes_from_masks(out_masks), rtol=0, atol=BOX_ATOL)
        seen.add(flip)
    # Each flip is an independent coin, so all four combinations must occur.
    assert seen == {"none", "horizontal", "vertical", "both"}


def test_weak_view_box_arithmetic_of_a_horizontal_flip():
    image, masks, boxes = scene()
    augment = Augment(flip=True, strong=False)
    for seed in range(24):
        out_image, _, out_boxes = augment.weak_view(image, masks, boxes, seed)
        if which_flip(image, out_image) == "horizontal":
            expected = np.stack([44 - boxes[:, 2], boxes[:, 1], 44 - boxes[:, 0], boxes[:, 3]], axis=1)
            np.testing.assert_allclose(out_boxes, expected, rtol=0, atol=BOX_ATOL)
            return
    pytest.fail("no horizontal-only flip in 24 seeds")


def test_weak_view_flips_boxes_exactly_even_degenerate_ones():
    image, masks, boxes = scene()
    boxes = np.concatenate([boxes, [[10.0, 7.0, 10.0, 19.0]]]).astype(np.float32)  # zero width
    masks = np.concatenate([masks, np.zeros((1, *masks.shape[1:]), bool)])
    augment = Augment(flip=True, strong=False)
    for seed in range(8):
        out_image, _, out_boxes = augment.weak_view(image, masks, boxes, seed)
        flip = which_flip(image, out_image)
        expected = boxes.copy()
        if flip in ("horizontal", "both"):
            expected[:, [0, 2]] = 44 - boxes[:, [2, 0]]
        if flip in ("vertical", "both"):
            expected[:, [1, 3]] = image.shape[0] - boxes[:, [3, 1]]
        np.testing.assert_array_equal(out_boxes, expected)


def test_weak_view_is_deterministic_per_seed():
    image, masks, boxes = scene()
    augment = Augment(flip=True, strong=False)
    for seed in (0, 5, 2 ** 32 - 1):
        first = augment.weak_view(image, masks, boxes, seed)
        again = Augment(flip=True, strong=False).weak_view(image, masks, boxes, seed)
        for a, b in zip(first, again):
            np.testing.assert_array_equal(a, b)


def test_strong_view_keeps_shape_dtype_and_is_deterministic():
    image, _, _ = scene()
    original = image.copy()
    augment = Augment(flip=False, strong=True)
    outputs = [augment.strong_view(image, seed) for seed in range(8)]
    for seed, out in enumerate(outputs):
        assert out.shape == image.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out, Augment(flip=False, strong=True).strong_view(image, seed))
    np.testing.assert_array_equal(image, original)  # the weak view must stay usable
    assert any(not np.array_equal(out, image) for out in outputs)
    assert any(not np.array_equal(outputs[0], out) for out in outputs[1:])


def test_disabled_views_are_identity():
    image, masks, boxes = scene()
    augment = Augment(flip=False, strong=False)
    out_image, out_masks, out_boxes = augment.weak_view(image, masks, boxes, 3)
    assert out_image is image and out_masks is masks and out_boxes is boxes
    assert augment.strong_view(image, 3) is image
