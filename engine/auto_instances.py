"""The automatic instances of a run (prompt_source=auto): made in everything mode by the anchor or the
adapted model, cached in a file keyed by what they depend on; rank 0 makes and writes the file, the
other ranks wait at a barrier and read it. What they are and how they are scored:
datasets/auto_prompts.py."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from datasets.auto_prompts import DIAGNOSTIC_KEYS, RECALL_IOU, AutoInstances, diagnose
from datasets.instances import InstanceDataset, SampleError
from models.lora import base_state_dict
from models.predictor import generator_settings, make_generator
from models.wesam import WeSAM
from utils.files import write_text

CACHE_VERSION = 1


def top_instances(records: Sequence[dict[str, Any]], top_k: int) -> list[dict[str, Any]]:
    """The generator's records with the top_k highest predicted_iou x stability_score, best first."""
    ranked = sorted(records, key=lambda r: r["predicted_iou"] * r["stability_score"], reverse=True)
    return [{"rle": {"size": list(r["segmentation"]["size"]), "counts": [int(c) for c in r["segmentation"]["counts"]]},
             "predicted_iou": float(r["predicted_iou"]), "stability_score": float(r["stability_score"])}
            for r in ranked[:top_k]]


def weights_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of named tensors (names sorted, dtype, shape and bytes)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def anchor_digest(model: WeSAM) -> str:
    """sha256 of SAM's weights without LoRA, under their official names: the frozen anchor, the same
    whatever lora.targets adapts."""
    return weights_digest(base_state_dict(model.sam))


def cache_key(model: WeSAM, dataset: InstanceDataset, auto: Any, pad: str, origin: str) -> str:
    """What the instances depend on: the anchor's weights, the input pipeline, the images (in
    order), the generator settings with top_k, and `origin` ("anchor", or the adapter and step
    of a refresh, whose weights the run's own history determines)."""
    parts = {"version": CACHE_VERSION, "weights": anchor_digest(model), "pad": pad, "origin": origin,
             "pixel_normalize": model.backbone.pixel_normalize, "generator": generator_settings(auto),
             "top_k": auto.top_k, "multimask": auto.multimask, "images": dataset.image_identities()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


@torch.no_grad()
def generate_instances(model: WeSAM, dataset: InstanceDataset, auto: Any, pad: str, adapter: str | None,
                       description: str, show_progress: bool = True) -> list[list[dict[str, Any]]]:
    """Per image of `dataset`: its top_k automatic instances. Unreadable images get none (the
    dataset skips them in training with its usual warning)."""
    generator = make_generator(model, auto, pad, adapter)
    was_training = model.training
    model.eval()
    images = []
    for index in tqdm(range(len(dataset)), desc=description, disable=not show_progress, dynamic_ncols=True):
        try:
            image = dataset.load_image(index)
        except SampleError:
            images.append([])
            continue
        images.append(top_instances(generator.generate(image), auto.top_k))
    model.train(was_training)
    return images


def load_cache(path: Path, key: str) -> dict[str, Any] | None:
    """The cache file's content if it exists and was made for `key`, else None."""
    if not path.is_file():
        return None
    try:
        cache = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return cache if cache.get("key") == key else None


def cached_instances(path: Path, model: WeSAM, dataset: InstanceDataset, auto: Any, pad: str,
                     adapter: str | None = None, origin: str = "anchor", is_main: bool = True,
                     barrier: Callable[[], None] = lambda: None, diagnostic: bool = False,
                     log: Callable[[str], None] = print) -> tuple[AutoInstances, dict[str, Any]]:
    """The automatic instances of `dataset` made with `adapter` (None: the anchor), from the cache
    file `path`; made (by rank 0, which writes the file; the others wait at `barrier` and read
    it) when the file is missing or was made for another anchor, images, settings or `origin`.
    Returns them and the cache's record: "key", "seconds" (to make them), "instances_per_image",
    "images_without_instances", "built" (now), and with `diagnostic` where the dataset has labels
    "diagnostic" (see diagnose)."""
    key = cache_key(model, dataset, auto, pad, origin)
    cache = load_cache(path, key)
    if cache is None and is_main:
        started = time.time()
        stale = path.is_file()
        who = "the frozen anchor" if adapter is None else f"the adapted model ({adapter})"
        log(f"Finding the instances of {len(dataset)} training images with {who} in everything mode "
            f"({auto.points_per_side}^2 points, top {auto.top_k} per image)"
            f"{': settings, weights or images changed' if stale else ''}")
        images = generate_instances(model, dataset, auto, pad, adapter, "auto instances")
        counts = [len(instances) for instances in images]
        cache = {"key": key, "seconds": round(time.time() - started, 1),
                 "instances_per_image": float(np.mean(counts)) if counts else 0.0,
                 "images_without_instances": sum(c == 0 for c in counts)}
        if diagnostic and dataset.has_labels:
            cache["diagnostic"] = diagnose(dataset, AutoInstances(images))
        cache["images"] = images
        write_text(path, json.dumps(cache, separators=(",", ":")))
        cache["built"] = True
    elif cache is not None and is_main and diagnostic and dataset.has_labels \
            and set(cache.get("diagnostic", {})) != DIAGNOSTIC_KEYS:  # made by a run that did not ask, or an older one
        cache["diagnostic"] = diagnose(dataset, AutoInstances(cache["images"]))
        write_text(path, json.dumps(cache, separators=(",", ":")))
    barrier()
    if cache is None:
        cache = load_cache(path, key)
    instances = AutoInstances(cache.pop("images"))
    cache.setdefault("built", False)
    return instances, cache


def summarize(record: dict[str, Any]) -> dict[str, Any]:
    """A cache record (cached_instances) without its key: what a run reports."""
    return {k: record[k] for k in ("seconds", "built", "instances_per_image", "images_without_instances", "diagnostic")
            if k in record}


def describe(record: dict[str, Any]) -> str:
    """One line on a cache record's instances and, if measured, their recall."""
    text = (f"{record['instances_per_image']:.1f} per image ({record['images_without_instances']} images with none), "
            + (f"made in {record['seconds']:.0f} s" if record["built"] else "read from the cache"))
    found = record.get("diagnostic")
    if found:
        text += (f"; recall of the {found['gt_instances']} ground-truth instances at IoU {RECALL_IOU}: "
                 f"{found['recall']:.3f}, "
                 f"mean best IoU {found['mean_best_iou']:.3f}; of the instances {found['matched']:.0%} match an "
                 f"object, {found['parts']:.0%} are parts, {found['background']:.0%} background "
                 "(labels read for this diagnostic only)")
    return text
