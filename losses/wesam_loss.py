"""The WeSAM objective: weighted self-training, anchor and contrastive terms, each reported."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from losses.anchor import anchor_loss
from losses.contrastive import instance_contrastive_loss
from losses.segmentation import dice_loss, focal_loss, iou_head_loss
from models.wesam import Outputs, upscale_logits
from utils.metrics import instance_scores

TERMS = ("focal", "dice", "iou", "anchor", "contrastive")


def loss_branches(weights: Mapping[str, float | str]) -> tuple[str, ...]:
    """The network branches (models/wesam.py) that a loss configuration needs."""
    if weights["target"] == "ground_truth":
        return ("student",)
    if weights["anchor"] or weights["contrastive"]:
        return ("anchor", "teacher", "student")
    return ("teacher", "student")


def wesam_loss(outputs: Mapping[str, Outputs], weights: Mapping[str, float | str], teacher_mode: str,
               image_size: int,
               masks: Sequence[torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and its unweighted terms, averaged over the images of the batch.

    Per image, with logits upscaled to the S x S input canvas:
      focal, dice, iou: student vs the teacher's hard mask (teacher logits > 0, no gradient), or
        vs the ground-truth `masks` (N x S x S per image) when weights["target"] is "ground_truth";
      anchor: dice of student and teacher to the anchor's hard mask (0.5 each);
      contrastive: teacher vs anchor instance prototypes.
    The anchor and contrastive terms are zero when `outputs` has no anchor branch (see
    loss_branches) or the target is the ground truth. In ema mode the teacher has no gradient,
    so those terms use the student.
    `weights` is the config's loss section.

    With weights["num_masks_as_alpha"], the focal loss's alpha and the self-training dice's
    smoothing are the number of instances in the batch instead of focal_alpha and dice_smooth,
    which is what the authors' code computes (it passes num_masks positionally into both slots).

    With a teacher target and `masks` given, the terms also hold `pseudo_label_iou`: the mIoU of
    the teacher's hard masks against the ground truth, a diagnostic that is not part of the loss.
    """
    student = outputs["student"]
    supervised = weights["target"] == "ground_truth"
    if supervised and masks is None:
        raise ValueError("loss.target is 'ground_truth' but no ground-truth masks were given.")
    sums = {name: torch.zeros((), device=student["embeddings"].device) for name in TERMS}
    images = 0
    pseudo_label_iou = []
    if weights["num_masks_as_alpha"]:
        focal_alpha = dice_smooth = float(sum(len(logits) for logits in student["logits"]))
    else:
        focal_alpha, dice_smooth = weights["focal_alpha"], weights["dice_smooth"]
    for i, student_low in enumerate(student["logits"]):
        if len(student_low) == 0:
            continue
        images += 1
        student_logits = upscale_logits(student_low, image_size)
        if supervised:
            target = masks[i][:, None].to(student_logits.dtype)
        else:
            teacher_logits = upscale_logits(outputs["teacher"]["logits"][i], image_size)
            target = (teacher_logits.detach() > 0).to(student_logits.dtype)
            if masks is not None:
                pseudo_label_iou.append(instance_scores(target[:, 0], masks[i])[0].mean())
        sums["focal"] = sums["focal"] + focal_loss(student_logits, target, focal_alpha, weights["focal_gamma"],
                                                   weights["focal_on"], weights["focal_bce"])
        sums["dice"] = sums["dice"] + dice_loss(student_logits, target, dice_smooth)
        sums["iou"] = sums["iou"] + iou_head_loss(student["iou"][i], student_logits, target, weights["iou_threshold"],
                                                  weights["iou_empty"])
        if supervised or "anchor" not in outputs:  # the regularisers belong to self-training only
            continue
        anchor = outputs["anchor"]
        regularised = outputs["teacher"] if teacher_mode == "shared" else student
        anchor_logits = upscale_logits(anchor["logits"][i], image_size)
        regularised_logits = teacher_logits if teacher_mode == "shared" else student_logits
        sums["anchor"] = sums["anchor"] + anchor_loss(student_logits, regularised_logits, anchor_logits,
                                                      weights["dice_smooth"])
        sums["contrastive"] = sums["contrastive"] + instance_contrastive_loss(
            regularised["embeddings"][i], anchor["embeddings"][i], regularised["logits"][i], anchor["logits"][i],
            weights["temperature"], weights["contrastive_masks"])
    terms = {name: value / max(images, 1) for name, value in sums.items()}
    total = sum(weights[name] * terms[name] for name in TERMS)
    if pseudo_label_iou:
        terms["pseudo_label_iou"] = torch.stack(pseudo_label_iou).mean()
    return total, terms
