"""LoRA adapter files: safetensors with plain-text metadata (model type, rank, step...). A run's
last.ckpt, and loading the student adapter of either kind of file, are engine/checkpoint.py's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from models.weight_files import CheckpointError
from utils.files import atomic_write


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
