"""An expected mistake reads as the same one line wherever it is met: on the command line (no traceback;
a bug of ours keeps its traceback), in the main process, in a DataLoader worker (num_workers > 0), or in
one process of a distributed run (the others say it too, instead of the backend's traceback or a hang)."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from torch.utils.data import DataLoader, Dataset

import adaptation
from datasets import DatasetLayoutError, UnusableDatasetError
from engine.checks import error_message, run_main
from tests.conftest import ROOT, run_script, script_env, tiny_config_overrides
from tests.ondisk import labels, write_corrupt, write_image, write_mask

LINE = ("Error: None of the 3 images of the train split of 'folder' could be used for training; the warnings above "
        "name each file and the reason.")


class Failing(Dataset):
    def __init__(self, error: Exception) -> None:
        self.error = error

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int):
        raise self.error


@pytest.mark.parametrize("error", [
    UnusableDatasetError("None of the 4 images could be used for training."),
    DatasetLayoutError("Dataset 'folder': folder 'x' not found.\nExpected layout:\n  <root>/\n    images/"),
], ids=["one line", "several lines"])
def test_a_worker_error_gives_back_its_own_message(error):
    with pytest.raises(type(error)) as raised:
        next(iter(DataLoader(Failing(error), num_workers=2)))
    assert str(raised.value).startswith("Caught ")  # torch's wrapping, with the worker's traceback
    assert error_message(raised.value) == str(error)


def test_a_message_that_only_mentions_a_worker_is_left_alone():
    message = "Caught nothing in DataLoader worker process 1 (a user's words)"
    assert error_message(UnusableDatasetError(message)) == message


def write_unusable_training_split(root: Path) -> None:
    """Per-split folders: 3 unreadable training images, 3 good test images."""
    for stem in "abc":
        write_corrupt(root / "train" / "images" / f"{stem}.png")
        write_mask(root / "train" / "masks" / f"{stem}.png", labels({1: (5, 5, 20, 20)}))
        write_image(root / "test" / "images" / f"{stem}.png")
        write_mask(root / "test" / "masks" / f"{stem}.png", labels({1: (5, 5, 20, 20)}))


def adaptation_line(overrides: list[str]) -> str:
    """The line adaptation.py ends with (the skipped images' warnings aside)."""
    with pytest.raises(SystemExit) as stop, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_main(lambda: adaptation.main(overrides))
    return f"{stop.value.code}"


@pytest.mark.slow
def test_a_worker_says_the_main_processs_line(tmp_path):
    write_unusable_training_split(tmp_path / "data")
    base = tiny_config_overrides(tmp_path / "run") + ["dataset.name=folder", f"dataset.root={tmp_path / 'data'}",
                                                      "num_steps=2"]
    assert adaptation_line(base + ["num_workers=0", f"out_dir={tmp_path / 'run0'}"]) == LINE
    assert adaptation_line(base + ["num_workers=2", f"out_dir={tmp_path / 'run2'}"]) == LINE


def distributed_run(tmp_path: Path, other_rank: str) -> subprocess.CompletedProcess:
    """adaptation.py with devices=2 (gloo DDP on the CPU); the process of `other_rank` ("0", "1", or
    "both") reads a training split of unusable images, the other a good one."""
    write_unusable_training_split(tmp_path / "bad")
    for stem in "abc":
        for split in ("train", "test"):
            write_image(tmp_path / "good" / split / "images" / f"{stem}.png")
            write_mask(tmp_path / "good" / split / "masks" / f"{stem}.png", labels({1: (5, 5, 20, 20)}))
    env = script_env()
    env.update(OMP_NUM_THREADS="1", WESAM_OTHER_DATA_RANK=other_rank, WESAM_OTHER_DATA_ROOT=str(tmp_path / "bad"))
    root = tmp_path / ("bad" if other_rank == "both" else "good")
    overrides = [o for o in tiny_config_overrides(tmp_path / "run") if not o.startswith("num_steps")]
    return subprocess.run([sys.executable, "tests/one_rank_data.py", *overrides, "dataset.name=folder",
                           f"dataset.root={root}", "num_steps=2", "devices=2", "strategy=ddp"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("other_rank", ["0", "1", "both"])
def test_every_process_of_a_distributed_run_says_the_same_line(tmp_path, other_rank):
    """Rank 0 holds the run's store (Fabric's launcher): it fails alone, or the other does, or both."""
    result = distributed_run(tmp_path, other_rank)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert result.returncode == 1, result.stderr[-3000:]
    assert errors == [LINE, LINE], result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "[rank" not in result.stderr, result.stderr[-3000:]


def test_command_line_prints_the_message_without_a_traceback(trained_run, tmp_path):
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    result = run_script("validate.py", "--config", str(trained_run / "config.json"), "--ckpt", str(empty))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"Error: Adapter file '{empty}'")


def test_a_bug_of_ours_keeps_its_traceback():
    def buggy() -> None:
        raise KeyError("a bug")

    with pytest.raises(KeyError, match="a bug"):
        run_main(buggy)
