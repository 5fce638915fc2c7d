"""What adapting can reach on a shifted domain, measured before choosing an adapter: the feature-swap
ceiling of each feature level and the supervised bound of each adapter placement.

    python3 tools/reachability.py --config "configs/sam2/{domain}.py" --placements qv,qkv+proj,qv+stride4 \\
        --out runs/reachability_sam2.md
    python3 tools/reachability.py --config "configs/shift/{domain}.py" --placements qv \\
        --out runs/reachability_sam1.md   # SAM 1: one level

Feature swap (the synthetic scenes under a pixel shift: a corruption or medical): every image of
the split is rendered twice, clean and shifted (the same scene, masks and prompts); the shifted
image's prompts are decoded with the shifted image's features, with the clean image's map at one
level swapped in (each level alone), at every level but one, and at all levels (= the clean image),
by the unadapted model. A level's row says what an adapter that repaired that map perfectly could
give. The levels are the backbone's (models/family.py Backbone.feature_levels, swap_features): SAM 2
has three (stride 16: the image embedding; strides 8 and 4: the decoder's high-resolution maps), SAM
one (its image embedding). camouflage is a scene style (another rendering, no clean twin): no swap.

Supervised bound: adaptation.py on ground-truth masks and the plain images (`loss.target=ground_truth
augment.strong=false`, the benchmark's Supervised row) with LoRA at each placement (`lora.targets`,
"+" joins its targets: qv+stride4), evaluated on --split; the domain config's schedule unless
overrides change it. Runs go to <runs>/<domain>/<placement>/seed<s> and are resumable (finished ones
are read back, tools/experiments.py). A placement "full:<part>" fine-tunes the weights themselves
instead, which no LoRA reaches (the same data, loss, optimizer and schedule; no checkpoint: a stopped
run starts again): "full:encoder" the image encoder, "full:decoder" the rest of the image path
(prompt encoder and mask decoder), "full:all" both. Writes --out (markdown): both tables and the
command.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from lightning_fabric import Fabric

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datasets import DatasetSpec, build_dataset, collate  # noqa: E402
from datasets.shifts import scene_style  # noqa: E402
from engine.adapt import learning_rate, training_batches  # noqa: E402
from engine.checks import run_main  # noqa: E402
from engine.evaluate import evaluate  # noqa: E402
from engine.predictions import crop_to_region  # noqa: E402
from engine.run import set_optimizer_values  # noqa: E402
from losses.wesam_loss import wesam_loss  # noqa: E402
from models import build_wesam, check_model_config  # noqa: E402
from models.backbones import build_network, evaluation_decoding, input_sizes  # noqa: E402
from models.wesam import WeSAM, upscale_logits  # noqa: E402
from tools.benchmark_shift import DEFAULT_DOMAINS, learning_rate_schedule  # noqa: E402
from tools.experiments import RUN_ONLY_KEYS, markdown_table, mean_spread, run_cell  # noqa: E402
from utils.config import REPO_ROOT, ConfigError, flatten, load_config  # noqa: E402
from utils.files import check_output, make_folder, path_argument, write_json, write_text  # noqa: E402
from utils.metrics import SegmentationMeter  # noqa: E402

DEFAULT_CONFIG = str(REPO_ROOT / "configs" / "sam2" / "{domain}.py")
SUPERVISED = ["loss.target=ground_truth", "augment.strong=false"]  # tools/benchmark_shift.py's Supervised row
FULL = "full:"  # a placement that fine-tunes the weights of a part of the image path instead of LoRA
FULL_PARTS = ("encoder", "decoder", "all")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=path_argument, default=DEFAULT_CONFIG,
                        help=f"config file; {{domain}} in it is replaced by each domain (default: {DEFAULT_CONFIG})")
    parser.add_argument("--domains", default=",".join(DEFAULT_DOMAINS),
                        help="comma-separated values of dataset.synthetic.shift (the feature swap's rows)")
    parser.add_argument("--bound-domains", help="the domains of the supervised bound (default: --domains)")
    parser.add_argument("--split", default="val", choices=["val", "test"], help="split every number is measured on")
    parser.add_argument("--placements", default="qv",
                        help="comma-separated LoRA placements, each a '+'-joined list of lora.targets; '' for none")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds of the supervised runs")
    parser.add_argument("--runs", type=path_argument, default="runs/reachability",
                        help="folder of the supervised runs and swap results")
    parser.add_argument("--out", type=path_argument, default="runs/reachability.md",
                        help="the markdown file written")
    parser.add_argument("overrides", nargs="*", help="key=value applied to every run (e.g. opt.learning_rate=1e-3)")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.bound_domains = args.domains if args.bound_domains is None else args.bound_domains
    for name in ("domains", "bound_domains", "placements", "seeds"):
        setattr(args, name, [value for value in getattr(args, name).split(",") if value])
    return args


def domain_run(args: argparse.Namespace, domain: str, extra: Sequence[str] = ()) -> tuple[str, list[str]]:
    """The config file of `domain`'s runs on --split and their overrides: --config's, then `extra`."""
    path = args.config.replace("{domain}", domain)
    if path != args.config and not Path(path).is_file():
        raise ConfigError(f"No config for domain '{domain}': {path} does not exist. Write one (see configs/sam2/), "
                          "or pass a --config without {domain} to run every domain with one config.")
    return path, [*args.overrides, f"dataset.synthetic.shift={domain}", f"dataset.eval_split={args.split}", *extra]


def domain_config(args: argparse.Namespace, domain: str, extra: Sequence[str] = ()) -> Any:
    """The config of `domain`'s runs on --split, with the overrides and `extra`."""
    return load_config(*domain_run(args, domain, extra))


