"""The fast path (fused attention, activation checkpointing, batched views) against segment_anything's own
computation: the same masks, losses and LoRA gradients on the same weights and batch."""

from __future__ import annotations

import copy

import pytest
import torch

from configs.base_config import base_config
from losses.wesam_loss import wesam_loss
from models import WeSAM, build_sam
from models.attention import SDPAttention, set_attention
from models.lora import lora_layers

LOSS = dict(base_config["loss"])


def random_sam(seed: int = 0):
    """The tiny SAM with non-zero relative-position tables, so the attention bias is exercised."""
    torch.manual_seed(seed)
    sam = build_sam("vit_tiny")
    with torch.no_grad():
        for block in sam.image_encoder.blocks:
            block.attn.rel_pos_h.normal_(0, 0.2)
            block.attn.rel_pos_w.normal_(0, 0.2)
    return sam


def batch(size: int = 256):
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8, generator=generator)
    strong = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8, generator=generator)
    valid = torch.tensor([[0, 0, size, size], [0, 0, size - 56, size]])
    prompts = [{"boxes": torch.tensor([[20.0, 30.0, 120.0, 150.0], [130.0, 40.0, 250.0, 200.0]])},
               {"boxes": torch.tensor([[10.0, 10.0, 90.0, 60.0]])}]
    return images, strong, valid, prompts


def step(model: WeSAM, teacher_mode: str):
    images, strong, valid, prompts = batch()
    outputs = model(images, strong, valid, prompts)
    loss, terms = wesam_loss(outputs, LOSS, teacher_mode, model.image_size)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    return outputs, terms, grads


@pytest.mark.parametrize("attention, memory_saving, batch_views, teacher_mode",
                         [("sdpa", False, True, "shared"), ("sdpa", True, False, "shared"), ("sam", True, True, "ema")])
def test_fast_path_matches_segment_anythings_attention(attention, memory_saving, batch_views, teacher_mode):
    sam = random_sam()
    reference = WeSAM(copy.deepcopy(sam), lora_rank=4, teacher_mode=teacher_mode, attention="sam")
    fast = WeSAM(sam, lora_rank=4, teacher_mode=teacher_mode, attention=attention, memory_saving=memory_saving,
                 batch_views=batch_views)
    with torch.no_grad():  # trained-looking LoRA on both, so the adapters matter
        for ours, theirs in zip(lora_layers(fast), lora_layers(reference)):
            for p, q in zip(ours.parameters(), theirs.parameters()):
                p.normal_(0, 0.05)
                q.copy_(p)
    expected_outputs, expected_terms, expected_grads = step(reference, teacher_mode)
    outputs, terms, grads = step(fast, teacher_mode)
    for branch in expected_outputs:
        for got, want in zip(outputs[branch]["logits"], expected_outputs[branch]["logits"]):
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    for name in expected_terms:
        torch.testing.assert_close(terms[name], expected_terms[name], atol=1e-5, rtol=1e-4)
    assert len(grads) == len(expected_grads) > 0
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-3)


def test_sdpa_keeps_the_official_state_dict_and_switches_back():
    sam = random_sam()
    keys = list(sam.state_dict())
    set_attention(sam.image_encoder, "sdpa")
    assert all(isinstance(block.attn, SDPAttention) for block in sam.image_encoder.blocks)
    assert list(sam.state_dict()) == keys
    set_attention(sam.image_encoder, "sam")
    assert not any(isinstance(block.attn, SDPAttention) for block in sam.image_encoder.blocks)
    with pytest.raises(ValueError, match="sdpa"):
        set_attention(sam.image_encoder, "flash")
