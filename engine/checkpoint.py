"""last.ckpt, the checkpoint of a training run, from which --resume continues bit for bit: its
layout, its writing and reading, restoring a run from it, and reading its student adapter
(validate.py, predict.py and tools/export.py take a last.ckpt as they take an adapter file).

A last.ckpt is one dict of tensors, numbers, strings, lists and dicts, read with
torch.load(weights_only=True): a checkpoint from someone else cannot run code. Its keys are

- the run state (engine/run.py RunState): RUN_KEYS, in every checkpoint, and LATER_RUN_KEYS,
  which checkpoints written before them lack;
- the parts of the program that wrote it: ADAPTATION_PARTS (adaptation.py) or PRETRAINING_PARTS
  (tools/pretrain_source_sam.py), "rng" among them: the random states of every rank, in rank order.

A last.ckpt of adaptation.py written before RunState also holds a "scheduler" (unused: the learning
rate is a function of the step) and resumes the same; one written before lora.targets lacks
"trainable_parameters" and the config's lora.targets (the default's q and v), and its LoRA weights
have the former names (models/lora.py reads both).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from lightning_fabric import Fabric

from engine.run import RunState, gather_objects
from models.adapters import load_adapter, targets_text
from models.lora import DEFAULT_TARGETS, STUDENT, adapter_state_dict, load_adapter_state_dict
from models.weight_files import CheckpointError
from utils.files import write_torch

RUN_KEYS = ("step", "history", "direct", "best", "seconds", "skipped_train", "pseudo_label_iou")
LATER_RUN_KEYS = ("data", "data_changes")
# adaptation.py: the run's config, the LoRA weights of each adapter ({name: weights}), the optimizer's
# state; beside them "trainable_parameters" (a number for people, not needed to resume)
ADAPTATION_PARTS = ("config", "lora", "optimizer", "rng")
# tools/pretrain_source_sam.py: SAM's weights, the optimizer's state, the arguments, the command and
# each session's device and time (for --export)
PRETRAINING_PARTS = ("model", "optimizer", "rng", "args", "command", "sessions")


def run_state_dict(run: RunState) -> dict[str, Any]:
    """The keys of last.ckpt that hold `run` (RUN_KEYS and LATER_RUN_KEYS)."""
    return {"step": run.step, "history": run.history, "direct": run.direct, "best": run.best,
            "seconds": run.elapsed(), "skipped_train": sorted(run.skipped_train),
            "pseudo_label_iou": [run.pseudo_label_iou_sum, run.pseudo_label_iou_count],
            "data": run.data, "data_changes": run.data_changes}


def run_from_state_dict(state: dict[str, Any]) -> RunState:
    """The run of a run_state_dict(); KeyError naming the RUN_KEYS it lacks."""
    missing = [key for key in RUN_KEYS if key not in state]
    if missing:
        raise KeyError(f"a run state needs {', '.join(missing)}")
    total, count = state["pseudo_label_iou"]
    return RunState(step=state["step"], history=list(state["history"]), direct=state["direct"], best=state["best"],
                    seconds=state["seconds"], skipped_train=set(state["skipped_train"]),
                    pseudo_label_iou_sum=total, pseudo_label_iou_count=int(count),
                    data=dict(state.get("data", {})), data_changes=list(state.get("data_changes", [])))


def read_checkpoint(path: str | Path, required: Sequence[str] = ()) -> dict[str, Any]:
    """A torch file of tensors, numbers, strings, lists and dicts, read with weights_only=True (no code runs).

    Raises CheckpointError when the file is empty, truncated, not a torch file, or lacks one of
    the `required` keys (another kind of file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint '{path}' does not exist; runs write it as "
                                "<out_dir>/checkpoints/last.ckpt.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError... for a bad file
        hint = (" (it is empty)" if path.stat().st_size == 0
                else f" ({type(error).__name__}: {str(error).splitlines()[0]})")
        raise CheckpointError(f"Checkpoint '{path}' could not be read{hint}. It is truncated, corrupt, written by "
                              "another program or by a version of wesam older than this one; resume from an intact "
                              "<out_dir>/checkpoints/last.ckpt, or start a new run.") from error
    missing = [key for key in required if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(f"Checkpoint '{path}' is not a training state of this program (it lacks "
                              f"{', '.join(missing)}). --resume takes <out_dir>/checkpoints/last.ckpt; an adapter "
                              "(.safetensors) goes to validate.py --ckpt or predict.py --ckpt.")
    return state


def write_checkpoint(path: str | Path, run: RunState, **parts: Any) -> None:
    """Write a last.ckpt (atomically): the run state and the `parts` of the program that writes it."""
    write_torch(path, {**run_state_dict(run), **parts})


def load_checkpoint(path: str | Path, parts: Sequence[str]) -> tuple[RunState, dict[str, Any]]:
    """The run state and the `parts` (ADAPTATION_PARTS or PRETRAINING_PARTS) of a last.ckpt.
    Raises CheckpointError for a file that lacks a key (another kind of file) or cannot be read."""
    state = read_checkpoint(path, required=(*RUN_KEYS, *parts))
    return run_from_state_dict(state), {key: state[key] for key in parts}


def checkpoint_config(path: str | Path) -> dict[str, Any]:
    """The config of the adaptation run whose last.ckpt is `path` (as the run had it)."""
    return read_checkpoint(path, required=("config",))["config"]


def save_checkpoint(fabric: Fabric, path: Path, run: RunState, parts: Callable[[], dict[str, Any]]) -> None:
    """Called by every rank: write last.ckpt with the run state, the random states of every rank
    ("rng") and the other parts, which `parts()` makes on rank 0 alone (it writes the file).
    Returns when the file is written."""
    rng = gather_objects(fabric, rng_state())
    if fabric.global_rank == 0:
        write_checkpoint(path, run, rng=rng, **parts())
    fabric.barrier()


def save_adaptation(fabric: Fabric, path: Path, run: RunState, cfg: Any, sam: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, adapters: Sequence[str], trainable_parameters: int) -> None:
    """save_checkpoint of adaptation.py: the config `cfg`, the LoRA weights of `adapters` in `sam`,
    the optimizer's state and the number of trainable parameters."""
    save_checkpoint(fabric, path, run, lambda: {
        "config": cfg.to_dict(), "lora": {name: adapter_state_dict(sam, name) for name in adapters},
        "optimizer": optimizer.state_dict(), "trainable_parameters": trainable_parameters})


def save_pretraining(fabric: Fabric, path: Path, run: RunState, sam: torch.nn.Module,
                     optimizer: torch.optim.Optimizer, args: dict[str, Any], command: str,
                     sessions: list[dict[str, Any]]) -> None:
    """save_checkpoint of tools/pretrain_source_sam.py: SAM's weights, the optimizer's state, the
    arguments, the command and the sessions."""
    save_checkpoint(fabric, path, run, lambda: {
        "model": {key: value.detach().cpu() for key, value in sam.state_dict().items()},
        "optimizer": optimizer.state_dict(), "args": args, "command": command, "sessions": sessions})


def restore_adaptation(fabric: Fabric, saved: dict[str, Any], sam: torch.nn.Module,
                       optimizer: torch.optim.Optimizer, adapters: Sequence[str]) -> None:
    """Continue an adaptation run from the parts of its last.ckpt (load_checkpoint): the LoRA
    weights of `adapters` into `sam`, the optimizer's state, and this rank's random states."""
    for name in adapters:
        load_adapter_state_dict(sam, saved["lora"][name], name)
    _restore_training(fabric, saved, optimizer)


def restore_pretraining(fabric: Fabric, saved: dict[str, Any], sam: torch.nn.Module,
                        optimizer: torch.optim.Optimizer) -> None:
    """Continue a pretraining run from the parts of its last.ckpt: SAM's weights, the optimizer's
    state, and this rank's random states."""
    sam.load_state_dict(saved["model"])
    _restore_training(fabric, saved, optimizer)


def _restore_training(fabric: Fabric, saved: dict[str, Any], optimizer: torch.optim.Optimizer) -> None:
    optimizer.load_state_dict(saved["optimizer"])
    # a run resumed on more ranks than it was saved from: the extra ones take the last rank's states
    set_rng_state(saved["rng"][min(fabric.global_rank, len(saved["rng"]) - 1)])


def rng_state() -> dict[str, Any]:
    """This process's Python, NumPy, torch (and CUDA) random states, as tensors, numbers and lists
    (loadable with weights_only=True)."""
    version, internal, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    state = {"python": [version, torch.tensor(internal, dtype=torch.int64), gauss],
             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore random states saved by rng_state."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal.tolist()), gauss))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def student_adapter(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The student's LoRA weights of an adaptation run's last.ckpt, and the metadata its adapter
    files hold: model_type, lora_rank and lora_targets (as models/adapters.py load_adapter returns them)."""
    state = read_checkpoint(path, required=("config", "lora"))
    config = state["config"]
    return state["lora"][STUDENT], {"model_type": config["model"]["type"], "lora_rank": config["lora"]["rank"],
                                    "lora_targets": targets_text(config["lora"].get("targets", DEFAULT_TARGETS))}


def load_student_adapter(sam: torch.nn.Module, path: str | Path, model_type: str, lora_rank: int,
                         lora_targets: Sequence[str]) -> None:
    """Load the student LoRA weights of an adapter file or a last.ckpt into `sam` (with LoRA).

    Raises CheckpointError when the file's metadata names another model.type, lora.rank or
    lora.targets than the config's (files written before lora.targets existed have q and v, the
    default), or when its weights do not fit the model (a file without metadata).
    """
    path = Path(path)
    if path.suffix == ".ckpt":
        weights, metadata = student_adapter(path)
    else:
        weights, metadata = load_adapter(path)
        if "lora_rank" in metadata:  # written by a run: before lora.targets, always on q and v
            metadata.setdefault("lora_targets", targets_text(DEFAULT_TARGETS))
    fix = "pass {key}={value} or the run's config.json (--config <out_dir>/config.json)"
    for key, config_key, value in (("model_type", "model.type", model_type), ("lora_rank", "lora.rank", lora_rank),
                                   ("lora_targets", "lora.targets", targets_text(lora_targets))):
        saved, value = str(metadata.get(key, value)), str(value)
        # the order of the targets changes nothing: each layer is adapted once, in the network's order
        if (set(saved.split(",")) != set(value.split(",")) if key == "lora_targets" else saved != value):
            raise CheckpointError(f"Adapter '{path}' was trained with {config_key}={saved} but the config "
                                  f"has {value}; " + fix.format(key=config_key, value=saved) + ".")
    try:
        load_adapter_state_dict(sam, weights, STUDENT)
    except ValueError as error:  # no metadata to compare: the weights themselves do not fit
        raise CheckpointError(f"Adapter '{path}' does not fit model.type={model_type}, lora.rank={lora_rank}, "
                              f"lora.targets={targets_text(lora_targets)}: {error} Use the config of the run that "
                              "wrote it (--config <out_dir>/config.json).") from error
