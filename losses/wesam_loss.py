"""The WeSAM objective: weighted self-training, anchor and contrastive terms, each reported."""

from __future__ import annotations

from typing import Mapping

import torch

from losses.anchor import anchor_loss
from losses.contrastive import instance_contrastive_loss
from losses.segmentation import dice_loss, focal_loss, iou_head_loss
from models.wesam import Outputs, upscale_logits

TERMS = ("focal", "dice", "iou", "anchor", "contrastive")


def wesam_loss(outputs: Mapping[str, Outputs], weights: Mapping[str, float], teacher_mode: str,
               image_size: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and its unweighted terms, averaged over the images of the batch.

    Per image, with logits upscaled to the S x S input canvas:
      focal, dice, iou: student vs the teacher's hard mask (teacher logits > 0, no gradient);
      anchor: dice of student and teacher to the anchor's hard mask (0.5 each);
      contrastive: teacher vs anchor instance prototypes.
    In ema mode the teacher has no gradient, so the anchor and contrastive terms use the student.
    `weights` holds focal, dice, iou, anchor, contrastive, focal_alpha, focal_gamma, dice_smooth,
    temperature (the config's loss section).
    """
    student, teacher, anchor = outputs["student"], outputs["teacher"], outputs["anchor"]
    regularised = teacher if teacher_mode == "shared" else student
    sums = {name: torch.zeros((), device=student["embeddings"].device) for name in TERMS}
    images = 0
    for i, student_low in enumerate(student["logits"]):
        if len(student_low) == 0:
            continue
        images += 1
        student_logits = upscale_logits(student_low, image_size)
        teacher_logits = upscale_logits(teacher["logits"][i], image_size)
        anchor_logits = upscale_logits(anchor["logits"][i], image_size)
        pseudo = (teacher_logits.detach() > 0).to(student_logits.dtype)
        sums["focal"] = sums["focal"] + focal_loss(student_logits, pseudo, weights["focal_alpha"], weights["focal_gamma"])
        sums["dice"] = sums["dice"] + dice_loss(student_logits, pseudo, weights["dice_smooth"])
        sums["iou"] = sums["iou"] + iou_head_loss(student["iou"][i], student_logits, pseudo)
        regularised_logits = teacher_logits if teacher_mode == "shared" else student_logits
        sums["anchor"] = sums["anchor"] + anchor_loss(student_logits, regularised_logits, anchor_logits,
                                                      weights["dice_smooth"])
        sums["contrastive"] = sums["contrastive"] + instance_contrastive_loss(
            regularised["embeddings"][i], anchor["embeddings"][i], regularised["logits"][i], anchor["logits"][i],
            weights["temperature"])
    terms = {name: value / max(images, 1) for name, value in sums.items()}
    total = sum(weights[name] * terms[name] for name in TERMS)
    return total, terms
