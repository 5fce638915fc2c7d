"""The embedded default's data: synthetic scenes of object instances, generated on the fly and
identical on every machine, with a target-domain shift applied to the pixels.

A scene: a smooth background and 2..max_objects ellipses, rotated rectangles and random polygons,
each of one colour (some striped), painted in order so that later objects occlude earlier ones.
Splits draw from disjoint seed streams, so train, val and test never share a scene.
"""

from __future__ import annotations

import cv2
import numpy as np

from datasets.instances import InstanceDataset

SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2}
SHIFTS = ("none", "low_contrast", "noise")
MIN_VISIBLE_FRACTION = 0.0006  # of the image area (about 40 px at 256 x 256): smaller remnants are dropped


def render_scene(rng: np.random.Generator, size: int, max_objects: int) -> tuple[np.ndarray, np.ndarray]:
    """A size x size x 3 uint8 RGB scene and its N x size x size bool instance masks (N >= 1)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base, tilt = rng.uniform(40, 215, 3), rng.uniform(-60, 60, (2, 3))
    image = base + xx[..., None] * tilt[0] + yy[..., None] * tilt[1] + rng.normal(0, 6, (size, size, 3))
    masks = []
    for _ in range(rng.integers(2, max_objects + 1)):
        shape = np.zeros((size, size), np.uint8)
        center = rng.uniform(0.15, 0.85, 2) * size
        radius = rng.uniform(0.06, 0.2) * size
        kind = rng.integers(3)
        if kind == 0:
            axes = (int(radius), int(radius * rng.uniform(0.4, 1.0)))
            cv2.ellipse(shape, tuple(int(c) for c in center), axes, rng.uniform(0, 180), 0, 360, 1, -1)
        elif kind == 1:
            rect = (tuple(center), (radius * 2, radius * rng.uniform(0.5, 1.5)), rng.uniform(0, 180))
            cv2.fillPoly(shape, [cv2.boxPoints(rect).astype(np.int32)], 1)
        else:
            angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(5, 9)))
            radii = radius * rng.uniform(0.5, 1.2, len(angles))
            vertices = center + np.stack([np.cos(angles), np.sin(angles)], 1) * radii[:, None]
            cv2.fillPoly(shape, [vertices.astype(np.int32)], 1)
        region = shape.astype(bool)
        colour = rng.uniform(0, 255, 3)
        if rng.random() < 0.3:
            stripes = (np.sin((xx + yy) * size / rng.uniform(3, 8)) > 0)[..., None]
            image[region] = np.where(stripes, colour, 255 - colour)[region]
        else:
            image[region] = colour
        for mask in masks:
            mask &= ~region
        masks.append(region)
    # the object painted last is never occluded, so at most a degenerate sliver leaves none visible
    masks = [m for m in masks if m.sum() >= MIN_VISIBLE_FRACTION * size * size] or [max(masks, key=np.sum)]
    return np.clip(image, 0, 255).astype(np.uint8), np.stack(masks)


def apply_shift(image: np.ndarray, shift: str, rng: np.random.Generator) -> np.ndarray:
    """The target domain: 'none', 'low_contrast' (30 % contrast) or 'noise' (Gaussian, std 0.38
    of the range, as imagecorruptions' gaussian_noise at severity 5)."""
    if shift == "none":
        return image
    x = image.astype(np.float32)
    if shift == "low_contrast":
        x = 128 + (x - 128) * 0.3
    elif shift == "noise":
        x = x + rng.normal(0, 0.38 * 255, x.shape)
    else:
        raise ValueError(f"Unknown synthetic shift '{shift}'; choose one of {', '.join(SHIFTS)}.")
    return np.clip(x, 0, 255).astype(np.uint8)


class SyntheticDataset(InstanceDataset):
    """Synthetic scenes of one split ("train", "val", "test") in the target domain `shift`."""

    def __init__(self, split: str, num_images: int, scene_size: int = 256, max_objects: int = 5,
                 shift: str = "low_contrast", scene_seed: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.stream = SPLIT_STREAMS[split]
        self.scene_size = scene_size
        self.max_objects = max_objects
        self.shift = shift
        self.scene_seed = scene_seed
        self.records = list(range(num_images))

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, None]:
        rng = np.random.default_rng([self.scene_seed, self.stream, index])
        image, masks = render_scene(rng, self.scene_size, self.max_objects)
        return apply_shift(image, self.shift, rng), masks, None
