"""Prompts from weak labels: tight boxes, 5 + 5 points, coarse polygons (as box or mask input).

All coordinates are pixels of the padded input frame; boxes are XYXY with exclusive right and
bottom edges (x2 = x + width), so that a flip maps x1 to W - x2 exactly.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

# Magnitude of the logits that encode a rasterised polygon for SAM's mask input: large enough that
# the sigmoid is saturated (SAM's own mask inputs are previous low-res logits).
MASK_PROMPT_LOGIT = 10.0
PROMPT_TYPES = ("box", "point", "coarse")
POINT_NEGATIVES = ("image", "canvas")  # where negative points are drawn: the image only, or the padded canvas too


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """N x H x W bool -> N x 4 float32 XYXY tight boxes (cv2.boundingRect of each mask)."""
    boxes = np.zeros((len(masks), 4), np.float32)
    for i, mask in enumerate(masks):
        x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
        boxes[i] = (x, y, x + w, y + h)
    return boxes


def sample_points(masks: np.ndarray, valid: tuple[int, int, int, int], num_points: int,
                  rng: np.random.Generator, negatives: str = "image") -> tuple[np.ndarray, np.ndarray]:
    """num_points positive points inside each mask and num_points negative ones outside it.

    Both are drawn uniformly with replacement. Negatives come from the image region `valid`
    (top, left, height, width) with negatives="image", or from the whole padded canvas, padding
    included, with negatives="canvas" (the authors' code). Where a region has no pixel (an
    instance that covers all of it, or a mask lost in the resize), its points get label -1, SAM's
    "not a point", which the prompt encoder ignores as a location.
    Returns points N x 2K x 2 float32 (XY) and labels N x 2K int64 (1 positive, 0 negative, -1 none).
    """
    if negatives not in POINT_NEGATIVES:
        raise ValueError(f"negatives must be one of {', '.join(POINT_NEGATIVES)}, got '{negatives}'")
    allowed = np.ones(masks.shape[1:], bool)
    if negatives == "image":
        top, left, height, width = valid
        allowed[:] = False
        allowed[top:top + height, left:left + width] = True
    points = np.zeros((len(masks), 2 * num_points, 2), np.float32)
    labels = np.tile(np.repeat(np.array([1, 0], np.int64), num_points), (len(masks), 1))
    for i, mask in enumerate(masks):
        for j, region in enumerate((mask, allowed & ~mask)):
            ys, xs = np.nonzero(region)
            slots = slice(j * num_points, (j + 1) * num_points)
            if len(xs) == 0:
                labels[i, slots] = -1
                continue
            pick = rng.integers(0, len(xs), num_points)
            points[i, slots] = np.stack([xs[pick], ys[pick]], axis=1)
    return points, labels


def simplify(contour: np.ndarray) -> np.ndarray:
    """An OpenCV contour simplified with cv2.approxPolyDP at epsilon = max(0.05 x perimeter, 3 px)
    (WeSAM's coarse polygon) -> V x 2 int32 XY vertices."""
    epsilon = max(0.05 * cv2.arcLength(contour, True), 3.0)
    return cv2.approxPolyDP(contour, epsilon, True)[:, 0, :]


def coarse_polygon(mask: np.ndarray) -> np.ndarray | None:
    """Coarse polygon of a mask: its largest outer contour, simplified. Returns V x 2 int32 XY
    vertices, or None when the polygon has fewer than 3 vertices."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    polygon = simplify(max(contours, key=cv2.contourArea))
    return polygon if len(polygon) >= 3 else None


def authors_coarse_boxes(masks: np.ndarray) -> np.ndarray:
    """The coarse box of the authors' loader for each mask N x H x W, at the image's native size:
    the vertex min / max (inclusive) of the first contour (cv2.RETR_TREE, CHAIN_APPROX_SIMPLE)
    simplified as in coarse_polygon; the tight box where that polygon is a point or a line.
    Returns N x 4 float32 XYXY."""
    boxes = boxes_from_masks(masks)
    for i, mask in enumerate(masks):
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
        if not contours:
            continue
        polygon = simplify(contours[0])
        (x1, y1), (x2, y2) = polygon.min(0), polygon.max(0)
        if x1 != x2 and y1 != y2:
            boxes[i] = (x1, y1, x2, y2)
    return boxes


def coarse_prompts(masks: np.ndarray, as_mask: bool, mask_input_size: int) -> np.ndarray:
    """Coarse polygon of each mask, as a box around its vertices (N x 4) or as SAM mask-input
    logits (N x 1 x m x m, the padded frame resized to m). A degenerate polygon falls back to the
    tight box or to the mask itself."""
    results = []
    for mask in masks:
        polygon = coarse_polygon(mask)
        if as_mask:
            shape = mask.astype(np.uint8)
            if polygon is not None:
                shape = cv2.fillPoly(np.zeros_like(shape), [polygon], 1)
            small = cv2.resize(shape.astype(np.float32), (mask_input_size, mask_input_size),
                               interpolation=cv2.INTER_AREA)
            results.append(np.where(small >= 0.5, MASK_PROMPT_LOGIT, -MASK_PROMPT_LOGIT)[None].astype(np.float32))
        elif polygon is None:
            results.append(boxes_from_masks(mask[None])[0])
        else:
            x, y, w, h = cv2.boundingRect(polygon)
            results.append(np.array([x, y, x + w, y + h], np.float32))
    return np.stack(results)


def make_prompts(prompt: str, masks: np.ndarray, boxes: np.ndarray, valid: tuple[int, int, int, int],
                 rng: np.random.Generator, num_points: int = 5, coarse_as: str = "box",
                 mask_input_size: int = 256, point_negatives: str = "image") -> dict[str, torch.Tensor]:
    """Prompts of one image's N instances from their masks (N x S x S bool) and boxes (N x 4).

    Returns the keys the model reads: boxes (box, coarse as box), points + point_labels (point)
    or mask_inputs (coarse as mask).
    """
    if prompt == "box":
        return {"boxes": torch.from_numpy(boxes.astype(np.float32))}
    if prompt == "point":
        points, labels = sample_points(masks, valid, num_points, rng, point_negatives)
        return {"points": torch.from_numpy(points), "point_labels": torch.from_numpy(labels)}
    if prompt == "coarse":
        coarse = torch.from_numpy(coarse_prompts(masks, coarse_as == "mask", mask_input_size))
        return {"mask_inputs": coarse} if coarse_as == "mask" else {"boxes": coarse}
    raise ValueError(f"Unknown prompt type '{prompt}'; choose one of {', '.join(PROMPT_TYPES)}.")
