"""Geometry and augmentation of one image with its instances: resize the longest side to SAM's
input size, weak view (flips), strong view (photometric), pad to a square.

Every geometric step moves the image, the masks and the boxes together.
"""

from __future__ import annotations

import random

import albumentations as A
import cv2
import numpy as np


def preprocess_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """Size after resizing the longest side to `size` (as SAM's ResizeLongestSide)."""
    scale = size / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_longest_side(image: np.ndarray, masks: np.ndarray, boxes: np.ndarray,
                        size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """H x W x 3 image, N x H x W masks, N x 4 XYXY boxes -> the same with longest side `size`."""
    height, width = image.shape[:2]
    new_h, new_w = preprocess_shape(height, width, size)
    if (new_h, new_w) == (height, width):
        return image, masks, boxes
    image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    masks = np.stack([cv2.resize(m.astype(np.uint8), (new_w, new_h), interpolation=cv2.INTER_NEAREST)
                      for m in masks]).astype(bool) if len(masks) else np.zeros((0, new_h, new_w), bool)
    scale = np.array([new_w / width, new_h / height] * 2, np.float32)
    return image, masks, boxes * scale


def pad_offsets(height: int, width: int, size: int, mode: str) -> tuple[int, int]:
    """(top, left) offset of an image of height x width inside the size x size canvas."""
    if mode == "bottom_right":
        return 0, 0
    if mode == "center":
        return (size - height) // 2, (size - width) // 2
    raise ValueError(f"Unknown padding mode '{mode}'; choose 'bottom_right' or 'center'.")


def pad_to_square(array: np.ndarray, top: int, left: int, size: int, first_axis: int) -> np.ndarray:
    """Zero-pad the spatial axes (first_axis, first_axis + 1) of an image (H x W x 3, first_axis 0)
    or masks (N x H x W, first_axis 1) to size x size, the content's top-left corner at (top, left)."""
    height, width = array.shape[first_axis:first_axis + 2]
    widths = [(0, 0)] * array.ndim
    widths[first_axis] = (top, size - height - top)
    widths[first_axis + 1] = (left, size - width - left)
    return np.pad(array, widths)


class Augment:
    """Weak (flips) and strong (photometric) views, seeded per sample for reproducible runs."""

    def __init__(self, flip: bool, strong: bool) -> None:
        self.weak = A.Compose(
            [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)],
            bbox_params=A.BboxParams(format="pascal_voc", label_fields=["ids"], clip=True, min_area=0, min_visibility=0),
        ) if flip else None
        self.strong = A.Compose([
            A.Posterize(), A.Equalize(), A.Sharpen(), A.Solarize(), A.RandomBrightnessContrast(), A.RandomShadow(),
        ]) if strong else None

    def weak_view(self, image: np.ndarray, masks: np.ndarray, boxes: np.ndarray,
                  seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.weak is None:
            return image, masks, boxes
        _seed(self.weak, seed)
        out = self.weak(image=image, masks=masks.astype(np.uint8), bboxes=boxes, ids=np.arange(len(boxes)))
        if len(out["ids"]) != len(boxes):
            raise RuntimeError("A flip dropped a box; boxes must lie inside the image.")
        return out["image"], np.asarray(out["masks"]).astype(bool).reshape(masks.shape), \
            np.asarray(out["bboxes"], np.float32).reshape(-1, 4)

    def strong_view(self, image: np.ndarray, seed: int) -> np.ndarray:
        if self.strong is None:
            return image
        _seed(self.strong, seed + 1)
        return self.strong(image=image)["image"]


def _seed(compose: A.Compose, seed: int) -> None:
    """Seed a Compose with one generator shared by its transforms. Compose.set_random_seed gives
    each transform its own generator with the same seed, so their p = 0.5 draws would all agree
    (both flips or none; all strong ops or none)."""
    compose.set_random_state(np.random.default_rng(seed), random.Random(seed))
