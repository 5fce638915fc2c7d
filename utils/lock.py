"""A run holds its folder: while one process writes a run's out_dir, a second one is refused with
a message naming the holder, instead of both finishing and the folder mixing their files.

The lock is `flock` on `<folder>/.lock`: the operating system releases it when the holding
process ends, however it ends, so a crashed or killed run never leaves a folder stuck. The file
keeps a description of its last holder (process, host, start time, command) for the message.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from lightning_fabric.utilities.rank_zero import rank_zero_only

from utils.config import ConfigError

LOCK_FILE = ".lock"


class FolderInUseError(ConfigError):
    """Another live process holds the folder."""


class FolderLock:
    """`with FolderLock(folder):` holds `folder` for this process; FolderInUseError if another
    process holds it. Not re-entrant: a second hold of the same folder, even from this process,
    is refused."""

    def __init__(self, folder: str | Path, purpose: str = "run") -> None:
        self.path = Path(folder) / LOCK_FILE
        self.purpose = purpose
        self.fd: int | None = None

    def holder(self) -> dict[str, Any]:
        """What the lock file says about its last holder ({} if unreadable)."""
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = self.holder()
            who = (f"process {holder.get('pid', '?')} on {holder.get('host', '?')}, started "
                   f"{holder.get('started', '?')}: {holder.get('command', '?')}") if holder else "another process"
            raise FolderInUseError(f"'{self.path.parent}' is in use by another {self.purpose} ({who}). Two runs in one "
                                   "folder would mix their files: wait for it to end (or stop it), or choose another "
                                   "out_dir=...") from None
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(record) + "\n").encode())
        self.fd = fd

    def release(self) -> None:
        """Unlock (the file stays: removing it would let a process that opened it meanwhile lock
        a file no longer in the folder)."""
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def hold_folder(folder: str | Path, purpose: str = "run") -> AbstractContextManager:
    """`with hold_folder(out_dir):` a run's hold on its folder: a FolderLock in the process of rank 0
    (known from the environment before DDP starts), nothing in the others, so that one lock stands
    for every process of the run."""
    return FolderLock(folder, purpose) if rank_zero_only.rank == 0 else nullcontext()
