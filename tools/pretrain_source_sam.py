"""Pretrain a small SAM on the synthetic source domain with full supervision: the embedded
default's "foundation model".

    python tools/pretrain_source_sam.py [--steps 20000] [--out runs/pretrain] [--minutes M]
    python tools/pretrain_source_sam.py --export models/weights/vit_small_source.safetensors

All of SAM is trained (no LoRA) on an endless stream of fresh source scenes with ground-truth
masks: box prompts with jitter or 5 + 5 points, flips and photometric augmentation (brightness,
contrast, gamma, colour balance, grey), so that a global intensity change is no shift for it.
Loss: 20 focal + dice + IoU-head MSE, as SAM's own training. AdamW, linear warm-up, cosine decay.
The scenes are rendered at the model's input side, or at --scene-size and resized to the input as the
datasets resize them (sam2_small256: the 128-px scenes of the adaptation data, as it will read them).

The run is resumable with the rules of adaptation.py: a folder that holds a run is refused unless
--resume is given, which continues <out>/last.ckpt (engine/checkpoint.py: the run state, weights,
optimizer and random states); the data of step t depends only on (seed, t) and the learning rate
on t, so stopping and resuming (e.g. --minutes per call on a machine with a time limit) gives the
same model as one long run on the same device; --workers renders the scenes
in data loader processes (a GPU needs them) without changing them. Every --eval-interval steps
it reports source test mIoU (box prompts) beside the box prior (the ellipse inscribed in each box)
in <out>/metrics.csv. --export writes the weights as safetensors plus a JSON record (command,
seed, device, time, figures) beside them; its command makes the run in one go (no --resume or
--minutes: its sessions are listed apart).
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning_fabric import Fabric
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datasets.prompts import boxes_from_masks, sample_points  # noqa: E402
from datasets.scenes import box_prior_masks, render_scene  # noqa: E402
from datasets.spec import SampleOptions  # noqa: E402
from datasets.synthetic import SPLIT_STREAMS, SyntheticDataset  # noqa: E402
from datasets.transforms import resize_image, resize_square_image  # noqa: E402
from engine.checkpoint import PRETRAINING_PARTS, load_checkpoint, restore_pretraining, save_pretraining  # noqa: E402
from engine.checks import check_foreign_files, check_outputs, run_main  # noqa: E402
from engine.evaluate import evaluate  # noqa: E402
from engine.signals import RunStopped, StopOnSignal, stop_requested  # noqa: E402
from engine.run import RunState, announce_precision, set_optimizer_values  # noqa: E402
from losses.segmentation import dice_loss, focal_loss, iou_head_loss  # noqa: E402
from models.backbones import build_network, input_sizes, model_types, official_checkpoint  # noqa: E402
from models.family import InputSizes  # noqa: E402
from models.weight_files import resolve_path  # noqa: E402
from models.wesam import WeSAM, upscale_logits  # noqa: E402
from utils.config import ConfigError, load_config  # noqa: E402
from utils.files import check_output, path_argument, write_csv, write_json  # noqa: E402
from utils.lock import hold_folder  # noqa: E402
from utils.metrics import instance_scores  # noqa: E402

# options that split a run into sessions without changing what it computes (resuming is exact), and how
# many values each takes
SESSION_OPTIONS = {"--resume": 0, "--minutes": 1}
BOX_JITTER = 0.08  # std of each box edge's shift, as a fraction of the box side
POINT_PROMPT_FRACTION = 0.4  # images whose instances get 5 + 5 points instead of a box


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-type", default="vit_small",  # the types made here, without official weights
                        choices=[name for name in model_types() if not official_checkpoint(name)])
    parser.add_argument("--steps", type=int, default=20000, help="total optimizer steps (sets the schedule)")
    parser.add_argument("--batch-size", type=int, default=8, help="scenes per step")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate")
    parser.add_argument("--warmup", type=int, default=500, help="linear warm-up steps")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--dice", default="joint", choices=["joint", "per-instance"],
                        help="dice over all instances of a scene together, or per instance and averaged")
    parser.add_argument("--max-objects", type=int, default=6, help="objects per scene, at most")
    parser.add_argument("--scene-size", type=int, default=0,
                        help="side of the rendered scenes, resized to the model's input as the datasets resize them "
                             "(0: the model's input size; 128 for sam2_small256: the adaptation data's scenes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", type=path_argument,
                        help="start from these SAM weights (.safetensors/.pth, e.g. an --export) instead of random "
                             "ones: a further stage with a schedule of its own")
    parser.add_argument("--out", type=path_argument, default="runs/pretrain", help="folder for last.ckpt and "
                                                                                   "metrics.csv")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out (its last.ckpt) with the same --model-type, --steps and "
                             "--scene-size")
    parser.add_argument("--minutes", type=float, default=0, help="stop (resumably) after this long; 0: run to --steps")
    parser.add_argument("--stop-at", type=int, help="stop (resumably) at this step (default: run to --steps)")
    parser.add_argument("--eval-interval", type=int, default=1000)
    parser.add_argument("--eval-images", type=int, default=200, help="source test scenes per evaluation")
    parser.add_argument("--save-interval", type=int, default=250, help="write last.ckpt every this many steps")
    parser.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--devices", type=int, default=1,
                        help="processes (DDP; on a CPU each takes a core); each takes its share of every batch")
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    parser.add_argument("--workers", type=int, default=0,
                        help="data loader processes rendering scenes ahead (0: in the training process; a GPU "
                             "needs several to be kept busy)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    parser.add_argument("--export", type=path_argument,
                        help="write the weights of <out>/last.ckpt to this .safetensors file and stop")
    return parser.parse_args(argv)


def photometric(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random brightness, contrast, gamma, colour balance and greyscale of an H x W x 3 uint8 image."""
    x = image.astype(np.float32) / 255
    if rng.random() < 0.8:
        x = np.clip((x - 0.5) * rng.uniform(0.5, 1.5) + 0.5 + rng.uniform(-0.25, 0.25), 0, 1)
    if rng.random() < 0.5:
        x = x ** rng.uniform(0.6, 1.6)
    if rng.random() < 0.5:
        x = np.clip(x * rng.uniform(0.8, 1.2, 3), 0, 1)
    if rng.random() < 0.1:
        x = np.repeat(x.mean(axis=2, keepdims=True), 3, axis=2)
    return (x * 255).round().astype(np.uint8)


