"""The evaluation metric of the paper: IoU and F1 of each instance's thresholded mask, averaged
over the instances of an image, then over images."""

from __future__ import annotations

import torch


def instance_scores(pred: torch.Tensor, target: torch.Tensor, empty: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-instance IoU and F1 of boolean masks N x H x W (any trailing shape).

    An instance whose prediction and target are both empty scores `empty` (zero division = 1 in
    the authors' smp metric). Returns two float tensors of shape N.
    """
    pred, target = pred.flatten(1).bool(), target.flatten(1).bool()
    tp = (pred & target).sum(1).float()
    fp = (pred & ~target).sum(1).float()
    fn = (~pred & target).sum(1).float()
    both_empty = (tp + fp + fn) == 0
    iou = torch.where(both_empty, torch.full_like(tp, empty), tp / (tp + fp + fn).clamp(min=1))
    f1 = torch.where(both_empty, torch.full_like(tp, empty), 2 * tp / (2 * tp + fp + fn).clamp(min=1))
    return iou, f1


class SegmentationMeter:
    """Accumulates per-image mean instance IoU and F1, and the predicted / true mask area of each
    image (a diagnostic of masks that grow or shrink); `totals` can be summed across ranks."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        # sums of per-image mIoU, F1 and area ratio; images; instances
        self.totals = torch.zeros(5, dtype=torch.float64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one image: boolean masks N x H x W of its N >= 1 instances."""
        iou, f1 = instance_scores(pred, target)
        area_ratio = pred.sum() / target.sum().clamp(min=1)
        self.totals += torch.stack([iou.mean(), f1.mean(), area_ratio.to(iou), torch.tensor(1.0, device=iou.device),
                                    torch.tensor(float(len(iou)), device=iou.device)]).to(self.totals)

    @staticmethod
    def compute(totals: torch.Tensor) -> dict[str, float]:
        """{"miou", "f1", "area_ratio", "num_images", "num_instances"} from (possibly all-reduced) totals."""
        images = max(int(totals[3]), 1)
        return {"miou": float(totals[0]) / images, "f1": float(totals[1]) / images,
                "area_ratio": float(totals[2]) / images, "num_images": int(totals[3]), "num_instances": int(totals[4])}
