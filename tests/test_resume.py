"""--resume as users give it: a file that is not a run's last.ckpt stops with one line naming it and
leaves the run as it was; last.ckpt loads with weights_only; keys edited in config.json, given by --config
or on the command line are applied (a new learning rate is used) or, where the run cannot change them,
refused naming where they came from; data changed under a run is said and recorded. Exact resume over
both backbones: tests/test_e2e.py."""

from __future__ import annotations

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import adaptation
from models import build_sam
from tests.conftest import cli, snapshot


@pytest.mark.parametrize("kind", ["truncated", "empty", "adapter", "sam_pth"])
def test_unusable_resume_file(trained_run, tmp_path, capsys, kind):
    good = trained_run / "checkpoints/last.ckpt"
    before = snapshot(trained_run)
    path = tmp_path / "checkpoints" / "last.ckpt"
    path.parent.mkdir()
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "adapter":
        path.write_bytes((trained_run / "checkpoints/last-lora.safetensors").read_bytes())
    else:
        torch.save(build_sam("vit_tiny").state_dict(), path)
    code, message = cli(adaptation.main, ["--resume", str(path)], capsys)
    assert code == 1 and str(path) in message and "Traceback" not in message
    fix = "not a training state" if kind == "sam_pth" else "could not be read"
    assert fix in message and "last.ckpt" in message
    assert snapshot(trained_run) == before


def test_last_ckpt_loads_with_weights_only(trained_run):
    state = torch.load(trained_run / "checkpoints/last.ckpt", weights_only=True)
    assert state["step"] == 4 and set(state["rng"][0]) >= {"python", "numpy", "torch"}


def test_resume_with_a_new_learning_rate_uses_it(tiny_overrides, tmp_path):
    adaptation.main(tiny_overrides + ["num_steps=2", "opt.learning_rate=1e-2", "opt.warmup_steps=1",
                                      "opt.weight_decay=0.5"])
    ckpt = tmp_path / "run/checkpoints/last.ckpt"
    adaptation.main(["--resume", str(ckpt), "num_steps=4", "opt.learning_rate=1e-5", "opt.weight_decay=0.0"])
    state = torch.load(ckpt, weights_only=True)
    assert [(g["lr"], g["weight_decay"]) for g in state["optimizer"]["param_groups"]] == [(1e-5, 0.0)]
    events = EventAccumulator(str(tmp_path / "run/tensorboard")).Reload()
    logged = {event.step: event.value for event in events.Scalars("train/lr")}
    assert logged[1] == pytest.approx(1e-2) and logged[2] == pytest.approx(1e-2)
    assert logged[3] == pytest.approx(1e-5) and logged[4] == pytest.approx(1e-5)


def test_resume_applies_what_it_is_given_or_refuses_it(tiny_overrides, tmp_path, capsys):
    """--resume applies the keys of config.json edited by hand, then --config, then key=value; a key
    that cannot change is refused naming where it came from."""
    run = tmp_path / "run"
    adaptation.main(tiny_overrides + ["num_steps=2"])
    ckpt = run / "checkpoints/last.ckpt"
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(dict(config, lora={"rank": 8})))
    code, message = cli(adaptation.main, ["--resume", str(ckpt)], capsys)
    assert code == 1 and f"lora.rank cannot change when resuming ('{run / 'config.json'}' gives 8, the run has 4)" \
        in message
    (run / "config.json").write_text(json.dumps(dict(config, num_steps=3)))
    adaptation.main(["--resume", str(ckpt)])
    assert f"Resuming with num_steps=3 (the run had 2; from '{run / 'config.json'}')" in capsys.readouterr().out
    assert json.loads((run / "summary.json").read_text())["last"]["step"] == 3
    user_file = tmp_path / "more.py"
    user_file.write_text("config = {'num_steps': 4, 'model': {'type': 'vit_tiny'}}\n")
    adaptation.main(["--resume", str(ckpt), "--config", str(user_file)])
    assert json.loads((run / "summary.json").read_text())["last"]["step"] == 4
    assert json.loads((run / "config.json").read_text())["num_steps"] == 4
    user_file.write_text("config = {'num_steps': 6, 'teacher': {'mode': 'ema'}}\n")
    code, message = cli(adaptation.main, ["--resume", str(ckpt), "--config", str(user_file)], capsys)
    assert code == 1 and f"teacher.mode cannot change when resuming (--config '{user_file}' gives 'ema'" in message
    code, message = cli(adaptation.main, ["--resume", str(ckpt), "model.type=vit_b"], capsys)
    assert code == 1 and "model.type cannot change when resuming (the command line gives 'vit_b'" in message


def test_a_resumed_run_on_changed_data_says_so_and_records_it(tiny_overrides, tmp_path, capsys):
    run = tmp_path / "run"
    adaptation.main(tiny_overrides + ["num_steps=2"])
    capsys.readouterr()
    adaptation.main(["--resume", str(run / "checkpoints/last.ckpt"), "num_steps=4", "dataset.synthetic.num_test=3"])
    out = capsys.readouterr().out
    assert "Warning: the test split of synthetic changed since step 2 was saved: 1 of its 4 images are no longer " \
           "there or changed, 0 are new (e.g. synthetic:" in out
    assert "The evaluations so far were measured on the earlier images" in out
    changes = json.loads((run / "summary.json").read_text())["data_changes"]
    assert [(c["step"], c["split"]) for c in changes] == [(2, "test")]
