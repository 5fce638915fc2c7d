"""What every configs/paper file shares: the authors' settings (SAM ViT-B from the official
checkpoint, fed RGB / 255 without SAM's normalisation and padded centred so that Direct matches
the paper's; LoRA rank 4; Adam lr 1e-4, weight decay 1e-4, 250 warm-up steps; batch 1; at most 40
instances per image) and their budget: 5 epochs at batch 1 (the released code's num_epochs, and the
"(1e-4, 5)" setting that the authors' issue #18 calls the paper's), evaluated once per epoch. The
authors' later code instead runs 40,000 // N epochs on 4 GPUs."""

from __future__ import annotations

from typing import Any

EPOCHS = 5


def paper_config(dataset: str, root: str, train_images: int, **dataset_keys: Any) -> dict[str, Any]:
    """The config of one paper dataset whose training split has `train_images` images."""
    return {
        "out_dir": f"runs/paper/{dataset}",
        "num_steps": EPOCHS * train_images,
        "eval_interval": train_images,  # one epoch
        "batch_size": 1,
        "max_nums": 40,
        "prompt": "box",
        "dataset": {"name": dataset, "root": root, "eval_split": "test", **dataset_keys},
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
        },
    }
