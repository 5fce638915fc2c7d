"""The configuration a user edits. Only the keys set here override configs/base_config.py;
see that file for every option and its meaning.

    python adaptation.py                      # this file
    python adaptation.py --config my_cfg.py   # another file with a `config` dict
    python adaptation.py prompt=point opt.learning_rate=5e-5   # dotted overrides on top

As shipped it is the embedded default: the tiny SAM on synthetic low-contrast scenes, on the CPU.
For real data set model.type / model.checkpoint and the dataset (PREPARE.md), and go back to the
paper's optimisation (opt.learning_rate 1e-4, opt.warmup_steps 250).
"""

config = {
    "out_dir": "runs/default",
    "num_steps": 200,
    "eval_interval": 50,
    "opt": {
        "learning_rate": 1e-3,  # the tiny SAM needs a larger step than ViT-B's 1e-4
        "warmup_steps": 20,
    },
}
