"""Where a script writes and how: the paths a user gives, with `~` and $VARIABLES expanded once
where they are read (expand_path, path_argument); one check of an output path, made before any
work, that a script can write where it was told to (check_output); whether two paths name one
file or folder (same_path); files that survive a crash, written to a temporary
name and renamed, so a reader sees either the previous complete file or the new one (atomic_write
and the write_* functions); and one message for a write that fails later all the same (writing),
a full disk told apart (DiskFullError). No project imports: every layer writes its files through here.

Missing parent folders are never a mistake: every writer creates them. So a path can be written
when it is not an existing entry of the other kind and its nearest existing ancestor is a folder
in which a file can be created.
"""

from __future__ import annotations

import argparse
import csv
import errno
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch


class OutputPathError(OSError):
    """An output path that cannot be written: the wrong kind, below a file, or not writable."""


UNSET_VARIABLE = re.compile(r"\$(\w+|\{\w+\})")


def expand_path(text: str) -> str:
    """`text` with a leading `~` (the home folder) and $NAME / ${NAME} (environment variables)
    expanded, as a shell would; ValueError naming a variable that is not set (it would otherwise
    become a folder named '$NAME')."""
    expanded = os.path.expandvars(os.path.expanduser(text))
    if unset := UNSET_VARIABLE.search(expanded):
        raise ValueError(f"'{text}' uses the environment variable {unset.group(1).strip('{}')}, which is not set; "
                         "set it or write the path out")
    return expanded


def path_argument(text: str) -> str:
    """argparse `type` of an option that takes a path: expand_path, its error an argparse error."""
    try:
        return expand_path(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def same_path(first: str | Path, second: str | Path) -> bool:
    """Whether two paths name one file or folder (through symbolic links and relative parts)."""
    return Path(first).resolve() == Path(second).resolve()


def _another(option: str) -> str:
    """How to name another value of `option`: a command-line option or a config key."""
    return option if option.startswith("-") else f"{option}=..."


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def check_output(path: str | Path, option: str, kind: str = "file", instead: str | None = None) -> Path:
    """Raise OutputPathError naming `option` unless `path` can be written as a `kind` ("file" or
    "folder"), and telling to change the option `instead` (default: `option`) where the path
    derives from another one; return it as a Path. Nothing is left behind: the write test's file
    vanishes on close."""
    another = _another(instead or option)
    text = str(path)
    if not text:
        raise OutputPathError(f"{option} is empty; give the path of a {kind}.")
    path = Path(path)
    try:
        if kind == "file" and text.endswith(("/", os.sep)):
            raise OutputPathError(f"{option} '{text}' ends with '/', a folder; give the path of a file.")
        if kind == "file" and path.is_dir():
            raise OutputPathError(f"{option} '{path}' is a folder, not a file; give the path of a file "
                                  "(inside that folder, for example).")
        if kind == "folder" and path.exists() and not path.is_dir():
            raise OutputPathError(f"{option} '{path}' is a file, not a folder; choose another {another}.")
        ancestor = path if path.is_dir() else path.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise OutputPathError(f"{option} '{path}' lies below '{ancestor}', which is a file, not a folder; "
                                  f"choose another {another}.")
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OutputPathError:
        raise
    except OSError as error:  # a folder that cannot be written or searched, a read-only file system
        raise OutputPathError(f"{option} '{path}' cannot be written ({_reason(error)}); choose a writable "
                              f"{another}.") from None
    return path


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Within `with`: an OSError (but an OutputPathError, already a message) becomes an
    OutputPathError naming `path`, for a write that fails after the checks (a folder that became
    read-only, a disk gone, a file put in the way)."""
    try:
        yield
    except OutputPathError:
        raise
    except OSError as error:
        raise OutputPathError(f"Could not write '{path}' ({_reason(error)}); fix that (or choose another output), "
                              "then run again.") from error


def make_folder(path: str | Path) -> Path:
    """Create the folder `path` and its parents (if missing); an OSError becomes an OutputPathError
    naming it (writing). Returns it as a Path."""
    path = Path(path)
    with writing(path):
        path.mkdir(parents=True, exist_ok=True)
    return path


# Free space below which a failed write is taken for a full disk (a few file-system blocks).
FULL_DISK_BYTES = 2**20


class DiskFullError(OutputPathError):
    """A file could not be written for lack of space; the previous file at its path is intact."""


def _file_mode() -> int:
    """0666 less the process umask: the mode open() gives a new file (safetensors writes 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> None:
    """write(tmp) then rename tmp to path. On failure tmp is removed and `path` is untouched; a full
    disk raises DiskFullError naming the file and the free space, another OSError OutputPathError."""
    path = Path(path)
    make_folder(path.parent)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except Exception as error:  # an OSError becomes a message, anything else is re-raised as it is, but a full disk
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
