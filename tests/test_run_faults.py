"""Faults during a run keep its last good state and end in one line: a non-finite loss (the state of the
step before, and the command that resumes with a lower learning rate), a full disk while last.ckpt is
written (the previous one intact, no temporary file left), SIGTERM or SIGINT in the middle of a step (that
step saved; the resumed run ends as one that never stopped), in this process and on the command line."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import adaptation
from engine.checkpoint import read_checkpoint
from losses.wesam_loss import wesam_loss
from tests.conftest import ROOT, cli, script_env, snapshot, tiny_config_overrides
from utils.config import load_config


def test_non_finite_loss_shows_the_message_alone(tiny_overrides, tmp_path, capsys):
    calls = []

    def nan_at_second_step(*args, **kwargs):
        calls.append(1)
        loss, terms = wesam_loss(*args, **kwargs)
        return (loss * float("nan"), terms) if len(calls) == 2 else (loss, terms)

    code, message = cli(lambda argv: adaptation.adapt(load_config(overrides=argv), loss_fn=nan_at_second_step),
                        tiny_overrides + ["eval_interval=1"], capsys)
    ckpt = tmp_path / "run/checkpoints/last.ckpt"
    assert code == 1 and message.startswith("Error: The loss is not finite at step 2")
    assert f"--resume {ckpt} opt.learning_rate=" in message
    assert read_checkpoint(ckpt)["step"] == 1  # the last good state, intact


def test_disk_full_while_writing_last_ckpt(tiny_overrides, tmp_path, capsys, monkeypatch):
    real_save, calls = torch.save, []

    def full_at_second_save(obj, path, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            Path(path).write_bytes(b"partial")  # the writer got this far
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_at_second_save)
    code, message = cli(adaptation.main, tiny_overrides + ["eval_interval=1"], capsys)
    checkpoints = tmp_path / "run/checkpoints"
    assert code == 1 and "No space left on the disk of" in message and str(checkpoints) in message
    assert "the previous 'last.ckpt' is intact" in message
    assert read_checkpoint(checkpoints / "last.ckpt")["step"] == 0
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best-lora.safetensors", "last-lora.safetensors",
                                                             "last.ckpt"], "no temporary file left"


SIGNAL_RUN = ["num_steps=4", "eval_interval=3", "opt.learning_rate=1e-2", "opt.warmup_steps=1"]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> Path:
    """A 4-step run that never stopped, to compare the runs stopped by a signal with."""
    run = tmp_path_factory.mktemp("straight") / "run"
    adaptation.main(tiny_config_overrides(run) + SIGNAL_RUN)
    return run


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_the_current_step_and_resumes_exactly(straight_run, tmp_path, capsys, sig):
    """The signal arrives in the middle of step 2 (between evaluations): last.ckpt of step 2 is saved
    and the resumed run ends exactly as one that never stopped."""
    calls, handler = [], signal.getsignal(sig)

    def signal_during_second_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), sig)
        return wesam_loss(*args, **kwargs)

    run = tmp_path / "run"
    code, message = cli(lambda argv: adaptation.adapt(load_config(overrides=argv), loss_fn=signal_during_second_step),
                        tiny_config_overrides(run) + SIGNAL_RUN, capsys)
    ckpt = run / "checkpoints/last.ckpt"
    assert code == 128 + sig and "Traceback" not in message
    assert message.strip().splitlines()[-1] == (f"Stopped at step 2 of 4 ({sig.name}); saved {ckpt}. "
                                               f"Continue with: python adaptation.py --resume {ckpt}")
    assert read_checkpoint(ckpt)["step"] == 2
    assert signal.getsignal(sig) == handler, "the previous handler is back"
    adaptation.main(["--resume", str(ckpt)])
    for name, value in read_checkpoint(straight_run / "checkpoints/last.ckpt")["lora"]["student"].items():
        torch.testing.assert_close(read_checkpoint(ckpt)["lora"]["student"][name], value, rtol=0, atol=1e-7)


@pytest.mark.slow
def test_sigterm_on_the_command_line(tmp_path):
    run = tmp_path / "run"
    overrides = [o for o in tiny_config_overrides(run) if not o.startswith(("num_steps", "eval_interval"))]
    process = subprocess.Popen([sys.executable, "adaptation.py", *overrides, "num_steps=100000", "eval_interval=50000",
                                "log_interval=50000"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=script_env())
    deadline = time.time() + 90
    while not (run / "checkpoints/last.ckpt").exists() and time.time() < deadline:  # written after Direct
        time.sleep(0.2)
    before = snapshot(run)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM and "Traceback" not in stderr, stderr[-2000:]
    state = read_checkpoint(run / "checkpoints/last.ckpt")
    assert stderr.strip().splitlines()[-1].startswith(f"Stopped at step {state['step']} of 100000 (SIGTERM)")
    assert {k: v for k, v in snapshot(run).items() if k != "checkpoints/last.ckpt"} == \
        {k: v for k, v in before.items() if k != "checkpoints/last.ckpt"}, "only last.ckpt changed"
