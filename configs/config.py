"""The configuration a user edits. Only the keys set here override configs/base_config.py;
see that file for every option and its meaning.

    python adaptation.py                      # this file
    python adaptation.py --config my_cfg.py   # another file with a `config` dict
    python adaptation.py prompt=point opt.learning_rate=5e-5   # dotted overrides on top
"""

config = {
    "out_dir": "runs/default",
}
