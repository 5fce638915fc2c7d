"""Checkpoints that survive a crash: every file is written to a temporary name and renamed, so a
reader sees either the previous complete file or the new one. Training states hold only tensors,
numbers, strings, lists and dicts, so they load with torch.load(weights_only=True): a checkpoint
from someone else cannot run code."""

from __future__ import annotations

import csv
import errno
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from models.lora import STUDENT, load_adapter_state_dict
from models.registry import CheckpointError
from utils.paths import OutputPathError, writing

# Keys every training state of adaptation.py holds (a foreign file lacks them).
STATE_KEYS = ("config", "step", "lora", "optimizer", "scheduler", "rng")


# Free space below which a failed write is taken for a full disk (a few file-system blocks).
FULL_DISK_BYTES = 2**20


class DiskFullError(OutputPathError):
    """A file could not be written for lack of space; the previous file at its path is intact."""


def _file_mode() -> int:
    """0666 less the process umask: the mode open() gives a new file (safetensors writes 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """write(tmp) then rename tmp to path. On failure tmp is removed and `path` is untouched; a full
    disk raises DiskFullError naming the file and the free space, another OSError OutputPathError."""
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except Exception as error:  # an OSError becomes a message; anything else is re-raised as it is, but a full disk
        # torch's writer reports a full disk as a RuntimeError without errno ("unexpected pos ...") and
        # safetensors as its own error: tell it by the space left while the partial file holds its share
        full = getattr(error, "errno", None) == errno.ENOSPC or shutil.disk_usage(path.parent).free < FULL_DISK_BYTES
        tmp.unlink(missing_ok=True)
        if not full:
            with writing(path):
                raise
        free = shutil.disk_usage(path.parent).free
        disk_full = DiskFullError(f"No space left on the disk of '{path.parent}' while writing '{path.name}' "
                                  f"({free / 2**20:.2f} MiB free); the previous "
                                  f"'{path.name}' is intact. Free some space (or choose another out_dir), then run "
                                  "again.")
        disk_full.errno = errno.ENOSPC
        raise disk_full from error


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """torch.save a training state atomically."""
    _atomic(Path(path), lambda tmp: torch.save(state, tmp))


def load_state(path: str | Path, required: Sequence[str] = ()) -> dict[str, Any]:
    """Read a training state written by save_state, with weights_only=True (no code runs).

    Raises CheckpointError when the file is empty, truncated, not a torch file, or lacks one of
    the `required` keys (another kind of file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint '{path}' does not exist; runs write it as <out_dir>/checkpoints/last.ckpt.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError... for a bad file
        hint = " (it is empty)" if path.stat().st_size == 0 else f" ({type(error).__name__}: {str(error).splitlines()[0]})"
        raise CheckpointError(f"Checkpoint '{path}' could not be read{hint}. It is truncated, corrupt, written by "
                              "another program or by a version of wesam older than this one; resume from an intact "
                              "<out_dir>/checkpoints/last.ckpt, or start a new run.") from error
    missing = [key for key in required if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(f"Checkpoint '{path}' is not a training state of adaptation.py (it lacks "
                              f"{', '.join(missing)}). --resume takes <out_dir>/checkpoints/last.ckpt; an adapter "
                              "(.safetensors) goes to validate.py --ckpt or predict.py --ckpt.")
    return state


def save_adapter(path: str | Path, weights: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """Write LoRA weights as safetensors; metadata values (model type, rank, step...) as plain text."""
    text = {key: str(value) for key, value in metadata.items()}
    _atomic(Path(path), lambda tmp: save_file({k: v.cpu() for k, v in weights.items()}, str(tmp), metadata=text))


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


def load_student_adapter(sam: torch.nn.Module, path: str | Path, model_type: str, lora_rank: int) -> None:
    """Load the student LoRA weights of an adapter file or a last.ckpt into `sam` (with LoRA).

    Raises CheckpointError when the file's metadata names another model.type or lora.rank than
    the config's, or when its weights do not fit the model (a file without metadata).
    """
    path = Path(path)
    if path.suffix == ".ckpt":
        state = load_state(path, required=("config", "lora"))
        weights = state["lora"][STUDENT]
        metadata = {"model_type": state["config"]["model"]["type"], "lora_rank": state["config"]["lora"]["rank"]}
    else:
        weights, metadata = load_adapter(path)
    fix = "pass {key}={value} or the run's config.json (--config <out_dir>/config.json)"
    for key, config_key, value in (("model_type", "model.type", model_type), ("lora_rank", "lora.rank", lora_rank)):
        if key in metadata and str(metadata[key]) != str(value):
            raise CheckpointError(f"Adapter '{path}' was trained with {config_key}={metadata[key]} but the config "
                                  f"has {value}; " + fix.format(key=config_key, value=metadata[key]) + ".")
    try:
        load_adapter_state_dict(sam, weights, STUDENT)
    except ValueError as error:  # no metadata to compare: the weights themselves do not fit
        raise CheckpointError(f"Adapter '{path}' does not fit model.type={model_type}, lora.rank={lora_rank}: "
                              f"{error} Use the config of the run that wrote it (--config <out_dir>/config.json).") \
            from error


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


def config_of(config: str | None, checkpoint: str | Path | None) -> str | Path | None:
    """The config a script reads: `config` if given, else the config.json of the run that wrote
    `checkpoint` (<out_dir>/checkpoints/FILE) if it is there, else None (configs/config.py)."""
    if config or not checkpoint:
        return config
    path = Path(checkpoint).resolve().parent.parent / "config.json"
    return path if path.is_file() else None
