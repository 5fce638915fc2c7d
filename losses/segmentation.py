"""Segmentation losses of one image's N instances: logits and targets N x 1 x H x W."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from utils.metrics import instance_scores


def pixel_bce(logits: torch.Tensor, targets: torch.Tensor, source: str = "logits") -> torch.Tensor:
    """Per-pixel binary cross-entropy. source "logits": exact, from the logits; "probabilities": as
    the authors' code, from sigmoid(logits) clamped to [0, 1], where torch caps each log at -100, so
    a confidently wrong pixel costs at most 100 and passes no gradient (in float32: a logit above
    about 16.6 where the target is 0, below about -103 where it is 1)."""
    if source == "logits":
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if source == "probabilities":
        return F.binary_cross_entropy(logits.float().sigmoid().clamp(0, 1), targets.float(), reduction="none")
    raise ValueError(f"Unknown BCE source '{source}'; choose 'logits' or 'probabilities'.")


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.8, gamma: float = 2.0,
               on: str = "pixel", bce: str = "logits") -> torch.Tensor:
    """WeSAM's focal loss: alpha * (1 - exp(-BCE))^gamma * BCE, of each pixel's BCE and then
    averaged (`on` "pixel", the authors' later code), or of the BCE averaged over all pixels
    (`on` "mean", their first release). `bce`: see pixel_bce.

    alpha scales the whole term; it is not the class-balancing alpha of torchvision's
    sigmoid_focal_loss.
    """
    loss = pixel_bce(logits, targets, bce)
    if on == "mean":
        loss = loss.mean()
    elif on != "pixel":
        raise ValueError(f"Unknown focal reduction '{on}'; choose 'pixel' or 'mean'.")
    return (alpha * (1 - torch.exp(-loss)) ** gamma * loss).mean()


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0,
              per_instance: bool = False) -> torch.Tensor:
    """1 - (2 sum(p t) + s) / (sum p + sum t + s), p = sigmoid(logits): over all instances together
    (WeSAM's loss, in which large instances outweigh small ones), or per instance and then
    averaged (`per_instance`, SAM's own training, which weighs every instance alike as the mIoU does)."""
    probs = logits.sigmoid().flatten(1) if per_instance else logits.sigmoid().flatten()[None]
    targets = targets.flatten(1) if per_instance else targets.flatten()[None]
    dice = (2 * (probs * targets).sum(1) + smooth) / (probs.sum(1) + targets.sum(1) + smooth)
    return 1 - dice.mean()


def iou_head_loss(iou_pred: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, threshold: float = 0.0,
                  empty: float = 1.0) -> torch.Tensor:
    """MSE between SAM's predicted IoU (N x 1) and the IoU of the mask (logits > threshold) with
    the target, averaged over instances; the IoU target carries no gradient and is `empty` where
    mask and target are both empty (the authors' code: threshold 0.5, empty 0)."""
    actual, _ = instance_scores(logits.detach() > threshold, targets > 0.5, empty)
    return F.mse_loss(iou_pred.flatten(), actual.to(iou_pred.dtype))
