"""SAM 2 as a second backbone: Meta's `sam2` package (from the `rf-sam-2` wheel, see INSTALL.md) used
as a library. Builders for the official configurations and small random ones, rank-r LoRA on q and v
of every Hiera block (models/lora.py), and the image path of `SAM2ImagePredictor` run with gradients.

Prompts of one image are a dict of tensors as for SAM 1 (models/wesam.py), in the S x S input frame
(x scaled by S / W and y by S / H: SAM 2 resizes to the square without keeping the aspect ratio):
    boxes        N x 4        XYXY
    points       N x K x 2    XY
    point_labels N x K        1 positive, 0 negative
    mask_inputs  N x 1 x 4h x 4w   mask prompt logits (h x w: image-embedding size, S / 16)
"""

from __future__ import annotations

import inspect
from functools import cache
from pathlib import Path
from typing import Any

import sam2
import torch
from omegaconf import OmegaConf
from sam2.build_sam import build_sam2
from sam2.modeling.backbones.hieradet import Hiera
from sam2.modeling.sam2_base import SAM2Base
from sam2.utils.transforms import SAM2Transforms
from torch import nn

from models.lora import STUDENT, Adapter, add_lora, use_adapter
from models.registry import CheckpointError, read_state_dict, resolve_path

Prompts = dict[str, torch.Tensor]

# model.type -> (the package's configuration, the official checkpoint file; PREPARE.md)
OFFICIAL_SAM2: dict[str, tuple[str, str]] = {
    f"{version}_hiera_{size}": (f"configs/{version}/{version}_hiera_{size}.yaml", f"{version}_hiera_{name}.pt")
    for version in ("sam2", "sam2.1")
    for size, name in (("t", "tiny"), ("s", "small"), ("b+", "base_plus"), ("l", "large"))
}

# Small configurations (random weights, for tests): a packaged configuration with these keys of
# `model` changed. Shape rules: image_size divisible by 32 (its quarter by the first window, 8);
# backbone_channel_list the trunk's widths, reversed; d_model a multiple of 16, equal to the neck's
# num_pos_feats; the memory modules (unused by the image path) shrunk to match d_model.
SMALL_SAM2: dict[str, tuple[str, dict[str, Any]]] = {
    "sam2_tiny": ("configs/sam2.1/sam2.1_hiera_t.yaml", {
        "image_size": 128,
        "image_encoder.trunk.embed_dim": 8,
        "image_encoder.trunk.stages": [1, 1, 2, 1],
        "image_encoder.trunk.global_att_blocks": [3],
        "image_encoder.neck.d_model": 32,
        "image_encoder.neck.position_encoding.num_pos_feats": 32,
        "image_encoder.neck.backbone_channel_list": [64, 32, 16, 8],
        "memory_attention.d_model": 32,
        "memory_attention.num_layers": 1,
        "memory_attention.layer.d_model": 32,
        "memory_attention.layer.dim_feedforward": 64,
        "memory_attention.layer.self_attention.embedding_dim": 32,
        "memory_attention.layer.self_attention.feat_sizes": [8, 8],
        "memory_attention.layer.cross_attention.embedding_dim": 32,
        "memory_attention.layer.cross_attention.feat_sizes": [8, 8],
        "memory_attention.layer.cross_attention.kv_in_dim": 16,
        "memory_encoder.out_dim": 16,
        "memory_encoder.in_dim": 32,
        "memory_encoder.position_encoding.num_pos_feats": 16,
        "memory_encoder.mask_downsampler.embed_dim": 32,
        "memory_encoder.fuser.layer.dim": 32,
    }),
}

SAM2_CONFIGS = sorted(OFFICIAL_SAM2) + sorted(SMALL_SAM2)


def sam2_config(model_type: str) -> tuple[str, list[str]]:
    """The packaged Hydra configuration of `model_type` and the overrides that give it."""
    if model_type in OFFICIAL_SAM2:
        return OFFICIAL_SAM2[model_type][0], []
    if model_type in SMALL_SAM2:
        config, changes = SMALL_SAM2[model_type]
        return config, [f"++model.{key}={str(value).replace(' ', '')}" for key, value in changes.items()]
    raise ValueError(f"Unknown SAM 2 model type '{model_type}'; choose one of {', '.join(SAM2_CONFIGS)}.")


