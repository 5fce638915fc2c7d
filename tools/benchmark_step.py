"""Time one WeSAM training step and one evaluation forward, and report peak memory.

    python tools/benchmark_step.py [--steps 5] [--instances 8] [key=value ...]

Uses the configured model (random weights unless model.checkpoint is set), prompt, teacher mode,
device and precision on synthetic scenes; prints seconds per step and peak memory. A measurement
script, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch
from lightning_fabric import Fabric

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datasets import build_dataset, collate  # noqa: E402
from losses.wesam_loss import loss_branches, wesam_loss  # noqa: E402
from models import build_wesam  # noqa: E402
from models.lora import STUDENT  # noqa: E402
from utils.config import load_config  # noqa: E402


def peak_memory_gib(fabric: Fabric) -> float:
    if fabric.device.type == "cuda":
        return torch.cuda.max_memory_allocated(fabric.device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up step")
    parser.add_argument("--instances", type=int, default=8,
                        help="at most this many objects per synthetic image (the mean actually used is printed)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfg = load_config(overrides=[f"dataset.synthetic.max_objects={args.instances}", *args.overrides])
    fabric = Fabric(accelerator=cfg.accelerator, devices=1, precision=cfg.precision)
    model = build_wesam(cfg)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.opt.learning_rate)
    model, optimizer = fabric.setup(model, optimizer)
    dataset = build_dataset(cfg, "train")
    batches = [fabric.to_device(collate([dataset[(j % len(dataset), j)]
                                         for j in range(i * cfg.batch_size, (i + 1) * cfg.batch_size)]))
               for i in range(args.steps + 1)]

    def synchronize() -> None:
        if fabric.device.type == "cuda":
            torch.cuda.synchronize(fabric.device)

    train_times, eval_times = [], []
    for batch in batches:
        start = time.perf_counter()
        outputs = model(batch["images"], batch["images_strong"], batch["valid"], batch["prompts"],
                        loss_branches(cfg.loss))
        loss, _ = wesam_loss(outputs, cfg.loss, cfg.teacher.mode, model.image_size, batch["masks"])
        optimizer.zero_grad(set_to_none=True)
        fabric.backward(loss)
        optimizer.step()
        synchronize()
        train_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        with torch.no_grad(), fabric.autocast():
            model.module.predict(batch["images"], batch["valid"], batch["prompts"], adapter=STUDENT)
        synchronize()
        eval_times.append(time.perf_counter() - start)
    instances = sum(len(p[next(iter(p))]) for b in batches for p in b["prompts"]) / len(batches)
    print(f"model {cfg.model.type} ({model.image_size}px), device {fabric.device}, precision {cfg.precision}, "
          f"prompt {cfg.prompt}, teacher {cfg.teacher.mode}, batch {cfg.batch_size}, {instances:.1f} instances/batch, "
          f"torch threads {torch.get_num_threads()}")
    print(f"training step: {sum(train_times[1:]) / args.steps:.3f} s (first {train_times[0]:.3f} s)")
    print(f"eval forward:  {sum(eval_times[1:]) / args.steps:.3f} s")
    print(f"peak memory:   {peak_memory_gib(fabric):.2f} GiB ({'CUDA allocated' if fabric.device.type == 'cuda' else 'process RSS'})")


if __name__ == "__main__":
    main()
