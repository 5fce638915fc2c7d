"""Prompts from weak labels: tight boxes, points, coarse polygons and the make_prompts dispatch."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from datasets.prompts import (MASK_PROMPT_LOGIT, authors_coarse_boxes, boxes_from_masks, coarse_polygon, coarse_prompts,
                              make_prompts,
                              sample_points)


def rect_masks(shape: tuple[int, int], rects: list[tuple[int, int, int, int]]) -> np.ndarray:
    """N x H x W bool masks, one filled XYXY rectangle (exclusive right/bottom) each."""
    masks = np.zeros((len(rects), *shape), bool)
    for mask, (x1, y1, x2, y2) in zip(masks, rects):
        mask[y1:y2, x1:x2] = True
    return masks


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


# boxes_from_masks

def test_boxes_from_masks_rectangles_are_exact_with_exclusive_edges():
    rects = [(10, 5, 30, 25), (0, 0, 1, 1), (39, 20, 40, 30), (0, 29, 40, 30)]
    boxes = boxes_from_masks(rect_masks((30, 40), rects))
    assert boxes.dtype == np.float32
    assert boxes.shape == (4, 4)
    np.testing.assert_array_equal(boxes, np.array(rects, np.float32))


def test_boxes_from_masks_covers_every_part_of_a_non_convex_mask():
    mask = np.zeros((1, 20, 20), bool)
    mask[0, 2:4, 3:6] = True
    mask[0, 10:15, 12:18] = True
    np.testing.assert_array_equal(boxes_from_masks(mask), [[3, 2, 18, 15]])


def test_boxes_from_masks_maps_a_horizontal_flip_to_width_minus_x2():
    # The exclusive right edge is what makes a flip exact: x1' = W - x2.
    masks = rect_masks((30, 40), [(3, 4, 12, 20)])
    flipped = boxes_from_masks(masks[:, :, ::-1])
    np.testing.assert_array_equal(flipped, [[40 - 12, 4, 40 - 3, 20]])


def test_boxes_from_masks_of_no_masks_is_empty():
    assert boxes_from_masks(np.zeros((0, 8, 8), bool)).shape == (0, 4)


# sample_points

@pytest.mark.parametrize("valid", [(0, 0, 30, 40), (5, 8, 30, 40)])
def test_sample_points_positives_inside_negatives_outside_and_in_valid(valid):
    top, left, height, width = valid
    masks = rect_masks((48, 48), [(left + 2, top + 3, left + 12, top + 10), (left + 20, top + 15, left + 38, top + 29)])
    points, labels = sample_points(masks, valid, 5, np.random.default_rng(0))

    assert points.shape == (2, 10, 2) and points.dtype == np.float32
    assert labels.shape == (2, 10) and labels.dtype == np.int64
    np.testing.assert_array_equal(labels, [[1] * 5 + [0] * 5] * 2)
    np.testing.assert_array_equal(points, np.round(points))  # pixel coordinates

    inside = np.zeros((48, 48), bool)
    inside[top:top + height, left:left + width] = True
    for mask, pts in zip(masks, points.astype(int)):
        xs, ys = pts[:, 0], pts[:, 1]
        assert mask[ys[:5], xs[:5]].all()
        assert not mask[ys[5:], xs[5:]].any()
        assert inside[ys[5:], xs[5:]].all(), "a negative point fell in the padding"


def test_sample_points_negatives_never_in_padding_over_many_draws():
    # Padding covers 3/4 of the frame, so a sampler ignoring `valid` would fail almost surely.
    masks = rect_masks((64, 64), [(4, 4, 10, 10)])
    points, _ = sample_points(masks, (0, 0, 32, 32), 200, np.random.default_rng(1))
    negatives = points[0, 200:]
    assert (negatives >= 0).all() and (negatives < 32).all()


def test_sample_points_count_follows_num_points():
    masks = rect_masks((20, 20), [(1, 1, 5, 5), (8, 8, 15, 15), (0, 10, 4, 20)])
    points, labels = sample_points(masks, (0, 0, 20, 20), 3, np.random.default_rng(0))
    assert points.shape == (3, 6, 2)
    np.testing.assert_array_equal(labels, [[1, 1, 1, 0, 0, 0]] * 3)


def test_sample_points_mask_covering_the_image_has_no_negative_points():
    # Nothing outside the instance inside the image: the negatives are SAM's "not a point" (-1),
    # never points on the instance labelled background.
    masks = np.zeros((1, 16, 16), bool)
    masks[0, :10, :12] = True
    points, labels = sample_points(masks, (0, 0, 10, 12), 4, np.random.default_rng(0))
    xs, ys = points[0, :4, 0].astype(int), points[0, :4, 1].astype(int)
    assert masks[0, ys, xs].all()
    np.testing.assert_array_equal(labels[0], [1, 1, 1, 1, -1, -1, -1, -1])


def test_sample_points_canvas_negatives_reach_the_padding_as_the_authors():
    masks = np.zeros((1, 16, 16), bool)
    masks[0, :10, :12] = True
    points, labels = sample_points(masks, (0, 0, 10, 12), 50, np.random.default_rng(0), negatives="canvas")
    np.testing.assert_array_equal(labels[0], [1] * 50 + [0] * 50)
    xs, ys = points[0, 50:, 0].astype(int), points[0, 50:, 1].astype(int)
    assert not masks[0, ys, xs].any()
    assert ((xs >= 12) | (ys >= 10)).all()  # outside the image: every outside pixel is padding here


def test_sample_points_empty_mask_has_no_positive_points():
    masks = np.zeros((1, 16, 16), bool)
    points, labels = sample_points(masks, (0, 0, 16, 16), 3, np.random.default_rng(0))
    np.testing.assert_array_equal(labels[0], [-1, -1, -1, 0, 0, 0])


def test_sample_points_rejects_unknown_negative_region():
    with pytest.raises(ValueError, match="canvas"):
        sample_points(np.zeros((1, 4, 4), bool), (0, 0, 4, 4), 1, np.random.default_rng(0), negatives="padding")


def test_sample_points_same_seed_same_points_other_seed_other_points():
    masks = rect_masks((40, 40), [(2, 2, 20, 20), (22, 5, 38, 35)])
    first, _ = sample_points(masks, (0, 0, 40, 40), 5, np.random.default_rng(7))
    again, _ = sample_points(masks, (0, 0, 40, 40), 5, np.random.default_rng(7))
    other, _ = sample_points(masks, (0, 0, 40, 40), 5, np.random.default_rng(8))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


# coarse_polygon

def test_coarse_polygon_of_a_square_is_its_four_corners():
    mask = rect_masks((40, 50), [(10, 5, 30, 25)])[0]
    polygon = coarse_polygon(mask)
    assert polygon.dtype == np.int32 and polygon.shape == (4, 2)
    # Contours run through pixel centres, so the corners are the inclusive last pixels.
    assert sorted(map(tuple, polygon.tolist())) == [(10, 5), (10, 24), (29, 5), (29, 24)]


def test_coarse_polygon_of_a_rotated_rectangle_has_four_vertices():
    mask = np.zeros((100, 100), np.uint8)
    corners = cv2.boxPoints(((50, 50), (60, 30), 30)).astype(np.int32)
    cv2.fillPoly(mask, [corners], 1)
    polygon = coarse_polygon(mask.astype(bool))
    assert len(polygon) == 4
    filled = cv2.fillPoly(np.zeros_like(mask), [polygon], 1).astype(bool)
    assert iou(filled, mask.astype(bool)) > 0.9


def test_coarse_polygon_of_a_disc_is_inscribed_and_coarse():
    mask = np.zeros((100, 100), np.uint8)
    cv2.circle(mask, (50, 50), 30, 1, -1)
    polygon = coarse_polygon(mask.astype(bool))
    # epsilon = 5 % of the perimeter keeps only a handful of vertices, all on the contour.
    assert 3 <= len(polygon) <= 8
    np.testing.assert_allclose(np.linalg.norm(polygon - 50, axis=1), 30, atol=1.5)
    filled = cv2.fillPoly(np.zeros_like(mask), [polygon], 1).astype(bool)
    disc = mask.astype(bool)
    assert (filled & disc).sum() / filled.sum() > 0.97
    assert iou(filled, disc) > 0.6


@pytest.mark.parametrize("rect", [None, (4, 3, 5, 4), (4, 3, 20, 4), (7, 2, 8, 30)])
def test_coarse_polygon_of_a_degenerate_mask_is_none(rect):
    mask = np.zeros((40, 50), bool) if rect is None else rect_masks((40, 50), [rect])[0]
    assert coarse_polygon(mask) is None


def test_coarse_polygon_uses_the_largest_blob():
    mask = rect_masks((40, 50), [(2, 2, 6, 6)])[0] | rect_masks((40, 50), [(20, 10, 45, 35)])[0]
    polygon = coarse_polygon(mask)
    assert sorted(map(tuple, polygon.tolist())) == [(20, 10), (20, 34), (44, 10), (44, 34)]


# coarse_prompts

def test_coarse_prompts_as_box_of_rectangles_is_the_tight_box():
    rects = [(10, 5, 30, 25), (2, 30, 45, 38)]
    boxes = coarse_prompts(rect_masks((40, 50), rects), as_mask=False, mask_input_size=10)
    assert boxes.shape == (2, 4) and boxes.dtype == np.float32
    np.testing.assert_array_equal(boxes, np.array(rects, np.float32))


def test_coarse_prompts_as_box_of_an_ellipse_is_close_to_the_tight_box():
    mask = np.zeros((100, 100), np.uint8)
    cv2.ellipse(mask, (50, 45), (30, 15), 20, 0, 360, 1, -1)
    masks = mask.astype(bool)[None]
    coarse = coarse_prompts(masks, as_mask=False, mask_input_size=25)[0]
    tight = boxes_from_masks(masks)[0]
    # A coarse polygon cuts corners, so its box lies inside the tight box and near it.
    assert (coarse[:2] >= tight[:2]).all() and (coarse[2:] <= tight[2:]).all()
    np.testing.assert_allclose(coarse, tight, atol=8)


def test_coarse_prompts_as_box_of_a_degenerate_mask_falls_back_to_the_tight_box():
    masks = rect_masks((40, 50), [(4, 3, 20, 4), (10, 5, 30, 25)])
    boxes = coarse_prompts(masks, as_mask=False, mask_input_size=10)
    np.testing.assert_array_equal(boxes, [[4, 3, 20, 4], [10, 5, 30, 25]])


def test_coarse_prompts_as_mask_is_the_rectangle_downsampled():
    masks = rect_masks((64, 64), [(16, 8, 48, 40), (0, 48, 32, 64)])
    logits = coarse_prompts(masks, as_mask=True, mask_input_size=16)
    assert logits.shape == (2, 1, 16, 16) and logits.dtype == np.float32
    assert set(np.unique(logits)) == {-MASK_PROMPT_LOGIT, MASK_PROMPT_LOGIT}
    expected = rect_masks((16, 16), [(4, 2, 12, 10), (0, 12, 8, 16)])
    np.testing.assert_array_equal(logits[:, 0] > 0, expected)


def test_coarse_prompts_as_mask_of_a_blob_lies_within_the_resized_mask():
    mask = np.zeros((128, 128), np.uint8)
    cv2.ellipse(mask, (60, 70), (40, 22), 35, 0, 360, 1, -1)
    logits = coarse_prompts(mask.astype(bool)[None], as_mask=True, mask_input_size=32)
    small = cv2.resize(mask.astype(np.float32), (32, 32), interpolation=cv2.INTER_AREA) >= 0.5
    positive = logits[0, 0] > 0
    assert (positive & small).sum() / positive.sum() > 0.9  # an inscribed polygon stays inside the blob
    assert iou(positive, small) > 0.6


def test_coarse_prompts_as_mask_of_a_degenerate_mask_falls_back_to_the_mask():
    masks = rect_masks((20, 20), [(3, 5, 17, 6)])
    logits = coarse_prompts(masks, as_mask=True, mask_input_size=20)
    np.testing.assert_array_equal(logits[0, 0], np.where(masks[0], MASK_PROMPT_LOGIT, -MASK_PROMPT_LOGIT))


# make_prompts

@pytest.fixture
def instances():
    masks = rect_masks((64, 64), [(4, 4, 20, 30), (30, 10, 60, 40), (8, 40, 50, 60)])
    return masks, boxes_from_masks(masks)


def test_make_prompts_box_returns_the_given_boxes(instances):
    masks, boxes = instances
    prompts = make_prompts("box", masks, boxes.astype(np.float64), (0, 0, 64, 64), np.random.default_rng(0))
    assert set(prompts) == {"boxes"}
    assert prompts["boxes"].dtype == torch.float32
    np.testing.assert_array_equal(prompts["boxes"].numpy(), boxes)


def test_make_prompts_point_returns_points_and_labels(instances):
    masks, boxes = instances
    prompts = make_prompts("point", masks, boxes, (0, 0, 64, 64), np.random.default_rng(0), num_points=4)
    assert set(prompts) == {"points", "point_labels"}
    assert prompts["points"].shape == (3, 8, 2) and prompts["points"].dtype == torch.float32
    assert prompts["point_labels"].shape == (3, 8) and prompts["point_labels"].dtype == torch.int64
    assert prompts["point_labels"][:, :4].eq(1).all() and prompts["point_labels"][:, 4:].eq(0).all()
    xy = prompts["points"].long().numpy()
    for mask, pts in zip(masks, xy):
        assert mask[pts[:4, 1], pts[:4, 0]].all()


def test_make_prompts_coarse_as_box_returns_boxes(instances):
    masks, boxes = instances
    prompts = make_prompts("coarse", masks, boxes, (0, 0, 64, 64), np.random.default_rng(0), coarse_as="box")
    assert set(prompts) == {"boxes"}
    assert prompts["boxes"].shape == (3, 4)
    np.testing.assert_array_equal(prompts["boxes"].numpy(), boxes)  # rectangles: the polygon box is tight


def test_make_prompts_coarse_as_mask_returns_mask_inputs(instances):
    masks, boxes = instances
    prompts = make_prompts("coarse", masks, boxes, (0, 0, 64, 64), np.random.default_rng(0), coarse_as="mask",
                           mask_input_size=16)
    assert set(prompts) == {"mask_inputs"}
    logits = prompts["mask_inputs"]
    assert logits.shape == (3, 1, 16, 16) and logits.dtype == torch.float32
    assert set(logits.unique().tolist()) == {-MASK_PROMPT_LOGIT, MASK_PROMPT_LOGIT}
    assert logits[0, 0, 2, 2] == MASK_PROMPT_LOGIT and logits[0, 0, 12, 12] == -MASK_PROMPT_LOGIT


def test_make_prompts_unknown_type_raises(instances):
    masks, boxes = instances
    with pytest.raises(ValueError, match="Unknown prompt type 'scribble'"):
        make_prompts("scribble", masks, boxes, (0, 0, 64, 64), np.random.default_rng(0))


def test_authors_coarse_box_is_the_first_contours_vertex_extent():
    masks = rect_masks((40, 50), [(5, 6, 25, 30)])  # a rectangle: its polygon's vertices are its corner pixels
    np.testing.assert_array_equal(authors_coarse_boxes(masks), [[5, 6, 24, 29]])  # inclusive, unlike boundingRect
    line = rect_masks((40, 50), [(10, 3, 11, 20)])  # a one-pixel-wide line: a degenerate polygon
    np.testing.assert_array_equal(authors_coarse_boxes(line), boxes_from_masks(line))


def test_authors_coarse_box_is_made_at_native_size_and_moves_with_the_image():
    from tests.test_instances import RectDataset

    dataset = RectDataset(height=128, width=80, prompt="coarse", coarse_polygon="authors", train=True)
    sample = dataset[(1, 4)]
    image, masks, _ = dataset.load(1)
    _, _, flipped = dataset.augment.weak_view(image, masks, authors_coarse_boxes(masks), 4)
    np.testing.assert_allclose(sample["prompts"]["boxes"].numpy(), flipped * 0.5, rtol=1e-6)