def build_sam2_model(model_type: str, checkpoint: str | Path | None = None) -> SAM2Base:
    """A SAM 2 of `model_type` (see SAM2_CONFIGS), on the CPU in eval mode, with random weights or
    those of `checkpoint` (an official file, {"model": state_dict}).

    Built without the package's eval-only postprocessing (dynamic multimask via stability), so that
    the no-grad passes (anchor, EMA teacher) decode as the training student does. Raises
    CheckpointError with what to do when the checkpoint is missing, unreadable or of another model
    (a missing or unreadable file before building anything).
    """
    config, overrides = sam2_config(model_type)
    path = resolve_path(checkpoint) if checkpoint else None
    state = read_sam2_checkpoint(path, model_type) if path else None
    model = build_sam2(config, None, device="cpu", hydra_overrides_extra=overrides, apply_postprocessing=False)
    if state is not None:
        load_sam2_state(model, model_type, state, path)
    return model


def _version(is_2_1: bool) -> str:
    return "SAM 2.1" if is_2_1 else "SAM 2.0"


@cache
def _official_signature(model_type: str) -> tuple[int, int, bool]:
    """(trunk width, trunk blocks, SAM 2.1) of an official configuration, read from its yaml. 2.1
    configurations add the `no_obj_embed_spatial` parameter, which 2.0 ones lack."""
    model = OmegaConf.load(Path(sam2.__file__).parent / OFFICIAL_SAM2[model_type][0]).model
    trunk = model.image_encoder.trunk
    stages = trunk.get("stages", inspect.signature(Hiera).parameters["stages"].default)
    return trunk.embed_dim, sum(stages), bool(model.get("no_obj_embed_spatial", False))


def _state_signature(state: dict[str, torch.Tensor]) -> tuple[int, int, bool] | None:
    """(trunk width, trunk blocks, SAM 2.1) of a SAM 2 state dict; None if it is not one."""
    patch = state.get("image_encoder.trunk.patch_embed.proj.weight")
    if patch is None:
        return None
    blocks = {key.split(".")[3] for key in state if key.startswith("image_encoder.trunk.blocks.")}
    return patch.shape[0], len(blocks), "no_obj_embed_spatial" in state


def _mismatch_hint(state: dict[str, torch.Tensor], model: SAM2Base, model_type: str) -> str:
    """What a state dict that does not fit `model` (of `model_type`) is, and what to set instead."""
    found = _state_signature(state)
    if found is None:
        sam1 = "image_encoder.patch_embed.proj.weight" in state
        return (" It is a SAM 1 checkpoint: use a SAM 1 model.type (vit_b, vit_l, vit_h)." if sam1
                else " It is not a SAM 2 state dict.")
    expected = _state_signature(model.state_dict())
    matches = [name for name in OFFICIAL_SAM2 if _official_signature(name) == found]
    hint = f" It fits model.type={matches[0]}; set that." if matches else ""
    if found[2] != expected[2]:
        return (f" It is a {_version(found[2])} checkpoint and model.type={model_type} is a {_version(expected[2])} "
                f"configuration: 2.0 and 2.1 checkpoints and configurations do not mix.{hint}")
    return hint or f" Its trunk ({found[0]} wide, {found[1]} blocks) differs from model.type={model_type}'s."


def read_sam2_checkpoint(path: Path, model_type: str) -> dict[str, torch.Tensor]:
    """The state dict of a SAM 2 checkpoint file ({"model": state_dict} or a bare one)."""
    official = OFFICIAL_SAM2.get(model_type, (None, None))[1]
    expected = f" (the official file is '{official}')" if official else ""
    if not path.is_file():
        raise CheckpointError(f"SAM 2 checkpoint '{path}' for model.type={model_type} does not exist{expected}. "
                              "See PREPARE.md for where to download it, then set model.checkpoint to its path.")
    try:
        return read_state_dict(path)
    except Exception as error:  # torch and safetensors raise many types for a corrupt file
        raise CheckpointError(f"SAM 2 checkpoint '{path}' could not be read ({error}). "
                              f"Download it again{expected}; see PREPARE.md.") from error


def load_sam2_state(model: SAM2Base, model_type: str, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load the state dict read from `path` into `model` (of `model_type`), strictly."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"SAM 2 checkpoint '{path}' does not fit model.type={model_type}."
                              f"{_mismatch_hint(state, model, model_type)}") from error


def box_and_point_prompts(prompts: Prompts) -> tuple[torch.Tensor, torch.Tensor] | None:
    """SAM 2's sparse prompts as SAM2ImagePredictor forms them: each box as its two corners labelled
    2 and 3, before the points. -> (N x K' x 2 coordinates, N x K' labels), or None without either."""
    coords, labels = [], []
    if "boxes" in prompts:
        boxes = prompts["boxes"]
        coords.append(boxes.reshape(-1, 2, 2))
        labels.append(torch.tensor([[2, 3]], dtype=torch.int, device=boxes.device).expand(len(boxes), 2))
    if "points" in prompts:
        coords.append(prompts["points"])
        labels.append(prompts["point_labels"].to(torch.int))
    return (torch.cat(coords, dim=1), torch.cat(labels, dim=1)) if coords else None


