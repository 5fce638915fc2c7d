"""The run state (engine/run.py), its checkpoint (engine/checkpoint.py: write_checkpoint /
load_checkpoint) and random states, the learning rate set from the step (engine/adapt.py), and a
last.ckpt written before RunState existed."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import adaptation
from engine.adapt import learning_rate, learning_rate_factor
from engine.checkpoint import (ADAPTATION_PARTS, LATER_RUN_KEYS, RUN_KEYS, load_checkpoint, rng_state,
                               run_from_state_dict, run_state_dict, set_rng_state, write_checkpoint)
from engine.run import RunFiles, RunState, set_optimizer_values
from models import CheckpointError
from tests.conftest import assert_same_adapters, read_csv, tiny_config_overrides
from utils.config import load_config


def a_run() -> RunState:
    direct = {"step": 0, "miou": 0.5, "f1": 0.6, "area_ratio": 1.0, "skipped_images": 0}
    later = {**direct, "step": 2, "miou": 0.625, "pseudo_label_iou": 0.75}
    return RunState(step=3, history=[direct, later], direct=direct, best=later, seconds=12.5,
                    skipped_train={4, 1}, pseudo_label_iou_sum=1.5, pseudo_label_iou_count=2,
                    data={"train": ["a.png", "b.png"], "test": ["c.png"]},
                    data_changes=[{"step": 2, "split": "test", "change": "1 of its 2 images are new"}])


def test_state_dict_round_trip():
    run = a_run()
    state = run_state_dict(run)
    assert set(state) == {*RUN_KEYS, *LATER_RUN_KEYS}
    assert state["skipped_train"] == [1, 4] and state["pseudo_label_iou"] == [1.5, 2]
    assert state["seconds"] >= 12.5
    again = run_from_state_dict(state)
    assert again == RunState(**{**run.__dict__, "seconds": state["seconds"]})


def test_from_state_dict_names_the_missing_keys():
    state = run_state_dict(a_run())
    del state["best"], state["history"]
    with pytest.raises(KeyError, match="history, best"):
        run_from_state_dict(state)


def test_save_and_load_a_run_with_its_parts(tmp_path):
    run, path = a_run(), tmp_path / "checkpoints" / "last.ckpt"
    weights = {"student": {"a": torch.arange(6.0).view(2, 3)}}
    write_checkpoint(path, run, config={"seed": 1}, lora=weights, optimizer={"state": {}, "param_groups": []}, rng=[])
    loaded, parts = load_checkpoint(path, ADAPTATION_PARTS)
    assert (loaded.step, loaded.history, loaded.best, loaded.skipped_train) == (3, run.history, run.best, {1, 4})
    assert parts["config"] == {"seed": 1} and torch.equal(parts["lora"]["student"]["a"], weights["student"]["a"])
    assert torch.load(path, weights_only=True)["step"] == 3  # no pickled code in it
    with pytest.raises(CheckpointError, match="lacks extra"):
        load_checkpoint(path, ("config", "extra"))


def test_random_states_round_trip():
    saved = rng_state()
    first = (random.random(), float(np.random.rand()), float(torch.rand(())))
    set_rng_state(saved)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == first


def test_learning_rate_of_the_step_is_the_former_schedulers():
    """The rate set from the step before each optimizer step equals LambdaLR's of the earlier code."""
    cfg = load_config(overrides=["opt.learning_rate=0.01", "opt.warmup_steps=3", "opt.decay_steps=[5, 7]",
                                 "opt.decay_factor=0.5"])
    ours = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=cfg.opt.learning_rate)
    reference = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=cfg.opt.learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(reference, lambda step: learning_rate_factor(
        step, cfg.opt.warmup_steps, cfg.opt.decay_steps, cfg.opt.decay_factor))
    for step in range(9):
        set_optimizer_values(ours, learning_rate(cfg, step), cfg.opt.weight_decay)
        assert ours.param_groups[0]["lr"] == reference.param_groups[0]["lr"]
        reference.step()
        scheduler.step()


def test_run_files_write_the_adapters_and_the_tables(tmp_path):
    run, cfg = a_run(), load_config(overrides=[f"out_dir={tmp_path}"])
    files = RunFiles(tmp_path, {"model_type": "vit_small"})
    files.write_config(cfg.to_dict())
    files.write_evaluation(run, cfg, run.history[-1], {"w": torch.ones(2)}, is_best=False, skipped={"train": 2})
    assert sorted(p.name for p in files.checkpoints.iterdir()) == ["best-lora.safetensors", "last-lora.safetensors"]
    assert read_csv(tmp_path / "metrics.csv")[1]["miou"] == "0.625"
    assert (tmp_path / "config.json").is_file() and (tmp_path / "summary.json").is_file()


def old_format(path) -> None:
    """Rewrite a last.ckpt as adaptation.py wrote it before RunState: a LambdaLR state beside the
    optimizer's, whose parameter groups hold the scheduler's initial_lr; and before lora.targets: no
    such key in its config, its adapters' weights named blocks.{i}.down_q... (the i-th qkv in order)."""
    state = torch.load(path, weights_only=True)
    del state["config"]["lora"]["targets"], state["trainable_parameters"]
    for name, weights in state["lora"].items():
        layers = list(dict.fromkeys(key.rpartition(".")[0] for key in weights))
        state["lora"][name] = {f"blocks.{layers.index(key.rpartition('.')[0])}.{key.rpartition('.')[2]}": value
                               for key, value in weights.items()}
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=state["config"]["opt"]["learning_rate"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scheduler_state = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    state["scheduler"] = {**scheduler_state, "lr_lambdas": [None], "last_epoch": state["step"]}
    for group in state["optimizer"]["param_groups"]:
        group["initial_lr"] = state["config"]["opt"]["learning_rate"]
    torch.save(state, path)


@pytest.mark.slow
def test_a_checkpoint_of_the_former_format_resumes_exactly(tmp_path):
    common = ["opt.learning_rate=1e-2", "opt.warmup_steps=2"]
    adaptation.main(tiny_config_overrides(tmp_path / "straight") + common)
    split = tmp_path / "split"
    adaptation.main(tiny_config_overrides(split) + common + ["num_steps=2"])
    old_format(split / "checkpoints/last.ckpt")
    former = torch.load(split / "checkpoints/last.ckpt", weights_only=True)
    assert "scheduler" in former and "targets" not in former["config"]["lora"]
    assert set(former["lora"]["student"]) == {f"blocks.{i}.{p}" for i in range(2) for p in ("down_q", "up_q", "down_v",
                                                                                              "up_v")}
    adaptation.main(["--resume", str(split / "checkpoints/last.ckpt"), "num_steps=4"])
    assert_same_adapters(tmp_path / "straight/checkpoints/last.ckpt", split / "checkpoints/last.ckpt", atol=1e-7)
    assert read_csv(tmp_path / "straight/metrics.csv") == read_csv(split / "metrics.csv")
