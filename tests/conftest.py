"""Shared fixtures: a tiny configuration and the repository root on sys.path."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def tiny_config_overrides(out_dir: Path) -> list[str]:
    """Overrides for a fast run of the tiny SAM (random weights) on a few synthetic images, writing to
    out_dir; independent of what configs/config.py ships."""
    return [
        f"out_dir={out_dir}", "accelerator=cpu", "num_steps=4", "eval_interval=2", "log_interval=1",
        "val_batch_size=1", "model.type=vit_tiny", "model.checkpoint=", "dataset.synthetic.shift=camouflage",
        "dataset.synthetic.num_train=6", "dataset.synthetic.num_val=3", "dataset.synthetic.num_test=4",
        "dataset.synthetic.image_size=96",
    ]


@pytest.fixture
def tiny_overrides(tmp_path: Path) -> list[str]:
    """tiny_config_overrides writing to tmp_path / "run"."""
    return tiny_config_overrides(tmp_path / "run")


def load_tool(name: str):
    """tools/<name>.py as the module `name` (tools/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module
