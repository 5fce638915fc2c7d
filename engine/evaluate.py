"""Evaluation shared by adaptation.py and validate.py."""

from __future__ import annotations

import torch
from lightning_fabric import Fabric
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from datasets import InstanceDataset, UnusableDatasetError, collate
from engine.predictions import crop_to_region
from models.wesam import WeSAM, upscale_logits
from utils.metrics import SegmentationMeter


@torch.no_grad()
def evaluate(fabric: Fabric, model: WeSAM, dataset: InstanceDataset, adapter: str | None, batch_size: int = 1,
             num_workers: int = 0, description: str = "eval", threshold: float = 0.0,
             region: str = "image", decoding: str = "raw") -> dict[str, float]:
    """mIoU and F1 of `model` with `adapter` (None: unadapted SAM) on every image of `dataset`.

    `model` is the plain module (not a DDP wrapper): ranks may get different numbers of images,
    and only the final sum is a collective.

    Each rank takes every world_size-th image, so no image is counted twice; masks are compared
    at the resized image's resolution, prediction = logits > threshold, over the image without its
    padding (region "image") or over the whole padded canvas (region "canvas", the authors' code,
    in which predictions in the padding count too); each prompt's single mask decoded as `decoding`
    says ("raw" or "meta": WeSAM.predict, models/backbones.py evaluation_decoding). Images without
    instances are not scored; `skipped_images` counts those the dataset could not use (see
    InstanceDataset), and a split of which every image was skipped is an error.
    """
    indices = range(fabric.global_rank, len(dataset), fabric.world_size)
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, collate_fn=collate, num_workers=num_workers,
                        pin_memory=fabric.device.type == "cuda")  # pinned: fabric.to_device copies without blocking
    meter = SegmentationMeter(fabric.device)
    was_training = model.training
    model.eval()
    skipped: set[int] = set()
    for batch in tqdm(loader, desc=description, leave=False, disable=fabric.global_rank != 0):
        skipped.update(batch["skipped"])
        scored = [i for i, masks in enumerate(batch["masks"]) if len(masks)]  # SAM needs at least one prompt
        if not scored:
            continue
        batch = fabric.to_device(batch)
        with fabric.autocast():
            outputs = model.predict(batch["images"][scored], batch["valid"][scored],
                                    [batch["prompts"][i] for i in scored], adapter=adapter, decoding=decoding)
        for logits, i in zip(outputs["logits"], scored):
            masks = batch["masks"][i]
            pred = upscale_logits(logits.float(), masks.shape[-1])[:, 0] > threshold
            valid = batch["valid"][i]
            meter.update(crop_to_region(pred, valid, region), crop_to_region(masks, valid, region))
    model.train(was_training)
    totals = fabric.all_reduce(meter.totals, reduce_op="sum") if fabric.world_size > 1 else meter.totals
    num_skipped = len(skipped)  # ranks evaluate disjoint images, so their counts add up
    if fabric.world_size > 1:
        num_skipped = int(fabric.all_reduce(torch.tensor(float(num_skipped), device=fabric.device), reduce_op="sum"))
    if num_skipped and num_skipped == len(dataset):
        raise UnusableDatasetError(f"None of the {len(dataset)} evaluation images could be used; "
                                   "see the warnings above.")
    if num_skipped:
        fabric.print(f"Warning: {num_skipped} of {len(dataset)} evaluation images were skipped and not scored "
                     "(the warnings above name each file and the reason).")
    return {**SegmentationMeter.compute(totals), "skipped_images": num_skipped}
