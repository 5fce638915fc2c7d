"""utils/lock.py: one process at a time holds a folder; a killed holder leaves nothing stuck."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from utils.lock import FolderInUseError, FolderLock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_held_folder_is_refused_naming_the_holder_and_free_again_after_release(tmp_path):
    with FolderLock(tmp_path / "run"):
        with pytest.raises(FolderInUseError, match=rf"in use by another run \(process {os.getpid()} on "):
            FolderLock(tmp_path / "run").acquire()
    with FolderLock(tmp_path / "run") as lock:  # released: free again, and the record names the new holder
        assert lock.holder()["pid"] == os.getpid()


def test_a_killed_holder_leaves_the_folder_free(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]); from utils.lock import FolderLock; "
        "FolderLock(sys.argv[2]).acquire(); print('held', flush=True); time.sleep(60)"), ROOT, str(tmp_path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderInUseError, match=f"process {holder.pid} "):
            FolderLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    deadline = time.time() + 10
    while True:  # the kernel drops the lock with the process
        try:
            with FolderLock(tmp_path):
                break
        except FolderInUseError:
            assert time.time() < deadline, "the killed holder's lock was not released"
            time.sleep(0.1)
