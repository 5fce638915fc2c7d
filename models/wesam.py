"""The WeSAM network: one SAM with LoRA whose forward runs the anchor, the teacher and the student,
so that DDP sees a single forward and synchronises the LoRA gradients.

Prompts of one image are a dict of tensors (N instances, K points):
    boxes        N x 4        XYXY in the padded input frame
    points       N x K x 2    XY in the padded input frame, with
    point_labels N x K        1 positive, 0 negative
    mask_inputs  N x 1 x 4h x 4w   mask prompt logits (h x w: image-embedding size)
Any subset may be present; every mask of an image is decoded in one batched decoder call.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from torch import nn
from torch.utils.checkpoint import checkpoint

from models.lora import STUDENT, TEACHER, Adapter, add_lora, ema_update, use_adapter

Prompts = dict[str, torch.Tensor]
Outputs = dict[str, Any]  # {"embeddings": B x C x h x w, "logits": [N_i x 1 x 4h x 4w], "iou": [N_i x 1]}
BRANCHES = ("anchor", "teacher", "student")


class WeSAM(nn.Module):
    """SAM + LoRA student, EMA or shared teacher, and the LoRA-free anchor on one frozen base."""

    def __init__(self, sam: Sam, lora_rank: int, teacher_mode: str = "shared", pixel_normalize: bool = True,
                 memory_saving: bool = False, batch_views: bool = False, compiler: str = "off") -> None:
        """`sam`'s image encoder comes with its attention (build_sam's `attention`);
        `memory_saving`: recompute each encoder block in the backward pass instead of keeping its
        activations (activation checkpointing of the passes that train); `batch_views`: encode the
        views that share a gradient mode in one batched call (the shared teacher's weak view with
        the student's strong view; the anchor with the EMA teacher), each slice with its adapter,
        so the same result; `compiler`: "off", or the torch.compile backend of the image encoder
        (the encoder's own call: memory_saving, which runs its blocks one by one, bypasses it)."""
        super().__init__()
        if teacher_mode not in ("shared", "ema"):
            raise ValueError(f"teacher_mode must be 'shared' or 'ema', got '{teacher_mode}'")
        self.sam = sam
        self.teacher_mode = teacher_mode
        self.pixel_normalize = pixel_normalize
        self.memory_saving = memory_saving
        self.batch_views = batch_views
        if lora_rank:  # rank 0: no LoRA and SAM left trainable, for full-supervision pretraining
            add_lora(sam, lora_rank, (STUDENT, TEACHER) if teacher_mode == "ema" else (STUDENT,))
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

    def encode(self, images: torch.Tensor, adapter: Adapter) -> torch.Tensor:
        """Preprocessed images B x 3 x S x S -> image embeddings B x C x h x w with `adapter`.

        With memory_saving and gradients on, each block runs under activation checkpointing; the
        block sets its adapter itself, since the backward pass recomputes it outside this call.
        """
        encoder = self.sam.image_encoder
        if not (self.memory_saving and torch.is_grad_enabled()):
            with use_adapter(self.sam, adapter):
                return encoder(images)
        x = encoder.patch_embed(images)
        if encoder.pos_embed is not None:
            x = x + encoder.pos_embed
        for block in encoder.blocks:
            x = checkpoint(_run_block, block, x, adapter, use_reentrant=False)
        return encoder.neck(x.permute(0, 3, 1, 2))

    def decode(self, embedding: torch.Tensor, prompts: Prompts) -> tuple[torch.Tensor, torch.Tensor]:
        """One image's embedding (C x h x w) and N prompts -> logits N x 1 x 4h x 4w, IoU N x 1."""
        points = (prompts["points"], prompts["point_labels"]) if "points" in prompts else None
        sparse, dense = self.sam.prompt_encoder(points=points, boxes=prompts.get("boxes"),
                                                masks=prompts.get("mask_inputs"))
        return self.sam.mask_decoder(
            image_embeddings=embedding[None], image_pe=self.sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False,
        )

    def predict(self, images: torch.Tensor, valid: torch.Tensor, prompts: list[Prompts],
                adapter: Adapter = STUDENT) -> Outputs:
        """Run SAM with `adapter` (None: the unadapted anchor; a tuple: one per equal slice of the
        images, see LoRAQKV) on B images and their prompts."""
        embeddings = self.encode(self.preprocess(images, valid), adapter)
        decoded = [self.decode(embedding, p) for embedding, p in zip(embeddings, prompts)]
        return {"embeddings": embeddings, "logits": [d[0] for d in decoded], "iou": [d[1] for d in decoded]}

    def forward(self, images_weak: torch.Tensor, images_strong: torch.Tensor, valid: torch.Tensor,
                prompts: list[Prompts], branches: tuple[str, ...] = BRANCHES) -> dict[str, Outputs]:
        """Anchor and teacher on the weak view, student on the strong view, same prompts.

        Shared mode (paper): the teacher is the student network, with gradients. EMA mode: the
        teacher adapter, without gradients. `branches` leaves out those a loss does not use
        (a supervised run needs only the student). With batch_views, the passes without
        gradients (anchor, EMA teacher) share one encoder call, and so do those with them.
        """
        frozen = [("anchor", images_weak, None)] if "anchor" in branches else []
        trained = [("student", images_strong, STUDENT)]
        if "teacher" in branches and self.teacher_mode == "ema":
            frozen.append(("teacher", images_weak, TEACHER))
        elif "teacher" in branches:
            trained.insert(0, ("teacher", images_weak, STUDENT))
        with torch.no_grad():
            outputs = self._passes(frozen, valid, prompts)
        return outputs | self._passes(trained, valid, prompts)

    def _passes(self, passes: list[tuple[str, torch.Tensor, Adapter]], valid: torch.Tensor,
                prompts: list[Prompts]) -> dict[str, Outputs]:
        """predict() for each (branch, B images, adapter); with batch_views, one call on all of them."""
        if not self.batch_views or len(passes) < 2:
            return {branch: self.predict(images, valid, prompts, adapter) for branch, images, adapter in passes}
        adapters = tuple(adapter for *_, adapter in passes)
        joint = self.predict(torch.cat([images for _, images, _ in passes]), valid.repeat(len(passes), 1),
                             prompts * len(passes), adapters[0] if len(set(adapters)) == 1 else adapters)
        count = len(valid)
        return {branch: {key: value[i * count:(i + 1) * count] for key, value in joint.items()}
                for i, (branch, _, _) in enumerate(passes)}

    def update_teacher(self, rate: float) -> None:
        """EMA step of the teacher adapter towards the student (mode ema only)."""
        if self.teacher_mode == "ema":
            ema_update(self.sam, rate)


def _run_block(block: nn.Module, x: torch.Tensor, adapter: Adapter) -> torch.Tensor:
    with use_adapter(block, adapter):
        return block(x)


def upscale_logits(logits: torch.Tensor, size: int) -> torch.Tensor:
    """Low-res mask logits N x 1 x 4h x 4w -> N x 1 x S x S, bilinear as SAM's postprocessing."""
    return F.interpolate(logits, (size, size), mode="bilinear", align_corners=False)
