"""Geometry and augmentation of one image with its instances: the model's resize to the input size
(SAM: the longest side, then a pad to the square; SAM 2: straight to the square), weak view
(flips), strong view (photometric).

Every geometric step moves the image, the masks and the boxes together. For SAM, images and masks
are resized by segment_anything's own `ResizeLongestSide` (PIL bilinear, anti-aliased when
shrinking), so an image enters the network exactly as `SamPredictor.set_image` feeds it; masks go
through the same resize as 0 / 1 images, i.e. bilinear then rounded, as in the authors' loader. For
SAM 2, an image becomes floats in [0, 1] resized as SAM2ImagePredictor.set_image does (torchvision's
ToTensor and Resize, anti-aliased bilinear), without rounding back to 8 bits; masks are resized as
0 / 1 images with PIL bilinear, then rounded.
"""

from __future__ import annotations

import random

import albumentations as A
import numpy as np
from PIL import Image
from segment_anything.utils.transforms import ResizeLongestSide
from torchvision.transforms import Resize, ToTensor


def preprocess_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """Size after resizing the longest side to `size` (SAM's ResizeLongestSide)."""
    return ResizeLongestSide.get_preprocess_shape(height, width, size)


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """H x W x 3 uint8 -> h x w x 3 with longest side `size`, as SamPredictor.set_image resizes."""
    if max(image.shape[:2]) == size:  # ResizeLongestSide leaves such an image as it is
        return image
    return ResizeLongestSide(size).apply_image(image)


def resize_masks(masks: np.ndarray, size: int) -> np.ndarray:
    """N x H x W bool -> N x h x w bool: each mask resized as a 0 / 1 image (bilinear, rounded)."""
    height, width = masks.shape[1:]
    if max(height, width) == size:
        return masks
    if len(masks) == 0:
        return np.zeros((0, *preprocess_shape(height, width, size)), bool)
    resize = ResizeLongestSide(size)
    return np.stack([resize.apply_image(mask.astype(np.uint8)) for mask in masks]).astype(bool)


def resize_longest_side(image: np.ndarray, masks: np.ndarray, boxes: np.ndarray,
                        size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """H x W x 3 image, N x H x W masks, N x 4 XYXY boxes -> the same with longest side `size`."""
    height, width = image.shape[:2]
    if max(height, width) == size:
        return image, masks, boxes
    boxes = ResizeLongestSide(size).apply_boxes(boxes, (height, width)).astype(np.float32)
    return resize_image(image, size), resize_masks(masks, size), boxes


def resize_square_image(image: np.ndarray, size: int) -> np.ndarray:
    """H x W x 3 uint8 -> size x size x 3 float32 in [0, 1], as SAM2ImagePredictor.set_image
    (ToTensor, then Resize((size, size)): bilinear, anti-aliased, the aspect ratio not kept)."""
    return Resize((size, size))(ToTensor()(image)).permute(1, 2, 0).numpy()


def resize_square(image: np.ndarray, masks: np.ndarray, boxes: np.ndarray,
                  size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """H x W x 3 uint8 image, N x H x W masks, N x 4 XYXY boxes -> a size x size x 3 float image
    (resize_square_image), N x size x size masks (each a 0 / 1 image, PIL bilinear, rounded) and
    boxes with x scaled by size / W and y by size / H, as SAM 2's coordinates."""
    height, width = image.shape[:2]
    masks = np.stack([np.asarray(Image.fromarray(mask.astype(np.uint8)).resize((size, size), Image.BILINEAR))
                      for mask in masks]).astype(bool) if len(masks) else np.zeros((0, size, size), bool)
    boxes = (boxes * np.array([size / width, size / height] * 2)).astype(np.float32)
    return resize_square_image(image, size), masks, boxes


def to_unit(image: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 -> float32 in [0, 1]."""
    return image.astype(np.float32) / 255.0


def to_bytes(image: np.ndarray) -> np.ndarray:
    """H x W x 3 float in [0, 1] -> uint8, rounded."""
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


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
        self.weak = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)],
                              save_applied_params=True) if flip else None
        self.strong = A.Compose([
            A.Posterize(), A.Equalize(), A.Sharpen(), A.Solarize(), A.RandomBrightnessContrast(), A.RandomShadow(),
        ]) if strong else None

    def weak_view(self, image: np.ndarray, masks: np.ndarray, boxes: np.ndarray,
                  seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flip image H x W x 3, masks N x H x W (N >= 1) and boxes N x 4 together. Boxes are
        flipped here, exactly (x -> W - x), so that any box, even one of zero width, is kept."""
        if self.weak is None:
            return image, masks, boxes
        _seed(self.weak, seed)
        out = self.weak(image=image, masks=masks.astype(np.uint8))
        height, width = image.shape[:2]
        boxes = boxes.copy()
        for name, _ in out["applied_transforms"]:
            if name == "HorizontalFlip":
                boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
            elif name == "VerticalFlip":
                boxes[:, [1, 3]] = height - boxes[:, [3, 1]]
        return out["image"], np.asarray(out["masks"]).astype(bool).reshape(masks.shape), boxes

    def strong_view(self, image: np.ndarray, seed: int) -> np.ndarray:
        """The photometric view of an H x W x 3 image, uint8 or float in [0, 1] (SAM 2's samples: its
        8-bit rounding is augmented, the operations being 8-bit ones), of the same type."""
        if self.strong is None:
            return image
        _seed(self.strong, seed + 1)
        if image.dtype != np.uint8:
            return to_unit(self.strong(image=to_bytes(image))["image"])
        return self.strong(image=image)["image"]


def _seed(compose: A.Compose, seed: int) -> None:
    """Seed a Compose with one generator shared by its transforms. Compose.set_random_seed gives
    each transform its own generator with the same seed, so their p = 0.5 draws would all agree
    (both flips or none; all strong ops or none)."""
    compose.set_random_state(np.random.default_rng(seed), random.Random(seed))
