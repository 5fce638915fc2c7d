"""The automatic instances of prompt_source=auto on one split, and how they match its labels:
what settles the `auto` settings on the validation split, and reads a run's cache.

    python tools/auto_instances.py [--config FILE] [--split train|val|test] [key=value ...]
    python tools/auto_instances.py --config configs/shift/medical.py --split val auto.top_k=6
    python tools/auto_instances.py --config configs/shift/medical.py \\
        auto.cache=runs/shift_benchmark/medical/auto_instances

Finds the instances with the frozen anchor (or reads them from auto.cache, default
out_dir/auto_instances; the training split's file is the one adaptation.py uses) and prints their
number, the recall of the split's ground-truth objects at IoU 0.5, their mean best IoU, and the
fractions of the instances that match an object, are parts of one, or lie on the background.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datasets import DatasetSpec, build_dataset, files_report  # noqa: E402
from engine.auto_instances import cached_instances, describe, summarize  # noqa: E402
from engine.checks import run_main  # noqa: E402
from engine.run import set_process_options  # noqa: E402
from models import build_wesam  # noqa: E402
from models.backbones import input_sizes  # noqa: E402
from utils.config import load_config  # noqa: E402
from utils.files import check_output, path_argument  # noqa: E402


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=path_argument, help="config file (default: configs/config.py)")
    parser.add_argument("--split", default="train", choices=("train", "val", "test"))
    parser.add_argument("overrides", nargs="*", help="key=value, e.g. auto.top_k=6")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, ["prompt_source=auto", *args.overrides])
    set_process_options(cfg)
    name = "anchor.json" if args.split == "train" else f"anchor-{args.split}.json"
    cache = Path(cfg.auto.cache or Path(cfg.out_dir) / "auto_instances") / name
    if not cache.is_file():  # made and written by this run
        check_output(cache, "The cache file", instead="auto.cache" if cfg.auto.cache else "out_dir")
    dataset = build_dataset(DatasetSpec.from_config(cfg, **input_sizes(cfg.model.type)), args.split)
    if report := files_report([dataset.inventory]):  # every file used or named
        print(report)
    _, record = cached_instances(cache, build_wesam(cfg), dataset, cfg.auto, cfg.model.pad, diagnostic=True)
    print(f"{cfg.dataset.name}/{args.split} ({len(dataset)} images): {describe(record)}")
    summary = summarize(record)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    run_main(main)
