"""Adapt SAM to a target domain with WeSAM: weakly supervised self-training with an anchor and an
instance contrastive loss, LoRA on the image encoder.

    python adaptation.py [--config FILE] [key=value ...]
    python adaptation.py --resume OUT_DIR/checkpoints/last.ckpt [key=value ...]

Writes to out_dir: config.json, metrics.csv, summary.json, tensorboard/ and checkpoints/
(last.ckpt to resume, written at every evaluation and every save_interval steps;
best-lora.safetensors and last-lora.safetensors adapters, written at every evaluation).
Ctrl-C or SIGTERM during training saves last.ckpt at the end of the step and prints the --resume
command; a mistake in the config, the data or a file stops with a message (utils/checks.py).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist
from lightning_fabric import Fabric
from lightning_fabric.loggers import TensorBoardLogger
from torch.utils.data import DataLoader
from tqdm import tqdm

from datasets import DatasetSpec, StepSampler, build_dataset, collate
from datasets.auto_prompts import cached_instances, describe, summarize
from losses.wesam_loss import loss_branches, wesam_loss
from models import build_wesam
from models.lora import STUDENT, TEACHER, adapter_state_dict, load_adapter_state_dict
from models.registry import sam_embedding_size
from utils.checkpoint import STATE_KEYS, load_state, rng_state, save_adapter, save_state, set_rng_state, write_csv, write_json
from utils.checks import (RunStopped, StopOnSignal, check_config_file, check_scored, check_train_split,
                          check_training_config, run_main, stop_requested)
from utils.config import ConfigError, flatten, load_config
from utils.evaluate import evaluate


# Keys whose change would not fit the saved weights or would start writing over another run.
FIXED_ON_RESUME = ("model.type", "lora.rank", "teacher.mode", "out_dir")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="Python file with a `config` dict, or a run's config.json "
                                         "(default: configs/config.py)")
    parser.add_argument("--resume", help="continue the run of this last.ckpt (its config, then key=value overrides)")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. prompt=point opt.learning_rate=5e-5")
    return parser.parse_args(argv)


def learning_rate_factor(step: int, warmup_steps: int, decay_steps: Sequence[int], decay_factor: float,
                         from_zero: bool = False) -> float:
    """Linear warm-up over warmup_steps, (step + 1) / warmup_steps, or step / warmup_steps with
    `from_zero` (the authors' code, whose first step runs at lr 0); then x decay_factor at each
    step of decay_steps."""
    if step < warmup_steps:
        return (step + (0 if from_zero else 1)) / warmup_steps
    return decay_factor ** sum(step >= s for s in decay_steps)


def gather_objects(fabric: Fabric, obj: Any) -> list[Any]:
    """The object of every rank, in rank order."""
    if fabric.world_size == 1:
        return [obj]
    gathered = [None] * fabric.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def all_ranks_true(fabric: Fabric, flag: bool) -> bool:
    if fabric.world_size == 1:
        return flag
    return bool(fabric.all_reduce(torch.tensor(float(flag), device=fabric.device), reduce_op="min") > 0)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    state = None
    if args.resume:
        state = load_state(args.resume, required=STATE_KEYS)
        # the run continues where its checkpoint is now, even if its folder was moved or copied
        run_config = dict(state["config"], out_dir=str(Path(args.resume).parent.parent))
        cfg = load_config(overrides=args.overrides, user_config=run_config, source=f"checkpoint '{args.resume}'")
        saved, requested = flatten(run_config), flatten(cfg)
        for key in FIXED_ON_RESUME:
            if requested[key] != saved[key]:
                raise ConfigError(f"{key} cannot change when resuming (the checkpoint has {saved[key]!r}); "
                                  "start a new run in another out_dir instead.")
    else:
        check_config_file(args.config)
        cfg = load_config(args.config, args.overrides)
    check_training_config(cfg)
    out_dir = Path(cfg.out_dir)
    ckpt_dir = out_dir / "checkpoints"
    if state is None and (ckpt_dir / "last.ckpt").exists():
        raise ConfigError(f"'{out_dir}' already holds a run. Continue it with --resume {ckpt_dir / 'last.ckpt'} "
                          "or choose another out_dir=...")

    fabric = Fabric(accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes, strategy=cfg.strategy,
                    precision=cfg.precision, loggers=TensorBoardLogger(out_dir, name="tensorboard", version=""))
    fabric.launch()
    is_main = fabric.global_rank == 0

    model = build_wesam(cfg)
    image_size = model.image_size
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=cfg.opt.learning_rate, weight_decay=cfg.opt.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_factor(
        step, cfg.opt.warmup_steps, cfg.opt.decay_steps, cfg.opt.decay_factor, cfg.opt.warmup_from_zero))
    model, optimizer = fabric.setup(model, optimizer)

    data = DatasetSpec.from_config(cfg, image_size, sam_embedding_size(cfg.model.type))
    train_set = build_dataset(data, "train")
    check_train_split(len(train_set), cfg)
    eval_set = build_dataset(data, cfg.dataset.eval_split)
    adapters = (STUDENT, TEACHER) if cfg.teacher.mode == "ema" else (STUDENT,)
    # prompt_source=auto refreshes its instances with the adapter that makes the pseudo-labels
    refresh_adapter = TEACHER if cfg.teacher.mode == "ema" else STUDENT
    fabric.print(f"WeSAM on {cfg.dataset.name}: SAM {cfg.model.type} ({image_size}px, "
                 f"{sum(p.numel() for p in trainable):,} trainable LoRA parameters), teacher {cfg.teacher.mode}, "
                 f"prompt {cfg.prompt}; {len(train_set)} training images, {cfg.num_steps} steps of "
                 f"{cfg.batch_size} image(s) x {fabric.world_size} device(s) ({fabric.device.type}, {cfg.precision})")
    metadata = {"model_type": cfg.model.type, "lora_rank": cfg.lora.rank, "dataset": cfg.dataset.name, "prompt": cfg.prompt}

    def evaluate_now(adapter: str | None, step: int) -> dict[str, Any]:
        metrics = evaluate(fabric, model.module, eval_set, adapter, cfg.val_batch_size, cfg.num_workers,
                           description=f"eval step {step}", threshold=cfg.metric.threshold, region=cfg.metric.region)
        check_scored(metrics, cfg)
        return {"step": step, **metrics}

    def find_instances(at_step: int) -> dict[str, Any]:
        """prompt_source=auto: give the training split the instances found in everything mode by the
        anchor (step 0), or by the adapted model at a refresh step (a new training set that takes
        them); cached in out_dir/auto_instances/."""
        nonlocal train_set
        adapter, origin = (None, "anchor") if at_step == 0 else (refresh_adapter, f"{refresh_adapter} at step {at_step}")
        if at_step == 0:
            path = Path(cfg.auto.cache or out_dir / "auto_instances") / "anchor.json"
        else:  # made by this run's own weights: never shared
            path = out_dir / "auto_instances" / f"refresh-{at_step:06d}.json"
        instances, record = cached_instances(path, model.module, train_set, cfg.auto,
                                             cfg.model.pad, adapter, origin, is_main, fabric.barrier,
                                             diagnostic=cfg.auto.diagnostic and at_step == 0, log=fabric.print)
        train_set = build_dataset(data, "train", auto_instances=instances)
        fabric.print(f"Automatic instances ({origin}): {describe(record)}")
        return summarize(record)

    if is_main:  # on resume too: the config now includes the overrides given with --resume
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "config.json", cfg.to_dict())
    auto_instances: dict[str, Any] | None = None  # the anchor's instances: how many, their recall (summary.json)
    if cfg.prompt_source == "auto":
        auto_instances = find_instances(0)
        refresh = cfg.auto.refresh_every
        if refresh and state is not None and state["step"] >= refresh:  # the instances the run was training on
            find_instances(state["step"] - state["step"] % refresh)
    if state is None:
        # making the anchor's instances is part of the run's time (none when another run made them)
        step, history = 0, []
        seconds_before = auto_instances["seconds"] if auto_instances and auto_instances["built"] else 0.0
        fabric.print(f"Evaluating the unadapted SAM (Direct) on {cfg.dataset.name}/{cfg.dataset.eval_split} "
                     f"({len(eval_set)} images, prompt {cfg.prompt})")
        direct = evaluate_now(None, 0)
        best = dict(direct)
        fabric.seed_everything(cfg.seed + fabric.global_rank, verbose=False)
    else:
        for name in adapters:
            load_adapter_state_dict(model.sam, state["lora"][name], name)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        # the saved states hold the old rate and weight decay: those given with --resume take effect now
        scheduler.base_lrs = [cfg.opt.learning_rate] * len(optimizer.param_groups)
        for group in optimizer.param_groups:
            group["initial_lr"] = cfg.opt.learning_rate
            group["lr"] = cfg.opt.learning_rate * scheduler.lr_lambdas[0](scheduler.last_epoch)
            group["weight_decay"] = cfg.opt.weight_decay
        step, history, direct, best = state["step"], state["history"], state["direct"], state["best"]
        seconds_before = state.get("seconds", 0.0)
        set_rng_state(state["rng"][min(fabric.global_rank, len(state["rng"]) - 1)])
        fabric.print(f"Resumed from {args.resume} at step {step}")
    skipped_train: set[int] = set(state.get("skipped_train", [])) if state else set()  # this rank's, so far
    # this rank's sum and count of the teacher's pseudo-label mIoU (against the ground truth) since the last evaluation
    pseudo_label_iou: list[float] = list(state.get("pseudo_label_iou", [0.0, 0])) if state else [0.0, 0]

    started = time.time()

    def run_seconds() -> float:
        """Wall time of the run so far, over every resumed part."""
        return seconds_before + time.time() - started

    def all_skipped_train() -> set[int]:
        """The training images skipped so far on any rank (unreadable, mask size differs...)."""
        return set().union(*gather_objects(fabric, skipped_train))

    def save_checkpoint(step: int, skipped: set[int] | None = None) -> None:
        """Write last.ckpt: everything a --resume needs to continue as if the run never stopped.
        `skipped`: the training images skipped on any rank, if the caller has gathered them."""
        rng = gather_objects(fabric, rng_state())
        skipped = all_skipped_train() if skipped is None else skipped
        if is_main:
            save_state(ckpt_dir / "last.ckpt", {
                "config": cfg.to_dict(), "step": step, "history": history, "direct": direct, "best": best,
                "seconds": run_seconds(), "skipped_train": sorted(skipped), "pseudo_label_iou": pseudo_label_iou,
                "lora": {name: adapter_state_dict(model.sam, name) for name in adapters},
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng,
            })
        fabric.barrier()

    def interval_pseudo_label_iou() -> float | None:
        """Mean pseudo-label mIoU over the steps (of all ranks) since the last evaluation; restarts the count."""
        total, count = fabric.all_reduce(torch.tensor(pseudo_label_iou, dtype=torch.float64, device=fabric.device),
                                         reduce_op="sum").tolist()
        pseudo_label_iou[:] = [0.0, 0]
        return total / count if count else None

    def record(metrics: dict[str, Any]) -> None:
        """Log an evaluation; update the best/last adapters, the run files and last.ckpt."""
        nonlocal best
        if fabric.world_size > 1:
            checksum = sum(float(p.detach().double().sum()) for p in trainable)
            if len(set(gather_objects(fabric, round(checksum, 6)))) != 1:
                raise RuntimeError("LoRA weights differ between ranks: gradients were not synchronised.")
        history.append(metrics)
        is_best = metrics["miou"] > best["miou"]
        if is_best:
            best = dict(metrics)
        fabric.log_dict({f"eval/{k}": metrics[k] for k in ("miou", "f1", "area_ratio")}, step=metrics["step"])
        skipped_train_all = all_skipped_train()
        skipped = {"train": len(skipped_train_all), "eval": metrics["skipped_images"]}
        if is_main:
            weights = adapter_state_dict(model.sam, STUDENT)
            step_metadata = {**metadata, "step": metrics["step"], "miou": metrics["miou"]}
            save_adapter(ckpt_dir / "last-lora.safetensors", weights, step_metadata)
            if is_best or not (ckpt_dir / "best-lora.safetensors").exists():
                save_adapter(ckpt_dir / "best-lora.safetensors", weights, step_metadata)
            write_csv(out_dir / "metrics.csv", history, ["step", "miou", "f1", "area_ratio", "pseudo_label_iou"])
            write_json(out_dir / "summary.json", {
                "dataset": cfg.dataset.name, "eval_split": cfg.dataset.eval_split, "prompt": cfg.prompt,
                "num_steps": cfg.num_steps, "seconds": round(run_seconds(), 1), "direct": direct, "best": best,
                "last": metrics, "history": history, "skipped_images": skipped,
                **({"auto_instances": auto_instances} if auto_instances else {})})
        save_checkpoint(metrics["step"], skipped_train_all)  # after the run files: a crash in between redoes the step
        fabric.print(f"step {metrics['step']:>6}: mIoU {metrics['miou']:.4f}  F1 {metrics['f1']:.4f}  "
                     f"(Direct {direct['miou']:.4f}, best {best['miou']:.4f} at step {best['step']})")
        if skipped["train"]:  # evaluation skips are reported by evaluate()
            fabric.print(f"Warning: {skipped['train']} training images skipped so far (the warnings name each file "
                         "and the reason)")

    if state is None:
        record(direct)

    def batches_from(start: int) -> Any:
        """The training batches from step `start` on (a new iterator: data workers see refreshed instances)."""
        sampler = StepSampler(len(train_set), cfg.batch_size, fabric.world_size, fabric.global_rank, cfg.seed, start)
        return iter(DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler, collate_fn=collate,
                               num_workers=cfg.num_workers, pin_memory=fabric.device.type == "cuda"))

    batches = batches_from(step)
    branches = loss_branches(cfg.loss)
    model.train()
    progress = tqdm(total=cfg.num_steps, initial=step, desc="adapt", disable=not is_main, dynamic_ncols=True)
    resume_command = f"python adaptation.py --resume {ckpt_dir / 'last.ckpt'}"
    stopper = StopOnSignal("saving last.ckpt at the end of this step, then stopping (Ctrl-C again: stop now, "
                           "losing the steps since the last save)")
    with stopper:
        while step < cfg.num_steps:
            if received := stop_requested(fabric, stopper):
                save_checkpoint(step)
                progress.close()
                # exit status 128 + the signal's number: the shell's convention for a process stopped by a signal
                raise RunStopped(f"Stopped at step {step} of {cfg.num_steps} ({received.name}); saved "
                                 f"{ckpt_dir / 'last.ckpt'}. Continue with: {resume_command}", 128 + received)
            batch = fabric.to_device(next(batches))
            skipped_train.update(batch["skipped"])
            outputs = model(batch["images"], batch["images_strong"], batch["valid"], batch["prompts"], branches)
            # with automatic instances there is no ground truth to measure the pseudo-labels against
            loss, terms = wesam_loss(outputs, cfg.loss, cfg.teacher.mode, image_size,
                                     batch["masks"] if cfg.prompt_source == "labels" else None)
            if not all_ranks_true(fabric, bool(torch.isfinite(loss))):
                raise FloatingPointError(
                    f"The loss is not finite at step {step + 1} ({ {k: float(v.detach()) for k, v in terms.items()} }). "
                    f"The last good state is {ckpt_dir / 'last.ckpt'}; lower the learning rate (or use "
                    f"precision=32-true) and resume: {resume_command} opt.learning_rate={cfg.opt.learning_rate / 10:g}")
            optimizer.zero_grad(set_to_none=True)
            fabric.backward(loss)
            optimizer.step()
            scheduler.step()
            model.update_teacher(cfg.teacher.ema_rate)
            if "pseudo_label_iou" in terms:
                pseudo_label_iou[0] += terms["pseudo_label_iou"].item()
                pseudo_label_iou[1] += 1
            step += 1
            progress.update(1)
            if step % cfg.log_interval == 0:
                values = {"loss": loss.item(), **{k: v.item() for k, v in terms.items()}}
                progress.set_postfix({k: f"{v:.3f}" for k, v in values.items()})
                fabric.log_dict({"train/lr": scheduler.get_last_lr()[0], **{f"train/{k}": v for k, v in values.items()}},
                                step=step)
            if step % cfg.eval_interval == 0 or step == cfg.num_steps:
                record({**evaluate_now(STUDENT, step), "pseudo_label_iou": interval_pseudo_label_iou()})
                model.train()
            elif cfg.save_interval and step % cfg.save_interval == 0:
                save_checkpoint(step)
            if cfg.prompt_source == "auto" and cfg.auto.refresh_every and step % cfg.auto.refresh_every == 0 \
                    and step < cfg.num_steps:
                find_instances(step)
                batches = batches_from(step)
                model.train()
    progress.close()

    last = history[-1]
    fabric.print(f"Done. {cfg.dataset.name}/{cfg.dataset.eval_split}, prompt {cfg.prompt}: "
                 f"Direct mIoU {direct['miou']:.4f} -> WeSAM (last, step {last['step']}) {last['miou']:.4f} "
                 f"({100 * (last['miou'] - direct['miou']):+.2f} points); best {best['miou']:.4f} at step {best['step']}. "
                 f"Files in {out_dir}")
    return {"direct": direct, "best": best, "last": last}


if __name__ == "__main__":
    run_main(main)