def training_scene(seed: int, step: int, slot: int, size: int, max_objects: int,
                   model_input: InputSizes | None = None) -> dict[str, Any]:
    """Scene `slot` of training step `step`: augmented image, masks and jittered prompts, of side
    `size`. For a `model_input` of another side, the image is resized to it as the datasets resize
    (InputSizes "resize": uint8 for SAM, floats in [0, 1] for SAM 2) and the prompts are scaled to
    its frame; the masks keep the scene's side (the loss compares the upscaled logits with them)."""
    rng = np.random.default_rng([seed, SPLIT_STREAMS["pretrain"], step, slot])
    image, masks = render_scene(rng, size, max_objects)
    if rng.random() < 0.5:
        image, masks = image[:, ::-1], masks[:, :, ::-1]
    if rng.random() < 0.5:
        image, masks = image[::-1], masks[:, ::-1]
    image, masks = photometric(np.ascontiguousarray(image), rng), np.ascontiguousarray(masks)
    prompts: dict[str, torch.Tensor] = {}
    if rng.random() < POINT_PROMPT_FRACTION:
        points, labels = sample_points(masks, (0, 0, size, size), 5, rng)
        prompts = {"points": torch.from_numpy(points), "point_labels": torch.from_numpy(labels)}
    else:
        boxes = boxes_from_masks(masks)
        sides = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
        boxes = boxes + rng.normal(0, BOX_JITTER, boxes.shape) * sides
        prompts = {"boxes": torch.from_numpy(np.clip(boxes, 0, size).astype(np.float32))}
    if model_input and model_input["image_size"] != size:  # a square scene: both resizes scale x and y alike
        side = model_input["image_size"]
        image = (resize_square_image if model_input["resize"] == "square" else resize_image)(image, side)
        key = "points" if "points" in prompts else "boxes"
        prompts[key] = prompts[key] * (side / size)
    return {"image": torch.from_numpy(image.transpose(2, 0, 1).copy()), "masks": torch.from_numpy(masks),
            "prompts": prompts}