class Sam2Backbone(nn.Module):
    """SAM 2's image path (that of SAM2ImagePredictor) with LoRA on every Hiera block, with gradients.

    One frozen base serves every role as for SAM 1: adapter "student", optionally "teacher", and no
    adapter (the anchor). The memory modules, object pointers and the object-score masking of the
    video path are never used.
    """

    def __init__(self, sam: SAM2Base, lora_rank: int, adapters: tuple[str, ...] = (STUDENT,)) -> None:
        super().__init__()
        self.sam = sam
        # the package's own resize, normalisation, coordinate scaling and upsampling; no torch.jit
        # script of the resize (the switch rf-sam-2 adds), which changes nothing in the values
        self.transforms = SAM2Transforms(resolution=sam.image_size, mask_threshold=0.0, disable_torch_jit=True)
        if lora_rank:
            add_lora(sam, lora_rank, adapters, blocks=sam.image_encoder.trunk.blocks)

    @property
    def image_size(self) -> int:
        return self.sam.image_size

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W uint8 RGB -> B x 3 x S x S float: resized to the square (antialiased, aspect
        ratio not kept) and normalised with ImageNet's mean and std, as SAM2Transforms."""
        return self.transforms.transforms(images.float() / 255.0)

    def scale_prompts(self, prompts: Prompts, original_size: tuple[int, int]) -> Prompts:
        """Prompts in an H x W image's pixels -> in the S x S input frame (x * S / W, y * S / H)."""
        scaled = dict(prompts)
        if "boxes" in prompts:
            scaled["boxes"] = self.transforms.transform_boxes(prompts["boxes"].float(), True,
                                                              original_size).reshape(-1, 4)
        if "points" in prompts:
            scaled["points"] = self.transforms.transform_coords(prompts["points"].float(), True, original_size)
        return scaled

    def encode(self, images: torch.Tensor, adapter: Adapter = STUDENT) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Preprocessed images B x 3 x S x S -> image embeddings B x C x S/16 x S/16 (no_mem_embed added,
        as SAM2ImagePredictor.set_image) and the decoder's high-resolution features [B x C/8 x S/4 x S/4,
        B x C/4 x S/8 x S/8] (conv_s0, conv_s1 applied), with `adapter` (None: the unadapted anchor)."""
        with use_adapter(self.sam, adapter):
            features = self.sam.forward_image(images)["backbone_fpn"][-self.sam.num_feature_levels:]
        *high_res, embedding = features
        if self.sam.directly_add_no_mem_embed:
            embedding = embedding + self.sam.no_mem_embed.view(1, -1, 1, 1)
        return embedding, high_res

    def decode(self, embedding: torch.Tensor, high_res: list[torch.Tensor],
               prompts: Prompts) -> tuple[torch.Tensor, torch.Tensor]:
        """One image's embedding (C x h x w), its high-resolution features (as `encode`, without the
        batch dimension) and N prompts -> low-res logits N x 1 x 4h x 4w and IoU N x 1.

        A single mask per prompt; the IoU head ends in its own sigmoid; the logits are the decoder's,
        without the -1024 of an object score <= 0 (video path) or the predictor's clamp to +-32.
        """
        sparse, dense = self.sam.sam_prompt_encoder(points=box_and_point_prompts(prompts), boxes=None,
                                                    masks=prompts.get("mask_inputs"))
        logits, iou, _, _ = self.sam.sam_mask_decoder(
            image_embeddings=embedding[None], image_pe=self.sam.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False,
            repeat_image=True, high_res_features=[feature[None] for feature in high_res] or None,
        )
        return logits, iou

    def predict(self, images: torch.Tensor, prompts: list[Prompts], adapter: Adapter = STUDENT) -> dict[str, Any]:
        """B uint8 images (B x 3 x H x W) and their prompts (input frame) -> {"embeddings": B x C x h x w,
        "logits": [N_i x 1 x 4h x 4w], "iou": [N_i x 1]} with `adapter`."""
        embeddings, high_res = self.encode(self.preprocess(images), adapter)
        decoded = [self.decode(embedding, [feature[i] for feature in high_res], image_prompts)
                   for i, (embedding, image_prompts) in enumerate(zip(embeddings, prompts))]
        return {"embeddings": embeddings, "logits": [d[0] for d in decoded], "iou": [d[1] for d in decoded]}

    def postprocess(self, logits: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """Low-res logits N x 1 x 4h x 4w -> N x 1 x H x W: bilinear straight to the image size."""
        return self.transforms.postprocess_masks(logits, original_size)
