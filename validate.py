"""Evaluate SAM on a dataset's eval split: unadapted ("Direct") or with a WeSAM adapter.

    python validate.py [--config FILE] [--ckpt FILE] [--out FILE.json] [--per-image FILE.csv]
                       [--visualize N] [key=value ...]

--ckpt takes an adapter (best-lora.safetensors / last-lora.safetensors) or a run's last.ckpt;
without --config, the config.json of the run that wrote it is used (else configs/config.py).
Prints mIoU and F1; --out writes {"dataset", "prompt", "miou", "f1", "area_ratio", "num_images", "num_instances",
"skipped_images"}. --per-image writes one row per image (with --ckpt also Direct's scores and the
gain); --visualize N draws the N images of largest gain and loss against Direct beside --out.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Sequence

from lightning_fabric import Fabric

from datasets import DatasetSpec, InstanceDataset, build_dataset, files_report
from datasets.instances import display_pixels
from engine.checks import check_outputs, check_scored, config_inputs, run_main
from engine.checkpoint import load_student_adapter
from engine.evaluate import evaluate
from engine.predictions import crop_to_region, per_image_scores, sample_logits
from engine.run import announce_precision, set_process_options
from models import build_wesam, check_model_config
from models.lora import STUDENT
from models.backbones import evaluation_decoding, input_sizes
from models.wesam import WeSAM
from utils.config import ConfigError, config_of, load_config
from utils.files import check_output, path_argument, writing, write_csv, write_json


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=path_argument,
                        help="Python file with a `config` dict, a run's config.json or a YAML file of config keys "
                             "(default: the config.json of the run that wrote --ckpt, else configs/config.py)")
    parser.add_argument("--ckpt", type=path_argument,
                        help="adapter .safetensors or last.ckpt; without it, the unadapted SAM")
    parser.add_argument("--out", type=path_argument, help="write the metrics to this JSON file")
    parser.add_argument("--per-image", type=path_argument,
                        help="write per-image metrics to this CSV file (with --ckpt: Direct's too)")
    parser.add_argument("--visualize", type=int, default=0, metavar="N",
                        help="with --ckpt and --out: pictures of the N images of largest gain and loss against "
                             "Direct, in the folder <out without .json>-visualize/")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. prompt=point")
    return parser.parse_args(argv)


def per_image_rows(model: WeSAM, dataset: InstanceDataset, adapted: bool, metric: Any,
                   decoding: str) -> list[dict[str, Any]]:
    """per_image_scores of the evaluated model (config `metric` section, `decoding`); when adapted,
    with Direct's scores and the gain."""
    rows = per_image_scores(model, dataset, STUDENT if adapted else None, metric.threshold, metric.region, decoding)
    if adapted:
        for row, direct in zip(rows, per_image_scores(model, dataset, None, metric.threshold, metric.region,
                                                      decoding)):
            gain = None if row["miou"] is None else row["miou"] - direct["miou"]
            row.update(direct_miou=direct["miou"], direct_f1=direct["f1"], gain=gain)
    return rows


def visualize_folder(out: str) -> Path:
    """The folder of --visualize's pictures: beside the --out JSON, named after it."""
    return Path(out).with_name(f"{Path(out).stem}-visualize")


