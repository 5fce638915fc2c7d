"""SAM builders: the official ViT-B/L/H through `segment_anything`'s registry, and small
configurations for tests and the embedded default, built from the same package's modules."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from models.attention import attention_module

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


class CheckpointError(RuntimeError):
    """A SAM checkpoint that is missing or does not fit the requested model."""


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


REPO_ROOT = Path(__file__).resolve().parent.parent


def resolve_path(path: str | Path) -> Path:
    """`path` as given, or relative to the repository when it is relative and not found from the
    working directory (so the shipped weights load from any folder)."""
    path = Path(path)
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        return REPO_ROOT / path
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a .safetensors or torch (.pth/.pt) state dict."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    return state.get("model", state) if isinstance(state, dict) else state


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
