"""Output paths: one check, made before any work, that a script can write where it was told to, and
the message for a write that fails later all the same.

Missing parent folders are never a mistake: every writer creates them. So a path can be written
when it is not an existing entry of the other kind and its nearest existing ancestor is a folder
in which a file can be created.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class OutputPathError(OSError):
    """An output path that cannot be written: the wrong kind, below a file, or not writable."""


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
