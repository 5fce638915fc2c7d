"""utils/lock.py: one process at a time holds a folder; a killed holder leaves nothing stuck; a second
adaptation.py on a run folder in use stops before any work, naming the first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, run_script, script_env, tiny_config_overrides
from utils.lock import FolderInUseError, FolderLock


def test_a_held_folder_is_refused_naming_the_holder_and_free_again_after_release(tmp_path):
    with FolderLock(tmp_path / "run"):
        with pytest.raises(FolderInUseError, match=rf"in use by another run \(process {os.getpid()} on "):
            FolderLock(tmp_path / "run").acquire()
    with FolderLock(tmp_path / "run") as lock:  # released: free again, and the record names the new holder
        assert lock.holder()["pid"] == os.getpid()


def test_a_killed_holder_leaves_the_folder_free(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]); from utils.lock import FolderLock; "
        "FolderLock(sys.argv[2]).acquire(); print('held', flush=True); time.sleep(60)"), str(ROOT), str(tmp_path)],
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


@pytest.mark.slow
def test_a_second_run_on_a_folder_in_use_is_refused_naming_the_first(tmp_path):
    """Two runs started on one out_dir: the second stops before any work, naming the first, which
    is left to finish alone (before, both ended 'Done' and the folder mixed their files)."""
    run = tmp_path / "run"
    overrides = [o for o in tiny_config_overrides(run) if not o.startswith(("num_steps", "eval_interval"))]
    first = subprocess.Popen([sys.executable, "adaptation.py", *overrides, "num_steps=100000", "eval_interval=50000"],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=script_env())
    try:
        deadline = time.time() + 60
        while not (run / "config.json").exists():
            assert first.poll() is None and time.time() < deadline, "the first run did not start"
            time.sleep(0.2)
        config_before = (run / "config.json").read_bytes()
        second = run_script("adaptation.py", *overrides, "num_steps=2", "prompt=point")
        assert second.returncode == 1 and "Traceback" not in second.stderr
        assert f"Error: '{run}' is in use by another run (process {first.pid} on " in second.stderr
        assert (run / "config.json").read_bytes() == config_before, "the second run wrote nothing"
    finally:
        first.kill()
        first.wait()
    assert run_script("adaptation.py", "--resume", str(run / "checkpoints/last.ckpt"), "num_steps=2").returncode == 0, \
        "a killed run leaves its folder free"
