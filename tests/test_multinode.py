"""Two machines simulated on this one: two `torchrun` node processes (--nnodes 2, one process each,
rendezvous on 127.0.0.1) running adaptation.py with num_nodes=2, as a cluster would start it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from tests.conftest import ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_torchrun_nodes_train_one_adapter_and_write_one_set_of_files(tiny_overrides, tmp_path):
    port = free_port()
    overrides = [o for o in tiny_overrides if not o.startswith("num_steps")] + [
        "num_steps=4", "devices=1", "num_nodes=2", "strategy=ddp", "opt.warmup_steps=1", "opt.learning_rate=1e-2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                               "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", str(port),
                               "adaptation.py", *overrides],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    for node, output in zip(nodes, outputs):
        assert node.returncode == 0, output[-3000:]
    assert "x 2 device(s)" in outputs[0]  # one world of two processes
    # adaptation.py compares the LoRA weights of every rank at each evaluation and stops if they
    # differ; a finished run on both nodes means they ended with the same adapter
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.json", "metrics.csv", "summary.json",
                                                     "tensorboard"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best-lora.safetensors", "last-lora.safetensors",
                                                                       "last.ckpt"]
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert len(load_file(str(run / "checkpoints" / "last-lora.safetensors"))) == 2 * 4
