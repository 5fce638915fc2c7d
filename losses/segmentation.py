"""Segmentation losses of one image's N instances: logits and targets N x 1 x H x W."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from utils.metrics import instance_scores


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.8, gamma: float = 2.0) -> torch.Tensor:
    """WeSAM's focal loss: mean over all pixels of alpha * (1 - exp(-BCE))^gamma * BCE.

    alpha scales the whole term; it is not the class-balancing alpha of torchvision's
    sigmoid_focal_loss.
    """
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (alpha * (1 - torch.exp(-bce)) ** gamma * bce).mean()


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0,
              per_instance: bool = False) -> torch.Tensor:
    """1 - (2 sum(p t) + s) / (sum p + sum t + s), p = sigmoid(logits): over all instances together
    (WeSAM's loss, in which large instances outweigh small ones), or per instance and then
    averaged (`per_instance`, SAM's own training, which weighs every instance alike as the mIoU does)."""
    probs = logits.sigmoid().flatten(1) if per_instance else logits.sigmoid().flatten()[None]
    targets = targets.flatten(1) if per_instance else targets.flatten()[None]
    dice = (2 * (probs * targets).sum(1) + smooth) / (probs.sum(1) + targets.sum(1) + smooth)
    return 1 - dice.mean()


def iou_head_loss(iou_pred: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """MSE between SAM's predicted IoU (N x 1) and the IoU of the mask (logits > 0) with the
    target, averaged over instances; the IoU target carries no gradient."""
    actual, _ = instance_scores(logits.detach() > 0, targets > 0.5)
    return F.mse_loss(iou_pred.flatten(), actual.to(iou_pred.dtype))
