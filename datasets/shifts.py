"""Target domains of the synthetic scenes: how a source scene turns into a target image.

    none          the source domain itself
    camouflage    objects painted with the background's texture and a slight tint (a scene style,
                  see datasets/scenes.py)
    medical       an endoscopy-like appearance: one reddish hue, soft focus, uneven lighting,
                  specular highlights; objects keep only their brightness differences
    <corruption>  one of imagecorruptions' types at severity 5, as COCO-C: its 15, or the package's 4
                  further ones (datasets/corruptions.py)
"""

from __future__ import annotations

import cv2
import numpy as np

from datasets.corruptions import ALL_CORRUPTIONS, corrupt

SHIFTS = ("none", "camouflage", "medical", *ALL_CORRUPTIONS)


def scene_style(shift: str) -> str:
    """The scene style (datasets/scenes.py) that a shift renders with."""
    if shift not in SHIFTS:
        raise ValueError(f"Unknown synthetic shift '{shift}'; choose one of {', '.join(SHIFTS)}.")
    return "camouflage" if shift == "camouflage" else "source"


def medical_look(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """H x W x 3 uint8 -> the same scene with an endoscopy-like appearance (uint8)."""
    size = image.shape[0]
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    grey = cv2.GaussianBlur(grey, (0, 0), 1.5)
    tissue = np.array([0.95, 0.45, 0.4]) + rng.uniform(-0.05, 0.05, 3)
    x = (0.35 + 0.65 * grey[..., None]) * tissue * 255
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    centre = rng.uniform(-0.2, 0.2, 2)
    vignette = 1 - 1.3 * ((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2)
    x = x * np.clip(vignette, 0.25, 1)[..., None]
    highlights = np.zeros((size, size), np.float32)
    for _ in range(rng.integers(3, 8)):
        centre = tuple(int(c) for c in rng.integers(0, size, 2))
        axes = (int(rng.integers(1, 4)), int(rng.integers(1, 3)))
        cv2.ellipse(highlights, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    x = x + 255 * cv2.GaussianBlur(highlights, (0, 0), 0.8)[..., None]
    return np.clip(x, 0, 255).astype(np.uint8)


def apply_shift(image: np.ndarray, shift: str, rng: np.random.Generator) -> np.ndarray:
    """Pixels of a rendered scene (H x W x 3 uint8) in the target domain `shift` (uint8)."""
    scene_style(shift)
    if shift in ("none", "camouflage"):
        return image
    if shift == "medical":
        return medical_look(image, rng)
    return corrupt(image, shift, severity=5, seed=int(rng.integers(2**31)))
