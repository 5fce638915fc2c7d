"""Faster attention for SAM's image encoder, with the official weights' layout unchanged.

`SDPAttention` is segment_anything's `Attention` with its own forward, SAM's decomposed
relative-position bias included, under the same parameter names, so official checkpoints and
adapters load as they are; it computes the same function, softmax(q k^T / sqrt(d) + bias) v, by
the path `attention_path` picks for the shape, precision, gradient mode and device:
- "fused": `torch.nn.functional.scaled_dot_product_attention` with the bias as its additive mask
  (the approach of segment-anything-fast); the fused kernels keep nothing N x N for a backward pass.
- "one_call": the scores, bias and softmax in one call of our own, its probabilities kept for the
  backward pass as segment_anything keeps them.
- "chunked": the same over chunks of queries, each recomputed in the backward pass, so nothing
  N x N is kept (`chunked_attention`).
The builder chooses the kind (`attention_module`, called by models/sam1.py with_attention).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, get_rel_pos
from torch.utils.checkpoint import checkpoint

ATTENTION_KINDS = ("sam", "sdpa")
# scores held at once by chunked_attention: 64 MiB in fp32 against 1.5 GiB for all 12 x 4096^2 of one ViT-B
# image at 1024 px; measured fastest among 2^21..2^26 on a global block (smaller: more calls, larger: cache misses)
CHUNK_ELEMENTS = 2**24
# the most scores (batch x heads x N x N) of one block that the one-call path keeps for the backward pass:
# 256 MiB in fp32. Within it, one call beats the chunks, which compute the scores twice (a ViT-B global
# block at 512 px, teacher and student views (2.5e7 scores), forward and backward, one thread, medians on a
# loaded machine: fp32 1.87 s against 2.32 s, bf16 0.81 s against 0.89 s; vit_small at 128 px: 9.9 ms against 13.7 ms);
# beyond it (ViT-B's global blocks at 1024 px, 4.0e8 scores: 1.5 GiB each) the chunks keep the memory flat.
ONE_CALL_MAX_ELEMENTS = 2**26
PATHS = ("fused", "one_call", "chunked")


def relative_position_terms(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor,
                            size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's decomposed relative-position terms of each query.

    q: B x heads x HW x C (unscaled queries) -> rel_h B x heads x HW x H, rel_w B x heads x HW x W;
    the logit of query i and key j gains rel_h[i, row of j] + rel_w[i, column of j], as in
    segment_anything's add_decomposed_rel_pos.
    """
    height, width = size
    batch, heads, tokens, dim = q.shape
    r_q = q.reshape(batch * heads, height, width, dim)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, get_rel_pos(height, height, rel_pos_h))
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, get_rel_pos(width, width, rel_pos_w))
    return rel_h.reshape(batch, heads, tokens, height), rel_w.reshape(batch, heads, tokens, width)