def visualize(model: WeSAM, dataset: InstanceDataset, rows: list[dict[str, Any]], count: int, folder: Path,
              threshold: float = 0.0, decoding: str = "raw") -> None:
    """Pictures of the ceil(count / 2) images of largest gain and the floor(count / 2) of largest loss."""
    from utils.visualize import save_comparison

    scored = sorted((r for r in rows if r["gain"] is not None), key=lambda r: r["gain"])
    gains = scored[::-1][:math.ceil(count / 2)]
    losses = [r for r in scored if r not in gains][:count // 2]
    for rank, row in enumerate(gains + losses):
        sample = dataset[row["index"]]
        top, left = sample["valid"][:2].tolist()
        image = display_pixels(crop_to_region(sample["image"], sample["valid"], "image"))
        panels = [(f"Direct: mIoU {row['direct_miou']:.3f}",
                   (sample_logits(model, sample, None, decoding=decoding) > threshold).cpu().numpy()),
                  (f"adapted: mIoU {row['miou']:.3f}",
                   (sample_logits(model, sample, STUDENT, decoding=decoding) > threshold).cpu().numpy()),
                  ("ground truth", crop_to_region(sample["masks"], sample["valid"], "image").numpy())]
        name = f"{rank:02d}_{'gain' if row in gains else 'loss'}{100 * row['gain']:+.1f}_image{row['index']}.png"
        with writing(folder / name):
            save_comparison(folder / name, f"{row['image']}: {100 * row['gain']:+.1f} mIoU points", image,
                            sample["prompts"], (top, left), panels)
    print(f"Wrote {len(gains) + len(losses)} pictures (largest gains, then largest losses) to {folder}")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.visualize and not (args.ckpt and args.out):
        raise ConfigError("--visualize compares an adapter with Direct and writes beside the JSON: "
                          "give --ckpt FILE and --out FILE.json too.")
    if args.visualize < 0:
        raise ConfigError(f"--visualize takes a number of images, 0 or more; got {args.visualize}.")
    for path, option in ((args.out, "--out"), (args.per_image, "--per-image")):
        if path is not None:
            check_output(path, option)
    if args.visualize:
        check_output(visualize_folder(args.out), "--visualize's folder", "folder", instead="--out")
    config = config_of(args.config, args.ckpt)
    cfg = load_config(config, args.overrides)
    check_model_config(cfg)  # before Fabric starts any process
    check_outputs([(option, path) for option, path in (("--out", args.out), ("--per-image", args.per_image)) if path],
                  [("--ckpt", args.ckpt), *config_inputs(cfg, config)])
    set_process_options(cfg)
    announce_precision(cfg.precision, cfg.accelerator)
    fabric = Fabric(accelerator=cfg.accelerator, devices=cfg.devices, strategy=cfg.strategy, precision=cfg.precision)
    fabric.launch()
    model = build_wesam(cfg)
    adapter = None
    if args.ckpt:
        load_student_adapter(model.sam, args.ckpt, cfg.model.type, cfg.lora.rank, cfg.lora.targets)
        adapter = STUDENT
    model = fabric.to_device(model)  # evaluation only: no DDP wrapper needed
    dataset = build_dataset(DatasetSpec.from_config(cfg, **input_sizes(cfg.model.type)), cfg.dataset.eval_split)
    if report := files_report([dataset.inventory]):  # every file used or named
        fabric.print(report)
    decoding = evaluation_decoding(cfg.model.type, cfg.model.decoding)
    metrics = evaluate(fabric, model, dataset, adapter, cfg.val_batch_size, cfg.num_workers,
                       threshold=cfg.metric.threshold, region=cfg.metric.region, decoding=decoding)
    check_scored(metrics, cfg)
    result = {"dataset": cfg.dataset.name, "prompt": cfg.prompt, **metrics}
    label = f"WeSAM ({args.ckpt})" if args.ckpt else "Direct (unadapted SAM)"
    fabric.print(f"{label} on {cfg.dataset.name}/{cfg.dataset.eval_split}, prompt {cfg.prompt}, decoding {decoding}: "
                 f"mIoU {metrics['miou']:.4f}  F1 {metrics['f1']:.4f}  "
                 f"({metrics['num_images']} images, {metrics['num_instances']} instances)")
    if fabric.global_rank != 0:
        return result
    if args.out:
        write_json(args.out, result)
    if args.per_image or args.visualize:
        model.eval()
        rows = per_image_rows(model, dataset, adapter is not None, cfg.metric, decoding)
        if args.per_image:
            fields = (["index", "image", "instances", "miou", "f1"]
                      + (["direct_miou", "direct_f1", "gain"] if adapter else []))
            write_csv(args.per_image, rows, fields)
        if args.visualize:
            visualize(model, dataset, rows, args.visualize, visualize_folder(args.out), cfg.metric.threshold,
                      decoding)
    return result


if __name__ == "__main__":
    run_main(main)
