"""Shared fixtures and helpers: tiny configurations of both backbones, a finished run of each, the
command line as tests run it, and the repository root on sys.path."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# the tiny SAM with random weights on the CPU: what a test that runs no training gives a script
TINY = ["model.type=vit_tiny", "model.checkpoint=", "accelerator=cpu"]
# the two backbones every end-to-end test runs on: SAM's vit_tiny (256 px) and SAM 2's sam2_tiny (128 px)
BACKBONES = ["vit_tiny", "sam2_tiny"]


def tiny_config_overrides(out_dir: Path) -> list[str]:
    """Overrides for a fast run of the tiny SAM (random weights) on a few synthetic images, writing to
    out_dir; independent of what configs/config.py ships."""
    return [
        f"out_dir={out_dir}", "accelerator=cpu", "num_steps=4", "eval_interval=2", "log_interval=1",
        "val_batch_size=1", "model.type=vit_tiny", "model.checkpoint=", "dataset.synthetic.shift=camouflage",
        "dataset.synthetic.num_train=6", "dataset.synthetic.num_val=3", "dataset.synthetic.num_test=4",
        "dataset.synthetic.image_size=96",
    ]


def run_overrides(model_type: str, out_dir: Path, *extra: str) -> list[str]:
    """A fast run of `model_type` (one of BACKBONES, random weights) on the tiny synthetic dataset, writing
    to out_dir, with a learning rate that moves the adapters in its 4 steps; then `extra`."""
    return [*tiny_config_overrides(out_dir), f"model.type={model_type}", "opt.warmup_steps=1",
            "opt.learning_rate=1e-2", *extra]


@pytest.fixture
def tiny_overrides(tmp_path: Path) -> list[str]:
    """tiny_config_overrides writing to tmp_path / "run"."""
    return tiny_config_overrides(tmp_path / "run")


@pytest.fixture(scope="session")
def finished_runs(tmp_path_factory) -> Callable[[str], Path]:
    """model.type -> the folder of a finished run_overrides run of it (4 steps, evaluations at 0, 2, 4),
    made once for the whole session: tests read it and never change it."""
    import adaptation

    runs: dict[str, Path] = {}

    def run_of(model_type: str) -> Path:
        if model_type not in runs:
            run = tmp_path_factory.mktemp(f"{model_type}_run") / "run"
            adaptation.main(run_overrides(model_type, run))
            runs[model_type] = run
        return runs[model_type]

    return run_of


@pytest.fixture
def trained_run(finished_runs) -> Path:
    """The finished run of the tiny SAM: config.json, metrics, adapters, last.ckpt."""
    return finished_runs("vit_tiny")


def cli(main: Callable[[Sequence[str]], Any], argv: Sequence[str], capsys) -> tuple[int, str]:
    """Run main(argv) as the command line does; (exit status, message). An exception other than
    SystemExit (a traceback on the command line) fails the test."""
    from engine.checks import run_main

    with pytest.raises(SystemExit) as stop:
        run_main(lambda: main(list(argv)))
    code = stop.value.code
    err = capsys.readouterr().err
    if isinstance(code, str):  # sys.exit(message): printed by the interpreter, status 1
        return 1, code
    return code, err


def script_env() -> dict[str, str]:
    """This process's environment without the variables of a distributed run (a test may run in one)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("MASTER_", "LOCAL_RANK", "WORLD_SIZE", "RANK"))}


def run_script(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """`python *args` from the repository root, in a new interpreter: its status and output."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=script_env(), **kwargs)


def forbid_work(monkeypatch, *modules) -> None:
    """Make building a model or a dataset in `modules` fail the test: the check must come first."""
    def work(*args, **kwargs):
        raise AssertionError("work started before the mistake was caught")

    for module in modules:
        for name in ("build_wesam", "build_dataset", "build_network", "Fabric"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, work)


def snapshot(run: Path) -> dict[str, bytes]:
    """The bytes of every file a run has written (but its TensorBoard logs)."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and "tensorboard" not in p.parts}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def assert_same_adapters(path_a: Path, path_b: Path, atol: float = 0.0) -> None:
    """Two last.ckpt files of one step whose adapters agree to `atol` (0: bit for bit)."""
    from engine.checkpoint import read_checkpoint

    state_a, state_b = read_checkpoint(path_a), read_checkpoint(path_b)
    assert state_a["step"] == state_b["step"] and set(state_a["lora"]) == set(state_b["lora"])
    for adapter in state_a["lora"]:
        assert state_a["lora"][adapter].keys() == state_b["lora"][adapter].keys()
        for key, value in state_a["lora"][adapter].items():
            torch.testing.assert_close(state_b["lora"][adapter][key], value, rtol=0, atol=atol)


def load_tool(name: str):
    """tools/<name>.py as the module `name` (tools/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module