def relative_position_bias(rel_h: torch.Tensor, rel_w: torch.Tensor) -> torch.Tensor:
    """The terms of relative_position_terms as an additive mask B x heads x HW x HW."""
    batch, heads, tokens, _ = rel_h.shape
    return (rel_h[..., :, None] + rel_w[..., None, :]).reshape(batch, heads, tokens, tokens)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor,
            rel_w: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(C) + bias) v for a chunk of c queries: q B x heads x c x C, k and v
    B x heads x HW x C, rel_h/rel_w of those queries -> B x heads x c x C."""
    batch, heads, rows, dim = q.shape
    scores = torch.matmul(q * dim**-0.5, k.transpose(-1, -2)).view(batch, heads, rows, rel_h.shape[-1], -1)
    # out of place: adding in place into this view makes autograd copy the scores' whole gradient in the backward
    # pass (CopySlices); one call on a ViT-B global block at 512 px, fp32, forward and backward: 1.87 s out of
    # place on contiguous q, k, v against 2.05 s in place on the strided ones
    scores = (scores + rel_h[..., :, None] + rel_w[..., None, :]).view(batch, heads, rows, -1)
    return torch.matmul(scores.softmax(-1), v)


def chunked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor,
                      rel_w: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(C) + bias) v over chunks of queries, each chunk recomputed in the
    backward pass (checkpointed), so at most CHUNK_ELEMENTS scores exist at a time.

    q, k, v: B x heads x HW x C and rel_h, rel_w (relative_position_terms) -> B x heads x HW x C.
    """
    batch, heads, tokens, _ = q.shape
    rows = max(1, CHUNK_ELEMENTS // (batch * heads * tokens))
    # q, k, v are strided views of the fused qkv projection: copied once here, not once per chunk by matmul
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    return torch.cat([checkpoint(_attend, q[:, :, start:start + rows], k, v, rel_h[:, :, start:start + rows],
                                 rel_w[:, :, start:start + rows], use_reentrant=False)
                      for start in range(0, tokens, rows)], dim=2)


def attention_path(device: torch.device, dtype: torch.dtype, grad: bool, scores: int) -> str:
    """The path (PATHS) that SDPAttention takes for `scores` (batch x heads x N x N) in `dtype`, with
    or without gradients flowing into the attention, on `device`.

    On a CPU the fused kernel is the fastest only in fp32 without gradients: with a bias that needs a
    gradient it falls back to an unfused computation that keeps scores, bias and probabilities, and
    its bf16 is slower than ours (a ViT-B global block at 1024 px, forward and backward of two images,
    one thread: chunks 8.9 s against 10.1 s in fp32, 4.4 s against 12.7 s in bf16).
    """
    if device.type != "cpu" or (dtype == torch.float32 and not grad):
        return "fused"
    return "one_call" if scores <= ONE_CALL_MAX_ELEMENTS else "chunked"


class SDPAttention(Attention):
    """segment_anything's Attention computed by the path attention_path picks (see the module doc)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        # B x HW x 3 x heads x C -> 3 x B x heads x HW x C
        qkv = self.qkv(x).reshape(batch, height * width, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if not self.use_rel_pos:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            rel_h, rel_w = relative_position_terms(q, self.rel_pos_h, self.rel_pos_w, (height, width))
            grad = torch.is_grad_enabled() and rel_h.requires_grad
            path = attention_path(x.device, q.dtype, grad, batch * self.num_heads * (height * width) ** 2)
            if path == "fused":
                x = F.scaled_dot_product_attention(q, k, v, attn_mask=relative_position_bias(rel_h, rel_w).to(q.dtype))
            elif path == "one_call":
                # q, k, v are strided views of the fused qkv projection: matmul would copy them anyway
                x = _attend(q.contiguous(), k.contiguous(), v.contiguous(), rel_h, rel_w)
            else:
                x = chunked_attention(q, k, v, rel_h, rel_w)
        x = x.permute(0, 2, 1, 3).reshape(batch, height, width, -1)
        return self.proj(x)


def attention_module(kind: str, attention: Attention) -> Attention:
    """An attention block of `kind` ("sam": segment_anything's own; "sdpa": SDPAttention) holding
    `attention`'s parameters, the same tensors under the same names (so the state-dict keys stay the
    official ones); `attention` itself when it is of that kind already.

    The new module is built on the meta device and given the parameters, so building draws no random
    numbers: the weights drawn after it (LoRA) stay those of the same seed.
    """
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"Unknown attention '{kind}'; choose one of {', '.join(ATTENTION_KINDS)}.")
    module_class = SDPAttention if kind == "sdpa" else Attention
    if type(attention) is module_class:
        return attention
    input_size = ((attention.rel_pos_h.shape[0] + 1) // 2, (attention.rel_pos_w.shape[0] + 1) // 2) \
        if attention.use_rel_pos else None
    with torch.device("meta"):
        module = module_class(attention.qkv.in_features, attention.num_heads, attention.qkv.bias is not None,
                              attention.use_rel_pos, input_size=input_size)
    module.load_state_dict(attention.state_dict(keep_vars=True), assign=True)
    return module.train(attention.training)
