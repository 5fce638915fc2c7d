"""The configuration a user edits. Only the keys set here override configs/base_config.py;
see that file for every option and its meaning.

    python adaptation.py                      # this file
    python adaptation.py --config my_cfg.py   # another file with a `config` dict
    python adaptation.py prompt=point opt.learning_rate=5e-5   # dotted overrides on top

As shipped it is the embedded default: the source-pretrained small SAM (models/weights/, made by
tools/pretrain_source_sam.py) adapted with box prompts to synthetic scenes under glass blur, on
the CPU. Steps and learning rate were chosen on the validation split of glass_blur
(results/embedded_default.md); configs/shift/ holds each benchmark domain's config.
For real data set model.type / model.checkpoint and the dataset (PREPARE.md), and go back to the
paper's optimisation (opt.learning_rate 1e-4, opt.warmup_steps 250), or start from configs/paper/.
"""

config = {
    "out_dir": "runs/default",
    "num_steps": 300,  # chosen on the validation split (results/embedded_default.md)
    "eval_interval": 50,
    "val_batch_size": 8,
    "dataset": {
        "synthetic": {
            "shift": "glass_blur",
            "num_train": 200,
            "num_val": 100,
            "num_test": 100,
        },
    },
    "model": {
        "type": "vit_small",
        "checkpoint": "models/weights/vit_small_source.safetensors",
    },
    # prompt_source=auto with the shipped vit_small, chosen on the validation split (README, "Adapting with no labels")
    "auto": {
        "multimask": False,  # the shipped model was trained on the single-mask output only
        # its predicted IoU and stability are lower than ViT-H's, for which SAM's defaults were set
        "pred_iou_thresh": 0.5,
        "stability_score_thresh": 0.3,
    },
    "opt": {
        "learning_rate": 4e-3,  # with the decay below: best on glass_blur's validation split; ViT-B uses 1e-4
        "warmup_steps": 20,
        "decay_steps": [100, 150],  # after the early rise, so self-training stops drifting
        "decay_factor": 0.25,
    },
}
