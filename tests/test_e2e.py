"""End-to-end: adaptation.py for a few steps on the tiny SAM, then validate.py on its checkpoints."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import adaptation
import validate
from losses.wesam_loss import wesam_loss
from tests.conftest import ROOT
from utils.config import ConfigError, load_config


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def check_run_files(run: Path, steps: list[int]) -> dict:
    assert json.loads((run / "config.json").read_text())["out_dir"] == str(run)
    rows = read_csv(run / "metrics.csv")
    assert [int(r["step"]) for r in rows] == steps
    assert all(0.0 <= float(r["miou"]) <= 1.0 and 0.0 <= float(r["f1"]) <= 1.0 for r in rows)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["direct"]["step"] == 0 and summary["last"]["step"] == steps[-1]
    assert summary["best"]["miou"] == max(float(r["miou"]) for r in rows)
    assert summary["direct"]["miou"] == pytest.approx(float(rows[0]["miou"]))
    # the teacher's pseudo-label mIoU over each evaluation interval (none before training, none when supervised)
    supervised = json.loads((run / "config.json").read_text())["loss"]["target"] == "ground_truth"
    assert rows[0]["pseudo_label_iou"] == "" and "pseudo_label_iou" not in summary["direct"]
    assert all((r["pseudo_label_iou"] == "") if supervised else 0.0 <= float(r["pseudo_label_iou"]) <= 1.0
               for r in rows[1:])
    for name in ("best-lora.safetensors", "last-lora.safetensors"):
        weights = load_file(str(run / "checkpoints" / name))
        assert len(weights) == 2 * 4 and all(v.dtype == torch.float32 for v in weights.values())
    assert (run / "checkpoints" / "last.ckpt").stat().st_size > 0
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    return summary


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["shared", "ema"])
@pytest.mark.parametrize("prompt", ["box", "point", "coarse:box", "coarse:mask"])
def test_adapt_then_validate(tiny_overrides, tmp_path, prompt, mode):
    prompt, _, coarse_as = prompt.partition(":")
    overrides = tiny_overrides + [f"prompt={prompt}", f"teacher.mode={mode}", f"coarse_as={coarse_as or 'box'}",
                                  "opt.warmup_steps=1", "opt.learning_rate=1e-2"]
    result = adaptation.main(overrides)
    run = tmp_path / "run"
    summary = check_run_files(run, [0, 2, 4])
    assert result["last"] == summary["last"]

    # validate.py on the saved adapter reproduces the run's own last evaluation
    out = tmp_path / "last.json"
    adapted = validate.main(["--config", str(run / "config.json"),
                             "--ckpt", str(run / "checkpoints/last-lora.safetensors"), "--out", str(out)])
    assert json.loads(out.read_text()) == adapted
    assert set(adapted) == {"dataset", "prompt", "miou", "f1", "area_ratio", "num_images", "num_instances",
                            "skipped_images"}
    assert adapted["prompt"] == prompt and adapted["num_images"] == 4 and adapted["num_instances"] >= 4
    assert adapted["miou"] == pytest.approx(summary["last"]["miou"], abs=1e-6)
    direct = validate.main(["--config", str(run / "config.json")])
    assert direct["miou"] == pytest.approx(summary["direct"]["miou"], abs=1e-6)
    from_state = validate.main(["--ckpt", str(run / "checkpoints/last.ckpt")])  # config: the run's config.json
    assert from_state["miou"] == pytest.approx(adapted["miou"], abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["shared", "ema"])
def test_resume_continues_exactly(tiny_overrides, tmp_path, mode):
    common = [o for o in tiny_overrides if not o.startswith("out_dir")] + [
        f"teacher.mode={mode}", "teacher.ema_rate=0.5", "opt.warmup_steps=2", "opt.learning_rate=1e-2", "prompt=point"]
    straight = tmp_path / "straight"
    adaptation.main(common + [f"out_dir={straight}"])
    split = tmp_path / "split"
    adaptation.main(common + [f"out_dir={split}", "num_steps=2"])
    for changed in ("teacher.mode=" + ("shared" if mode == "ema" else "ema"), "lora.rank=8"):
        with pytest.raises(ConfigError, match="cannot change when resuming"):
            adaptation.main(["--resume", str(split / "checkpoints/last.ckpt"), changed])
    with pytest.raises(ConfigError, match="already holds a run"):  # out_dir= moves a run, never onto another
        adaptation.main(["--resume", str(split / "checkpoints/last.ckpt"), f"out_dir={straight}"])
    adaptation.main(["--resume", str(split / "checkpoints/last.ckpt"), "num_steps=4"])
    check_run_files(split, [0, 2, 4])
    assert_same_adapters(straight / "checkpoints/last.ckpt", split / "checkpoints/last.ckpt")
    assert read_csv(straight / "metrics.csv") == read_csv(split / "metrics.csv")


def assert_same_adapters(path_a: Path, path_b: Path) -> None:
    state_a = torch.load(path_a, weights_only=False)
    state_b = torch.load(path_b, weights_only=False)
    assert state_a["step"] == state_b["step"]
    for adapter in state_a["lora"]:
        for key, value in state_a["lora"][adapter].items():
            torch.testing.assert_close(state_b["lora"][adapter][key], value, rtol=0, atol=1e-7)


@pytest.mark.slow
def test_crash_between_evaluations_loses_nothing(tiny_overrides, tmp_path):
    """save_interval=1 writes last.ckpt after every step: a crash at step 4 resumes from step 3."""
    common = [o for o in tiny_overrides if not o.startswith(("out_dir", "num_steps", "eval_interval"))] + [
        "num_steps=6", "eval_interval=4", "save_interval=1", "opt.warmup_steps=2", "opt.learning_rate=1e-2",
        "num_workers=1"]
    adaptation.main(common + [f"out_dir={tmp_path / 'straight'}"])
    calls = []

    def crash_at_fourth_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("simulated crash")
        return wesam_loss(*args, **kwargs)

    with pytest.raises(RuntimeError, match="simulated crash"):
        adaptation.adapt(load_config(overrides=common + [f"out_dir={tmp_path / 'crashed'}"]),
                         loss_fn=crash_at_fourth_step)
    assert torch.load(tmp_path / "crashed/checkpoints/last.ckpt", weights_only=False)["step"] == 3
    # a run folder moved (or copied to another machine) resumes in its new place
    moved = (tmp_path / "crashed").rename(tmp_path / "moved")
    adaptation.main(["--resume", str(moved / "checkpoints/last.ckpt")])
    assert not (tmp_path / "crashed").exists()
    assert_same_adapters(tmp_path / "straight/checkpoints/last.ckpt", moved / "checkpoints/last.ckpt")
    assert json.loads((moved / "config.json").read_text())["out_dir"] == str(moved)
    assert read_csv(tmp_path / "straight/metrics.csv") == read_csv(moved / "metrics.csv")


@pytest.mark.slow
def test_existing_run_is_never_overwritten(tiny_overrides, tmp_path):
    adaptation.main(tiny_overrides + ["num_steps=2"])
    before = (tmp_path / "run/checkpoints/last.ckpt").read_bytes()
    with pytest.raises(ConfigError, match="--resume"):
        adaptation.main(tiny_overrides)
    assert (tmp_path / "run/checkpoints/last.ckpt").read_bytes() == before


@pytest.mark.slow
def test_bf16_mixed_precision_runs_on_cpu(tiny_overrides, tmp_path):
    result = adaptation.main(tiny_overrides + ["precision=bf16-mixed", "num_steps=2"])
    assert 0.0 <= result["last"]["miou"] <= 1.0


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MASTER_", "LOCAL_RANK", "WORLD_SIZE", "RANK"))}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
def test_command_line_reports_config_errors(tmp_path):
    result = run_script("adaptation.py", f"out_dir={tmp_path}", "opt.learnig_rate=1e-3")
    assert result.returncode != 0
    assert "opt.learnig_rate" in result.stderr and "opt.learning_rate" in result.stderr
    assert not (tmp_path / "checkpoints").exists()
    result = run_script("validate.py", "prompt=polygon")
    assert result.returncode != 0 and "box, point, coarse" in result.stderr
    result = run_script("validate.py", "--ckpt", str(tmp_path / "missing.safetensors"))
    assert result.returncode != 0 and "missing.safetensors" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["shared", "ema"])
def test_two_process_ddp_on_cpu(tiny_overrides, tmp_path, mode):
    """devices=2 on the CPU: gloo DDP; the loop checks at every evaluation that LoRA weights agree."""
    overrides = [o for o in tiny_overrides if not o.startswith(("num_steps", "dataset.synthetic.num_test"))] + [
        "devices=2", "strategy=ddp", "num_steps=4", "opt.warmup_steps=1", "opt.learning_rate=1e-2",
        "dataset.synthetic.num_test=5", f"teacher.mode={mode}"]
    result = run_script("adaptation.py", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = check_run_files(tmp_path / "run", [0, 2, 4])
    assert summary["last"]["num_images"] == 5  # ranks take 3 and 2 images; each is counted once
    state = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=False)
    assert len(state["rng"]) == 2