class TrainingStream(Dataset):
    """This process's scenes of steps start, ..., end - 1: item i is the list of scenes `slots`
    of step start + i, so data loader workers can render them ahead of the training step."""

    def __init__(self, seed: int, start: int, end: int, slots: range, size: int, max_objects: int,
                 model_input: InputSizes) -> None:
        self.seed, self.start, self.end, self.slots = seed, start, end, slots
        self.size, self.max_objects, self.model_input = size, max_objects, model_input

    def __len__(self) -> int:
        return max(0, self.end - self.start)

    def __getitem__(self, index: int) -> list[dict[str, Any]]:
        return [training_scene(self.seed, self.start + index, slot, self.size, self.max_objects, self.model_input)
                for slot in self.slots]


def learning_rate_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    # a Python float, not numpy's: last.ckpt holds the rate and must load with weights_only=True
    return float(0.5 * (1 + np.cos(np.pi * min(1.0, (step - warmup) / max(1, total - warmup)))))


def source_test_set(model_type: str, num_images: int, scene_size: int = 0) -> SyntheticDataset:
    """Source-domain scenes of side `scene_size` (0: the model's input size) as the model reads them, with
    box prompts; the rest as the default config's."""
    sizes, defaults = input_sizes(model_type), load_config(user_config={})
    options = replace(SampleOptions.from_config(defaults, **sizes), prompt="box")
    return SyntheticDataset("test", num_images, options, scene_size=scene_size or sizes["image_size"],
                            max_objects=defaults.dataset.synthetic.max_objects, shift="none")


def box_prior_miou(dataset: SyntheticDataset) -> float:
    """mIoU (the repo's metric) of filling the ellipse inscribed in each ground-truth box."""
    scores = []
    for index in range(len(dataset)):
        _, masks = dataset.scene(index)
        prior = box_prior_masks(boxes_from_masks(masks), masks.shape[-1])
        iou, _ = instance_scores(torch.from_numpy(prior), torch.from_numpy(masks))
        scores.append(float(iou.mean()))
    return float(np.mean(scores))


def sum_gradients_and_loss(fabric: Fabric, parameters: list[torch.nn.Parameter], loss: torch.Tensor) -> torch.Tensor:
    """Sum the gradients and the loss of every process's share of the batch (one all-reduce), so
    that each process holds the gradient of the whole batch. A parameter that no process used
    (e.g. point embeddings in a box-only step) keeps no gradient, as in a single process."""
    if fabric.world_size == 1:
        return loss
    used = torch.tensor([float(p.grad is not None) for p in parameters], device=loss.device)
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in parameters]
                     + [used, loss[None]])
    flat = fabric.all_reduce(flat, reduce_op="sum")
    offset = 0
    for parameter, was_used in zip(parameters, flat[-len(parameters) - 1:-1].tolist()):
        size = parameter.numel()
        parameter.grad = flat[offset:offset + size].view_as(parameter).clone() if was_used else None
        offset += size
    return flat[-1]


def whole_run_command(command: str) -> str:
    """The command of a session of a run (<out>/last.ckpt's, the last one's) -> the command that makes
    the run in one go: without SESSION_OPTIONS."""
    words, kept = shlex.split(command), []
    while words:
        word = words.pop(0)
        name, _, value = word.partition("=")
        if name in SESSION_OPTIONS:
            if not value:  # "--minutes 30": its value is the next word
                del words[:SESSION_OPTIONS[name]]
        else:
            kept.append(word)
    return shlex.join(kept)


def export(args: argparse.Namespace) -> None:
    """Write the weights of <out>/last.ckpt as safetensors and, beside them, a JSON record of how they
    were made; a run that started from --init weights nests the record of those weights (read
    before anything is written, so exporting over the --init file keeps its history)."""
    run, saved = load_checkpoint(Path(args.out) / "last.ckpt", PRETRAINING_PARTS)
    init = saved["args"].get("init")
    init_json = resolve_path(init).with_suffix(".json") if init else None
    init_record = json.loads(init_json.read_text()) if init_json and init_json.exists() else None
    target = Path(args.export)
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in saved["model"].items()}, str(target),
              metadata={"model_type": saved["args"]["model_type"], "step": str(run.step)})
    record = {"model_type": saved["args"]["model_type"], "command": whole_run_command(saved["command"]),
              "args": saved["args"], "step": run.step, "history": run.history, "sessions": saved["sessions"],
              "parameters": sum(v.numel() for v in saved["model"].values()), "init": init_record}
    write_json(target.with_suffix(".json"), record)
    print(f"Wrote {target} ({target.stat().st_size / 2**20:.1f} MiB) and {target.with_suffix('.json')}")


