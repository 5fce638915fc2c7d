"""Training without labels (prompt_source=auto): pseudo-instances found by SAM itself in
"everything" mode, from which the usual box, point or coarse prompts are derived.

segment_anything's SamAutomaticMaskGenerator runs on the frozen anchor (LoRA off) with its grid of
point prompts, predicted-IoU and stability filters and box NMS (config `auto`); of the masks it
keeps, the top_k by predicted IoU x stability score become the image's instances, at the image's
own size, so that they enter the same resize, views and prompt code as labels would
(InstanceDataset.load_sample). This module holds what a dataset needs of them (AutoInstances) and
how they match labels; making and caching them is the engine's (engine/auto_instances.py, with
the generator of models/predictor.py).

Labels of the training split are read only for a diagnostic (auto.diagnostic): the recall of
ground-truth instances at IoU >= 0.5 by the pseudo-instances, the mean best IoU of each
ground-truth instance with any pseudo-instance, and how many pseudo-instances match an object,
are parts of one or lie on the background (see match_counts).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from segment_anything.utils.amg import rle_to_mask

from datasets.instances import InstanceDataset, SampleError

RECALL_IOU = 0.5  # a ground-truth instance counts as found by a pseudo-instance of at least this IoU
PART_INSIDE = 0.8  # an unmatched pseudo-instance this much inside one object is a part of it
BACKGROUND_OUTSIDE = 0.5  # an unmatched pseudo-instance this much outside every object is background
DIAGNOSTIC_KEYS = {"recall", "mean_best_iou", "gt_instances", "matched", "parts", "background"}  # of diagnose


class AutoInstances:
    """The pseudo-instances of every image of a dataset: what InstanceDataset.load_sample uses in
    place of labels."""

    def __init__(self, images: list[list[dict[str, Any]]]) -> None:
        # per image: its instances, best first: {"rle": SAM's uncompressed RLE {"size": [H, W], "counts"},
        # "predicted_iou", "stability_score"}
        self.images = images

    def masks(self, index: int, height: int, width: int) -> np.ndarray:
        """N x H x W bool masks of image `index` (an image of height x width; N may be 0)."""
        instances = self.images[index]
        if not instances:
            return np.zeros((0, height, width), bool)
        return np.stack([rle_to_mask(instance["rle"]) for instance in instances])


def match_counts(truth: np.ndarray, found: np.ndarray) -> dict[str, float]:
    """How ground-truth masks M x H x W and automatic ones N x H x W (bool) match, as sums over
    instances: "found_gt" (ground-truth instances with an automatic one of IoU >= RECALL_IOU),
    "best_iou" (their best IoUs), and of the automatic instances "matched" (IoU >= RECALL_IOU with
    a ground-truth one), "parts" (the others lying >= PART_INSIDE inside one object) and
    "background" (the others lying >= BACKGROUND_OUTSIDE outside every object)."""
    a = torch.from_numpy(truth).flatten(1).float()
    b = torch.from_numpy(found).flatten(1).float()
    inter = a @ b.T  # M x N
    area = b.sum(1).clamp(min=1)
    iou = inter / (a.sum(1, keepdim=True) + b.sum(1) - inter).clamp(min=1)
    best_truth = iou.max(1).values if len(found) else torch.zeros(len(truth))
    best_found = iou.max(0).values if len(truth) else torch.zeros(len(found))
    inside_one = (inter / area).max(0).values if len(truth) else torch.zeros(len(found))
    outside = 1 - (b * a.amax(0, keepdim=True)).sum(1) / area if len(truth) else torch.ones(len(found))
    matched = best_found >= RECALL_IOU
    return {"found_gt": float((best_truth >= RECALL_IOU).sum()), "best_iou": float(best_truth.sum()),
            "matched": float(matched.sum()), "parts": float((~matched & (inside_one >= PART_INSIDE)).sum()),
            "background": float((~matched & (outside >= BACKGROUND_OUTSIDE)).sum())}


def diagnose(dataset: InstanceDataset, instances: AutoInstances) -> dict[str, Any]:
    """How the automatic instances match the dataset's labels, pooled over instances at the
    images' own size: of the ground-truth instances the "recall" (an automatic one of IoU >= 0.5)
    and "mean_best_iou"; of the automatic instances the fractions "matched", "parts" and
    "background" (see match_counts). Reads the labels: a diagnostic, never a training input."""
    sums = dict.fromkeys(("found_gt", "best_iou", "matched", "parts", "background"), 0.0)
    truths = automatic = 0
    for index in range(len(dataset)):
        try:
            image, truth, _ = dataset.load(index)
        except SampleError:
            continue
        truth = truth[truth.any(axis=(1, 2))]
        found = instances.masks(index, *image.shape[:2])
        for key, value in match_counts(truth, found).items():
            sums[key] += value
        truths, automatic = truths + len(truth), automatic + len(found)
    return {"recall": sums["found_gt"] / max(truths, 1), "mean_best_iou": sums["best_iou"] / max(truths, 1),
            "gt_instances": truths,
            **{key: sums[key] / max(automatic, 1) for key in ("matched", "parts", "background")}}
