"""LoRA adapter files: safetensors with plain-text metadata (model type, rank, step...), and the
student adapter of a run's last.ckpt. Torch files are read with weights_only=True: a checkpoint
from someone else cannot run code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from models.lora import DEFAULT_TARGETS, STUDENT, load_adapter_state_dict
from models.weight_files import CheckpointError
from utils.files import atomic_write


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


def save_adapter(path: str | Path, weights: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """Write LoRA weights as safetensors; metadata values (model type, rank, step...) as plain text."""
    text = {key: str(value) for key, value in metadata.items()}
    atomic_write(path, lambda tmp: save_file({k: v.cpu() for k, v in weights.items()}, str(tmp), metadata=text))


def _metadata_value(text: str) -> Any:
    """A metadata value: a number as a number, anything else as text. Files written before the
    values were plain text hold JSON ('"vit_b"', '4'), which reads the same."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return value if isinstance(value, (str, int, float)) else text


def load_adapter(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read LoRA weights and metadata written by save_adapter; CheckpointError for any other file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Adapter file '{path}' does not exist; runs write "
                                "<out_dir>/checkpoints/{best,last}-lora.safetensors.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = {key: _metadata_value(value) for key, value in (handle.metadata() or {}).items()}
        weights = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        head = path.read_bytes()[:4] if path.stat().st_size else b""
        kind = ("it is empty" if not head else "it is a torch file: a SAM checkpoint goes to model.checkpoint=..., "
                "a run's last.ckpt has the suffix .ckpt" if head[:2] == b"PK" else f"{error}")
        raise CheckpointError(f"Adapter file '{path}' is not a readable safetensors adapter ({kind}). Pass "
                              "<out_dir>/checkpoints/best-lora.safetensors or last-lora.safetensors of a run, "
                              "or its last.ckpt.") from error
    return weights, metadata


def targets_text(targets: Sequence[str]) -> str:
    """lora.targets as adapter metadata write it: "qv" or "qv,stride4"."""
    return ",".join(targets)


def load_student_adapter(sam: torch.nn.Module, path: str | Path, model_type: str, lora_rank: int,
                         lora_targets: Sequence[str]) -> None:
    """Load the student LoRA weights of an adapter file or a last.ckpt into `sam` (with LoRA).

    Raises CheckpointError when the file's metadata names another model.type, lora.rank or
    lora.targets than the config's (files written before lora.targets existed have q and v, the
    default), or when its weights do not fit the model (a file without metadata).
    """
    path = Path(path)
    if path.suffix == ".ckpt":
        state = read_checkpoint(path, required=("config", "lora"))
        weights = state["lora"][STUDENT]
        lora = state["config"]["lora"]
        metadata = {"model_type": state["config"]["model"]["type"], "lora_rank": lora["rank"],
                    "lora_targets": targets_text(lora.get("targets", DEFAULT_TARGETS))}
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
