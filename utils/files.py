"""Files that survive a crash: every file is written to a temporary name and renamed, so a reader
sees either the previous complete file or the new one. A full disk is told apart from other
failures (DiskFullError). No project imports: every layer writes its files through here."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

# Free space below which a failed write is taken for a full disk (a few file-system blocks).
FULL_DISK_BYTES = 2**20


class DiskFullError(OSError):
    """A file could not be written for lack of space; the previous file at its path is intact."""


def _file_mode() -> int:
    """0666 less the process umask: the mode open() gives a new file (safetensors writes 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> None:
    """write(tmp) then rename tmp to path. On failure tmp is removed and `path` is untouched; a full
    disk raises DiskFullError naming the file and the free space."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except Exception as error:  # re-raised as it is unless the disk is full
        # torch's writer reports a full disk as a RuntimeError without errno ("unexpected pos ...") and
        # safetensors as its own error: tell it by the space left while the partial file holds its share
        full = getattr(error, "errno", None) == errno.ENOSPC or shutil.disk_usage(path.parent).free < FULL_DISK_BYTES
        tmp.unlink(missing_ok=True)
        if not full:
            raise
        free = shutil.disk_usage(path.parent).free
        disk_full = DiskFullError(f"No space left on the disk of '{path.parent}' while writing '{path.name}' "
                                  f"({free / 2**20:.2f} MiB free); the previous "
                                  f"'{path.name}' is intact. Free some space (or choose another out_dir), then run "
                                  "again.")
        disk_full.errno = errno.ENOSPC
        raise disk_full from error


def write_torch(path: str | Path, data: Any) -> None:
    """torch.save `data` (tensors, numbers, strings, lists and dicts: loadable with weights_only=True)."""
    atomic_write(path, lambda tmp: torch.save(data, tmp))


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | Path, data: Any) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> None:
    """Write rows (dicts; keys beyond `fields` ignored) as a CSV file with a header."""
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(fields), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)
