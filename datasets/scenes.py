"""Synthetic scenes of object instances: the source domain of the embedded default.

A scene is a textured or smooth background with 1..max_objects objects of varied shapes (ellipses,
rectangles, non-convex polygons, stars, crescents, rings, L and U shapes, bars), sizes, colours
and textures, painted in order so that later objects partly occlude earlier ones. Non-convex and
thin shapes keep the box prompt alone from being a good mask (see `box_prior_masks`).

The "camouflage" style paints every object with the background's own texture family and only a
slight tint, so that an object is told from its surroundings by a texture seam and a small colour
step instead of a clear colour edge.
"""

from __future__ import annotations

import cv2
import numpy as np

SHAPES = ("ellipse", "rectangle", "polygon", "star", "crescent", "ring", "ell", "bar")
STYLES = ("source", "camouflage")
MIN_VISIBLE_FRACTION = 0.004  # of the image area (65 px at 128 x 128): smaller remnants are dropped
MAX_OCCLUDED_FRACTION = 0.5  # a new object may hide at most this much of an earlier one
MIN_COLOUR_DISTANCE = 70.0  # between an object's colour and the background under it (source style)


def _polygon_mask(size: int, vertices: np.ndarray) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(vertices).astype(np.int32)], 1)
    return mask.astype(bool)


def _rotate(vertices: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return vertices @ np.array([[c, s], [-s, c]], np.float32)


def shape_mask(rng: np.random.Generator, kind: str, size: int, center: np.ndarray, radius: float) -> np.ndarray:
    """A size x size bool mask of one shape of `kind` (see SHAPES) around `center` (XY)."""
    angle = rng.uniform(0, np.pi)
    if kind == "ellipse":
        mask = np.zeros((size, size), np.uint8)
        axes = (int(radius), max(2, int(radius * rng.uniform(0.35, 1.0))))
        cv2.ellipse(mask, tuple(int(c) for c in center), axes, np.degrees(angle), 0, 360, 1, -1)
        return mask.astype(bool)
    if kind == "rectangle":
        half = np.array([1.0, rng.uniform(0.3, 1.0)]) * radius
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float32) * half
        return _polygon_mask(size, center + _rotate(corners, angle))
    if kind in ("polygon", "star"):
        count = rng.integers(5, 10) if kind == "polygon" else 2 * rng.integers(4, 7)
        angles = np.sort(rng.uniform(0, 2 * np.pi, count)) if kind == "polygon" else \
            np.linspace(0, 2 * np.pi, count, endpoint=False) + angle
        radii = radius * (rng.uniform(0.35, 1.1, count) if kind == "polygon" else
                          np.where(np.arange(count) % 2 == 0, 1.0, rng.uniform(0.35, 0.6)))
        return _polygon_mask(size, center + np.stack([np.cos(angles), np.sin(angles)], 1) * radii[:, None])
    if kind in ("crescent", "ring"):
        yy, xx = np.mgrid[0:size, 0:size]
        outer = (xx - center[0]) ** 2 + (yy - center[1]) ** 2 <= radius ** 2
        if kind == "ring":
            inner_radius = radius * rng.uniform(0.45, 0.65)
            return outer & ((xx - center[0]) ** 2 + (yy - center[1]) ** 2 > inner_radius ** 2)
        offset = center + radius * rng.uniform(0.4, 0.7) * np.array([np.cos(angle), np.sin(angle)])
        return outer & ((xx - offset[0]) ** 2 + (yy - offset[1]) ** 2 > (radius * rng.uniform(0.7, 0.9)) ** 2)
    if kind == "ell":  # an L or a U of bars of width w in a 2 x 2 square
        w = rng.uniform(0.35, 0.6)
        outline = [[-1, -1], [-1 + w, -1], [-1 + w, 1 - w], [1, 1 - w], [1, 1], [-1, 1]] if rng.random() < 0.5 else \
            [[-1, -1], [-1 + w, -1], [-1 + w, 1 - w], [1 - w, 1 - w], [1 - w, -1], [1, -1], [1, 1], [-1, 1]]
        return _polygon_mask(size, center + _rotate(np.array(outline, np.float32) * radius, angle))
    if kind == "bar":
        half = np.array([1.0, rng.uniform(0.12, 0.25)]) * radius
        half[1] = max(half[1], 2.5)
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float32) * half
        return _polygon_mask(size, center + _rotate(corners, angle))
    raise ValueError(f"Unknown shape '{kind}'; choose one of {', '.join(SHAPES)}.")


def _smooth_noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """size x size float32 noise with features about `scale` pixels wide, normalised to [-1, 1]."""
    cells = max(2, int(size / scale))
    noise = cv2.resize(rng.normal(0, 1, (cells, cells)).astype(np.float32), (size, size),
                       interpolation=cv2.INTER_CUBIC)
    return noise / max(float(np.abs(noise).max()), 1e-6)


