"""The two versions of the authors' code that the paper's settings come from (README, "Two code
versions"): the first release (1782a38, February 2024) and the later HEAD (5ac493f, August 2024).
Which one produced the CVPR tables is not known. `paper.code=release|head` sets every key below
that the config file and the command line leave unset, so each also stays settable on its own.
"""

from __future__ import annotations

from typing import Any

CODE_VERSIONS = ("release", "head")
RELEASE_EPOCHS = 5  # 1782a38: num_epochs = 5 for every dataset, on 1 GPU at batch 1
HEAD_ITERATIONS = 40_000  # HEAD: num_iters = 40,000, epochs = num_iters // training images
HEAD_DEVICES = 4  # HEAD: gpu_ids "0,1,2,3", batch 1 each
OSD_IMAGES = 111  # OSD 0.2: the release split it 1:1, HEAD 6:1 (commit 90c8aaf)


def code_settings(code: str, dataset: str, train_images: int) -> dict[str, Any]:
    """The dotted config keys that code version `code` sets for `dataset`, whose training split has
    `train_images` images under HEAD's split."""
    if code == "release":
        keys: dict[str, Any] = {"loss.focal_on": "mean", "loss.contrastive_masks": "raw", "max_nums": 50,
                                "devices": 1, "batch_size": 1}
        if dataset == "osd":
            keys["dataset.interleave"] = 1
            train_images = (OSD_IMAGES + 1) // 2
        return {**keys, "num_steps": RELEASE_EPOCHS * train_images, "eval_interval": train_images}
    if code == "head":
        steps_per_epoch = max(train_images // HEAD_DEVICES, 1)
        epochs = max(HEAD_ITERATIONS // train_images, 1)
        return {"loss.focal_on": "pixel", "loss.contrastive_masks": "threshold", "max_nums": 40,
                "devices": HEAD_DEVICES, "batch_size": 1, "num_steps": epochs * steps_per_epoch,
                "eval_interval": steps_per_epoch, **({"dataset.interleave": 6} if dataset == "osd" else {})}
    raise ValueError(f"Unknown code version '{code}'; choose one of {', '.join(CODE_VERSIONS)}.")