def check_resume(args: argparse.Namespace, ckpt_path: Path) -> None:
    """A folder that holds a run is continued only with --resume, and only with the run's --model-type,
    --steps (the schedule) and --scene-size; --resume needs a run to continue."""
    if ckpt_path.exists() and not args.resume:
        raise ConfigError(f"'{ckpt_path.parent}' already holds a run. Continue it with the same command and "
                          "--resume, or choose another --out.")
    if args.resume and not ckpt_path.exists():
        raise ConfigError(f"--resume: '{ckpt_path}' does not exist; start the run without --resume.")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.export:
        target = check_output(args.export, "--export")
        # the record beside the weights; --init may be the target: its record is read before it is replaced
        check_outputs([("--export", target), ("--export's record", target.with_suffix(".json"))],
                      [("the run's checkpoint", Path(args.out) / "last.ckpt")])
        export(args)
        return {}
    out = check_output(args.out, "--out", "folder")
    if not args.resume:
        check_foreign_files(out, ("metrics.csv",), "last.ckpt", "--out")
    # one run at a time in a folder, as adaptation.py (rank 0 holds it for all)
    with hold_folder(out, "pretraining"):
        return pretrain(args, out, argv)


def pretrain(args: argparse.Namespace, out: Path, argv: list[str] | None) -> dict[str, Any]:
    """The pretraining run of `args` in the folder `out` (new, or continued with --resume)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    ckpt_path = out / "last.ckpt"
    check_resume(args, ckpt_path)
    run, saved = (load_checkpoint(ckpt_path, PRETRAINING_PARTS) if args.resume else (RunState(), None))
    saved_scene_size = saved["args"].get("scene_size", 0) if saved else 0  # a run from before the option: 0
    if saved and (saved["args"]["model_type"] != args.model_type or saved["args"]["steps"] != args.steps
                  or saved_scene_size != args.scene_size):
        scenes = f"{saved_scene_size}-px scenes" if saved_scene_size else "scenes of its input size"
        raise ConfigError(f"{ckpt_path} is a run of {saved['args']['model_type']} for {saved['args']['steps']} "
                          f"steps on {scenes}; resume it with the same --model-type, --steps and --scene-size, or "
                          "choose another --out.")
    announce_precision(args.precision, args.accelerator)
    fabric = Fabric(accelerator=args.accelerator, devices=args.devices, precision=args.precision,
                    strategy="ddp" if args.devices > 1 else "auto")
    fabric.launch()
    torch.manual_seed(args.seed)
    model = fabric.to_device(WeSAM.on(build_network(args.model_type, args.init), lora_rank=0))
    size = model.image_size
    model.train()
    trained = [p for p in model.parameters() if p.requires_grad]  # SAM 2: its image path only
    optimizer = torch.optim.AdamW(trained, lr=args.lr, weight_decay=args.weight_decay)
    sessions = []
    if saved:
        restore_pretraining(fabric, saved, model.sam, optimizer)
        sessions = saved["sessions"]
        fabric.print(f"Resumed {ckpt_path} at step {run.step}")
    command = shlex.join(["python", "tools/pretrain_source_sam.py", *(sys.argv[1:] if argv is None else argv)])
    device = (torch.cuda.get_device_name(fabric.device) if fabric.device.type == "cuda"
              else f"CPU ({platform.machine()}), {torch.get_num_threads()} threads") + \
        (f" x {fabric.world_size} processes" if fabric.world_size > 1 else "")
    sessions.append({"start_step": run.step, "device": device, "torch": str(torch.__version__), "seconds": 0.0})
    run.seconds = sum(s["seconds"] for s in sessions[:-1])
    test_set = source_test_set(args.model_type, args.eval_images, args.scene_size)
    scene_size = args.scene_size or size
    prior = box_prior_miou(test_set)
    fabric.print(f"Pretraining SAM {args.model_type} ({sum(p.numel() for p in model.parameters()):,} parameters) on "
                 f"{device}; box prior on {len(test_set)} source test scenes: mIoU {prior:.4f}")
    run.started = time.time()

    def save() -> None:
        """Write last.ckpt (engine/checkpoint.py), with this session's time so far."""
        sessions[-1]["seconds"] = round(time.time() - run.started, 1)
        save_pretraining(fabric, ckpt_path, run, model.sam, optimizer, vars(args), command, sessions)

    losses: list[float] = []
    end = args.steps if args.stop_at is None else min(args.steps, args.stop_at)
    stream = TrainingStream(args.seed, run.step, end, range(fabric.global_rank, args.batch_size, fabric.world_size),
                            scene_size, args.max_objects, input_sizes(args.model_type))
    per_instance_dice = args.dice == "per-instance"
    with StopOnSignal() as stopper:
        batches = DataLoader(stream, batch_size=None, num_workers=args.workers, pin_memory=fabric.device.type == "cuda")
        for scenes in batches:
            if received := stop_requested(fabric, stopper):
                save()
                resume = command if args.resume else f"{command} --resume"
                raise RunStopped(f"Stopped at step {run.step} of {args.steps} ({received.name}); saved {ckpt_path}. "
                                 f"Continue with: {resume}", 128 + received)
            if args.minutes and fabric.broadcast(time.time() - run.started > 60 * args.minutes, src=0):
                break
            images = fabric.to_device(torch.stack([s["image"] for s in scenes]))
            valid = torch.tensor([[0, 0, size, size]] * len(scenes), device=fabric.device)
            with fabric.autocast():
                outputs = model.predict(images, valid, [fabric.to_device(s["prompts"]) for s in scenes], adapter=None)
            loss = torch.zeros((), device=fabric.device)
            for logits, iou, scene in zip(outputs["logits"], outputs["iou"], scenes):
                logits = upscale_logits(logits.float(), scene_size)
                target = fabric.to_device(scene["masks"])[:, None].float()
                loss = loss + 20 * focal_loss(logits, target) + \
                    dice_loss(logits, target, per_instance=per_instance_dice) + \
                    iou_head_loss(iou.float(), logits, target)
            loss = loss / args.batch_size
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            loss = sum_gradients_and_loss(fabric, trained, loss.detach())
            torch.nn.utils.clip_grad_norm_(trained, 1.0)
            set_optimizer_values(optimizer, args.lr * learning_rate_factor(run.step, args.warmup, args.steps),
                                 args.weight_decay)
            optimizer.step()
            run.step += 1
            losses.append(loss.item())
            if run.step % 50 == 0:
                rate = (time.time() - run.started) / (run.step - sessions[-1]["start_step"])
                lr = args.lr * learning_rate_factor(run.step, args.warmup, args.steps)
                fabric.print(f"step {run.step:>6}/{args.steps}  loss {np.mean(losses):.4f}  lr {lr:.2e}  "
                             f"{rate:.3f} s/step", flush=True)
                losses = []
            if run.step % args.eval_interval == 0 or run.step == args.steps:
                metrics = evaluate(fabric, model, test_set, adapter=None, batch_size=8, description=f"eval {run.step}")
                run.history.append({"step": run.step, "miou": metrics["miou"], "f1": metrics["f1"], "box_prior": prior,
                                    "seconds": round(run.elapsed(), 1)})
                if fabric.global_rank == 0:
                    write_csv(out / "metrics.csv", run.history, ["step", "miou", "f1", "box_prior", "seconds"])
                fabric.print(f"step {run.step:>6}: source test mIoU {metrics['miou']:.4f} (box prior {prior:.4f}), "
                             f"{run.elapsed() / 60:.1f} min", flush=True)
                model.train()
            if run.step % args.save_interval == 0:
                save()
    save()
    fabric.print(f"Stopped at step {run.step} of {args.steps}; {ckpt_path} holds the state (continue with --resume).")
    return {"step": run.step, "history": run.history, "box_prior": prior}


if __name__ == "__main__":
    run_main(main)
