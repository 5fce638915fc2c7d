"""Anchor loss: keeps student and teacher close to the frozen, unadapted SAM."""

from __future__ import annotations

import torch

from losses.segmentation import dice_loss


def anchor_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, anchor_logits: torch.Tensor,
                smooth: float = 1.0) -> torch.Tensor:
    """0.5 dice(student, A) + 0.5 dice(teacher, A), A = anchor_logits > 0 (hard); all N x 1 x H x W."""
    target = (anchor_logits.detach() > 0).to(student_logits.dtype)
    return 0.5 * dice_loss(student_logits, target, smooth) + 0.5 * dice_loss(teacher_logits, target, smooth)
