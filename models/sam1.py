"""SAM (segment_anything) as a WeSAM backbone: its image path with LoRA on every ViT block.

Prompts of one image are a dict of tensors (N instances, K points), in the padded S x S input frame:
    boxes        N x 4        XYXY
    points       N x K x 2    XY, with
    point_labels N x K        1 positive, 0 negative
    mask_inputs  N x 1 x 4h x 4w   mask prompt logits (h x w: image-embedding size)
Any subset may be present; every mask of an image is decoded in one batched decoder call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from torch import nn
from torch.utils.checkpoint import checkpoint

from models.lora import STUDENT, Adapter, add_lora, use_adapter

Prompts = dict[str, torch.Tensor]


class SamBackbone(nn.Module):
    """SAM's image path (that of SamPredictor) with LoRA on the image encoder, with gradients.

    The interface every backbone gives WeSAM (models/sam2.py has SAM 2's):
      sam            the network, with LoRA (adapter state dicts and merges read it)
      family         "sam" or "sam2"
      image_size     input side S
      preprocess     B x 3 x S x S images as the datasets give them -> network input
      encode         network input -> (image embeddings B x C x h x w, per-image decoder features)
      decode         one image's decoder features and N prompts -> low-res logits N x 1 x 4h x 4w, IoU N x 1
      postprocess    low-res logits -> logits at an image's original size, as the package's predictor
    """

    family = "sam"

    def __init__(self, sam: Sam, lora_rank: int, adapters: tuple[str, ...] = (STUDENT,),
                 pixel_normalize: bool = True, memory_saving: bool = False, compiler: str = "off") -> None:
        """`sam`'s image encoder comes with its attention (build_sam's `attention`);
        `pixel_normalize` False feeds RGB / 255 as the authors' code; `memory_saving`: recompute each
        encoder block in the backward pass instead of keeping its activations (activation
        checkpointing of the passes that train); `compiler`: "off", or the torch.compile backend of
        the image encoder (the encoder's own call: memory_saving, which runs its blocks one by one,
        bypasses it). Rank 0: no LoRA and SAM left trainable, for full-supervision pretraining."""
        super().__init__()
        self.sam = sam
        self.pixel_normalize = pixel_normalize
        self.memory_saving = memory_saving
        if lora_rank:
            add_lora(sam, lora_rank, adapters)
        if compiler != "off":  # Module.compile, in place: the state-dict keys stay the official ones
            sam.image_encoder.compile(backend=compiler)

    @property
    def image_size(self) -> int:
        return self.sam.image_encoder.img_size

    def preprocess(self, images: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """B x 3 x S x S uint8 (zero padded) -> B x 3 x S x S float, normalised, padding zero.

        `valid` (B x 4: top, left, height, width) locates the image inside the padding; as in
        SAM, padding is zero after normalisation.
        """
        x = images.float()
        x = (x - self.sam.pixel_mean) / self.sam.pixel_std if self.pixel_normalize else x / 255.0
        size = x.shape[-1]
        grid = torch.arange(size, device=x.device)
        top, left, height, width = (valid[:, i, None] for i in range(4))
        rows = (grid >= top) & (grid < top + height)  # B x S
        cols = (grid >= left) & (grid < left + width)
        return x * (rows[:, None, :, None] & cols[:, None, None, :])

    def encode(self, images: torch.Tensor, adapter: Adapter = STUDENT) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Preprocessed images B x 3 x S x S -> image embeddings B x C x h x w with `adapter`, and
        each image's decoder features (its embedding).

        With memory_saving and gradients on, each block runs under activation checkpointing; the
        block sets its adapter itself, since the backward pass recomputes it outside this call.
        """
        encoder = self.sam.image_encoder
        if not (self.memory_saving and torch.is_grad_enabled()):
            with use_adapter(self.sam, adapter):
                embeddings = encoder(images)
        else:
            x = encoder.patch_embed(images)
            if encoder.pos_embed is not None:
                x = x + encoder.pos_embed
            for block in encoder.blocks:
                x = checkpoint(_run_block, block, x, adapter, use_reentrant=False)
            embeddings = encoder.neck(x.permute(0, 3, 1, 2))
        return embeddings, list(embeddings)

    def decode(self, features: torch.Tensor, prompts: Prompts,
               decoding: str = "raw") -> tuple[torch.Tensor, torch.Tensor]:
        """One image's embedding (C x h x w) and N prompts -> logits N x 1 x 4h x 4w, IoU N x 1: the
        first mask token's, which is also what SamPredictor decodes for a single mask, so `decoding`
        ("raw" or "meta", see Sam2Backbone.decode) changes nothing for SAM."""
        points = (prompts["points"], prompts["point_labels"]) if "points" in prompts else None
        sparse, dense = self.sam.prompt_encoder(points=points, boxes=prompts.get("boxes"),
                                                masks=prompts.get("mask_inputs"))
        return self.sam.mask_decoder(
            image_embeddings=features[None], image_pe=self.sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False,
        )

    def postprocess(self, logits: torch.Tensor, valid: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """Low-res logits N x 1 x 4h x 4w -> N x 1 x H x W, as SamPredictor: to the S x S input,
        the image's region `valid` (top, left, height, width) cut out, then to the original size."""
        top, left, height, width = valid.tolist()
        logits = F.interpolate(logits, (self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return F.interpolate(logits[..., top:top + height, left:left + width], original_size, mode="bilinear",
                             align_corners=False)


def _run_block(block: nn.Module, x: torch.Tensor, adapter: Adapter) -> torch.Tensor:
    with use_adapter(block, adapter):
        return block(x)
