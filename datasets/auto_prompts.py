"""Training without labels (prompt_source=auto): pseudo-instances found by SAM itself in
"everything" mode, from which the usual box, point or coarse prompts are derived.

segment_anything's SamAutomaticMaskGenerator runs on the frozen anchor (LoRA off) with its grid of
point prompts, predicted-IoU and stability filters and box NMS (config `auto`); of the masks it
keeps, the top_k by predicted IoU x stability score become the image's instances, at the image's
own size, so that they enter the same resize, views and prompt code as labels would
(InstanceDataset.load_sample). The anchor is frozen, so they are computed once and cached in the
run's out_dir, keyed by the anchor's weights, the training images and the generator settings;
`auto.refresh_every` recomputes them with the adapted model during training (a variant of ours).

Labels of the training split are read only for a diagnostic (auto.diagnostic): the recall of
ground-truth instances at IoU >= 0.5 by the pseudo-instances, the mean best IoU of each
ground-truth instance with any pseudo-instance, and how many pseudo-instances match an object,
are parts of one or lie on the background (see match_counts).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything import SamAutomaticMaskGenerator, SamPredictor
from segment_anything.utils.amg import rle_to_mask
from tqdm import tqdm

from datasets.instances import InstanceDataset, SampleError
from datasets.transforms import pad_offsets
from models.wesam import WeSAM, upscale_logits
from utils.checkpoint import write_text

CACHE_VERSION = 1
RECALL_IOU = 0.5  # a ground-truth instance counts as found by a pseudo-instance of at least this IoU
PART_INSIDE = 0.8  # an unmatched pseudo-instance this much inside one object is a part of it
BACKGROUND_OUTSIDE = 0.5  # an unmatched pseudo-instance this much outside every object is background
DIAGNOSTIC_KEYS = {"recall", "mean_best_iou", "gt_instances", "matched", "parts", "background"}  # of diagnose
# SamAutomaticMaskGenerator's arguments set by the config section `auto`
GENERATOR_KEYS = ("points_per_side", "points_per_batch", "pred_iou_thresh", "stability_score_thresh",
                  "box_nms_thresh", "min_mask_region_area")


class WeSAMPredictor(SamPredictor):
    """SamPredictor that feeds SAM exactly as WeSAM does: the image resized by ResizeLongestSide
    (as SamPredictor), padded where `pad` puts it, normalised as WeSAM.preprocess (pixel mean/std,
    or x / 255 for pixel_normalize=False), encoded with `adapter` (None: the frozen anchor).
    `multimask` False decodes SAM's single-mask output where the generator asks for three masks
    per point (a model trained only on that output, as the shipped vit_small)."""

    def __init__(self, model: WeSAM, pad: str, adapter: str | None, multimask: bool = True) -> None:
        super().__init__(model.sam)
        self.wesam = model
        self.pad = pad
        self.adapter = adapter
        self.multimask = multimask
        self.offset = (0, 0)  # top, left of the image inside the padded input

    @torch.no_grad()
    def set_torch_image(self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]) -> None:
        """transformed_image 1 x 3 x h x w (longest side S, 0-255) -> features 1 x C x h' x w'."""
        self.reset_image()
        height, width = transformed_image.shape[-2:]
        size = self.wesam.image_size
        top, left = pad_offsets(height, width, size, self.pad)
        canvas = transformed_image.new_zeros(1, 3, size, size)
        canvas[..., top:top + height, left:left + width] = transformed_image
        valid = torch.tensor([[top, left, height, width]], device=canvas.device)
        self.features = self.wesam.encode(self.wesam.preprocess(canvas, valid), self.adapter)
        self.original_size, self.input_size, self.offset = tuple(original_image_size), (height, width), (top, left)
        self.is_image_set = True

    @torch.no_grad()
    def predict_torch(self, point_coords: torch.Tensor | None, point_labels: torch.Tensor | None,
                      boxes: torch.Tensor | None = None, mask_input: torch.Tensor | None = None,
                      multimask_output: bool = True, return_logits: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """SamPredictor.predict_torch with prompts (B x N x 2 points, B x 4 boxes, in the resized
        image's frame) moved into the padded frame, and masks B x C x H x W cropped from where the
        image lies in it (SAM's own postprocessing assumes bottom-right padding)."""
        top, left = self.offset
        shift = torch.tensor([left, top], dtype=torch.float32, device=self.device)
        points = None if point_coords is None else (point_coords + shift, point_labels)
        sparse, dense = self.model.prompt_encoder(points=points, boxes=None if boxes is None else boxes + shift.repeat(2),
                                                  masks=mask_input)
        low_res, iou = self.model.mask_decoder(image_embeddings=self.features, image_pe=self.model.prompt_encoder.get_dense_pe(),
                                               sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                               multimask_output=multimask_output and self.multimask)
        size = self.wesam.image_size
        height, width = self.input_size
        masks = upscale_logits(low_res, size)
        masks = F.interpolate(masks[..., top:top + height, left:left + width], self.original_size, mode="bilinear",
                              align_corners=False)
        return (masks if return_logits else masks > self.model.mask_threshold), iou, low_res


def generator_settings(auto: Any) -> dict[str, Any]:
    """The config section `auto` as SamAutomaticMaskGenerator's arguments."""
    return {key: auto[key] for key in GENERATOR_KEYS}


def make_generator(model: WeSAM, auto: Any, pad: str, adapter: str | None) -> SamAutomaticMaskGenerator:
    """SamAutomaticMaskGenerator on `model` with `adapter` (None: the anchor), RLE output."""
    generator = SamAutomaticMaskGenerator(model.sam, output_mode="uncompressed_rle", **generator_settings(auto))
    generator.predictor = WeSAMPredictor(model, pad, adapter, auto.multimask)
    return generator


def top_instances(records: Sequence[dict[str, Any]], top_k: int) -> list[dict[str, Any]]:
    """The generator's records with the top_k highest predicted_iou x stability_score, best first."""
    ranked = sorted(records, key=lambda r: r["predicted_iou"] * r["stability_score"], reverse=True)
    return [{"rle": {"size": list(r["segmentation"]["size"]), "counts": [int(c) for c in r["segmentation"]["counts"]]},
             "predicted_iou": float(r["predicted_iou"]), "stability_score": float(r["stability_score"])}
            for r in ranked[:top_k]]


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


def weights_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of named tensors (names sorted, dtype, shape and bytes)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def anchor_digest(model: WeSAM) -> str:
    """sha256 of SAM's weights without LoRA: the frozen anchor."""
    return weights_digest({k: v for k, v in model.sam.state_dict().items() if ".adapters." not in k})


def cache_key(model: WeSAM, dataset: InstanceDataset, auto: Any, pad: str, origin: str) -> str:
    """What the instances depend on: the anchor's weights, the input pipeline, the images (in
    order), the generator settings with top_k, and `origin` ("anchor", or the adapter and step
    of a refresh, whose weights the run's own history determines)."""
    parts = {"version": CACHE_VERSION, "weights": anchor_digest(model), "pad": pad, "origin": origin,
             "pixel_normalize": model.pixel_normalize, "generator": generator_settings(auto), "top_k": auto.top_k,
             "multimask": auto.multimask,
             "images": [dataset.image_identity(i) for i in range(len(dataset))]}
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
            "gt_instances": truths, **{key: sums[key] / max(automatic, 1) for key in ("matched", "parts", "background")}}


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
            f"({auto.points_per_side}^2 points, top {auto.top_k} per image){': settings, weights or images changed' if stale else ''}")
        images = generate_instances(model, dataset, auto, pad, adapter, "auto instances")
        counts = [len(instances) for instances in images]
        cache = {"key": key, "seconds": round(time.time() - started, 1),
                 "instances_per_image": float(np.mean(counts)) if counts else 0.0,
                 "images_without_instances": sum(c == 0 for c in counts)}
        if diagnostic and dataset.has_labels:
            cache["diagnostic"] = diagnose(dataset, AutoInstances(images))
        path.parent.mkdir(parents=True, exist_ok=True)
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
        text += (f"; recall of the {found['gt_instances']} ground-truth instances at IoU {RECALL_IOU}: {found['recall']:.3f}, "
                 f"mean best IoU {found['mean_best_iou']:.3f}; of the instances {found['matched']:.0%} match an "
                 f"object, {found['parts']:.0%} are parts, {found['background']:.0%} background "
                 "(labels read for this diagnostic only)")
    return text