def placement_overrides(placement: str) -> list[str]:
    """'qv+stride4' -> the overrides of a supervised run with LoRA on those targets ("full:<part>": no
    LoRA key, see full_finetune)."""
    if placement.startswith(FULL):
        if placement.removeprefix(FULL) not in FULL_PARTS:
            raise ConfigError(f"--placements: '{placement}' fine-tunes an unknown part; choose one of "
                              f"{', '.join(FULL + part for part in FULL_PARTS)}.")
        return list(SUPERVISED)
    return [*SUPERVISED, f"lora.targets={placement.split('+')!r}"]


def full_model(cfg: Any, part: str) -> WeSAM:
    """The network of `cfg` without LoRA, only the parameters of `part` of its image path trainable
    ("encoder": the image encoder; "decoder": the rest, prompt encoder and mask decoder; "all")."""
    torch.manual_seed(cfg.seed)
    model = WeSAM.on(build_network(cfg.model.type, cfg.model.checkpoint or None), lora_rank=0)
    for name, parameter in model.sam.named_parameters():  # rank 0 leaves the image path trainable
        in_encoder = name.startswith("image_encoder.")
        parameter.requires_grad_(parameter.requires_grad and (part == "all" or in_encoder == (part == "encoder")))
    return model


def full_finetune(cfg: Any, part: str, out_dir: Path) -> dict[str, Any]:
    """Supervised fine-tuning of `part`'s weights (full_model) with the run of `cfg`: its training
    split, ground-truth loss, Adam and schedule, evaluated every eval_interval steps. The summary
    (direct, best, last, history, num_steps, seconds) is written to out_dir/summary.json and read
    back while the config is unchanged."""
    path = out_dir / "summary.json"
    wanted = {k: v for k, v in flatten(cfg.to_dict()).items() if k not in RUN_ONLY_KEYS}
    if path.exists() and (saved := json.loads(path.read_text()))["config"] == wanted and saved["part"] == part:
        return saved
    started = time.time()
    fabric = Fabric(accelerator="cpu", devices=1, precision=cfg.precision)
    model = full_model(cfg, part)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=cfg.opt.learning_rate, weight_decay=cfg.opt.weight_decay)
    spec = DatasetSpec.from_config(cfg, **input_sizes(cfg.model.type))
    train_set, eval_set = build_dataset(spec, "train"), build_dataset(spec, cfg.dataset.eval_split)

    def evaluation(step: int) -> dict[str, Any]:
        metrics = evaluate(fabric, model, eval_set, None, cfg.val_batch_size, threshold=cfg.metric.threshold,
                           region=cfg.metric.region, decoding=evaluation_decoding(cfg.model.type, cfg.model.decoding))
        print(f"step {step}: mIoU {metrics['miou']:.4f}", flush=True)
        return {"step": step, **metrics}

    history = [evaluation(0)]
    fabric.seed_everything(cfg.seed, verbose=False)
    batches = training_batches(fabric, train_set, cfg, 0)
    model.train()
    for step in range(cfg.num_steps):
        batch = next(batches)
        outputs = model(batch["images"], batch["images_strong"], batch["valid"], batch["prompts"], ("student",))
        loss, _ = wesam_loss(outputs, cfg.loss, cfg.teacher.mode, model.image_size, batch["masks"])
        set_optimizer_values(optimizer, learning_rate(cfg, step), cfg.opt.weight_decay)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % cfg.eval_interval == 0 or step + 1 == cfg.num_steps:
            history.append(evaluation(step + 1))
    summary = {"direct": history[0], "last": history[-1], "best": max(history, key=lambda h: h["miou"]),
               "history": history, "num_steps": cfg.num_steps, "seconds": round(time.time() - started, 1),
               "part": part, "trainable": sum(p.numel() for p in trainable), "config": wanted}
    make_folder(out_dir)
    write_json(path, summary)
    return summary


