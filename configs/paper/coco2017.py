"""COCO 2017 (natural images) as in the WeSAM paper: the natural clean images table, columns "COCO box
/ point / poly" (configs/paper/results.py, table "natural").

Settings of the authors' code: SAM ViT-B from the official checkpoint, fed RGB / 255 without SAM's
normalisation and padded centred (so that Direct matches the paper's), LoRA rank 4, Adam lr 1e-4
and weight decay 1e-4, 250 warm-up steps, batch 1, at most 40 instances per image.

Budget: 5 epochs at batch 1, the released code's num_epochs (and the "(1e-4, 5)" setting that the
authors' issue #18 calls the paper's); the authors' later code instead runs 40,000 // N epochs on 4
GPUs. Only COCO val2017 is used: its 6:1 interleave on sorted image ids gives 4,286 training
images, about 4,240 once the images without a usable annotation are dropped, so 5 x 4,240 = 21,200
steps, evaluated once per epoch (4,240 steps) as the authors did.

    python adaptation.py --config configs/paper/coco2017.py [prompt=point|coarse]
"""

config = {
    "out_dir": "runs/paper/coco2017",
    "num_steps": 21200,  # 5 epochs of about 4,240 training images
    "eval_interval": 4240,  # one epoch
    "batch_size": 1,
    "max_nums": 40,
    "prompt": "box",
    "dataset": {
        "name": "coco2017",
        "root": "data/coco2017",  # val2017/, annotations/instances_val2017.json (PREPARE.md)
        "eval_split": "test",  # the 1 part of the 6:1 interleave (val is the same)
    },
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
