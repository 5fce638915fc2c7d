"""WeSAM's instance contrastive loss between two branches' image embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def instance_prototypes(embedding: torch.Tensor, logits: torch.Tensor, masks: str = "threshold") -> torch.Tensor:
    """Masked average pooling: embedding C x h x w (L2-normalised per pixel here) and mask logits
    N x 1 x H x W (resized to h x w, detached) -> N x C prototypes.

    masks "threshold" (the authors' later code): sigmoid > 0.5, an empty mask giving a zero
    prototype; "raw" (their first release): the resized logits themselves as weights, divided by
    their sum (which only sets the sign once the prototypes are normalised).
    """
    size = embedding.shape[-2:]
    resized = F.interpolate(logits.detach().float(), size, mode="bilinear", align_corners=False).flatten(1)  # N x hw
    features = F.normalize(embedding.flatten(1), dim=0)  # C x hw
    if masks == "raw":
        weights = resized.to(embedding.dtype)
        return weights @ features.T / weights.sum(1, keepdim=True)
    if masks != "threshold":
        raise ValueError(f"Unknown contrastive masks '{masks}'; choose 'threshold' or 'raw'.")
    weights = (resized.sigmoid() > 0.5).to(embedding.dtype)
    return weights @ features.T / weights.sum(1, keepdim=True).clamp(min=1)


def instance_contrastive_loss(embedding_a: torch.Tensor, embedding_b: torch.Tensor, logits_a: torch.Tensor,
                              logits_b: torch.Tensor, temperature: float = 0.3,
                              masks: str = "threshold") -> torch.Tensor:
    """-log( sum_i exp(S_ii) / sum_ij exp(S_ij) ), S = cosine(prototypes_a, prototypes_b) / temperature.

    One ratio over the whole N x N matrix, as the authors' code: identically 0 for N = 1.
    `masks`: see instance_prototypes.
    """
    proto_a = F.normalize(instance_prototypes(embedding_a, logits_a, masks), dim=1)
    proto_b = F.normalize(instance_prototypes(embedding_b, logits_b, masks), dim=1)
    similarity = proto_a @ proto_b.T / temperature
    return torch.logsumexp(similarity.flatten(), 0) - torch.logsumexp(similarity.diagonal(), 0)
