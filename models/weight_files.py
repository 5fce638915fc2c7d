"""Weight files of any family: where a relative path is found, state dicts read from .safetensors or
torch files, and the error of a file that is missing or does not fit."""

from __future__ import annotations

from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent


class CheckpointError(RuntimeError):
    """A SAM checkpoint that is missing or does not fit the requested model."""


def resolve_path(path: str | Path) -> Path:
    """`path` as given, or relative to the repository when it is relative and not found from the
    working directory (so the shipped weights load from any folder)."""
    path = Path(path)
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        return REPO_ROOT / path
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a .safetensors or torch (.pth/.pt) state dict."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    return state.get("model", state) if isinstance(state, dict) else state
