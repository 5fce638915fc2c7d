"""Checkpoints that survive a crash: every file is written to a temporary name and renamed, so a
reader sees either the previous complete file or the new one."""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file


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


def write_text(path: str | Path, text: str) -> None:
    _atomic(Path(path), lambda tmp: tmp.write_text(text))


def write_json(path: str | Path, data: Any) -> None:
    _atomic(Path(path), lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> None:
    """Write rows (dicts; keys beyond `fields` ignored) as a CSV file with a header."""
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(fields), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    _atomic(Path(path), write)


def rng_state() -> dict[str, Any]:
    """This process's Python, NumPy, torch (and CUDA) random states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore random states saved by rng_state."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
