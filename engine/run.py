"""A training run: its state (RunState), its run folder, and the files it writes for people
(RunFiles); what every rank of a run sets or shares. Its checkpoint, last.ckpt, is
engine/checkpoint.py's."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lightning_fabric.utilities.rank_zero import rank_zero_only

from models.adapters import save_adapter
from utils.files import write_csv, write_json


@dataclass
class RunState:
    """What a run has done so far; everything else of a run follows from its config. last.ckpt holds
    it (engine/checkpoint.py run_state_dict) beside the weights, optimizer and random states.

    `skipped_train` holds this rank's skipped training images (the union of all ranks once saved);
    `pseudo_label_iou_sum` / `_count` the teacher's pseudo-label mIoU (against the ground truth) of
    this rank's steps since the last evaluation; `seconds` the wall time of the run's earlier parts
    (resumed runs), to which the time since `started` adds. `auto_instances` summarizes the anchor's
    automatic instances (prompt_source=auto); they are read again from their cache on resume, so
    the checkpoint does not hold it. `data` holds the image identities of the training and the
    evaluated split when last saved (a resumed run compares them with the data it finds), and
    `data_changes` the changes found so far.
    """

    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    direct: dict[str, Any] | None = None
    best: dict[str, Any] | None = None
    seconds: float = 0.0
    skipped_train: set[int] = field(default_factory=set)
    pseudo_label_iou_sum: float = 0.0
    pseudo_label_iou_count: int = 0
    auto_instances: dict[str, Any] | None = None
    data: dict[str, list[str]] = field(default_factory=dict)
    data_changes: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.time, compare=False)

    def elapsed(self) -> float:
        """Wall time of the run so far, over every resumed part."""
        return self.seconds + time.time() - self.started


def holds_run(folder: str | Path) -> bool:
    """Whether `folder` holds an adaptation run: its config.json beside its checkpoints/."""
    return (Path(folder) / "config.json").is_file() and (Path(folder) / "checkpoints").is_dir()


def run_folder(checkpoint: str | Path) -> Path | None:
    """The folder of the run whose checkpoint is `checkpoint`: <run> for <run>/checkpoints/FILE when
    <run> holds a run; None for a checkpoint anywhere else (a copy kept in another folder)."""
    checkpoint = Path(checkpoint)
    folder = checkpoint.parent.parent
    return folder if checkpoint.parent.name == "checkpoints" and holds_run(folder) else None


def run_of_file(path: str | Path) -> Path | None:
    """The folder of the run of which `path` is a file (one of RunFiles.WRITTEN), else None."""
    parts = Path(path).resolve().parts
    for name in RunFiles.WRITTEN:
        depth = len(Path(name).parts)
        if parts[-depth:] == Path(name).parts and holds_run(folder := Path(*parts[:-depth])):
            return folder
    return None


def set_optimizer_values(optimizer: torch.optim.Optimizer, learning_rate: float, weight_decay: float) -> None:
    """Set the learning rate and weight decay of every parameter group, before each step: they are
    functions of the step and the config, so a resumed run (even with new values) restores neither."""
    for group in optimizer.param_groups:
        group["lr"] = learning_rate
        group["weight_decay"] = weight_decay


def gather_objects(fabric: Any, obj: Any) -> list[Any]:
    """The object of every rank of a Fabric run, in rank order."""
    if fabric.world_size == 1:
        return [obj]
    gathered = [None] * fabric.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def set_process_options(cfg: Any) -> None:
    """Process-wide switches of a config, set where a run starts: TF32 matrix products on CUDA."""
    torch.backends.cuda.matmul.allow_tf32 = cfg.tf32


# CPU flags of native bf16 matrix products: x86 AVX512-BF16 and AMX, ARM's BF16 (its name on Linux)
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str] | None:
    """The instruction-set flags of this machine's CPU (the "flags" lines of x86 Linux, "Features"
    of ARM Linux), or None where they cannot be read (no /proc/cpuinfo: macOS, Windows)."""
    try:
        lines = Path(cpuinfo).read_text().splitlines()
    except OSError:
        return None
    return {flag for line in lines if line.partition(":")[0].strip() in ("flags", "Features")
            for flag in line.partition(":")[2].split()}


def native_bf16(device_type: str) -> bool:
    """Whether bf16 matrix products run natively: on CUDA, or on a CPU with one of BF16_CPU_FLAGS
    (elsewhere oneDNN emulates them, slower than fp32)."""
    return device_type == "cuda" or bool((cpu_flags() or set()) & set(BF16_CPU_FLAGS))


def slow_bf16_notice(precision: str, accelerator: str) -> str | None:
    """The line that says that `precision` will be slow on this machine, or None: bf16-mixed on a
    CPU that emulates bf16, where a vit_small step took 8x as long as in fp32 with AVX2 alone and
    1.3x with AVX-512 (results/speed.md)."""
    on_cpu = accelerator == "cpu" or not torch.cuda.is_available()
    if precision != "bf16-mixed" or not on_cpu or native_bf16("cpu"):
        return None
    cpu = ("a CPU whose instruction flags could not be read" if cpu_flags() is None else
           f"a CPU without bf16 instructions (none of {', '.join(BF16_CPU_FLAGS)} in /proc/cpuinfo)")
    return (f"Note: precision=bf16-mixed on {cpu}: bf16 is emulated, so a step may take several times as long as "
            "with precision=32-true (docs/troubleshooting.md, \"bf16 on a CPU\").")


def announce_precision(precision: str, accelerator: str) -> None:
    """Print slow_bf16_notice, once (rank 0), where a run chooses its precision."""
    if (notice := slow_bf16_notice(precision, accelerator)) and rank_zero_only.rank == 0:
        print(notice, flush=True)


class RunFiles:
    """The files of an adaptation run in out_dir that people read: config.json, metrics.csv,
    summary.json, and the adapters checkpoints/{best,last}-lora.safetensors. Written by rank 0."""

    METRICS = ("step", "miou", "f1", "area_ratio", "pseudo_label_iou")
    # what a run writes in out_dir and replaces as it goes (tensorboard/ only adds files), last.ckpt included
    WRITTEN = ("config.json", "metrics.csv", "summary.json", "checkpoints/best-lora.safetensors",
               "checkpoints/last-lora.safetensors", "checkpoints/last.ckpt")

    def __init__(self, out_dir: str | Path, metadata: dict[str, Any]) -> None:
        self.out_dir = Path(out_dir)
        self.checkpoints = self.out_dir / "checkpoints"
        self.last_ckpt = self.checkpoints / "last.ckpt"
        self.metadata = metadata  # written into each adapter file (model type, LoRA rank, dataset, prompt)

    def write_config(self, config: dict[str, Any]) -> None:
        write_json(self.out_dir / "config.json", config)  # creates the folder

    def write_evaluation(self, run: RunState, cfg: Any, metrics: dict[str, Any], weights: dict[str, torch.Tensor],
                         is_best: bool, skipped: dict[str, int]) -> None:
        """After an evaluation: the last adapter (and the best, when this one is or none exists yet),
        metrics.csv and summary.json."""
        step_metadata = {**self.metadata, "step": metrics["step"], "miou": metrics["miou"]}
        save_adapter(self.checkpoints / "last-lora.safetensors", weights, step_metadata)
        if is_best or not (self.checkpoints / "best-lora.safetensors").exists():
            save_adapter(self.checkpoints / "best-lora.safetensors", weights, step_metadata)
        write_csv(self.out_dir / "metrics.csv", run.history, self.METRICS)
        write_json(self.out_dir / "summary.json", {
            "dataset": cfg.dataset.name, "eval_split": cfg.dataset.eval_split, "prompt": cfg.prompt,
            "num_steps": cfg.num_steps, "seconds": round(run.elapsed(), 1), "direct": run.direct, "best": run.best,
            "last": metrics, "history": run.history, "skipped_images": skipped,
            **({"auto_instances": run.auto_instances} if run.auto_instances else {}),
            **({"data_changes": run.data_changes} if run.data_changes else {})})
