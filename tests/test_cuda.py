"""Checks that need a CUDA GPU (`pytest -m cuda`; tools/gpu_check.sh runs them). Skipped without one."""

from __future__ import annotations

import json

import pytest
import torch

import adaptation
from tests.test_fast_path import LOSS, batch, random_sam
from losses.wesam_loss import wesam_loss
from models import WeSAM

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_short_adaptation_on_cuda(tiny_overrides, tmp_path, precision):
    overrides = [o.replace("accelerator=cpu", "accelerator=cuda") for o in tiny_overrides]
    result = adaptation.main(overrides + [f"precision={precision}", "opt.learning_rate=1e-2", "opt.warmup_steps=1"])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["last"]["step"] == 4 and result["last"]["miou"] == summary["last"]["miou"]
    assert 0.0 <= summary["last"]["miou"] <= 1.0


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_nccl_on_two_gpus(tiny_overrides, tmp_path):
    overrides = [o.replace("accelerator=cpu", "accelerator=cuda") for o in tiny_overrides]
    adaptation.main(overrides + ["devices=2", "strategy=ddp_spawn"])
    assert (tmp_path / "run" / "checkpoints" / "last-lora.safetensors").exists()


@pytest.mark.parametrize("dtype, atol", [(None, 1e-3), (torch.bfloat16, 0.15)])
def test_fast_path_matches_reference_on_cuda(dtype, atol):
    sam = random_sam()
    reference = WeSAM.on(sam, lora_rank=4).cuda()
    fast = WeSAM.on(random_sam(attention="sdpa"), lora_rank=4, memory_saving=True).cuda()
    fast.load_state_dict(reference.state_dict())
    images, strong, valid, prompts = batch()
    to = lambda t: t.cuda()  # noqa: E731
    prompts = [{k: to(v) for k, v in p.items()} for p in prompts]
    losses = []
    for model, autocast in ((reference, None), (fast, dtype)):
        with torch.autocast("cuda", dtype=autocast or torch.float32, enabled=autocast is not None):
            outputs = model(to(images), to(strong), to(valid), prompts)
        losses.append(wesam_loss(outputs, LOSS, "shared", model.image_size)[0].float())
    torch.testing.assert_close(losses[1], losses[0], atol=atol, rtol=atol)