def level_sets(levels: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Row name -> the levels swapped in: none (Direct), each alone, all but each (several levels), all."""
    sets = {"shifted (Direct)": ()}
    sets |= {f"clean {level}": (level,) for level in levels}
    if len(levels) > 1:
        sets |= {f"clean all but {level}": tuple(other for other in levels if other != level) for level in levels}
    sets["clean, all levels"] = levels
    return sets


@torch.no_grad()
def feature_swap(model: WeSAM, shifted: Any, clean: Any, threshold: float, region: str,
                 decoding: str = "raw") -> dict[str, dict[str, float]]:
    """Metrics (evaluate()'s mIoU, F1, area ratio) of the unadapted `model` on the shifted split
    `shifted`, decoded as `decoding` says (evaluate's), for each set of levels (level_sets) whose maps
    come from the same scene in `clean`."""
    backbone = model.backbone
    sets = level_sets(backbone.feature_levels)
    meters = {name: SegmentationMeter() for name in sets}
    model.eval()
    for index in range(len(shifted)):
        sample, twin = shifted[index], clean[index]
        masks = sample["masks"]
        if not len(masks):
            continue
        if not torch.equal(masks, twin["masks"]):
            raise RuntimeError(f"Image {index}: the clean twin's masks differ from the shifted image's.")
        batch = collate([sample, twin])
        outputs = model.predict(batch["images"], batch["valid"], batch["prompts"], adapter=None)
        features, donor = outputs["features"]
        for name, levels in sets.items():
            logits, _ = model.decode(backbone.swap_features(features, donor, levels), sample["prompts"], decoding)
            pred = upscale_logits(logits.float(), masks.shape[-1])[:, 0] > threshold
            meters[name].update(crop_to_region(pred, sample["valid"], region),
                                crop_to_region(masks, sample["valid"], region))
    return {name: SegmentationMeter.compute(meter.totals) for name, meter in meters.items()}


def swap_results(args: argparse.Namespace, domain: str) -> dict[str, dict[str, float]] | None:
    """feature_swap of `domain` on --split (cached in <runs>/<domain>/swap-<split>.json with what it
    was measured with); None for a domain without a clean twin (camouflage)."""
    cfg = domain_config(args, domain)
    if cfg.dataset.name != "synthetic":
        raise ConfigError(f"The feature swap renders each scene clean and shifted: it needs dataset.name=synthetic "
                          f"(--config gives {cfg.dataset.name}).")
    if scene_style(domain) != "source" or domain == "none":
        return None
    decoding = evaluation_decoding(cfg.model.type, cfg.model.decoding)
    key = {"model": cfg.model.type, "checkpoint": cfg.model.checkpoint, "prompt": cfg.prompt, "seed": cfg.seed,
           "split": args.split, "images": cfg.dataset.synthetic.to_dict(), "threshold": cfg.metric.threshold,
           "region": cfg.metric.region, "decoding": decoding}
    cache = Path(args.runs) / domain / f"swap-{args.split}.json"
    if cache.exists() and (saved := json.loads(cache.read_text()))["key"] == key:
        return saved["metrics"]
    torch.manual_seed(cfg.seed)
    model = build_wesam(cfg)
    sizes = input_sizes(cfg.model.type)
    spec = DatasetSpec.from_config(cfg, **sizes)
    clean_spec = DatasetSpec.from_config(domain_config(args, domain, ["dataset.synthetic.shift=none"]), **sizes)
    started = time.time()
    metrics = feature_swap(model, build_dataset(spec, args.split), build_dataset(clean_spec, args.split),
                           cfg.metric.threshold, cfg.metric.region, decoding)
    print(f"{domain}: feature swap on {args.split} in {time.time() - started:.0f} s: "
          + ", ".join(f"{name} {100 * m['miou']:.1f}" for name, m in metrics.items()), flush=True)
    make_folder(cache.parent)
    write_json(cache, {"key": key, "metrics": metrics})
    return metrics


def supervised_runs(args: argparse.Namespace, domain: str, placement: str) -> list[dict[str, Any]]:
    """The summaries of the supervised runs of `placement` on `domain`, one per seed (run if not done)."""
    runs = []
    for seed in args.seeds:
        out_dir = Path(args.runs) / domain / placement.replace(":", "_") / f"seed{seed}"
        print(f"{domain} / supervised, {placement} / seed {seed}", flush=True)
        path, overrides = domain_run(args, domain, [f"seed={seed}", *placement_overrides(placement)])
        if placement.startswith(FULL):
            runs.append(full_finetune(load_config(path, overrides), placement.removeprefix(FULL), out_dir))
        else:
            runs.append(run_cell(out_dir, overrides, path))
    return runs


def trainable_parameters(args: argparse.Namespace, domain: str, placement: str) -> int:
    """How many parameters a LoRA at `placement` trains (or full fine-tuning of its part)."""
    cfg = domain_config(args, domain, placement_overrides(placement))
    model = full_model(cfg, placement.removeprefix(FULL)) if placement.startswith(FULL) else build_wesam(cfg)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def bound_cell(runs: list[dict[str, Any]]) -> str:
    """'+gain at the last step (best +gain at step s)' over seeds, in points against Direct."""
    direct = np.mean([run["direct"]["miou"] for run in runs])
    last = [run["last"]["miou"] - direct for run in runs]
    best = max((h["miou"], h["step"]) for run in runs for h in run["history"]) if len(runs) == 1 else None
    text = f"{100 * np.mean(last):+.1f}" + (f" ± {100 * np.std(last):.1f}" if len(runs) > 1 else "")
    return text + (f" (best {100 * (best[0] - direct):+.1f} at step {best[1]})" if best else "")


def report(args: argparse.Namespace, swaps: dict[str, Any], bounds: dict[tuple[str, str], list[dict[str, Any]]],
           sizes: dict[str, int]) -> str:
    cfg = domain_config(args, args.domains[0])
    command = shlex.join(["python3", "tools/reachability.py", *args.argv])
    schedules = "; ".join(f"{domain}: {learning_rate_schedule(domain_config(args, domain))}"
                          for domain in args.bound_domains)
    lines = [
        "# Reachability: what fixing each feature map could give, and what each adapter placement reaches\n",
        f"SAM `{cfg.model.type}` (weights `{cfg.model.checkpoint or 'random'}`), synthetic scenes, the `{args.split}` "
        f"split ({cfg.dataset.synthetic.to_dict()[f'num_{args.split}']} images), {cfg.prompt} prompts. Written by "
        f"`{command}` on {platform.machine()} ({time.strftime('%Y-%m-%d')}).\n",
        "## Feature-swap ceiling\n",
        "mIoU in % of the unadapted model on the shifted images, with the clean image's feature map swapped in at "
        "the levels named (the same scene rendered without the shift; change against Direct in points). "
        "Levels by their stride: the coarsest is the image embedding the decoder's transformer attends to; "
        "finer ones (SAM 2's stride8 and stride4) are the high-resolution maps of its mask upsampling.\n",
    ]
    names = next((list(m) for m in swaps.values() if m), [])
    if names:
        rows = []
        for domain in args.domains:
            metrics = swaps[domain]
            if metrics is None:
                rows.append([domain] + ["no clean twin (a scene style)"] + [""] * (len(names) - 1))
                continue
            direct = metrics[names[0]]["miou"]
            rows.append([domain, f"{100 * direct:.1f}"] + [f"{100 * metrics[n]['miou']:.1f} "
                                                             f"({100 * (metrics[n]['miou'] - direct):+.1f})"
                                                             for n in names[1:]])
        lines.append(markdown_table(["domain", *names], rows))
    if args.placements:
        lines += [
            "## Supervised bound per placement\n",
            f"The same adaptation on ground-truth masks and the plain images (`{' '.join(SUPERVISED)}`), LoRA rank "
            f"{cfg.lora.rank} at each placement (`lora.targets`), {cfg.num_steps} steps, each domain's schedule "
            f"({schedules}); change in mIoU points against Direct at the last step"
            + (f", mean ± std over seeds {', '.join(args.seeds)}" if len(args.seeds) > 1 else
               f", seed {args.seeds[0]} (its best evaluation in brackets)") + ".\n",
        ]
        header = ["placement (lora.targets)", "trained parameters"] + list(args.bound_domains)
        rows = [["Direct", "–"] + [mean_spread([r["direct"]["miou"] for r in bounds[(d, args.placements[0])]])
                                   for d in args.bound_domains]]
        rows += [[f"`{placement}`", f"{sizes[placement]:,}"] + [bound_cell(bounds[(domain, placement)])
                                                                 for domain in args.bound_domains]
                 for placement in args.placements]
        lines.append(markdown_table(header, rows))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> str:
    args = parse_args(argv)
    out = check_output(args.out, "--out")
    check_output(args.runs, "--runs", "folder")
    for domain in {*args.domains, *args.bound_domains}:  # a bad key, value or target, or a missing config, fails here
        for placement in args.placements or [""]:
            check_model_config(domain_config(args, domain, placement_overrides(placement) if placement else []))
    swaps = {domain: swap_results(args, domain) for domain in args.domains}
    bounds = {(domain, placement): supervised_runs(args, domain, placement)
              for domain in args.bound_domains for placement in args.placements}
    sizes = {placement: trainable_parameters(args, args.bound_domains[0], placement) for placement in args.placements}
    text = report(args, swaps, bounds, sizes)
    make_folder(out.parent)
    write_text(out, text)
    print(text)
    print(f"Wrote {out}")
    return text


if __name__ == "__main__":
    run_main(main)
