"""The two versions of the authors' code (zhang-haojie/wesam): the first release (1782a38, February
2024) and the later HEAD (5ac493f, August 2024). Which one produced the CVPR tables is not known.

`paper.code=release|head` is that version of their code: it sets every key below that the config
file and the command line leave unset (each stays settable on its own), so that our loop computes
what theirs does. It sets what their code does, not what the user chooses: the model and its
checkpoint, the dataset, the prompt and the optimiser's values (lr 1e-4, weight decay 1e-4, 250
warm-up steps: also our defaults) stay the config's; configs/paper/common.py sets those for the
paper. The evidence for each key is the file and line of their repository in its comment and in
results/authors_code.md ("Where each behaviour is", "Two code versions"); tests/test_paper_code.py
runs their training loop, re-expressed, against ours under each switch.
"""

from __future__ import annotations

from typing import Any

CODE_VERSIONS = ("release", "head")
RELEASE_EPOCHS = 5  # 1782a38: num_epochs = 5 for every dataset, on 1 GPU at batch 1
HEAD_ITERATIONS = 40_000  # HEAD: num_iters = 40,000, epochs = num_iters // training images
HEAD_DEVICES = 4  # HEAD: gpu_ids "0,1,2,3", batch 1 each
OSD_IMAGES = 111  # OSD 0.2: the release split it 1:1, HEAD 6:1 (commit 90c8aaf)
COCO_DATASETS = ("coco2017", "coco_c", "coco")  # read by datasets/coco.py, as their COCO loader reads COCO 2017
HEAD_COCO_MASKS = 151  # HEAD datasets/COCO.py:71: `if len(masks) > 150: break`

# Both versions (the same lines at 1782a38 and 5ac493f unless a comment says otherwise)
AUTHORS_CODE: dict[str, Any] = {
    # model.py Model.encode: sam.image_encoder(images) on ToTensor's RGB / 255, without SAM's mean/std
    "model.pixel_normalize": False,
    "model.pad": "center",  # datasets/tools.py ResizeAndPad: (max_dim - w) // 2 on the left, the rest on the right
    # datasets/COCO.py:82,91-92 (every loader): soft_transform at the image's native size, then ResizeAndPad
    "augment.views_at": "native",
    # datasets/COCO.py:144-158 COCODatasetwithCoarse: the vertex extent of the first contour's polygon,
    # returned as the box prompt (utils/eval_utils.py get_prompts: "coarse" -> bboxes)
    "coarse_polygon": "authors",
    "coarse_as": "box",
    "point_negatives": "canvas",  # utils/sample_utils.py:90: uniform over ~mask, the padded 1024 x 1024 canvas
    "dataset.keep_vanished": True,  # the loaders keep every annotation, even one the resize empties
    "loss.focal_bce": "probabilities",  # losses.py:17-23: sigmoid, clamp, F.binary_cross_entropy
    # utils/eval_utils.py:31-36 calc_iou: (pred >= 0.5), intersection / (union + 1e-7)
    "loss.iou_threshold": 0.5,
    "loss.iou_empty": 0.0,
    # utils/eval_utils.py validate: smp get_stats(threshold=0.5) on the logits over the padded canvas
    "metric.threshold": 0.5,
    "metric.region": "canvas",
    # adaptation.py configure_opt: LambdaLR(step / warmup_steps), stepped after optimizer.step()
    "opt.warmup_from_zero": True,
    "tf32": True,  # adaptation.py:220: torch.set_float32_matmul_precision('high')
    "teacher.mode": "shared",  # adaptation.py: one model for teacher and student; momentum_update commented out
    "batch_size": 1,  # configs: batch_size 1 (per device)
}

RELEASE: dict[str, Any] = {
    "loss.focal_on": "mean",  # 1782a38:losses.py:23-25: the focal term of the mean BCE
    "loss.contrastive_masks": "raw",  # 1782a38:losses.py:61-73: the resized logits as weights
    "max_nums": 50,  # 1782a38:configs/config.py:11
    # 1782a38:datasets/tools.py:118: soft_transform's strong_transforms(image=image), the image before
    # the flips (image_weak since 3edab1b, April 2024, "modify bug and update")
    "augment.strong_from": "unflipped",
    "devices": 1,  # 1782a38:configs/config.py:6: gpu_ids "1"
}

HEAD: dict[str, Any] = {
    "loss.focal_on": "pixel",  # losses.py:23-26 (since 90c8aaf): each pixel's focal term, then the mean
    "loss.contrastive_masks": "threshold",  # losses.py:63-75: sigmoid > 0.5, an empty mask's area taken as 1
    "max_nums": 40,  # configs/config.py:11
    "augment.strong_from": "weak",  # datasets/tools.py:128: strong_transforms(image=image_weak)
    "devices": HEAD_DEVICES,  # configs/config.py:6: gpu_ids "0,1,2,3"
}


def code_settings(code: str, dataset: str, train_images: int, prompt: str = "box") -> dict[str, Any]:
    """The dotted config keys that code version `code` sets for `dataset` and `prompt`, whose
    training split has `train_images` images under HEAD's split."""
    if code not in CODE_VERSIONS:
        raise ValueError(f"Unknown code version '{code}'; choose one of {', '.join(CODE_VERSIONS)}.")
    keys = {**AUTHORS_CODE, **(RELEASE if code == "release" else HEAD)}
    if dataset in COCO_DATASETS:
        # getAnnIds(imgIds=...) keeps crowd annotations (COCO.py:65). HEAD's box and point loader stops
        # after 151 masks and skips `w == 0 or h == 0 and count < 100` (COCO.py:71-76); its coarse
        # loader and the release have no cap and no such rule, and their training stops at a box of
        # zero size (albumentations 1.3.1 refuses it), so HEAD's rule, the nearest that runs, stays.
        cap = HEAD_COCO_MASKS if code == "head" and prompt != "coarse" else 0
        keys.update({"dataset.coco.crowd": True, "dataset.coco.max_masks": cap, "dataset.coco.zero_size": "authors"})
    if code == "release":
        if dataset == "osd":
            keys["dataset.interleave"] = 1
            train_images = (OSD_IMAGES + 1) // 2
        return {**keys, "num_steps": RELEASE_EPOCHS * train_images, "eval_interval": train_images}
    steps_per_epoch = max(train_images // HEAD_DEVICES, 1)
    epochs = max(HEAD_ITERATIONS // train_images, 1)
    return {**keys, "num_steps": epochs * steps_per_epoch, "eval_interval": steps_per_epoch,
            **({"dataset.interleave": 6} if dataset == "osd" else {})}
