"""Adapt SAM to a target domain with WeSAM: weakly supervised self-training with an anchor and an
instance contrastive loss, LoRA on the image encoder.

    python adaptation.py [--config FILE] [key=value ...]
    python adaptation.py --resume OUT_DIR/checkpoints/last.ckpt [out_dir=NEW_DIR] [key=value ...]

Writes to out_dir: config.json, metrics.csv, summary.json, tensorboard/ and checkpoints/
(last.ckpt to resume, written at every evaluation and every save_interval steps;
best-lora.safetensors and last-lora.safetensors adapters, written at every evaluation). A new run
needs an out_dir that holds no run, nor files of someone else that it would replace; a resumed run
continues in its checkpoint's run folder, or in the new folder out_dir= names.
Ctrl-C or SIGTERM during training saves last.ckpt at the end of the step and prints the --resume
command; a mistake in the config, the data or a file stops with a message (engine/checks.py).

This script reads the command line; the run is engine/adapt.py adapt(): its state is engine/run.py
RunState, a step happens in adapt()'s loop, the files are written by engine/run.py RunFiles (people's
files) and engine/checkpoint.py (last.ckpt).
"""

from __future__ import annotations

import argparse
from typing import Any, Sequence

from engine.adapt import adapt
from engine.checks import run_main
from engine.resume import resume_config
from utils.config import load_config
from utils.files import path_argument


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=path_argument,
                        help="Python file with a `config` dict, a run's config.json, or a YAML file of config keys "
                             "(default: configs/config.py)")
    parser.add_argument("--resume", type=path_argument,
                        help="continue the run of this <run>/checkpoints/last.ckpt: its config, then the keys of its "
                             "config.json edited by hand, of --config, and key=value overrides (out_dir=DIR: "
                             "continue in the new folder DIR)")
    parser.add_argument("overrides", nargs="*",
                        help="dotted config overrides, e.g. prompt=point opt.learning_rate=5e-5")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.resume:
        cfg = resume_config(args.resume, args.overrides, args.config)
    else:
        cfg = load_config(args.config, args.overrides)
    return adapt(cfg, resume=args.resume)


if __name__ == "__main__":
    run_main(main)
