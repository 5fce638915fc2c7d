"""Evaluation shared by adaptation.py and validate.py."""

from __future__ import annotations

import torch
from lightning_fabric import Fabric
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from datasets import InstanceDataset, collate
from models.wesam import WeSAM, upscale_logits
from utils.metrics import SegmentationMeter


@torch.no_grad()
def evaluate(fabric: Fabric, model: WeSAM, dataset: InstanceDataset, adapter: str | None, batch_size: int = 1,
             num_workers: int = 0, description: str = "eval") -> dict[str, float]:
    """mIoU and F1 of `model` with `adapter` (None: unadapted SAM) on every image of `dataset`.

    `model` is the plain module (not a DDP wrapper): ranks may get different numbers of images,
    and only the final sum is a collective.

    Each rank takes every world_size-th image, so no image is counted twice; masks are compared
    at the resized image's resolution, padding cropped, prediction = logits > 0.
    """
    indices = range(fabric.global_rank, len(dataset), fabric.world_size)
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, collate_fn=collate, num_workers=num_workers)
    meter = SegmentationMeter(fabric.device)
    was_training = model.training
    model.eval()
    for batch in tqdm(loader, desc=description, leave=False, disable=fabric.global_rank != 0):
        batch = fabric.to_device(batch)
        with fabric.autocast():
            outputs = model.predict(batch["images"], batch["valid"], batch["prompts"], adapter=adapter)
        for logits, masks, (top, left, height, width) in zip(outputs["logits"], batch["masks"], batch["valid"].tolist()):
            if len(masks) == 0:
                continue
            pred = upscale_logits(logits.float(), masks.shape[-1])[:, 0] > 0
            crop = (slice(None), slice(top, top + height), slice(left, left + width))
            meter.update(pred[crop], masks[crop])
    model.train(was_training)
    totals = fabric.all_reduce(meter.totals, reduce_op="sum") if fabric.world_size > 1 else meter.totals
    return SegmentationMeter.compute(totals)
