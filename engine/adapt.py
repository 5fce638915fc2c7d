"""An adaptation run (WeSAM), read top to bottom in adapt(): set_up, then Direct (start) or the
saved run (resume_from), the step loop, evaluate_and_save at each evaluation, and finish. The objects
that the steps share are one Run; what the run has done so far is its RunState (engine/run.py);
last.ckpt is written by engine/checkpoint.py, the files people read by engine/run.py RunFiles."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn, Sequence

import torch
from box import Box
from lightning_fabric import Fabric
from lightning_fabric.loggers import TensorBoardLogger
from torch.utils.data import DataLoader
from tqdm import tqdm

from datasets import DatasetSpec, InstanceDataset, StepSampler, build_dataset, collate, files_report
from datasets.auto_prompts import AutoInstances
from engine.auto_instances import cached_instances, describe, summarize
from engine.checkpoint import ADAPTATION_PARTS, load_checkpoint, restore_adaptation, save_adaptation
from engine.checks import check_foreign_files, check_scored, check_train_split, check_training_config
from engine.evaluate import evaluate
from engine.resume import adaptation_command, check_resumable
from engine.run import (RunFiles, RunState, announce_precision, gather_objects, run_folder, set_optimizer_values,
                        set_process_options)
from engine.signals import RunStopped, StopOnSignal, stop_requested
from losses.wesam_loss import loss_branches, wesam_loss
from models import build_wesam
from models.adapters import targets_text
from models.backbones import backbone_metadata, evaluation_decoding, input_sizes
from models.lora import STUDENT, TEACHER, adapter_state_dict, describe_lora
from utils.config import ConfigError
from utils.files import same_path
from utils.lock import hold_folder


@dataclass
class Run:
    """The objects of one adaptation run that its steps share (made by set_up)."""

    cfg: Box
    fabric: Fabric
    model: Any  # WeSAM set up by Fabric (model.module: the WeSAM itself)
    optimizer: torch.optim.Optimizer
    spec: DatasetSpec  # the training set is built again from it when automatic instances are refreshed
    train_set: InstanceDataset
    eval_set: InstanceDataset
    files: RunFiles
    state: RunState  # what the run has done so far
    adapters: tuple[str, ...]  # the adapters trained and saved: the student (and the teacher with teacher.mode=ema)
    instances_from: int = 0  # the step whose model found the training instances (prompt_source=auto)

    @property
    def resume_command(self) -> str:
        """The command line that continues this run from its last.ckpt."""
        return adaptation_command("--resume", self.files.last_ckpt)


def adapt(cfg: Box, resume: str | Path | None = None, loss_fn: Callable[..., Any] = wesam_loss) -> dict[str, Any]:
    """Run (or with `resume`, a last.ckpt, continue) the adaptation that `cfg` describes; returns the
    Direct, best and last evaluations. `loss_fn` computes a step's loss (wesam_loss; tests wrap it
    to inject faults)."""
    state, saved = RunState(), None
    if resume is not None:
        state, saved = load_checkpoint(resume, ADAPTATION_PARTS)
        check_resumable(dict(saved["config"], out_dir=cfg.out_dir), cfg, "the config")
    check_training_config(cfg)
    files = RunFiles(cfg.out_dir, adapter_metadata(cfg))
    with out_dir_held(files, resume):
        run = set_up(cfg, files, state)
        if saved is None:
            start(run)
        else:
            resume_from(run, saved, resume)

        # --- the steps
        fabric, model, optimizer = run.fabric, run.model, run.optimizer
        batches = None
        branches = loss_branches(cfg.loss)
        refresh = cfg.auto.refresh_every if cfg.prompt_source == "auto" else 0
        model.train()
        progress = tqdm(total=cfg.num_steps, initial=state.step, desc="adapt", disable=fabric.global_rank != 0,
                        dynamic_ncols=True)
        with StopOnSignal() as stopper:
            while state.step < cfg.num_steps:
                if received := stop_requested(fabric, stopper):
                    progress.close()
                    stop(run, received)
                if refresh and state.step - state.step % refresh != run.instances_from:
                    refresh_instances(run, state.step - state.step % refresh)  # the adapted model finds them again
                    batches = None
                if batches is None:
                    batches = training_batches(fabric, run.train_set, cfg, state.step)
                batch = fabric.to_device(next(batches))
                state.skipped_train.update(batch["skipped"])
                outputs = model(batch["images"], batch["images_strong"], batch["valid"], batch["prompts"], branches)
                # with automatic instances there is no ground truth to measure the pseudo-labels against
                loss, terms = loss_fn(outputs, cfg.loss, cfg.teacher.mode, model.image_size,
                                      batch["masks"] if cfg.prompt_source == "labels" else None)
                check_finite(run, loss, terms)
                set_optimizer_values(optimizer, learning_rate(cfg, state.step), cfg.opt.weight_decay)
                optimizer.zero_grad(set_to_none=True)
                fabric.backward(loss)
                optimizer.step()
                model.update_teacher(cfg.teacher.ema_rate)
                if "pseudo_label_iou" in terms:
                    state.pseudo_label_iou_sum += terms["pseudo_label_iou"].item()
                    state.pseudo_label_iou_count += 1
                state.step += 1
                progress.update(1)
                if state.step % cfg.log_interval == 0:
                    values = {"loss": loss.item(), **{k: v.item() for k, v in terms.items()}}
                    progress.set_postfix({k: f"{v:.3f}" for k, v in values.items()})
                    fabric.log_dict({"train/lr": learning_rate(cfg, state.step),
                                     **{f"train/{k}": v for k, v in values.items()}}, step=state.step)
                if state.step % cfg.eval_interval == 0 or state.step == cfg.num_steps:
                    evaluate_and_save(run)
                elif cfg.save_interval and state.step % cfg.save_interval == 0:
                    save(run)
        progress.close()
        return finish(run)


# --- set-up

def adapter_metadata(cfg: Box) -> dict[str, Any]:
    """What each adapter file of the run says of it (RunFiles adds the trainable parameters and the step)."""
    return {"model_type": cfg.model.type, **backbone_metadata(cfg.model.type), "lora_rank": cfg.lora.rank,
            "lora_targets": targets_text(cfg.lora.targets), "dataset": cfg.dataset.name, "prompt": cfg.prompt}


@contextmanager
def out_dir_held(files: RunFiles, resume: str | Path | None) -> Iterator[None]:
    """Within `with`, out_dir is this run's. A resumed run in its own folder replaces its files; any
    other run needs a folder without a run (nor files of someone else that it would replace). One run
    at a time in a folder (rank 0 holds it for all): a second is refused, naming the first."""
    in_own_folder = (resume is not None and (folder := run_folder(resume)) is not None
                     and same_path(folder, files.out_dir))
    if not in_own_folder:
        check_foreign_files(files.out_dir, RunFiles.WRITTEN, "checkpoints/last.ckpt", "out_dir")
    with hold_folder(files.out_dir):
        if not in_own_folder and files.last_ckpt.exists():
            raise ConfigError(f"'{files.out_dir}' already holds a run. Continue it with: "
                              f"{adaptation_command('--resume', files.last_ckpt)} (or choose another out_dir=...)")
        yield


def set_up(cfg: Box, files: RunFiles, state: RunState) -> Run:
    """What a run, new or resumed, needs: the processes (Fabric), SAM with LoRA and its optimizer, the
    datasets (prompt_source=auto: with the anchor's instances), and config.json."""
    set_process_options(cfg)
    announce_precision(cfg.precision, cfg.accelerator)
    fabric = Fabric(accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
                    strategy=cfg.strategy, precision=cfg.precision,
                    loggers=TensorBoardLogger(files.out_dir, name="tensorboard", version=""))
    fabric.launch()
    model = build_wesam(cfg)
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
    adapters = (STUDENT, TEACHER) if cfg.teacher.mode == "ema" else (STUDENT,)
    run = Run(cfg, fabric, model, optimizer, spec, train_set, eval_set, files, state, adapters)
    note_data_changes(run)
    fabric.print(f"WeSAM on {cfg.dataset.name}: SAM {cfg.model.type} ({model.image_size}px), teacher "
                 f"{cfg.teacher.mode}, prompt {cfg.prompt}; {len(train_set)} training images, {cfg.num_steps} steps "
                 f"of {cfg.batch_size} image(s) x {fabric.world_size} device(s) ({fabric.device.type}, "
                 f"{cfg.precision})")
    fabric.print(describe_lora(cfg.lora.rank, model.backbone.lora_parameters, cfg.model.type))
    if fabric.global_rank == 0:  # on resume too: the config now includes the overrides given with --resume
        files.write_config(cfg.to_dict())
    if cfg.prompt_source == "auto":
        instances, record = find_instances(run, None, 0)
        run.train_set = build_dataset(spec, "train", auto_instances=instances)
        state.auto_instances = summarize(record)  # the anchor's instances: how many, their recall (summary.json)
    return run


def note_data_changes(run: Run) -> None:
    """Keep the images of each split in the run state; a resumed run on data that changed under it
    says so, and records it."""
    cfg, state = run.cfg, run.state
    data = {"train": run.train_set.image_identities(), cfg.dataset.eval_split: run.eval_set.image_identities()}
    for split, images in data.items():
        if split in state.data and (change := split_changes(state.data[split], images)):
            state.data_changes.append({"step": state.step, "split": split, "change": change})
            run.fabric.print(f"Warning: the {split} split of {cfg.dataset.name} changed since step {state.step} "
                             f"was saved: {change}. " + ("The evaluations so far were measured on the earlier "
                             "images and do not compare with the next ones." if split != "train" else "The run "
                             "now trains on other images than a run that never stopped would."))
    state.data = data


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


def find_instances(run: Run, adapter: str | None, at_step: int) -> tuple[AutoInstances, dict[str, Any]]:
    """prompt_source=auto: the training split's instances found in everything mode by the anchor
    (step 0, cached in auto.cache or out_dir/auto_instances/) or by `adapter` at a refresh step
    (this run's own weights: cached in out_dir/auto_instances/ only). Returns them and their record."""
    cfg, fabric = run.cfg, run.fabric
    if at_step == 0:
        adapter, origin = None, "anchor"
        path = Path(cfg.auto.cache or Path(cfg.out_dir) / "auto_instances") / "anchor.json"
    else:
        origin = f"{adapter} at step {at_step}"
        path = Path(cfg.out_dir) / "auto_instances" / f"refresh-{at_step:06d}.json"
    instances, record = cached_instances(path, run.model.module, run.train_set, cfg.auto, cfg.model.pad, adapter,
                                         origin, fabric.global_rank == 0, fabric.barrier,
                                         diagnostic=cfg.auto.diagnostic and at_step == 0, log=fabric.print)
    fabric.print(f"Automatic instances ({origin}): {describe(record)}")
    return instances, record


# --- Direct, or the saved run

def start(run: Run) -> None:
    """A new run: its step 0 is the unadapted SAM's evaluation (Direct), recorded and saved."""
    cfg, state = run.cfg, run.state
    # making the anchor's instances is part of the run's time (none when another run made them)
    state.seconds = state.auto_instances["seconds"] if state.auto_instances and state.auto_instances["built"] else 0.0
    run.fabric.print(f"Evaluating the unadapted SAM (Direct) on {cfg.dataset.name}/{cfg.dataset.eval_split} "
                     f"({len(run.eval_set)} images, prompt {cfg.prompt}, decoding "
                     f"{evaluation_decoding(cfg.model.type, cfg.model.decoding)})")
    state.direct = evaluate_at(run, None)
    state.best = dict(state.direct)
    run.fabric.seed_everything(cfg.seed + run.fabric.global_rank, verbose=False)
    state.started = time.time()
    record_evaluation(run, state.direct)


def resume_from(run: Run, saved: dict[str, Any], checkpoint: str | Path) -> None:
    """A resumed run: the adapters, the optimizer and the random states of its last.ckpt."""
    restore_adaptation(run.fabric, saved, run.model.sam, run.optimizer, run.adapters)
    run.fabric.print(f"Resumed from {checkpoint} at step {run.state.step}")
    run.state.started = time.time()


# --- the steps

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


def training_batches(fabric: Fabric, train_set: InstanceDataset, cfg: Box, start: int) -> Any:
    """The training batches from step `start` on (a new iterator: data workers see the current instances)."""
    sampler = StepSampler(len(train_set), cfg.batch_size, fabric.world_size, fabric.global_rank, cfg.seed, start)
    return iter(DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler, collate_fn=collate,
                           num_workers=cfg.num_workers, pin_memory=fabric.device.type == "cuda"))


