"""Masks of single samples, for the tools that look at images one by one (validate.py
--per-image / --visualize, predict.py). Same decoding as engine/evaluate.py: WeSAM.predict (with
the evaluation's model.decoding), the low-res logits upscaled to the input canvas, the padding cropped
(metric.region "image") or not ("canvas"), thresholded at metric.threshold."""

from __future__ import annotations

from typing import Any

import torch

from datasets import InstanceDataset, collate
from models.wesam import WeSAM, upscale_logits
from utils.metrics import instance_scores


@torch.no_grad()
def sample_outputs(model: WeSAM, sample: dict[str, Any], adapter: str | None,
                   prompt_sets: list[dict[str, torch.Tensor]] | None = None, region: str = "image",
                   original_size: tuple[int, int] | None = None,
                   decoding: str = "raw") -> tuple[torch.Tensor, torch.Tensor]:
    """Mask logits N x h x w of a sample's N >= 1 instances on the resized image (h x w = the
    sample's valid region, padding cropped; with region "canvas" the whole S x S input canvas),
    or with `original_size` (H, W) N x H x W on the image as stored, as the backbone's own predictor
    gives them; and the IoU head's N scores, on the model's device.

    `prompt_sets` (default: the sample's prompts) are decoded one after the other on the image's
    one embedding, their instances concatenated: prompts of different shapes (objects with
    different numbers of points) cannot share a decoder call, and padding them would change the
    masks. Each prompt's single mask is decoded as `decoding` says (WeSAM.predict)."""
    device = next(model.parameters()).device
    batch = collate([sample])
    sets = [{key: value.to(device) for key, value in prompts.items()}
            for prompts in (prompt_sets or [batch["prompts"][0]])]
    outputs = model.predict(batch["images"].to(device), batch["valid"].to(device), sets[:1], adapter=adapter,
                            decoding=decoding)
    decoded = [(outputs["logits"][0], outputs["iou"][0])]
    decoded += [model.decode(outputs["features"][0], prompts, decoding)  # the decoder has no LoRA
                for prompts in sets[1:]]
    logits = torch.cat([d[0] for d in decoded]).float()
    if original_size is not None:
        logits = model.postprocess(logits, sample["valid"], original_size)[:, 0]
    else:
        logits = crop_to_region(upscale_logits(logits, model.image_size)[:, 0], sample["valid"], region)
    return logits, torch.cat([d[1] for d in decoded])[:, 0].float()


def crop_to_region(masks: torch.Tensor, valid: torch.Tensor, region: str) -> torch.Tensor:
    """C x S x S images, N x S x S masks or logits -> the scored pixels: the image inside `valid`
    (top, left, height, width) for region "image", all of the canvas for "canvas"."""
    if region == "canvas":
        return masks
    top, left, height, width = valid.tolist()
    return masks[:, top:top + height, left:left + width]


def sample_logits(model: WeSAM, sample: dict[str, Any], adapter: str | None, region: str = "image",
                  decoding: str = "raw") -> torch.Tensor:
    """The mask logits of sample_outputs."""
    return sample_outputs(model, sample, adapter, region=region, decoding=decoding)[0]


def image_name(dataset: InstanceDataset, index: int) -> str:
    """The file of a dataset's image (records with an `image` path), else its position."""
    return str(getattr(dataset.records[index], "image", index))


def per_image_scores(model: WeSAM, dataset: InstanceDataset, adapter: str | None, threshold: float = 0.0,
                     region: str = "image", decoding: str = "raw") -> list[dict[str, Any]]:
    """One row per image of `dataset`: {index, image, instances, miou, f1}. The mean of miou over
    the images with instances is evaluate()'s mIoU with the same threshold, region and decoding; an
    image without instances has miou None."""
    rows = []
    for index in range(len(dataset)):
        sample = dataset[index]
        masks = sample["masks"]
        row = {"index": index, "image": image_name(dataset, index), "instances": len(masks), "miou": None, "f1": None}
        if len(masks):
            pred = sample_logits(model, sample, adapter, region, decoding).cpu() > threshold
            iou, f1 = instance_scores(pred, crop_to_region(masks, sample["valid"], region))
            row.update(miou=float(iou.mean()), f1=float(f1.mean()))
        rows.append(row)
    return rows
