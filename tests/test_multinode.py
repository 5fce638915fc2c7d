"""Two machines simulated on this one: two `torchrun` node processes (--nnodes 2, one process each,
rendezvous on 127.0.0.1) running adaptation.py with num_nodes=2, as a cluster would start it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_nodes(overrides: list[str], logs: Path | None = None) -> list[subprocess.Popen]:
    """Two torchrun node processes (one worker each) running adaptation.py with `overrides`; their
    output goes to logs / node<rank>.txt, else to pipes."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                              "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", str(port),
                              "adaptation.py", *overrides, "devices=1", "num_nodes=2", "strategy=ddp"],
                             cwd=ROOT, env=env, stderr=subprocess.STDOUT, text=True,
                             stdout=open(logs / f"node{rank}.txt", "w") if logs else subprocess.PIPE)
            for rank in (0, 1)]


@pytest.mark.slow
def test_two_torchrun_nodes_train_one_adapter_and_write_one_set_of_files(tiny_overrides, tmp_path):
    overrides = [o for o in tiny_overrides if not o.startswith("num_steps")] + [
        "num_steps=4", "opt.warmup_steps=1", "opt.learning_rate=1e-2"]
    nodes = start_nodes(overrides)
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    for node, output in zip(nodes, outputs):
        assert node.returncode == 0, output[-3000:]
    assert "x 2 device(s)" in outputs[0]  # one world of two processes
    # adaptation.py compares the LoRA weights of every rank at each evaluation and stops if they
    # differ; a finished run on both nodes means they ended with the same adapter
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == [".lock", "checkpoints", "config.json", "metrics.csv",
                                                     "summary.json", "tensorboard"]  # rank 0 held the folder
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best-lora.safetensors", "last-lora.safetensors",
                                                                       "last.ckpt"]
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert len(load_file(str(run / "checkpoints" / "last-lora.safetensors"))) == 2 * 4


@pytest.mark.slow
def test_two_nodes_share_the_automatic_instances_that_rank_0_finds(tiny_overrides, tmp_path):
    """prompt_source=auto under DDP: rank 0 finds the instances and writes the one cache file, the
    other rank waits for it and trains on the same instances."""
    overrides = [o for o in tiny_overrides if not o.startswith("num_steps")] + [
        "num_steps=2", "prompt_source=auto", "auto.points_per_side=4", "auto.multimask=false",
        "auto.pred_iou_thresh=0", "auto.stability_score_thresh=0"]
    nodes = start_nodes(overrides)
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    for node, output in zip(nodes, outputs):
        assert node.returncode == 0, output[-3000:]  # the run compares the ranks' adapters at each evaluation
    assert "Finding the instances of" in outputs[0], outputs[0][-3000:]
    assert sorted(p.name for p in (tmp_path / "run" / "auto_instances").iterdir()) == ["anchor.json"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["last"]["step"] == 2 and summary["auto_instances"]["instances_per_image"] > 0


@pytest.mark.slow
def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step_with_the_state_saved(tiny_overrides, tmp_path):
    """A scheduler's SIGTERM reaching only the worker of node 1, in the training loop: both ranks save
    at the same step and stop, rank 0 names the signal and the --resume command."""
    run = tmp_path / "run"
    overrides = [o for o in tiny_overrides if not o.startswith(("num_steps", "eval_interval"))] + [
        "num_steps=100000", "eval_interval=50000", "log_interval=50000"]
    nodes = start_nodes(overrides, tmp_path)
    deadline = time.time() + 240
    # rank 0's progress bar past step 2: rank 1, in lockstep through each step's collectives, is in the loop too
    while time.time() < deadline and max(map(int, re.findall(r"\| *(\d+)/100000",
                                                             (tmp_path / "node0.txt").read_text())), default=0) < 2:
        time.sleep(0.2)
    agent = nodes[1].pid
    workers = Path(f"/proc/{agent}/task/{agent}/children").read_text().split()
    assert len(workers) == 1, workers
    os.kill(int(workers[0]), signal.SIGTERM)
    for node in nodes:
        node.wait(timeout=120)
    outputs = [(tmp_path / f"node{rank}.txt").read_text() for rank in (0, 1)]
    ckpt = run / "checkpoints" / "last.ckpt"
    step = torch.load(ckpt, map_location="cpu", weights_only=True)["step"]
    assert 2 <= step < 100000
    assert (f"Stopped at step {step} of 100000 (SIGTERM); saved {ckpt}. "
            f"Continue with: python adaptation.py --resume {ckpt}") in outputs[0], outputs[0][-3000:]
    assert "SIGTERM received" in outputs[1] and f"Stopped at step {step} of 100000 (SIGTERM)" in outputs[1]
    assert all("[rank" not in output for output in outputs), "no rank printed a traceback"
