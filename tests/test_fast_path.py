"""The fast path (our attention paths, activation checkpointing, batched views) against segment_anything's own
computation: the same masks, losses and LoRA gradients on the same weights and batch; which attention path
runs for which shape, precision and gradient mode."""

from __future__ import annotations

import pytest
import torch

from configs.base_config import base_config
from losses.wesam_loss import wesam_loss
from models import WeSAM, attention, build_sam
from models.attention import (
    ONE_CALL_MAX_ELEMENTS,
    PATHS,
    SDPAttention,
    attention_path,
    chunked_attention,
    relative_position_bias,
)
from models.lora import lora_layers

LOSS = dict(base_config["loss"])


def random_sam(seed: int = 0, attention: str = "sam"):
    """The tiny SAM with non-zero relative-position tables, so the attention bias is exercised."""
    torch.manual_seed(seed)
    sam = build_sam("vit_tiny", attention=attention)
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
    reference = WeSAM.on(random_sam(), lora_rank=4, teacher_mode=teacher_mode)
    fast = WeSAM.on(random_sam(attention=attention), lora_rank=4, teacher_mode=teacher_mode,
                    memory_saving=memory_saving, batch_views=batch_views)
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


def test_the_builder_chooses_the_attention_with_the_official_state_dict_and_the_same_weights():
    sam, fast = random_sam(), random_sam(attention="sdpa")
    assert not any(isinstance(block.attn, SDPAttention) for block in sam.image_encoder.blocks)
    assert all(isinstance(block.attn, SDPAttention) for block in fast.image_encoder.blocks)
    assert list(fast.state_dict()) == list(sam.state_dict())
    for (name, ours), theirs in zip(fast.state_dict().items(), sam.state_dict().values()):
        assert torch.equal(ours, theirs), name  # the choice draws no random numbers
    torch.manual_seed(3)
    build_sam("vit_tiny", attention="sdpa")
    after_sdpa = torch.rand(4)
    torch.manual_seed(3)
    build_sam("vit_tiny")
    torch.testing.assert_close(torch.rand(4), after_sdpa, rtol=0, atol=0)  # so LoRA's draws after it stay the same
    with pytest.raises(ValueError, match="sdpa"):
        build_sam("vit_tiny", attention="flash")


@pytest.mark.parametrize("device, dtype, grad, scores, path", [
    ("cpu", torch.float32, False, 10**9, "fused"),  # the fused kernel keeps nothing N x N at any size
    ("cpu", torch.float32, True, ONE_CALL_MAX_ELEMENTS, "one_call"),
    ("cpu", torch.float32, True, ONE_CALL_MAX_ELEMENTS + 1, "chunked"),
    ("cpu", torch.bfloat16, False, 2**20, "one_call"),
    ("cpu", torch.bfloat16, False, 10**9, "chunked"),
    ("cuda", torch.float32, True, 10**9, "fused"),
    ("cuda", torch.bfloat16, True, 2**20, "fused"),
])
def test_attention_path_per_device_precision_gradient_and_size(device, dtype, grad, scores, path):
    assert attention_path(torch.device(device), dtype, grad, scores) == path


def test_sdpattention_takes_the_path_of_its_shape_precision_and_gradient_mode(monkeypatch):
    """vit_tiny at 256 px: 16 windows of 4 x 4 tokens, then a global block of 16 x 16; the recorded scores and gradient
    mode are those attention_path is asked about, and the forward runs the path it answers."""
    sam = random_sam(attention="sdpa")
    asked, ran = [], []
    monkeypatch.setattr(attention, "attention_path", lambda *args: asked.append(args) or "chunked")
    monkeypatch.setattr(attention, "chunked_attention", lambda q, k, v, *_: ran.append(q.shape) or torch.zeros_like(q))
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        sam.image_encoder(x)
    heads = sam.image_encoder.blocks[0].attn.num_heads
    assert [(device.type, dtype, grad) for device, dtype, grad, _ in asked] == [("cpu", torch.float32, False)] * 2
    assert [scores for *_, scores in asked] == [16 * heads * 16**2, heads * 256**2]
    assert len(ran) == 2
    asked.clear()
    sam.requires_grad_(False)
    sam.image_encoder.blocks[1].attn.qkv.weight.requires_grad_(True)  # gradients flow into the global block only
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sam.image_encoder(x)
    assert [(dtype, grad) for _, dtype, grad, _ in asked] == [(torch.bfloat16, False), (torch.bfloat16, True)]


