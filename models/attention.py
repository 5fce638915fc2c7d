"""Faster attention for SAM's image encoder, with the official weights' layout unchanged.

`SDPAttention` is segment_anything's `Attention` whose forward calls
`torch.nn.functional.scaled_dot_product_attention`, SAM's decomposed relative-position bias passed
as its additive mask (the approach of segment-anything-fast). It keeps the same parameters under
the same names, so official checkpoints and adapters load as they are, and it computes the same
function: softmax(q k^T / sqrt(d) + bias) v. The fused kernels do not keep the N x N attention
probabilities for the backward pass, which is most of the memory of a training step at 1024 px.

On a CPU, SDPA with a bias that needs a gradient (the bias is computed from q) falls back to the
unfused math path, which stores the scores, the bias and the probabilities of every block. There,
and for bf16 on a CPU, attention runs in query chunks instead (`chunked_attention`), each
recomputed in the backward pass: nothing N x N is kept, and it is faster than that fallback (a
global ViT-B block at 1024 px, forward and backward of two images, one thread: fp32 8.9 s against
10.1 s, bf16 4.4 s against 12.7 s).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, get_rel_pos
from torch import nn
from torch.utils.checkpoint import checkpoint

ATTENTION_KINDS = ("sam", "sdpa")
# scores held at once by chunked_attention: 64 MiB in fp32 against 1.5 GiB for all 12 x 4096^2 of one ViT-B
# image at 1024 px; measured fastest among 2^21..2^26 on a global block (smaller: more calls, larger: cache misses)
CHUNK_ELEMENTS = 2**24


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
    scores = torch.matmul(q * dim**-0.5, k.transpose(-1, -2))
    # in place: the product's backward needs its inputs, not its output, and a copy would double the traffic
    scores.view(batch, heads, rows, rel_h.shape[-1], rel_w.shape[-1]).add_(rel_h[..., :, None]).add_(rel_w[..., None, :])
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


class SDPAttention(Attention):
    """segment_anything's Attention computed by scaled_dot_product_attention (see the module doc)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        # B x HW x 3 x heads x C -> 3 x B x heads x HW x C
        qkv = self.qkv(x).reshape(batch, height * width, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if not self.use_rel_pos:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            rel_h, rel_w = relative_position_terms(q, self.rel_pos_h, self.rel_pos_w, (height, width))
            # on a CPU the fused kernel beats the chunks only in fp32 without gradients (results/speed.md)
            if x.device.type == "cpu" and (q.dtype != torch.float32 or (torch.is_grad_enabled() and rel_h.requires_grad)):
                x = chunked_attention(q, k, v, rel_h, rel_w)
            else:
                x = F.scaled_dot_product_attention(q, k, v, attn_mask=relative_position_bias(rel_h, rel_w).to(q.dtype))
        x = x.permute(0, 2, 1, 3).reshape(batch, height, width, -1)
        return self.proj(x)


def set_attention(encoder: nn.Module, kind: str) -> None:
    """Switch every attention block of a SAM image encoder to `kind` ("sam": segment_anything's own
    forward; "sdpa": SDPAttention) in place; parameters and state-dict keys are untouched."""
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"Unknown attention '{kind}'; choose one of {', '.join(ATTENTION_KINDS)}.")
    for module in encoder.modules():
        if isinstance(module, Attention):
            module.__class__ = SDPAttention if kind == "sdpa" else Attention
