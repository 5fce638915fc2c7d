"""Checkpoints that survive a crash: every file is written to a temporary name and renamed, so a
reader sees either the previous complete file or the new one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from safetensors import safe_open


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """torch.save a training state atomically."""
    _atomic(Path(path), lambda tmp: torch.save(state, tmp))


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a training state written by save_state (a last.ckpt)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint '{path}' does not exist; runs write it as <out_dir>/checkpoints/last.ckpt.")
    return torch.load(path, map_location="cpu", weights_only=False)


def save_adapter(path: str | Path, weights: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """Write LoRA weights as safetensors with JSON-encoded metadata (model type, rank, step...)."""
    text = {key: json.dumps(value) for key, value in metadata.items()}
    _atomic(Path(path), lambda tmp: save_file({k: v.cpu() for k, v in weights.items()}, str(tmp), metadata=text))


def load_adapter(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read LoRA weights and metadata written by save_adapter."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Adapter file '{path}' does not exist; runs write "
                                "<out_dir>/checkpoints/{best,last}-lora.safetensors.")
    with safe_open(str(path), framework="pt") as handle:
        metadata = {key: json.loads(value) for key, value in (handle.metadata() or {}).items()}
    return load_file(str(path)), metadata


def write_json(path: str | Path, data: Any) -> None:
    _atomic(Path(path), lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))