@pytest.mark.parametrize("path", PATHS)
def test_every_attention_path_equals_segment_anythings_in_value_and_gradient(monkeypatch, path):
    """vit_tiny's global block (16 x 16 tokens) in float64, each path forced, against segment_anything's forward."""
    sam, fast = random_sam().double(), random_sam(attention="sdpa").double()
    monkeypatch.setattr(attention, "attention_path", lambda *_: path)
    monkeypatch.setattr(attention, "CHUNK_ELEMENTS", 2 * 2 * 256 * 100)  # chunks of 100 queries: 3, the last short
    x = torch.randn(2, 16, 16, 64, dtype=torch.float64, requires_grad=True)
    theirs, ours = sam.image_encoder.blocks[1].attn, fast.image_encoder.blocks[1].attn
    expected, got = theirs(x), ours(x)
    torch.testing.assert_close(got, expected)
    grads = torch.autograd.grad(got.square().sum(), [x, ours.rel_pos_h, ours.qkv.weight])
    expected_grads = torch.autograd.grad(expected.square().sum(), [x, theirs.rel_pos_h, theirs.qkv.weight])
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad)


def test_chunked_attention_equals_attention_with_the_bias_in_value_and_gradient(monkeypatch):
    monkeypatch.setattr(attention, "CHUNK_ELEMENTS", 2 * 3 * 20 * 7)  # chunks of 7 queries: 3 chunks, the last short
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 20, 8, dtype=torch.float64, generator=generator, requires_grad=True) for _ in range(3))
    rel_h = torch.randn(2, 3, 20, 4, dtype=torch.float64, generator=generator, requires_grad=True)  # a 4 x 5 grid
    rel_w = torch.randn(2, 3, 20, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    inputs = (q, k, v, rel_h, rel_w)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=relative_position_bias(rel_h, rel_w))
    torch.testing.assert_close(chunked_attention(*inputs), expected)
    assert torch.autograd.gradcheck(chunked_attention, inputs)


def test_fast_path_under_cpu_bf16_autocast_stays_close_to_fp32():
    """bf16 autocast (precision=bf16-mixed) on the fast path against the fp32 reference: logits within a
    tenth of their spread (measured: 6 %), the same masks on 99 % of the pixels (99.7 %), loss within 1 %
    (0.02 %)."""
    reference = WeSAM.on(random_sam(), lora_rank=4)
    fast = WeSAM.on(random_sam(attention="sdpa"), lora_rank=4, batch_views=True)
    images, strong, valid, prompts = batch()
    expected = reference(images, strong, valid, prompts)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = fast(images, strong, valid, prompts)
    for branch in expected:
        for got, want in zip(outputs[branch]["logits"], expected[branch]["logits"]):
            assert (got.float() - want).abs().max() < 0.1 * want.std()
            assert ((got > 0) == (want > 0)).float().mean() > 0.99
    loss = wesam_loss(outputs, LOSS, "shared", fast.image_size)[0]
    expected_loss = wesam_loss(expected, LOSS, "shared", reference.image_size)[0]
    torch.testing.assert_close(loss.float(), expected_loss, rtol=0.01, atol=0)


def test_one_adapter_per_batch_slice_equals_separate_calls():
    """The anchor (no adapter) and the EMA teacher in one encoder call: windowed and global blocks
    alike give each image its own adapter's result."""
    model = WeSAM.on(random_sam(), lora_rank=4, teacher_mode="ema")
    with torch.no_grad():
        for layer in lora_layers(model):
            for p in layer.adapters["teacher"].parameters():
                p.normal_(0, 0.05)
    images, _, valid, _ = batch()
    x = model.backbone.preprocess(images, valid)
    with torch.no_grad():
        joint = model.backbone.encode(torch.cat([x, x]), (None, "teacher"))[0]
        separate = torch.cat([model.backbone.encode(x, None)[0], model.backbone.encode(x, "teacher")[0]])
    torch.testing.assert_close(joint, separate, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(joint[:2], joint[2:], atol=1e-3)  # the adapter does change the embedding


def test_compiled_encoder_matches_eager_and_keeps_the_state_dict():
    """model.compile: the compiled encoder (aot_eager: torch.compile's graph capture and autograd
    tracing without inductor's minutes of code generation) gives the same logits, loss and gradients,
    across adapters and gradient modes, under the official state-dict keys."""
    eager = WeSAM.on(random_sam(attention="sdpa"), lora_rank=4, batch_views=True)
    compiled = WeSAM.on(random_sam(attention="sdpa"), lora_rank=4, batch_views=True, compiler="aot_eager")
    assert list(compiled.state_dict()) == list(eager.state_dict())
    with torch.no_grad():
        for ours, theirs in zip(lora_layers(compiled), lora_layers(eager)):
            for p, q in zip(ours.parameters(), theirs.parameters()):
                p.normal_(0, 0.05)
                q.copy_(p)
    expected_outputs, _, expected_grads = step(eager, "shared")
    outputs, _, grads = step(compiled, "shared")
    for branch in expected_outputs:
        for got, want in zip(outputs[branch]["logits"], expected_outputs[branch]["logits"]):
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-3)
