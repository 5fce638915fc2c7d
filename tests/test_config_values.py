"""A config value that cannot work stops every script before any work, in one line naming the key and
what it must be: a number outside its range (on every script, in a saved config.json too, for every cell
of a benchmark before its first run), a batch larger than the training split, CUDA without a GPU. The
checks themselves: tests/test_config.py."""

from __future__ import annotations

import pytest
import torch

import adaptation
import predict
import validate
from tests.conftest import TINY, cli, forbid_work, load_tool
from tests.ondisk import write_image


@pytest.mark.parametrize("override, expected", [
    ("opt.learning_rate=-1e-4", "'opt.learning_rate' is -0.0001; it must be in (0, 1]"),
    ("opt.learning_rate=1e6", "'opt.learning_rate' is 1e+06; it must be in (0, 1]"),
    ("opt.weight_decay=-1.0", "'opt.weight_decay' is -1; it must be 0 or more"),
])
def test_optimisation_values(tiny_overrides, tmp_path, capsys, override, expected):
    code, message = cli(adaptation.main, tiny_overrides + [override], capsys)
    assert code == 1 and expected in message
    assert not (tmp_path / "run").exists(), "stopped before any work"


@pytest.mark.parametrize("script", ["adaptation", "validate", "predict", "export", "auto_instances"])
@pytest.mark.parametrize("override, expected", [
    ("seed=-1", "'seed' is -1; it must be in [0, 2147483647]"),
    ("loss.temperature=0", "'loss.temperature' is 0; it must be more than 0"),
    ("opt.learning_rate=2.0", "'opt.learning_rate' is 2; it must be in (0, 1]"),
    ("auto.box_nms_thresh=1.5", "'auto.box_nms_thresh' is 1.5; it must be in [0, 1]"),
    ("opt.decay_steps=[10,-1]", "'opt.decay_steps' holds -1; each of its numbers must be 0 or more"),
])
def test_config_values_outside_their_range_stop_every_script(tmp_path, capsys, monkeypatch, script, override,
                                                              expected):
    modules = {"adaptation": adaptation, "validate": validate, "predict": predict}
    module = modules.get(script) or load_tool(script)
    forbid_work(monkeypatch, module)
    write_image(tmp_path / "images/a.png")
    argv = {"adaptation": [f"out_dir={tmp_path / 'run'}"], "validate": [],
            "predict": ["--images", str(tmp_path / "images"), "--box", "1,1,9,9", "--out", str(tmp_path / "out")],
            "export": ["--ckpt", str(tmp_path / "adapter.safetensors"), "--out", str(tmp_path / "merged.pth")],
            "auto_instances": [f"out_dir={tmp_path / 'run'}"]}[script]
    code, message = cli(module.main, [*argv, *TINY, override], capsys)
    assert code == 1 and f"Error: Config key {expected}" in message
    assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists()


def test_non_finite_value_in_a_saved_config_json(tmp_path, capsys):
    """A run's config.json given to validate.py can hold NaN (Python's json writes and reads it)."""
    config = tmp_path / "config.json"
    config.write_text('{"metric": {"threshold": NaN}}')
    code, message = cli(validate.main, ["--config", str(config), *TINY], capsys)
    assert code == 1 and "Config key 'metric.threshold' is nan; it must be a finite number" in message


def test_benchmark_shift_checks_every_cell_before_the_first_run(tmp_path, capsys, monkeypatch):
    """A seed outside its range stops the benchmark before any run, not at that seed's first cell."""
    module = load_tool("benchmark_shift")
    monkeypatch.setattr(module, "run_all", lambda args: pytest.fail("work started"))
    code, message = cli(module.main, ["--seeds", "0,-1", "--runs", str(tmp_path / "runs"), "--out",
                                      str(tmp_path / "results"), *TINY], capsys)
    assert code == 1 and "Config key 'seed' is -1; it must be in [0, 2147483647]" in message
    assert not (tmp_path / "runs").exists()


def test_batch_larger_than_the_training_split(tiny_overrides, tmp_path, capsys):
    code, message = cli(adaptation.main, tiny_overrides + ["dataset.synthetic.num_train=2", "batch_size=3"], capsys)
    assert code == 1 and "has 2 image(s), fewer than batch_size x devices x num_nodes = 3 x 1 x 1" in message
    assert not (tmp_path / "run/checkpoints").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu(tiny_overrides, tmp_path, capsys):
    overrides = [o for o in tiny_overrides if not o.startswith("accelerator")] + ["accelerator=cuda"]
    code, message = cli(adaptation.main, overrides, capsys)
    assert code == 1 and "accelerator=cuda but no CUDA GPU is visible" in message and "accelerator=cpu" in message
    assert not (tmp_path / "run").exists()
