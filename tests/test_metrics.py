"""The paper's metric: per-instance IoU/F1, averaged over the instances of an image, then over images."""

from __future__ import annotations

import pytest
import torch

from utils.metrics import SegmentationMeter, instance_scores


def mask(*pixels: tuple[int, int], size: int = 4) -> torch.Tensor:
    """A size x size boolean mask with the given (row, col) pixels set."""
    m = torch.zeros(size, size, dtype=torch.bool)
    for r, c in pixels:
        m[r, c] = True
    return m


SQUARE = mask((0, 0), (0, 1), (1, 0), (1, 1))  # 4 pixels
HALF_SQUARE = mask((0, 0), (0, 1))  # 2 of SQUARE's pixels
FAR = mask((3, 3), (3, 2))  # disjoint from SQUARE
EMPTY = mask()


@pytest.mark.parametrize(
    ("pred", "target", "iou", "f1"),
    [
        (SQUARE, SQUARE, 1.0, 1.0),
        (SQUARE, FAR, 0.0, 0.0),
        (HALF_SQUARE, SQUARE, 0.5, 2 / 3),
        (SQUARE, HALF_SQUARE, 0.5, 2 / 3),  # over-segmentation is penalised like under-segmentation
        (EMPTY, EMPTY, 1.0, 1.0),  # zero division scores 1, as smp's zero_division=1.0
        (SQUARE, EMPTY, 0.0, 0.0),
        (EMPTY, SQUARE, 0.0, 0.0),
        # 3 shared, 1 false positive, 1 false negative: IoU 3/5, F1 6/8
        (mask((0, 0), (0, 1), (1, 0), (2, 2)), mask((0, 0), (0, 1), (1, 0), (1, 1)), 3 / 5, 6 / 8),
    ],
    ids=["identical", "disjoint", "half-inside", "half-outside", "both-empty", "pred-only", "target-only",
         "partial-overlap"],
)
def test_instance_scores_single(pred, target, iou, f1):
    got_iou, got_f1 = instance_scores(pred[None], target[None])
    assert got_iou.shape == (1,) and got_f1.shape == (1,)
    assert got_iou.dtype.is_floating_point and got_f1.dtype.is_floating_point
    assert got_iou.item() == pytest.approx(iou)
    assert got_f1.item() == pytest.approx(f1)


def test_instance_scores_scores_each_instance_separately():
    pred = torch.stack([SQUARE, HALF_SQUARE, EMPTY])
    target = torch.stack([SQUARE, SQUARE, EMPTY])
    iou, f1 = instance_scores(pred, target)
    assert iou.shape == (3,) and f1.shape == (3,)
    torch.testing.assert_close(iou, torch.tensor([1.0, 0.5, 1.0]))
    torch.testing.assert_close(f1, torch.tensor([1.0, 2 / 3, 1.0]))


def test_instance_scores_accepts_channel_dimension_and_non_bool_masks():
    pred = torch.stack([SQUARE, HALF_SQUARE])
    target = torch.stack([SQUARE, SQUARE])
    flat = instance_scores(pred, target)
    channel = instance_scores(pred[:, None].float(), target[:, None].long())
    for a, b in zip(flat, channel):
        torch.testing.assert_close(a, b)


def image_a() -> tuple[torch.Tensor, torch.Tensor]:
    """One instance, predicted perfectly: IoU 1, F1 1."""
    return SQUARE[None], SQUARE[None]


def image_b() -> tuple[torch.Tensor, torch.Tensor]:
    """Three instances with IoU 0, 0, 0.5 and F1 0, 0, 2/3."""
    pred = torch.stack([SQUARE, EMPTY, HALF_SQUARE])
    target = torch.stack([FAR, SQUARE, SQUARE])
    return pred, target


def test_image_b_instance_scores_are_as_documented():
    iou, f1 = instance_scores(*image_b())
    torch.testing.assert_close(iou, torch.tensor([0.0, 0.0, 0.5]))
    torch.testing.assert_close(f1, torch.tensor([0.0, 0.0, 2 / 3]))


def test_meter_averages_instances_per_image_then_images():
    meter = SegmentationMeter()
    meter.update(*image_a())
    meter.update(*image_b())
    result = meter.compute(meter.totals)

    per_image_miou = (1.0 + (0 + 0 + 0.5) / 3) / 2  # 7/12
    per_image_f1 = (1.0 + (0 + 0 + 2 / 3) / 3) / 2  # 11/18
    pooled_miou = (1.0 + 0 + 0 + 0.5) / 4  # what a per-instance mean would give instead
    assert result["miou"] == pytest.approx(per_image_miou)
    assert result["miou"] == pytest.approx(7 / 12)
    assert result["f1"] == pytest.approx(11 / 18)
    assert result["f1"] == pytest.approx(per_image_f1)
    assert result["miou"] != pytest.approx(pooled_miou)
    assert result["area_ratio"] == pytest.approx((1.0 + 0.6) / 2)  # per image, then over images
    assert result["num_images"] == 2
    assert result["num_instances"] == 4
    assert isinstance(result["num_images"], int) and isinstance(result["num_instances"], int)


def test_meter_totals_layout():
    meter = SegmentationMeter()
    meter.update(*image_b())
    assert meter.totals.dtype == torch.float64
    # predicted area 4 + 0 + 2 pixels against true area 2 + 4 + 4
    torch.testing.assert_close(meter.totals, torch.tensor([0.5 / 3, (2 / 3) / 3, 0.6, 1.0, 3.0], dtype=torch.float64))


def test_meter_without_images_reports_zeros():
    meter = SegmentationMeter()
    assert meter.compute(meter.totals) == {"miou": 0.0, "f1": 0.0, "area_ratio": 0.0, "num_images": 0,
                                           "num_instances": 0}


def test_summed_totals_of_two_meters_equal_one_meter_fed_everything():
    """Ranks all-reduce (sum) their totals; the result must not depend on how images were split."""
    rank0, rank1, single = SegmentationMeter(), SegmentationMeter(), SegmentationMeter()
    rank0.update(*image_a())
    rank1.update(*image_b())
    rank1.update(*image_a())
    for image in (image_a(), image_b(), image_a()):
        single.update(*image)

    combined = SegmentationMeter.compute(rank0.totals + rank1.totals)
    expected = single.compute(single.totals)
    assert combined.keys() == expected.keys() == {"miou", "f1", "area_ratio", "num_images", "num_instances"}
    for key in ("miou", "f1", "area_ratio"):
        assert combined[key] == pytest.approx(expected[key])
    assert combined["num_images"] == expected["num_images"] == 3
    assert combined["num_instances"] == expected["num_instances"] == 5
    assert combined["miou"] == pytest.approx((1.0 + 0.5 / 3 + 1.0) / 3)