def _texture(rng: np.random.Generator, size: int, colour: np.ndarray, amplitude: float) -> np.ndarray:
    """A size x size x 3 float32 texture around `colour`: stripes, checks, blobs or grain."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    kind = rng.integers(4)
    if kind == 0:
        angle, period = rng.uniform(0, np.pi), rng.uniform(4, 10)
        pattern = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    elif kind == 1:
        period = rng.uniform(4, 10)
        pattern = np.sign(np.sin(xx * np.pi / period) * np.sin(yy * np.pi / period))
    elif kind == 2:
        pattern = _smooth_noise(rng, size, rng.uniform(3, 8))
    else:
        pattern = np.clip(rng.normal(0, 0.6, (size, size)), -1, 1).astype(np.float32)
    tone = rng.uniform(-1, 1, 3) * 0.3 + 1  # texture light and dark tones differ in hue too
    return colour + amplitude * pattern[..., None] * tone


def _background(rng: np.random.Generator, size: int, style: str) -> tuple[np.ndarray, tuple]:
    """Background image (float32) and the recipe to texture objects like it (camouflage)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(40, 215, 3)
    if style == "camouflage":
        scale, amplitude = rng.uniform(3, 7), rng.uniform(35, 60)
        pattern = _smooth_noise(rng, size, scale)
        return base + amplitude * pattern[..., None] * np.array([1.0, 0.9, 0.8]), (base, scale, amplitude)
    tilt = rng.uniform(-50, 50, (2, 3))
    image = base + xx[..., None] * tilt[0] + yy[..., None] * tilt[1]
    if rng.random() < 0.5:
        image = image + _texture(rng, size, np.zeros(3), rng.uniform(5, 20))
    return image, (base, 0.0, 0.0)


def _object_paint(rng: np.random.Generator, size: int, style: str, under: np.ndarray, recipe: tuple) -> np.ndarray:
    """size x size x 3 float32 paint of one object whose background colour there is `under`."""
    if style == "camouflage":
        base, scale, amplitude = recipe
        tint = rng.uniform(-1, 1, 3)
        tint = tint / np.linalg.norm(tint) * rng.uniform(15, 30)
        pattern = _smooth_noise(rng, size, scale * rng.uniform(0.8, 1.25))
        return base + tint + amplitude * pattern[..., None] * np.array([1.0, 0.9, 0.8])
    for _ in range(20):
        colour = rng.uniform(0, 255, 3)
        if np.linalg.norm(colour - under) >= MIN_COLOUR_DISTANCE:
            break
    look = rng.random()
    if look < 0.5:
        return np.broadcast_to(colour, (size, size, 3)).astype(np.float32)
    if look < 0.75:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
        direction = rng.uniform(-1, 1, 2)
        shade = (xx * direction[0] + yy * direction[1])[..., None] * rng.uniform(20, 50)
        return colour + shade
    return _texture(rng, size, colour, rng.uniform(15, 35))


def render_scene(rng: np.random.Generator, size: int = 128, max_objects: int = 6,
                 style: str = "source") -> tuple[np.ndarray, np.ndarray]:
    """A size x size x 3 uint8 RGB scene and its N x size x size bool visible instance masks (N >= 1)."""
    if style not in STYLES:
        raise ValueError(f"Unknown scene style '{style}'; choose one of {', '.join(STYLES)}.")
    image, recipe = _background(rng, size, style)
    masks: list[np.ndarray] = []
    for _ in range(rng.integers(1, max_objects + 1)):
        for _attempt in range(10):
            radius = rng.uniform(0.1, 0.3) * size
            center = rng.uniform(0.15, 0.85, 2) * size
            region = shape_mask(rng, SHAPES[rng.integers(len(SHAPES))], size, center, radius)
            if region.sum() >= 4 * MIN_VISIBLE_FRACTION * size * size and all(
                    (m & ~region).sum() >= (1 - MAX_OCCLUDED_FRACTION) * m.sum() for m in masks):
                break
        else:
            if masks:  # no room for another object; the first one is always kept
                continue
        under = image[region].mean(axis=0)
        image[region] = _object_paint(rng, size, style, under, recipe)[region]
        for mask in masks:
            mask &= ~region
        masks.append(region)
    image = image + rng.normal(0, 4, image.shape)
    visible = [m for m in masks if m.sum() >= MIN_VISIBLE_FRACTION * size * size]
    if not visible:  # only slivers are left: keep the largest as the scene's instance
        visible = [max(masks, key=np.sum)]
    return np.clip(image, 0, 255).astype(np.uint8), np.stack(visible)


def box_prior_masks(boxes: np.ndarray, size: int) -> np.ndarray:
    """The trivial box-only segmentation: N x size x size bool ellipses inscribed in XYXY boxes
    (exclusive right and bottom edges)."""
    masks = np.zeros((len(boxes), size, size), np.uint8)
    scale = 16  # cv2's fixed-point drawing: 4 fractional bits, so half-pixel centres stay exact
    for mask, (x1, y1, x2, y2) in zip(masks, boxes):
        center = (int(round((x1 + x2 - 1) / 2 * scale)), int(round((y1 + y2 - 1) / 2 * scale)))
        axes = (int(round(max(x2 - x1 - 1, 0) / 2 * scale)), int(round(max(y2 - y1 - 1, 0) / 2 * scale)))
        cv2.ellipse(mask, center, axes, 0, 0, 360, 1, -1, cv2.LINE_8, 4)
    return masks.astype(bool)