def refresh_instances(run: Run, at_step: int) -> None:
    """prompt_source=auto, every auto.refresh_every steps: the adapter that makes the pseudo-labels
    finds the training instances again, and the training set is built again with them."""
    run.instances_from = at_step
    adapter = TEACHER if run.cfg.teacher.mode == "ema" else STUDENT
    instances, _ = find_instances(run, adapter, at_step)
    run.train_set = build_dataset(run.spec, "train", auto_instances=instances)


def check_finite(run: Run, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
    """FloatingPointError on every rank when the loss of any rank is not finite, before the step
    spoils the weights: the message names the last good checkpoint and how to resume from it."""
    flag = bool(torch.isfinite(loss))
    if run.fabric.world_size > 1:
        flag = bool(run.fabric.all_reduce(torch.tensor(float(flag), device=run.fabric.device), reduce_op="min") > 0)
    if not flag:
        raise FloatingPointError(
            f"The loss is not finite at step {run.state.step + 1} "
            f"({ {k: float(v.detach()) for k, v in terms.items()} }). The last good state is "
            f"{run.files.last_ckpt}; lower the learning rate (or use precision=32-true) and resume: "
            f"{run.resume_command} opt.learning_rate={run.cfg.opt.learning_rate / 10:g}")


def stop(run: Run, received: Any) -> NoReturn:
    """On a stop signal (engine/signals.py): save last.ckpt, then stop with the command that continues."""
    save(run)
    # exit status 128 + the signal's number: the shell's convention for a process stopped by a signal
    raise RunStopped(f"Stopped at step {run.state.step} of {run.cfg.num_steps} ({received.name}); saved "
                     f"{run.files.last_ckpt}. Continue with: {run.resume_command}", 128 + received)


# --- evaluation and saving

def evaluate_at(run: Run, adapter: str | None) -> dict[str, Any]:
    """{step, miou, f1, area_ratio, ...} of `adapter` (None: the unadapted SAM) on the evaluation split."""
    cfg, step = run.cfg, run.state.step
    metrics = evaluate(run.fabric, run.model.module, run.eval_set, adapter, cfg.val_batch_size, cfg.num_workers,
                       description=f"eval step {step}", threshold=cfg.metric.threshold, region=cfg.metric.region,
                       decoding=evaluation_decoding(cfg.model.type, cfg.model.decoding))
    check_scored(metrics, cfg)
    return {"step": step, **metrics}


def evaluate_and_save(run: Run) -> None:
    """At an evaluation step: the student's evaluation, with the mIoU of the pseudo-labels since the
    last one, recorded and saved; training goes on."""
    record_evaluation(run, {**evaluate_at(run, STUDENT), "pseudo_label_iou": interval_pseudo_label_iou(run)})
    run.model.train()


def interval_pseudo_label_iou(run: Run) -> float | None:
    """Mean pseudo-label mIoU over the steps (of all ranks) since the last evaluation; restarts the count."""
    state = run.state
    sums = torch.tensor([state.pseudo_label_iou_sum, state.pseudo_label_iou_count], dtype=torch.float64,
                        device=run.fabric.device)
    total, count = run.fabric.all_reduce(sums, reduce_op="sum").tolist()
    state.pseudo_label_iou_sum, state.pseudo_label_iou_count = 0.0, 0
    return total / count if count else None


def record_evaluation(run: Run, metrics: dict[str, Any]) -> None:
    """Log an evaluation; update the best/last adapters, the run files and last.ckpt."""
    fabric, state = run.fabric, run.state
    if fabric.world_size > 1:
        checksum = sum(float(p.detach().double().sum()) for p in run.model.parameters() if p.requires_grad)
        if len(set(gather_objects(fabric, round(checksum, 6)))) != 1:
            raise RuntimeError("LoRA weights differ between ranks: gradients were not synchronised.")
    state.history.append(metrics)
    is_best = metrics["miou"] > state.best["miou"]
    if is_best:
        state.best = dict(metrics)
    fabric.log_dict({f"eval/{k}": metrics[k] for k in ("miou", "f1", "area_ratio")}, step=metrics["step"])
    skipped_train = len(set().union(*gather_objects(fabric, state.skipped_train)))
    if fabric.global_rank == 0:
        run.files.write_evaluation(state, run.cfg, metrics, adapter_state_dict(run.model.sam, STUDENT), is_best,
                                   {"train": skipped_train, "eval": metrics["skipped_images"]})
    save(run)  # after the run files: a crash redoes the step
    fabric.print(f"step {metrics['step']:>6}: mIoU {metrics['miou']:.4f}  F1 {metrics['f1']:.4f}  "
                 f"(Direct {state.direct['miou']:.4f}, best {state.best['miou']:.4f} at step {state.best['step']})")
    if skipped_train:  # evaluation skips are reported by evaluate()
        fabric.print(f"Warning: {skipped_train} training images skipped so far (the warnings name each file "
                     "and the reason)")


def save(run: Run) -> None:
    """Write last.ckpt: everything a --resume needs to continue as if the run never stopped. The
    skipped training images become those of every rank."""
    run.state.skipped_train = set().union(*gather_objects(run.fabric, run.state.skipped_train))
    save_adaptation(run.fabric, run.files.last_ckpt, run.state, run.cfg, run.model.sam, run.optimizer, run.adapters,
                    run.files.metadata["trainable_parameters"])


# --- the end

def finish(run: Run) -> dict[str, Any]:
    """The run's last line; returns the Direct, best and last evaluations."""
    cfg, state = run.cfg, run.state
    last, direct, best = state.history[-1], state.direct, state.best
    run.fabric.print(f"Done. {cfg.dataset.name}/{cfg.dataset.eval_split}, prompt {cfg.prompt}: "
                     f"Direct mIoU {direct['miou']:.4f} -> WeSAM (last, step {last['step']}) {last['miou']:.4f} "
                     f"({100 * (last['miou'] - direct['miou']):+.2f} points); "
                     f"best {best['miou']:.4f} at step {best['step']}. "
                     f"Files in {run.files.out_dir}")
    return {"direct": direct, "best": best, "last": last}
