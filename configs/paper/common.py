"""What every configs/paper file shares: the authors' code in full, so that Direct and WeSAM are
measured as the paper measured them.

- Model: SAM ViT-B from the official checkpoint, fed RGB / 255 without SAM's normalisation and
  padded centred; LoRA rank 4; TF32 on CUDA.
- Data: both views made at the image's native size before the resize; negative points anywhere
  outside the instance, padding included; the coarse box from the first contour at native size;
  evaluation keeps instances that vanish in the resize.
- Loss and metric: BCE from clamped probabilities; IoU-head target at logit 0.5, 0 when both masks
  are empty; metric at logit 0.5 over the whole padded canvas; warm-up from lr 0.
- Optimisation: Adam lr 1e-4, weight decay 1e-4, 250 warm-up steps, batch 1.
- `paper.code` (configs/paper/versions.py) picks the code version, which sets the rest: "release",
  the default here, is the first code release (5 epochs on 1 GPU, focal loss on the mean BCE, raw
  logits in the contrastive masks, at most 50 instances per image), the version published with
  the paper and the "(1e-4, 5)" setting the authors' issue #18 calls the paper's; "head" is their
  later code (40,000 iterations on 4 GPUs, focal loss per pixel, thresholded contrastive masks, at
  most 40 instances). results/authors_code.md, "Two code versions", gives the reasons and the table.

Each dataset file gives its training split's size (`train_images`), from which the code version
derives num_steps and an evaluation once per epoch."""

from __future__ import annotations

from typing import Any

DEFAULT_CODE = "release"
# COCO as the authors' loader reads it: crowd annotations kept, at most 151 masks, their zero-size rule
AUTHORS_COCO = {"crowd": True, "max_masks": 151, "zero_size": "authors"}


def paper_config(dataset: str, root: str, train_images: int, **dataset_keys: Any) -> dict[str, Any]:
    """The config of one paper dataset whose training split has `train_images` images."""
    return {
        "out_dir": f"runs/paper/{dataset}",
        "prompt": "box",
        "point_negatives": "canvas",
        "coarse_polygon": "authors",
        "tf32": True,
        "paper": {"code": DEFAULT_CODE, "train_images": train_images},
        "dataset": {"name": dataset, "root": root, "eval_split": "test", "keep_vanished": True, **dataset_keys},
        "model": {
            "type": "vit_b",
            "checkpoint": "checkpoints/sam_vit_b_01ec64.pth",
            "pixel_normalize": False,  # authors' pipeline: RGB / 255
            "pad": "center",  # authors' pipeline: centred padding
        },
        "lora": {"rank": 4},
        "opt": {
            "learning_rate": 1e-4,
            "weight_decay": 1e-4,
            "warmup_steps": 250,
            "decay_steps": [60000, 86666],  # never reached, as in the authors' runs
            "decay_factor": 0.1,
            "warmup_from_zero": True,
        },
        "loss": {"focal_bce": "probabilities", "iou_threshold": 0.5, "iou_empty": 0.0},
        "metric": {"threshold": 0.5, "region": "canvas"},
        "augment": {"views_at": "native"},
    }
