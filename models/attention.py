"""Faster attention for SAM's image encoder, with the official weights' layout unchanged.

`SDPAttention` is segment_anything's `Attention` whose forward calls
`torch.nn.functional.scaled_dot_product_attention`, SAM's decomposed relative-position bias passed
as its additive mask (the approach of segment-anything-fast). It keeps the same parameters under
the same names, so official checkpoints and adapters load as they are, and it computes the same
function: softmax(q k^T / sqrt(d) + bias) v. The fused kernels do not keep the N x N attention
probabilities for the backward pass, which is most of the memory of a training step at 1024 px.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, get_rel_pos
from torch import nn

ATTENTION_KINDS = ("sam", "sdpa")


def relative_position_bias(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor,
                           size: tuple[int, int]) -> torch.Tensor:
    """SAM's decomposed relative-position term as an additive attention mask.

    q: B x heads x HW x C (unscaled queries) -> B x heads x HW x HW, the term that
    segment_anything's add_decomposed_rel_pos adds to the attention logits.
    """
    height, width = size
    batch, heads, tokens, dim = q.shape
    r_q = q.reshape(batch * heads, height, width, dim)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, get_rel_pos(height, height, rel_pos_h))
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, get_rel_pos(width, width, rel_pos_w))
    bias = rel_h[..., :, None] + rel_w[..., None, :]  # B*heads x H x W x H x W
    return bias.reshape(batch, heads, tokens, tokens)


class SDPAttention(Attention):
    """segment_anything's Attention computed by scaled_dot_product_attention (see the module doc)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        # B x HW x 3 x heads x C -> 3 x B x heads x HW x C
        qkv = self.qkv(x).reshape(batch, height * width, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        bias = relative_position_bias(q, self.rel_pos_h, self.rel_pos_w, (height, width)) if self.use_rel_pos else None
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype) if bias is not None else None)
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
