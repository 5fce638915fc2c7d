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

The run's state is engine/run.py RunState; a step happens in adapt()'s loop below; the files are
written by engine/run.py RunFiles (people's files) and save_run (last.ckpt).
"""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from box import Box
from lightning_fabric import Fabric
from lightning_fabric.loggers import TensorBoardLogger
from torch.utils.data import DataLoader
from tqdm import tqdm

from configs.base_config import base_config
from datasets import DatasetSpec, InstanceDataset, StepSampler, build_dataset, collate, files_report
from datasets.auto_prompts import AutoInstances
from engine.auto_instances import cached_instances, describe, summarize
from engine.checks import check_foreign_files, check_scored, check_train_split, check_training_config, run_main
from engine.evaluate import evaluate
from engine.run import (RunFiles, RunState, announce_precision, gather_objects, load_run, rng_state, run_folder,
                        save_run, set_optimizer_values, set_process_options, set_rng_state)
from engine.signals import RunStopped, StopOnSignal, stop_requested
from losses.wesam_loss import loss_branches, wesam_loss
from models import build_wesam
from models.adapters import read_checkpoint, targets_text
from models.lora import STUDENT, TEACHER, adapter_state_dict, describe_lora, load_adapter_state_dict
from models.backbones import backbone_metadata, evaluation_decoding, input_sizes
from utils.config import (ConfigError, config_value, flatten, load_config, parse_override, read_config_file,
                          update_config)
from utils.files import path_argument, same_path
from utils.lock import hold_folder

# Keys whose change would not fit the saved weights, would start writing over another run, or would
# score later evaluations unlike Direct (model.decoding).
FIXED_ON_RESUME = ("model.type", "lora.rank", "lora.targets", "teacher.mode", "model.decoding", "out_dir")
# What last.ckpt holds beside the RunState: the run's config, the LoRA weights of each adapter, the
# optimizer's state and the random states of every rank (rank order).
CHECKPOINT_PARTS = ("config", "lora", "optimizer", "rng")


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


def learning_rate_factor(step: int, warmup_steps: int, decay_steps: Sequence[int], decay_factor: float,
                         from_zero: bool = False) -> float:
    """Linear warm-up over warmup_steps, (step + 1) / warmup_steps, or step / warmup_steps with
    `from_zero` (the authors' code, whose first step runs at lr 0); then x decay_factor at each
    step of decay_steps."""
    if step < warmup_steps:
        return (step + (0 if from_zero else 1)) / warmup_steps
    return decay_factor ** sum(step >= s for s in decay_steps)


def learning_rate(cfg: Box, step: int) -> float:
    """The learning rate of step `step` (0: the first)."""
    opt = cfg.opt
    return opt.learning_rate * learning_rate_factor(step, opt.warmup_steps, opt.decay_steps, opt.decay_factor,
                                                    opt.warmup_from_zero)


def check_resumable(saved: dict[str, Any], cfg: dict[str, Any], source: str) -> None:
    """ConfigError when `cfg` (from `source`) changes a key of FIXED_ON_RESUME of the run's `saved` config.
    A key newer than the run has its default there, which does what the run did (lora.targets: q and v)."""
    before, now = flatten(base_config) | flatten(saved), flatten(cfg)
    for key in FIXED_ON_RESUME:
        if now[key] != before[key]:
            instead = ("give out_dir=... on the command line to continue the run in another folder" if key == "out_dir"
                       else "start a new run in another out_dir instead")
            raise ConfigError(f"{key} cannot change when resuming ({source} gives {now[key]!r}, the run has "
                              f"{before[key]!r}); {instead}.")


def adaptation_command(*arguments: str | Path) -> str:
    """The command line `python adaptation.py ARGUMENTS`, quoted to be pasted into a shell as it is."""
    return shlex.join(["python", "adaptation.py", *map(str, arguments)])


def resume_config(checkpoint: str | Path, overrides: Sequence[str] = (), config_file: str | Path | None = None) -> Box:
    """The config of the run of `checkpoint` (a last.ckpt) with what the user gives, applied in this
    order: the keys of the run's config.json edited since it was written, the keys `config_file`
    sets, then `overrides`. Each change is printed; one of FIXED_ON_RESUME is refused naming where
    it came from. The run continues in the folder of its checkpoint, <run>/checkpoints/, even if
    that was moved or copied (the out_dir of its config.json is the old place: not a change), or
    in the folder out_dir= of `overrides` names. A checkpoint outside a run folder needs that
    out_dir: its folder holds no run, and its files are not the run's to replace."""
    checkpoint = Path(checkpoint)
    saved = read_checkpoint(checkpoint, required=("config",))["config"]
    run = run_folder(checkpoint)
    moved = [config_value(key, value, "the command line") for key, value in map(parse_override, overrides)
             if key == "out_dir"]
    if run is None and not moved:
        instead = adaptation_command("--resume", checkpoint, f"out_dir={checkpoint.parent / 'resumed'}", *overrides)
        raise ConfigError(f"Checkpoint '{checkpoint}' is not in a run folder (<run>/checkpoints/ beside "
                          f"<run>/config.json): '{checkpoint.parent.parent}' holds no run, and a resumed run would "
                          f"write over its files. Continue the run in a folder of its own: {instead}")
    out_dir = moved[-1] if moved else str(run)
    cfg = load_config(user_config=dict(saved, out_dir=out_dir), source=f"checkpoint '{checkpoint}'")
    given = []
    if run is not None:
        edited = flatten(read_config_file(run / "config.json"))
        given.append((f"'{run / 'config.json'}'", {k: v for k, v in edited.items() if k != "out_dir"}))
    if config_file:
        given.append((f"--config '{config_file}'", flatten(read_config_file(config_file))))
    given.append(("the command line", flatten(dict(parse_override(text) for text in overrides))))
    for source, values in given:
        current = flatten(cfg)
        changes = {key: value for key, value in values.items()
                   if current.get(key) != config_value(key, value, source)}
        cfg = update_config(cfg, changes, source)
        check_resumable(dict(saved, out_dir=out_dir), cfg, source)
        for key, value in changes.items():
            print(f"Resuming with {key}={value!r} (the run had {current.get(key)!r}; from {source})")
    return cfg


def split_changes(before: list[str], now: list[str]) -> str | None:
    """How the images of a split (their image_identity, in order) changed, or None."""
    if before == now:
        return None
    in_before, in_now = set(before), set(now)
    gone, new = [i for i in before if i not in in_now], [i for i in now if i not in in_before]
    if not gone and not new:
        return f"its {len(now)} images are the same but in another order"
    examples = ", ".join(gone[:3] + new[:3])
    return (f"{len(gone)} of its {len(before)} images are no longer there or changed, {len(new)} are new "
            f"(e.g. {examples})")


def all_ranks_true(fabric: Fabric, flag: bool) -> bool:
    if fabric.world_size == 1:
        return flag
    return bool(fabric.all_reduce(torch.tensor(float(flag), device=fabric.device), reduce_op="min") > 0)


def find_instances(fabric: Fabric, model: Any, train_set: InstanceDataset, cfg: Box, adapter: str | None,
                   at_step: int) -> tuple[AutoInstances, dict[str, Any]]:
    """prompt_source=auto: the training split's instances found in everything mode by the anchor
    (step 0, cached in auto.cache or out_dir/auto_instances/) or by `adapter` at a refresh step
    (this run's own weights: cached in out_dir/auto_instances/ only). Returns them and their record."""
    if at_step == 0:
        adapter, origin = None, "anchor"
        path = Path(cfg.auto.cache or Path(cfg.out_dir) / "auto_instances") / "anchor.json"
    else:
        origin = f"{adapter} at step {at_step}"
        path = Path(cfg.out_dir) / "auto_instances" / f"refresh-{at_step:06d}.json"
    instances, record = cached_instances(path, model.module, train_set, cfg.auto, cfg.model.pad, adapter, origin,
                                         fabric.global_rank == 0, fabric.barrier,
                                         diagnostic=cfg.auto.diagnostic and at_step == 0, log=fabric.print)
    fabric.print(f"Automatic instances ({origin}): {describe(record)}")
    return instances, record


def training_batches(fabric: Fabric, train_set: InstanceDataset, cfg: Box, start: int) -> Any:
    """The training batches from step `start` on (a new iterator: data workers see the current instances)."""
    sampler = StepSampler(len(train_set), cfg.batch_size, fabric.world_size, fabric.global_rank, cfg.seed, start)
    return iter(DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler, collate_fn=collate,
                           num_workers=cfg.num_workers, pin_memory=fabric.device.type == "cuda"))


def evaluate_at(fabric: Fabric, model: Any, eval_set: InstanceDataset, cfg: Box, adapter: str | None,
                step: int) -> dict[str, Any]:
    """{step, miou, f1, area_ratio, ...} of `adapter` (None: the unadapted SAM) on the evaluation split."""
    metrics = evaluate(fabric, model.module, eval_set, adapter, cfg.val_batch_size, cfg.num_workers,
                       description=f"eval step {step}", threshold=cfg.metric.threshold, region=cfg.metric.region,
                       decoding=evaluation_decoding(cfg.model.type, cfg.model.decoding))
    check_scored(metrics, cfg)
    return {"step": step, **metrics}


def interval_pseudo_label_iou(fabric: Fabric, run: RunState) -> float | None:
    """Mean pseudo-label mIoU over the steps (of all ranks) since the last evaluation; restarts the count."""
    sums = torch.tensor([run.pseudo_label_iou_sum, run.pseudo_label_iou_count], dtype=torch.float64,
                        device=fabric.device)
    total, count = fabric.all_reduce(sums, reduce_op="sum").tolist()
    run.pseudo_label_iou_sum, run.pseudo_label_iou_count = 0.0, 0
    return total / count if count else None


def save_checkpoint(fabric: Fabric, run: RunState, files: RunFiles, cfg: Box, model: Any,
                    optimizer: torch.optim.Optimizer, adapters: Sequence[str]) -> None:
    """Write last.ckpt: everything a --resume needs to continue as if the run never stopped. The
    skipped training images become those of every rank."""
    rng = gather_objects(fabric, rng_state())
    run.skipped_train = set().union(*gather_objects(fabric, run.skipped_train))
    if fabric.global_rank == 0:
        save_run(files.last_ckpt, run, config=cfg.to_dict(), optimizer=optimizer.state_dict(), rng=rng,
                 lora={name: adapter_state_dict(model.sam, name) for name in adapters},
                 trainable_parameters=files.metadata["trainable_parameters"])
    fabric.barrier()


def record_evaluation(fabric: Fabric, run: RunState, files: RunFiles, cfg: Box, model: Any,
                      optimizer: torch.optim.Optimizer, adapters: Sequence[str], metrics: dict[str, Any]) -> None:
    """Log an evaluation; update the best/last adapters, the run files and last.ckpt."""
    if fabric.world_size > 1:
        checksum = sum(float(p.detach().double().sum()) for p in model.parameters() if p.requires_grad)
        if len(set(gather_objects(fabric, round(checksum, 6)))) != 1:
            raise RuntimeError("LoRA weights differ between ranks: gradients were not synchronised.")
    run.history.append(metrics)
    is_best = metrics["miou"] > run.best["miou"]
    if is_best:
        run.best = dict(metrics)
    fabric.log_dict({f"eval/{k}": metrics[k] for k in ("miou", "f1", "area_ratio")}, step=metrics["step"])
    skipped_train = len(set().union(*gather_objects(fabric, run.skipped_train)))
    if fabric.global_rank == 0:
        files.write_evaluation(run, cfg, metrics, adapter_state_dict(model.sam, STUDENT), is_best,
                               {"train": skipped_train, "eval": metrics["skipped_images"]})
    save_checkpoint(fabric, run, files, cfg, model, optimizer, adapters)  # after the run files: a crash redoes the step
    fabric.print(f"step {metrics['step']:>6}: mIoU {metrics['miou']:.4f}  F1 {metrics['f1']:.4f}  "
                 f"(Direct {run.direct['miou']:.4f}, best {run.best['miou']:.4f} at step {run.best['step']})")
    if skipped_train:  # evaluation skips are reported by evaluate()
        fabric.print(f"Warning: {skipped_train} training images skipped so far (the warnings name each file "
                     "and the reason)")


def adapt(cfg: Box, resume: str | Path | None = None, loss_fn: Callable[..., Any] = wesam_loss) -> dict[str, Any]:
    """Run (or with `resume`, a last.ckpt, continue) the adaptation that `cfg` describes; returns the
    Direct, best and last evaluations. `loss_fn` computes a step's loss (wesam_loss; tests wrap it
    to inject faults)."""
    # --- set-up
    run, saved = RunState(), None
    if resume is not None:
        run, saved = load_run(resume, CHECKPOINT_PARTS)
        check_resumable(dict(saved["config"], out_dir=cfg.out_dir), cfg, "the config")
    check_training_config(cfg)
    metadata = {"model_type": cfg.model.type, **backbone_metadata(cfg.model.type), "lora_rank": cfg.lora.rank,
                "lora_targets": targets_text(cfg.lora.targets), "dataset": cfg.dataset.name, "prompt": cfg.prompt}
    files = RunFiles(cfg.out_dir, metadata)
    # a resumed run in its own folder replaces its files; any other run needs a folder without a run
    # (nor files of someone else that it would replace)
    in_own_folder = resume is not None and (folder := run_folder(resume)) is not None and same_path(folder, cfg.out_dir)
    if not in_own_folder:
        check_foreign_files(files.out_dir, RunFiles.WRITTEN, "checkpoints/last.ckpt", "out_dir")
    # one run at a time in a folder (rank 0 holds it for all): a second is refused, naming the first
    with hold_folder(files.out_dir):
        if not in_own_folder and files.last_ckpt.exists():
            raise ConfigError(f"'{files.out_dir}' already holds a run. Continue it with: "
                              f"{adaptation_command('--resume', files.last_ckpt)} (or choose another out_dir=...)")
        set_process_options(cfg)
        announce_precision(cfg.precision, cfg.accelerator)
        fabric = Fabric(accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
                        strategy=cfg.strategy, precision=cfg.precision,
                        loggers=TensorBoardLogger(files.out_dir, name="tensorboard", version=""))
        fabric.launch()
        is_main = fabric.global_rank == 0

        model = build_wesam(cfg)
        image_size = model.image_size
        trainable = [p for p in model.parameters() if p.requires_grad]
        files.metadata["trainable_parameters"] = sum(p.numel() for p in trainable)  # into every adapter file
        optimizer = torch.optim.Adam(trainable, lr=cfg.opt.learning_rate, weight_decay=cfg.opt.weight_decay)
        model, optimizer = fabric.setup(model, optimizer)
        spec = DatasetSpec.from_config(cfg, **input_sizes(cfg.model.type))
        train_set = build_dataset(spec, "train")
        eval_set = build_dataset(spec, cfg.dataset.eval_split)
        if report := files_report([train_set.inventory, eval_set.inventory]):  # every file used or named
            fabric.print(report)
        check_train_split(len(train_set), cfg)
        data = {"train": train_set.image_identities(), cfg.dataset.eval_split: eval_set.image_identities()}
        for split, images in data.items():  # a resumed run on data that changed under it: said, and recorded
            if split in run.data and (change := split_changes(run.data[split], images)):
                run.data_changes.append({"step": run.step, "split": split, "change": change})
                fabric.print(f"Warning: the {split} split of {cfg.dataset.name} changed since step {run.step} was "
                             f"saved: {change}. " + ("The evaluations so far were measured on the earlier images and "
                             "do not compare with the next ones." if split != "train" else "The run now trains on "
                             "other images than a run that never stopped would."))
        run.data = data
        adapters = (STUDENT, TEACHER) if cfg.teacher.mode == "ema" else (STUDENT,)
        # prompt_source=auto refreshes its instances with the adapter that makes the pseudo-labels
        refresh_adapter = TEACHER if cfg.teacher.mode == "ema" else STUDENT
        fabric.print(f"WeSAM on {cfg.dataset.name}: SAM {cfg.model.type} ({image_size}px), teacher {cfg.teacher.mode}, "
                     f"prompt {cfg.prompt}; {len(train_set)} training images, {cfg.num_steps} steps of "
                     f"{cfg.batch_size} image(s) x {fabric.world_size} device(s) "
                     f"({fabric.device.type}, {cfg.precision})")
        fabric.print(describe_lora(cfg.lora.rank, model.backbone.lora_parameters, cfg.model.type))
        if is_main:  # on resume too: the config now includes the overrides given with --resume
            files.write_config(cfg.to_dict())
        instances_from = 0  # the step whose model found the training instances (prompt_source=auto)
        if cfg.prompt_source == "auto":
            instances, record = find_instances(fabric, model, train_set, cfg, None, 0)
            train_set = build_dataset(spec, "train", auto_instances=instances)
            run.auto_instances = summarize(record)  # the anchor's instances: how many, their recall (summary.json)

        # --- Direct (a new run), or the saved run
        if saved is None:
            # making the anchor's instances is part of the run's time (none when another run made them)
            run.seconds = run.auto_instances["seconds"] if run.auto_instances and run.auto_instances["built"] else 0.0
            fabric.print(f"Evaluating the unadapted SAM (Direct) on {cfg.dataset.name}/{cfg.dataset.eval_split} "
                         f"({len(eval_set)} images, prompt {cfg.prompt}, decoding "
                         f"{evaluation_decoding(cfg.model.type, cfg.model.decoding)})")
            run.direct = evaluate_at(fabric, model, eval_set, cfg, None, 0)
            run.best = dict(run.direct)
            fabric.seed_everything(cfg.seed + fabric.global_rank, verbose=False)
        else:
            for name in adapters:
                load_adapter_state_dict(model.sam, saved["lora"][name], name)
            optimizer.load_state_dict(saved["optimizer"])
            set_rng_state(saved["rng"][min(fabric.global_rank, len(saved["rng"]) - 1)])
            fabric.print(f"Resumed from {resume} at step {run.step}")
        run.started = time.time()
        if saved is None:
            record_evaluation(fabric, run, files, cfg, model, optimizer, adapters, run.direct)

        # --- the steps
        batches = None
        branches = loss_branches(cfg.loss)
        refresh = cfg.auto.refresh_every if cfg.prompt_source == "auto" else 0
        model.train()
        progress = tqdm(total=cfg.num_steps, initial=run.step, desc="adapt", disable=not is_main, dynamic_ncols=True)
        resume_command = adaptation_command("--resume", files.last_ckpt)
        stopper = StopOnSignal("saving last.ckpt at the end of this step, then stopping (Ctrl-C again: stop now, "
                               "losing the steps since the last save)")
        with stopper:
            while run.step < cfg.num_steps:
                if received := stop_requested(fabric, stopper):
                    save_checkpoint(fabric, run, files, cfg, model, optimizer, adapters)
                    progress.close()
                    # exit status 128 + the signal's number: the shell's convention for a process stopped by a signal
                    raise RunStopped(f"Stopped at step {run.step} of {cfg.num_steps} ({received.name}); saved "
                                     f"{files.last_ckpt}. Continue with: {resume_command}", 128 + received)
                if refresh and run.step - run.step % refresh != instances_from:  # the adapted model finds them again
                    instances_from = run.step - run.step % refresh
                    instances, _ = find_instances(fabric, model, train_set, cfg, refresh_adapter, instances_from)
                    train_set = build_dataset(spec, "train", auto_instances=instances)
                    batches = None
                if batches is None:
                    batches = training_batches(fabric, train_set, cfg, run.step)
                batch = fabric.to_device(next(batches))
                run.skipped_train.update(batch["skipped"])
                outputs = model(batch["images"], batch["images_strong"], batch["valid"], batch["prompts"], branches)
                # with automatic instances there is no ground truth to measure the pseudo-labels against
                loss, terms = loss_fn(outputs, cfg.loss, cfg.teacher.mode, image_size,
                                      batch["masks"] if cfg.prompt_source == "labels" else None)
                if not all_ranks_true(fabric, bool(torch.isfinite(loss))):
                    raise FloatingPointError(
                        f"The loss is not finite at step {run.step + 1} "
                        f"({ {k: float(v.detach()) for k, v in terms.items()} }). The last good state is "
                        f"{files.last_ckpt}; lower the learning rate (or use precision=32-true) and resume: "
                        f"{resume_command} opt.learning_rate={cfg.opt.learning_rate / 10:g}")
                set_optimizer_values(optimizer, learning_rate(cfg, run.step), cfg.opt.weight_decay)
                optimizer.zero_grad(set_to_none=True)
                fabric.backward(loss)
                optimizer.step()
                model.update_teacher(cfg.teacher.ema_rate)
                if "pseudo_label_iou" in terms:
                    run.pseudo_label_iou_sum += terms["pseudo_label_iou"].item()
                    run.pseudo_label_iou_count += 1
                run.step += 1
                progress.update(1)
                if run.step % cfg.log_interval == 0:
                    values = {"loss": loss.item(), **{k: v.item() for k, v in terms.items()}}
                    progress.set_postfix({k: f"{v:.3f}" for k, v in values.items()})
                    fabric.log_dict({"train/lr": learning_rate(cfg, run.step),
                                     **{f"train/{k}": v for k, v in values.items()}}, step=run.step)
                if run.step % cfg.eval_interval == 0 or run.step == cfg.num_steps:
                    metrics = {**evaluate_at(fabric, model, eval_set, cfg, STUDENT, run.step),
                               "pseudo_label_iou": interval_pseudo_label_iou(fabric, run)}
                    record_evaluation(fabric, run, files, cfg, model, optimizer, adapters, metrics)
                    model.train()
                elif cfg.save_interval and run.step % cfg.save_interval == 0:
                    save_checkpoint(fabric, run, files, cfg, model, optimizer, adapters)
        progress.close()

        # --- the end
        last, direct, best = run.history[-1], run.direct, run.best
        fabric.print(f"Done. {cfg.dataset.name}/{cfg.dataset.eval_split}, prompt {cfg.prompt}: "
                     f"Direct mIoU {direct['miou']:.4f} -> WeSAM (last, step {last['step']}) {last['miou']:.4f} "
                     f"({100 * (last['miou'] - direct['miou']):+.2f} points); "
                     f"best {best['miou']:.4f} at step {best['step']}. "
                     f"Files in {files.out_dir}")
        return {"direct": direct, "best": best, "last": last}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.resume:
        cfg = resume_config(args.resume, args.overrides, args.config)
    else:
        cfg = load_config(args.config, args.overrides)
    return adapt(cfg, resume=args.resume)


if __name__ == "__main__":
    run_main(main)
