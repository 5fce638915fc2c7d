"""Evaluate SAM on a dataset's eval split: unadapted ("Direct") or with a WeSAM adapter.

    python validate.py [--config FILE] [--ckpt FILE] [--out FILE.json] [key=value ...]

--ckpt takes an adapter (best-lora.safetensors / last-lora.safetensors) or a run's last.ckpt.
Prints mIoU and F1; --out writes {"dataset", "prompt", "miou", "f1", "area_ratio", "num_images", "num_instances",
"skipped_images"}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from lightning_fabric import Fabric

from datasets import UnusableDatasetError, build_dataset
from models import CheckpointError, build_wesam
from models.lora import STUDENT, load_adapter_state_dict
from utils.checkpoint import load_adapter, load_state, write_json
from utils.config import ConfigError, load_config
from utils.evaluate import evaluate


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="Python file with a `config` dict, or a run's config.json "
                                         "(default: configs/config.py)")
    parser.add_argument("--ckpt", help="adapter .safetensors or last.ckpt; without it, the unadapted SAM")
    parser.add_argument("--out", help="write the metrics to this JSON file")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. prompt=point")
    return parser.parse_args(argv)


def read_student_adapter(path: Path, cfg) -> dict:
    """Student LoRA weights from an adapter file or a last.ckpt, checked against the config."""
    if path.suffix == ".ckpt":
        state = load_state(path)
        weights = state["lora"][STUDENT]
        metadata = {"model_type": state["config"]["model"]["type"], "lora_rank": state["config"]["lora"]["rank"]}
    else:
        weights, metadata = load_adapter(path)
    for key, value in (("model_type", cfg.model.type), ("lora_rank", cfg.lora.rank)):
        if key in metadata and metadata[key] != value:
            config_key = "model.type" if key == "model_type" else "lora.rank"
            raise ConfigError(f"Checkpoint '{path}' was trained with {config_key}={metadata[key]!r} but the config "
                              f"has {value!r}; pass {config_key}={metadata[key]} or the run's config.json.")
    return weights


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    fabric = Fabric(accelerator=cfg.accelerator, devices=cfg.devices, strategy=cfg.strategy, precision=cfg.precision)
    fabric.launch()
    model = build_wesam(cfg)
    adapter = None
    if args.ckpt:
        load_adapter_state_dict(model.sam, read_student_adapter(Path(args.ckpt), cfg), STUDENT)
        adapter = STUDENT
    model = fabric.to_device(model)  # evaluation only: no DDP wrapper needed
    dataset = build_dataset(cfg, cfg.dataset.eval_split)
    metrics = evaluate(fabric, model, dataset, adapter, cfg.val_batch_size, cfg.num_workers,
                       threshold=cfg.metric.threshold, region=cfg.metric.region)
    result = {"dataset": cfg.dataset.name, "prompt": cfg.prompt, **metrics}
    label = f"WeSAM ({args.ckpt})" if args.ckpt else "Direct (unadapted SAM)"
    fabric.print(f"{label} on {cfg.dataset.name}/{cfg.dataset.eval_split}, prompt {cfg.prompt}: "
                 f"mIoU {metrics['miou']:.4f}  F1 {metrics['f1']:.4f}  "
                 f"({metrics['num_images']} images, {metrics['num_instances']} instances)")
    if args.out and fabric.global_rank == 0:
        write_json(args.out, result)
    return result


if __name__ == "__main__":
    try:
        main()
    except (ConfigError, CheckpointError, FileNotFoundError, UnusableDatasetError) as error:
        sys.exit(f"Error: {error}")
