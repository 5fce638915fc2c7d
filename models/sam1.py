"""SAM (segment_anything) as a WeSAM family: its builders (the official ViT-B/L/H through the package's
registry, and small configurations for tests and the embedded default, built from the same package's
modules), its image path with LoRA on the image encoder (by default q and v of every ViT block;
lora.targets), SamPredictor fed as WeSAM is, and its entry of the family registry (SAM_FAMILY).
Prompts: models/family.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from segment_anything import SamAutomaticMaskGenerator, SamPredictor, sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from torch import nn
from torch.utils.checkpoint import checkpoint

from models.attention import attention_module
from models.family import Family, InputSizes, Prompts
from models.lora import (BLOCK_TARGETS, DEFAULT_TARGETS, STUDENT, Adapter, Placement, add_lora_targets,
                         blocks_placement, use_adapter)
from models.weight_files import CheckpointError, read_state_dict, resolve_path
from utils.padding import pad_offsets

if TYPE_CHECKING:
    from models.wesam import WeSAM

# Official checkpoints (see PREPARE.md) and the encoder width that identifies each.
OFFICIAL_CHECKPOINTS = {
    "vit_b": ("sam_vit_b_01ec64.pth", 768),
    "vit_l": ("sam_vit_l_0b3195.pth", 1024),
    "vit_h": ("sam_vit_h_4b8939.pth", 1280),
}

# Small configurations. Shape rules: decoder dim divisible by 8, decoder dim / 2 divisible by
# decoder heads, encoder dim divisible by encoder heads.
SMALL_CONFIGS: dict[str, dict[str, Any]] = {
    "vit_tiny": dict(image_size=256, patch=16, encoder_dim=64, depth=2, heads=2, window=4, global_attn=(1,),
                     prompt_dim=64, decoder_heads=2, decoder_mlp=128),
    # the embedded default's source model (2.5M parameters, 16 x 16 embedding at 128 px)
    "vit_small": dict(image_size=128, patch=8, encoder_dim=160, depth=6, heads=5, window=8, global_attn=(2, 5),
                      prompt_dim=96, decoder_heads=4, decoder_mlp=384),
}

SAM_CONFIGS = sorted(list(OFFICIAL_CHECKPOINTS) + list(SMALL_CONFIGS))

# The official models' shapes (segment_anything/build_sam.py), to build them at another input size
# with random weights (benchmarks); checkpoints load into the 1024 px models of sam_model_registry.
OFFICIAL_SHAPES: dict[str, dict[str, Any]] = {
    name: dict(image_size=1024, patch=16, encoder_dim=dim, depth=depth, heads=heads, window=14, global_attn=attn,
               prompt_dim=256, decoder_heads=8, decoder_mlp=2048)
    for name, dim, depth, heads, attn in (("vit_b", 768, 12, 12, (2, 5, 8, 11)),
                                          ("vit_l", 1024, 24, 16, (5, 11, 17, 23)),
                                          ("vit_h", 1280, 32, 16, (7, 15, 23, 31)))
}


def _build_small_sam(image_size: int, patch: int, encoder_dim: int, depth: int, heads: int, window: int,
                     global_attn: tuple[int, ...], prompt_dim: int, decoder_heads: int, decoder_mlp: int) -> Sam:
    embedding_size = image_size // patch
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=image_size, patch_size=patch, embed_dim=encoder_dim, depth=depth, num_heads=heads,
            mlp_ratio=4, out_chans=prompt_dim, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True, rel_pos_zero_init=True, window_size=window, global_attn_indexes=global_attn,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_dim, image_embedding_size=(embedding_size, embedding_size),
            input_image_size=(image_size, image_size), mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=prompt_dim, mlp_dim=decoder_mlp,
                                          num_heads=decoder_heads),
            transformer_dim=prompt_dim, iou_head_depth=3, iou_head_hidden_dim=prompt_dim,
        ),
    )


def _identify(state: dict[str, torch.Tensor]) -> str | None:
    """Guess which official model a state dict belongs to from its encoder width."""
    weight = state.get("image_encoder.patch_embed.proj.weight")
    if weight is None:
        return None
    for name, (_, width) in OFFICIAL_CHECKPOINTS.items():
        if weight.shape[0] == width:
            return name
    return None


def with_attention(sam: Sam, attention: str) -> Sam:
    """`sam` with an attention block of kind `attention` ("sam" or "sdpa", models/attention.py) in each
    image-encoder block, holding the same parameters under the same names."""
    for block in sam.image_encoder.blocks:
        block.attn = attention_module(attention, block.attn)
    return sam


def build_sam(model_type: str, checkpoint: str | Path | None = None, attention: str = "sam") -> Sam:
    """Build a SAM of `model_type` (see SAM_CONFIGS) with random weights or those of `checkpoint`, its
    image encoder's attention of kind `attention` ("sam": segment_anything's; "sdpa": models/attention.py).

    Raises CheckpointError with the expected file and where to get it when the checkpoint is
    missing, unreadable or of another model type.
    """
    if model_type in OFFICIAL_CHECKPOINTS:
        sam = sam_model_registry[model_type](checkpoint=None)
    elif model_type in SMALL_CONFIGS:
        sam = _build_small_sam(**SMALL_CONFIGS[model_type])
    else:
        raise ValueError(f"Unknown SAM model type '{model_type}'; choose one of {', '.join(SAM_CONFIGS)}.")
    with_attention(sam, attention)
    if checkpoint:
        load_sam_weights(sam, model_type, resolve_path(checkpoint))
    sam.eval()
    return sam


def build_sam_at_size(model_type: str, image_size: int, attention: str = "sam") -> Sam:
    """A SAM of `model_type`'s shape at input size `image_size`, with random weights and attention of
    kind `attention` (benchmarks)."""
    shapes = {**OFFICIAL_SHAPES, **SMALL_CONFIGS}
    if model_type not in shapes:
        raise ValueError(f"Unknown SAM model type '{model_type}'; choose one of {', '.join(SAM_CONFIGS)}.")
    return with_attention(_build_small_sam(**{**shapes[model_type], "image_size": image_size}), attention).eval()


def load_sam_weights(sam: Sam, model_type: str, path: Path) -> None:
    """Load a full SAM state dict into `sam`, with errors that say what to do."""
    official = OFFICIAL_CHECKPOINTS.get(model_type, (None,))[0]
    expected = f" (the official file is '{official}')" if official else ""
    if not path.is_file():
        raise CheckpointError(
            f"SAM checkpoint '{path}' for model.type={model_type} does not exist{expected}. "
            "See PREPARE.md for where to download it, then set model.checkpoint to its path."
        )
    try:
        state = read_state_dict(path)
    except Exception as error:  # torch and safetensors raise many types for a corrupt file
        raise CheckpointError(f"SAM checkpoint '{path}' could not be read ({error}). "
                              f"Download it again{expected}; see PREPARE.md.") from error
    try:
        sam.load_state_dict(state, strict=True)
    except RuntimeError as error:
        guess = _identify(state)
        hint = (f" It looks like a {guess} checkpoint: set model.type={guess}." if guess and guess != model_type
                else f" Expected a full SAM {model_type} state dict{expected}.")
        raise CheckpointError(f"SAM checkpoint '{path}' does not fit model.type={model_type}.{hint}") from error


def sam_image_size(model_type: str) -> int:
    """Input side S of a SAM configuration (1024 for the official models)."""
    return SMALL_CONFIGS[model_type]["image_size"] if model_type in SMALL_CONFIGS else 1024


def sam_embedding_size(model_type: str) -> int:
    """Side h of the image embedding (S / patch size: 64 for the official models)."""
    return sam_image_size(model_type) // (SMALL_CONFIGS[model_type]["patch"] if model_type in SMALL_CONFIGS else 16)


# lora.targets of SAM: those of every encoder block (models/lora.py blocks_placement) and the patch embedding
SAM_TARGETS = (*BLOCK_TARGETS, "patch_embed")


def sam_placement(sam: Sam, target: str) -> Placement:
    """The layers of SAM's image encoder that lora.targets entry `target` (SAM_TARGETS) adapts:
    "patch_embed" its patch embedding's convolution, the others the blocks' layers (blocks_placement)."""
    if target not in SAM_TARGETS:
        raise ValueError(f"SAM has no LoRA target '{target}'; choose among {', '.join(SAM_TARGETS)}.")
    if target == "patch_embed":
        return {"image_encoder.patch_embed.proj": ()}
    return blocks_placement("image_encoder.blocks", sam.image_encoder.blocks, target)


class SamBackbone(nn.Module):
    """SAM's image path (that of SamPredictor) with LoRA on the image encoder, with gradients: the
    Backbone (models/family.py) of the SAM family."""

    def __init__(self, sam: Sam, lora_rank: int, adapters: tuple[str, ...] = (STUDENT,),
                 pixel_normalize: bool = True, memory_saving: bool = False, compiler: str = "off",
                 lora_targets: Sequence[str] = DEFAULT_TARGETS) -> None:
        """LoRA of `lora_rank` on the layers of `lora_targets` (SAM_TARGETS; the weights of one adapter,
        per target alone and in all: `lora_parameters`); `sam`'s image encoder comes with its
        attention (build_sam's `attention`); `pixel_normalize` False feeds RGB / 255 as the authors'
        code; `memory_saving`: recompute each encoder block in the backward pass instead of keeping
        its activations (activation checkpointing of the passes that train); `compiler`: "off", or
        the torch.compile backend of the image encoder (the encoder's own call: memory_saving, which
        runs its blocks one by one, bypasses it). Rank 0: no LoRA and SAM left trainable, for
        full-supervision pretraining."""
        super().__init__()
        self.sam = sam
        self.pixel_normalize = pixel_normalize
        self.memory_saving = memory_saving
        self.lora_parameters = add_lora_targets(sam, lora_rank, {t: sam_placement(sam, t) for t in lora_targets},
                                                adapters) if lora_rank else {}
        if compiler != "off":  # Module.compile, in place: the state-dict keys stay the official ones
            sam.image_encoder.compile(backend=compiler)

    @property
    def image_size(self) -> int:
        return self.sam.image_encoder.img_size

    @property
    def feature_levels(self) -> tuple[str, ...]:
        """decode's one map, the image embedding, by its stride: ("stride16",); vit_small's ("stride8",)."""
        return (f"stride{self.image_size // self.sam.prompt_encoder.image_embedding_size[0]}",)

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
        with use_adapter(self.sam, adapter):
            if not (self.memory_saving and torch.is_grad_enabled()):
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

    def swap_features(self, features: torch.Tensor, donor: torch.Tensor, levels: tuple[str, ...]) -> torch.Tensor:
        """One image's embedding C x h x w, or `donor` (another image's) where `levels` names its level."""
        return donor if self.feature_levels[0] in levels else features

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


class WeSAMPredictor(SamPredictor):
    """SamPredictor that feeds SAM exactly as WeSAM does: the image resized by ResizeLongestSide
    (as SamPredictor), padded where `pad` puts it, normalised as WeSAM.preprocess (pixel mean/std,
    or x / 255 for pixel_normalize=False), encoded with `adapter` (None: the frozen anchor).
    `multimask` False decodes SAM's single-mask output where the generator asks for three masks
    per point (a model trained only on that output, as the shipped vit_small)."""

    def __init__(self, model: WeSAM, pad: str, adapter: str | None, multimask: bool = True) -> None:
        super().__init__(model.sam)
        self.wesam = model
        self.pad = pad
        self.adapter = adapter
        self.multimask = multimask
        self.offset = (0, 0)  # top, left of the image inside the padded input

    @torch.no_grad()
    def set_torch_image(self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]) -> None:
        """transformed_image 1 x 3 x h x w (longest side S, 0-255) -> features 1 x C x h' x w'."""
        self.reset_image()
        height, width = transformed_image.shape[-2:]
        size = self.wesam.image_size
        top, left = pad_offsets(height, width, size, self.pad)
        canvas = transformed_image.new_zeros(1, 3, size, size)
        canvas[..., top:top + height, left:left + width] = transformed_image
        valid = torch.tensor([[top, left, height, width]], device=canvas.device)
        backbone = self.wesam.backbone
        self.features = backbone.encode(backbone.preprocess(canvas, valid), self.adapter)[0]
        self.original_size, self.input_size, self.offset = tuple(original_image_size), (height, width), (top, left)
        self.is_image_set = True

    @torch.no_grad()
    def predict_torch(self, point_coords: torch.Tensor | None, point_labels: torch.Tensor | None,
                      boxes: torch.Tensor | None = None, mask_input: torch.Tensor | None = None,
                      multimask_output: bool = True, return_logits: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """SamPredictor.predict_torch with prompts (B x N x 2 points, B x 4 boxes, in the resized
        image's frame) moved into the padded frame, and masks B x C x H x W cropped from where the
        image lies in it (SAM's own postprocessing assumes bottom-right padding)."""
        top, left = self.offset
        shift = torch.tensor([left, top], dtype=torch.float32, device=self.device)
        points = None if point_coords is None else (point_coords + shift, point_labels)
        sparse, dense = self.model.prompt_encoder(points=points,
                                                  boxes=None if boxes is None else boxes + shift.repeat(2),
                                                  masks=mask_input)
        low_res, iou = self.model.mask_decoder(image_embeddings=self.features,
                                               image_pe=self.model.prompt_encoder.get_dense_pe(),
                                               sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                               multimask_output=multimask_output and self.multimask)
        masks = self.wesam.postprocess(low_res, torch.tensor([top, left, *self.input_size]), self.original_size)
        return (masks if return_logits else masks > self.model.mask_threshold), iou, low_res


def sam_input_sizes(model_type: str) -> InputSizes:
    """SAM's input side and embedding side; its images resized by their longest side and padded."""
    return {"image_size": sam_image_size(model_type), "embedding_size": sam_embedding_size(model_type),
            "resize": "longest_side"}


def export_sam(model_type: str, state: dict[str, torch.Tensor], path: str | Path, decoding: str) -> tuple[Any, str]:
    """The merged state dict itself, as segment_anything reads it, and its loader; SAM decodes a single
    mask alike whatever `decoding` says (SamBackbone.decode)."""
    loader = (f'segment_anything.sam_model_registry["{model_type}"](checkpoint="{path}")'
              if model_type in OFFICIAL_CHECKPOINTS else f'models.sam1.build_sam("{model_type}", "{path}")')
    return state, loader


def sam_mask_generator(model: WeSAM, settings: dict[str, Any], multimask: bool, pad: str,
                       adapter: str | None) -> SamAutomaticMaskGenerator:
    """segment_anything's SamAutomaticMaskGenerator (RLE output, `settings` its arguments) on WeSAMPredictor."""
    generator = SamAutomaticMaskGenerator(model.sam, output_mode="uncompressed_rle", **settings)
    generator.predictor = WeSAMPredictor(model, pad, adapter, multimask)
    return generator


SAM_FAMILY = Family(
    name="sam", title="SAM", model_types=tuple(SAM_CONFIGS), network=Sam, build=build_sam, backbone=SamBackbone,
    lora_targets=SAM_TARGETS, input_sizes=sam_input_sizes, export=export_sam,
    options=("model.pixel_normalize", "memory_saving", "model.compile"),
    official_checkpoints={name: file for name, (file, _) in OFFICIAL_CHECKPOINTS.items()},
    mask_generator=sam_mask_generator, authors_code=True, attention=with_attention, build_at_size=build_sam_at_size,
)
