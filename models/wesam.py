"""The WeSAM network: one SAM (or SAM 2, or any family of models/backbones.py FAMILIES) with LoRA whose
forward runs the anchor, the teacher and the student, so that DDP sees a single forward and
synchronises the LoRA gradients.

What differs between families (preprocessing, encoder outputs, prompt encoding, decoder outputs,
postprocessing) is behind the Backbone (models/family.py, where prompts are described too).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.backbones import family_of_network
from models.family import Backbone, Prompts
from models.lora import DEFAULT_TARGETS, STUDENT, TEACHER, Adapter, ema_update

# {"embeddings": B x C x h x w, "features": [the decoder's features of each image],
#  "logits": [N_i x 1 x 4h x 4w], "iou": [N_i x 1]}
Outputs = dict[str, Any]
BRANCHES = ("anchor", "teacher", "student")


class WeSAM(nn.Module):
    """LoRA student, EMA or shared teacher, and the LoRA-free anchor on one frozen backbone."""

    def __init__(self, backbone: Backbone, teacher_mode: str = "shared", batch_views: bool = False) -> None:
        """`backbone` holds the network with its LoRA adapters (the teacher's too in mode ema);
        `batch_views`: encode the views that share a gradient mode in one batched call (the shared
        teacher's weak view with the student's strong view; the anchor with the EMA teacher), each
        slice with its adapter, so the same result."""
        super().__init__()
        if teacher_mode not in ("shared", "ema"):
            raise ValueError(f"teacher_mode must be 'shared' or 'ema', got '{teacher_mode}'")
        self.backbone = backbone
        self.teacher_mode = teacher_mode
        self.batch_views = batch_views

    @classmethod
    def on(cls, sam: nn.Module, lora_rank: int, teacher_mode: str = "shared", batch_views: bool = False,
           lora_targets: Sequence[str] = DEFAULT_TARGETS, **options: Any) -> WeSAM:
        """WeSAM on a network built by a family's builder (segment_anything's Sam, sam2's SAM2Base...), with
        LoRA of `lora_rank` (0: none, the network trainable) on the layers of `lora_targets` (config
        lora.targets); `options` go to the family's backbone (Family.options)."""
        adapters = (STUDENT, TEACHER) if teacher_mode == "ema" else (STUDENT,)
        backbone = family_of_network(sam).backbone(sam, lora_rank, adapters, lora_targets=lora_targets, **options)
        return cls(backbone, teacher_mode, batch_views)

    @property
    def sam(self) -> nn.Module:
        """The network with LoRA (segment_anything's Sam, sam2's SAM2Base...)."""
        return self.backbone.sam

    @property
    def image_size(self) -> int:
        return self.backbone.image_size

    def decode(self, features: Any, prompts: Prompts, decoding: str = "raw") -> tuple[torch.Tensor, torch.Tensor]:
        """One image's decoder features (Outputs["features"][i]) and N prompts -> low-res logits
        N x 1 x 4h x 4w and IoU N x 1, decoded as `decoding` says (Backbone.decode). No adapted layer
        runs here (SAM 2's conv_s0 and conv_s1 run in encode): it decodes any adapter's features."""
        return self.backbone.decode(features, prompts, decoding)

    def predict(self, images: torch.Tensor, valid: torch.Tensor, prompts: list[Prompts],
                adapter: Adapter = STUDENT, decoding: str = "raw") -> Outputs:
        """Run SAM with `adapter` (None: the unadapted anchor; a tuple: one per equal slice of the images,
        see models/lora.py LoRALayer) on B images (B x 3 x S x S, as the datasets give them) and their
        prompts. `decoding`: "raw", the first mask token (every training pass), or "meta", as the
        package's predictor on its default build (evaluation; see Backbone.decode)."""
        embeddings, features = self.backbone.encode(self.backbone.preprocess(images, valid), adapter)
        decoded = [self.backbone.decode(f, p, decoding) for f, p in zip(features, prompts)]
        return {"embeddings": embeddings, "features": features, "logits": [d[0] for d in decoded],
                "iou": [d[1] for d in decoded]}

    def postprocess(self, logits: torch.Tensor, valid: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """Low-res logits N x 1 x 4h x 4w of an image (region `valid` of the input) -> N x 1 x H x W at
        its original size, as the family's own predictor (SamPredictor, SAM2ImagePredictor...)."""
        return self.backbone.postprocess(logits, valid, original_size)

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


def upscale_logits(logits: torch.Tensor, size: int) -> torch.Tensor:
    """Low-res mask logits N x 1 x 4h x 4w -> N x 1 x S x S, bilinear as SAM's postprocessing."""
    return F.interpolate(logits, (size, size), mode="bilinear", align_corners=False)
