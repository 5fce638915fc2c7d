"""SAM 2 as a WeSAM family: Meta's `sam2` package (from the `rf-sam-2` wheel, see INSTALL.md) used
as a library. Builders for the official configurations and small random ones, rank-r LoRA on the layers
lora.targets names (models/lora.py; by default q and v of every Hiera block, and for SAM 2 also the
high-resolution path of the stride-4 and stride-8 maps), the image path of `SAM2ImagePredictor` run
with gradients and decoded either as the package's default build does or from the first mask token
only, the package's predictor and automatic mask generator at a model's own feature sizes (and fed as
WeSAM is), and its entry of the family registry (SAM2_FAMILY).

Prompts (models/family.py) are in the S x S input frame (x scaled by S / W and y by S / H: SAM 2 resizes
to the square without keeping the aspect ratio; the datasets do it, datasets/transforms.py
resize_square); h = S / 16.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import sam2
import torch
from omegaconf import OmegaConf
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
from sam2.build_sam import build_sam2
from sam2.modeling.backbones.hieradet import Hiera
from sam2.modeling.sam.mask_decoder import MaskDecoder
from sam2.modeling.sam2_base import SAM2Base
from sam2.sam2_image_predictor import SAM2ImagePredictor
from sam2.utils.transforms import SAM2Transforms
from torch import nn

from models.lora import (BLOCK_TARGETS, DEFAULT_TARGETS, STUDENT, Adapter, Placement, add_lora_targets,
                         block_placement, blocks_placement, union, use_adapter)
from models.family import Family, InputSizes, Prompts
from models.weight_files import CheckpointError, read_state_dict, resolve_path

if TYPE_CHECKING:
    from models.wesam import WeSAM


# model.type -> (the package's configuration, the official checkpoint file; PREPARE.md)
OFFICIAL_SAM2: dict[str, tuple[str, str]] = {
    f"{version}_hiera_{size}": (f"configs/{version}/{version}_hiera_{size}.yaml", f"{version}_hiera_{name}.pt")
    for version in ("sam2", "sam2.1")
    for size, name in (("t", "tiny"), ("s", "small"), ("b+", "base_plus"), ("l", "large"))
}


def _memory_of_width(width: int) -> dict[str, Any]:
    """The memory modules (unused by the image path, but built and stored) shrunk to a neck of `width`."""
    return {
        "memory_attention.d_model": width,
        "memory_attention.num_layers": 1,
        "memory_attention.layer.d_model": width,
        "memory_attention.layer.dim_feedforward": 2 * width,
        "memory_attention.layer.self_attention.embedding_dim": width,
        "memory_attention.layer.self_attention.feat_sizes": [8, 8],
        "memory_attention.layer.cross_attention.embedding_dim": width,
        "memory_attention.layer.cross_attention.feat_sizes": [8, 8],
        "memory_attention.layer.cross_attention.kv_in_dim": 16,
        "memory_encoder.out_dim": 16,
        "memory_encoder.in_dim": width,
        "memory_encoder.position_encoding.num_pos_feats": 16,
        "memory_encoder.mask_downsampler.embed_dim": width,
        "memory_encoder.fuser.layer.dim": width,
    }


# sam2_small's network at any input side: Hiera 32 -> 256 wide over 1 + 2 + 4 + 1 blocks, image embedding
# of 64 channels
_SMALL_HIERA: dict[str, Any] = {
    "image_encoder.trunk.embed_dim": 32,
    "image_encoder.trunk.stages": [1, 2, 4, 1],
    "image_encoder.trunk.global_att_blocks": [5],
    "image_encoder.trunk.window_spec": [8, 4, 8, 4],
    "image_encoder.trunk.window_pos_embed_bkg_spatial_size": [4, 4],
    "image_encoder.neck.d_model": 64,
    "image_encoder.neck.position_encoding.num_pos_feats": 64,
    "image_encoder.neck.backbone_channel_list": [256, 128, 64, 32],
    **_memory_of_width(64),
}

# Small configurations: a packaged configuration with these keys of `model` changed. Shape rules:
# image_size divisible by 32 (its quarter by the first window); backbone_channel_list the trunk's
# widths, reversed; d_model a multiple of 16, equal to the neck's num_pos_feats; the memory modules
# shrunk to match d_model.
SMALL_SAM2: dict[str, tuple[str, dict[str, Any]]] = {
    # random weights, for tests
    "sam2_tiny": ("configs/sam2.1/sam2.1_hiera_t.yaml", {
        "image_size": 128,
        "image_encoder.trunk.embed_dim": 8,
        "image_encoder.trunk.stages": [1, 1, 2, 1],
        "image_encoder.trunk.global_att_blocks": [3],
        "image_encoder.neck.d_model": 32,
        "image_encoder.neck.position_encoding.num_pos_feats": 32,
        "image_encoder.neck.backbone_channel_list": [64, 32, 16, 8],
        **_memory_of_width(32),
    }),
    # the embedded default's SAM 2 (pretrained here like vit_small: models/weights/, docs/sam2.md):
    # 128 px, an 8 x 8 image embedding
    "sam2_small": ("configs/sam2.1/sam2.1_hiera_t.yaml", {"image_size": 128, **_SMALL_HIERA}),
    # sam2_small at 256 px: the same network and weights' shapes, a 16 x 16 image embedding (vit_small's)
    # and 64 x 64 / 32 x 32 high-resolution maps, for the 128-px scenes resized up (docs/sam2.md)
    "sam2_small256": ("configs/sam2.1/sam2.1_hiera_t.yaml", {"image_size": 256, **_SMALL_HIERA}),
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


def build_sam2_model(model_type: str, checkpoint: str | Path | None = None,
                     apply_postprocessing: bool = False) -> SAM2Base:
    """A SAM 2 of `model_type` (see SAM2_CONFIGS), on the CPU in eval mode, with random weights or
    those of `checkpoint` (an official file, {"model": state_dict}).

    Built by default without the package's eval-only postprocessing (build_sam2's
    `apply_postprocessing`: a single mask of low stability replaced by the best multimask output),
    so that a plain SAM2ImagePredictor on it decodes the first mask token, as training does (WeSAM
    chooses its decoding per call anyway: Sam2Backbone.decode). Raises CheckpointError with what to
    do when the checkpoint is missing, unreadable or of another model (a missing or unreadable file
    before building anything).
    """
    config, overrides = sam2_config(model_type)
    path = resolve_path(checkpoint) if checkpoint else None
    state = read_sam2_checkpoint(path, model_type) if path else None
    model = build_sam2(config, None, device="cpu", hydra_overrides_extra=overrides,
                       apply_postprocessing=apply_postprocessing)
    if state is not None:
        load_sam2_state(model, model_type, state, path)
    return model


def feature_sizes(sam: SAM2Base) -> list[tuple[int, int]]:
    """The sides of the decoder's three feature maps (strides 4, 8 and 16 of sam.image_size), finest
    first: what SAM2ImagePredictor's `_bb_feat_sizes` must hold, which the package hard-codes for
    1024 px ([(256, 256), (128, 128), (64, 64)]); [(32, 32), (16, 16), (8, 8)] for sam2_small."""
    side = sam.sam_image_embedding_size
    return [(4 * side, 4 * side), (2 * side, 2 * side), (side, side)]


def image_predictor(sam: SAM2Base, **options: Any) -> SAM2ImagePredictor:
    """The package's SAM2ImagePredictor(sam, **options), unchanged but for its feature sizes, which
    are `sam`'s own (feature_sizes): its constructor assumes 1024 px, and set_image fails on any
    other size (sam2_tiny, sam2_small). At 1024 px it is the package's predictor exactly."""
    predictor = SAM2ImagePredictor(sam, **options)
    predictor._bb_feat_sizes = feature_sizes(sam)
    return predictor


def mask_generator(sam: SAM2Base, **options: Any) -> SAM2AutomaticMaskGenerator:
    """The package's SAM2AutomaticMaskGenerator(sam, **options), its predictor at `sam`'s own feature
    sizes (see image_predictor)."""
    generator = SAM2AutomaticMaskGenerator(sam, **options)
    generator.predictor._bb_feat_sizes = feature_sizes(sam)
    return generator


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
        return (" It is a SAM 1 checkpoint: use a SAM 1 model.type (vit_b, vit_l, vit_h, vit_small), or a SAM 2 "
                "checkpoint (PREPARE.md; the shipped sam2_small's is models/weights/sam2_small_source.safetensors, "
                "as configs/sam2/ set it)." if sam1 else " It is not a SAM 2 state dict.")
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


@contextmanager
def stability_fallback(decoder: MaskDecoder, on: bool) -> Iterator[None]:
    """`decoder` with the package's dynamic multimask via stability on or off, whichever way the model
    was built: all that build_sam2's apply_postprocessing switches on (build_sam2_video_predictor's
    adds binarised memory masks and hole filling, which the image path never reaches). Its threshold
    and margin are the decoder's own, build_sam2's 0.98 and 0.05 (tested); it acts in eval mode only,
    as in the package."""
    built = decoder.dynamic_multimask_via_stability
    decoder.dynamic_multimask_via_stability = on
    try:
        yield
    finally:
        decoder.dynamic_multimask_via_stability = built


# The parts of SAM2Base that the image path uses; the rest (memory attention and encoder, object
# pointers, mask downsampling, the object-score head whose output it drops) stays frozen, out of the
# optimizer, so that DDP finds no parameter without a gradient.
IMAGE_PATH = ("image_encoder.", "sam_prompt_encoder.", "sam_mask_decoder.", "no_mem_embed")
UNUSED_BY_IMAGE_PATH = ("sam_mask_decoder.pred_obj_score_head.",)


def image_path_parameters(sam: SAM2Base) -> list[str]:
    """Names of the parameters of `sam` that the image path trains (with LoRA rank 0)."""
    return [name for name, _ in sam.named_parameters()
            if name.startswith(IMAGE_PATH) and not name.startswith(UNUSED_BY_IMAGE_PATH)]


# lora.targets of SAM 2: those of every Hiera block (models/lora.py blocks_placement), the patch
# embedding, and everything that makes the stride-4 and the stride-8 map (sam2_placement)
SAM2_TARGETS = (*BLOCK_TARGETS, "patch_embed", "stride4", "stride8")
STRIDE_TARGETS = ("stride4", "stride8")  # the feature level of each: 0 and 1 of the neck's backbone_fpn


def sam2_placement(sam: SAM2Base, target: str) -> Placement:
    """The layers of SAM 2 that lora.targets entry `target` (SAM2_TARGETS) adapts.

    "patch_embed": the trunk's patch-embedding convolution (7 x 7, stride 4). "stride4" / "stride8":
    everything that makes that map from the trunk's input on, that stage alone: the patch embedding
    (stride4 only), every layer of the Hiera blocks of stage 1 (stride 4) or 2 (stride 8) (the
    attention's qkv (q, k and v) and output projection, the MLP's linears, and the shortcut projection
    of the stage-change block), the neck's lateral 1 x 1 convolution of that level and the decoder's
    conv_s0 (stride 4) or conv_s1 (stride 8), which forward_image applies to it. The others: every
    block's layers (blocks_placement).
    """
    if target not in SAM2_TARGETS:
        raise ValueError(f"SAM 2 has no LoRA target '{target}'; choose among {', '.join(SAM2_TARGETS)}.")
    trunk = sam.image_encoder.trunk
    patch_embed = {"image_encoder.trunk.patch_embed.proj": ()}
    if target == "patch_embed":
        return patch_embed
    if target not in STRIDE_TARGETS:
        return blocks_placement("image_encoder.trunk.blocks", trunk.blocks, target)
    level = STRIDE_TARGETS.index(target)
    first = trunk.stage_ends[level - 1] + 1 if level else 0
    placement = patch_embed if level == 0 else {}
    for index in range(first, trunk.stage_ends[level] + 1):
        path, block = f"image_encoder.trunk.blocks.{index}", trunk.blocks[index]
        placement = union([placement, *(block_placement(path, block, part) for part in ("qkv", "proj", "mlp"))])
        if block.dim != block.dim_out:  # the stage-change block's shortcut
            placement[f"{path}.proj"] = ()
    convs = sam.image_encoder.neck.convs  # level i's lateral convolution is convs[n - i] (FpnNeck.forward)
    placement[f"image_encoder.neck.convs.{len(convs) - 1 - level}.conv"] = ()
    if sam.use_high_res_features_in_sam:
        placement[f"sam_mask_decoder.conv_s{level}"] = ()
    return placement


class Sam2Backbone(nn.Module):
    """SAM 2's image path (that of SAM2ImagePredictor) with LoRA (on every Hiera block by default), with
    gradients: the Backbone (models/family.py) of the SAM 2 family.

    One frozen base serves every role as for SAM 1: adapter "student", optionally "teacher", and no
    adapter (the anchor). The memory modules, object pointers and the object-score masking of the
    video path are never used.
    """

    pixel_normalize = True  # always ImageNet's mean and std (SAM 1's option to feed RGB / 255 has no SAM 2 twin)
    # decode's maps by stride: the image embedding the two-way transformer attends to, and the two
    # high-resolution maps of the mask upsampling (after conv_s1 and conv_s0)
    feature_levels = ("stride16", "stride8", "stride4")

    def __init__(self, sam: SAM2Base, lora_rank: int, adapters: tuple[str, ...] = (STUDENT,),
                 compiler: str = "off", lora_targets: Sequence[str] = DEFAULT_TARGETS) -> None:
        """LoRA of `lora_rank` on the layers of `lora_targets` (SAM2_TARGETS; the weights of one adapter,
        per target alone and in all: `lora_parameters`); rank 0: no LoRA and the image path trainable
        (pretraining); `compiler`: "off", or the torch.compile backend of the image encoder."""
        super().__init__()
        self.sam = sam
        # the package's own resize, normalisation and upsampling; no torch.jit script of the resize
        # (the switch rf-sam-2 adds), which changes nothing in the values
        self.transforms = SAM2Transforms(resolution=sam.image_size, mask_threshold=0.0, disable_torch_jit=True)
        self.lora_parameters = add_lora_targets(sam, lora_rank, {t: sam2_placement(sam, t) for t in lora_targets},
                                                adapters) if lora_rank else {}
        if not lora_rank:
            trained = set(image_path_parameters(sam))
            for name, parameter in sam.named_parameters():
                parameter.requires_grad_(name in trained)
        if compiler != "off":
            sam.image_encoder.compile(backend=compiler)

    @property
    def image_size(self) -> int:
        return self.sam.image_size

    def preprocess(self, images: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """B x 3 x H x W images, float in [0, 1] (the datasets' SAM 2 samples: already resized to
        S x S) or uint8 -> B x 3 x S x S float: resized to the square (antialiased, aspect ratio not
        kept; nothing to do at S x S) and normalised with ImageNet's mean and std, as SAM2Transforms.
        SAM 2 pads nothing: `valid` is the whole input."""
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        return self.transforms.transforms(x)

    def encode(self, images: torch.Tensor, adapter: Adapter = STUDENT
               ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, list[torch.Tensor]]]]:
        """Preprocessed images B x 3 x S x S -> image embeddings B x C x S/16 x S/16 (no_mem_embed added,
        as SAM2ImagePredictor.set_image) with `adapter` (None: the unadapted anchor), and each image's
        decoder features: (its embedding, [C/8 x S/4 x S/4, C/4 x S/8 x S/8] high-resolution
        features, conv_s0 and conv_s1 applied: by forward_image, under the adapter too)."""
        with use_adapter(self.sam, adapter):
            features = self.sam.forward_image(images)["backbone_fpn"][-self.sam.num_feature_levels:]
        *high_res, embeddings = features
        if self.sam.directly_add_no_mem_embed:
            embeddings = embeddings + self.sam.no_mem_embed.view(1, -1, 1, 1)
        return embeddings, [(embedding, [feature[i] for feature in high_res])
                            for i, embedding in enumerate(embeddings)]

    def decode(self, features: tuple[torch.Tensor, list[torch.Tensor]], prompts: Prompts,
               decoding: str = "raw") -> tuple[torch.Tensor, torch.Tensor]:
        """One image's decoder features (see encode) and N prompts -> low-res logits N x 1 x 4h x 4w
        and IoU N x 1, a single mask per prompt.

        `decoding` "raw": the first mask token's (what training decodes and the losses see); "meta":
        as SAM2ImagePredictor on a model of build_sam2's default (apply_postprocessing=True) in eval
        mode: where the first token's mask is unstable (stability score below 0.98 at +-0.05), the
        multimask output of highest predicted IoU and its IoU instead (stability_fallback). The IoU
        head ends in its own sigmoid (the IoU loss adds none); the logits are the decoder's, without
        the -1024 of an object score <= 0 (video path) or the predictor's clamp to +-32.
        """
        embedding, high_res = features
        decoder = self.sam.sam_mask_decoder
        sparse, dense = self.sam.sam_prompt_encoder(points=box_and_point_prompts(prompts), boxes=None,
                                                    masks=prompts.get("mask_inputs"))
        with stability_fallback(decoder, decoding == "meta"):
            logits, iou, _, _ = decoder(
                image_embeddings=embedding[None], image_pe=self.sam.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False,
                repeat_image=True, high_res_features=[feature[None] for feature in high_res] or None,
            )
        return logits, iou

    def swap_features(self, features: tuple[torch.Tensor, list[torch.Tensor]],
                      donor: tuple[torch.Tensor, list[torch.Tensor]],
                      levels: tuple[str, ...]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One image's decoder features (see encode) with the maps of `levels` (of feature_levels) taken
        from `donor`, the features of another image of the same size (the same scene unshifted)."""
        (embedding, high_res), (donor_embedding, donor_high_res) = features, donor
        # high_res holds the stride-4 map, then the stride-8 one
        high_res = [donor_map if level in levels else own for level, own, donor_map
                    in zip(("stride4", "stride8"), high_res, donor_high_res)]
        return (donor_embedding if "stride16" in levels else embedding), high_res

    def postprocess(self, logits: torch.Tensor, valid: torch.Tensor | None,
                    original_size: tuple[int, int]) -> torch.Tensor:
        """Low-res logits N x 1 x 4h x 4w -> N x 1 x H x W: bilinear straight to the image size, as
        SAM2ImagePredictor (no padding to cut out: `valid` is the whole input)."""
        return self.transforms.postprocess_masks(logits, original_size)


class WeSAM2Predictor(SAM2ImagePredictor):
    """SAM2ImagePredictor whose image features come from WeSAM's SAM 2 backbone with `adapter` (None:
    the frozen anchor): the package's own transforms, then Sam2Backbone.encode; prompts and decoding
    are the package's."""

    def __init__(self, model: WeSAM, adapter: str | None) -> None:
        with warnings.catch_warnings():  # the package scripts its transforms with torch.jit, which torch deprecates
            warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
            super().__init__(model.sam)
        self.wesam = model
        self.adapter = adapter

    @torch.no_grad()
    def set_image(self, image: np.ndarray) -> None:
        """image H x W x 3 uint8 RGB -> the features of one image."""
        self.reset_predictor()
        self._orig_hw = [image.shape[:2]]
        backbone = self.wesam.backbone
        _, features = backbone.encode(backbone.preprocess(self._transforms.to_tensor(image)[None].to(self.device)),
                                      self.adapter)
        embedding, high_res = features[0]
        self._features = {"image_embed": embedding[None], "high_res_feats": [feature[None] for feature in high_res]}
        self._is_image_set = True


def sam2_mask_generator(model: WeSAM, settings: dict[str, Any], multimask: bool, pad: str,
                        adapter: str | None) -> SAM2AutomaticMaskGenerator:
    """The package's SAM2AutomaticMaskGenerator (RLE output, `settings` its arguments) on WeSAM2Predictor;
    SAM 2 pads nothing (`pad` is SAM's)."""
    generator = SAM2AutomaticMaskGenerator(model.sam, output_mode="uncompressed_rle", multimask_output=multimask,
                                           **settings)
    generator.predictor = WeSAM2Predictor(model, adapter)
    return generator


def sam2_input_sizes(model_type: str) -> InputSizes:
    """SAM 2's input side (1024 for the official configurations) and embedding side S / 16; its images
    resized to the square."""
    size = SMALL_SAM2[model_type][1]["image_size"] if model_type in SMALL_SAM2 else 1024
    return {"image_size": size, "embedding_size": size // 16, "resize": "square"}


def sam2_auto_decoding(model_type: str) -> str:
    """model.decoding=auto: "meta" for the official configurations, whose checkpoints Meta trained with all
    four mask tokens; "raw" for the small SAM 2 made here (sam2_small was pretrained on the first token
    only, and its untrained multimask tokens are what the stability fallback would pick)."""
    return "meta" if model_type in OFFICIAL_SAM2 else "raw"


def export_sam2(model_type: str, state: dict[str, torch.Tensor], path: str | Path, decoding: str) -> tuple[Any, str]:
    """{"model": state}, Meta's layout, which build_sam2 reads, and the line that loads it, with what to
    say of its use: the post-processing setting under which SAM2ImagePredictor decodes as predict.py with
    `decoding` and, for the small configurations, the predictor and automatic mask generator at their own
    feature sizes."""
    postprocessing = decoding == "meta"
    why = ("the package's default: an unstable single mask falls back to the best multimask output, as "
           "predict.py and validate.py decode with model.decoding=meta" if postprocessing else
           "the first mask token, as predict.py and validate.py decode with model.decoding=raw and training "
           "always does")
    if model_type in OFFICIAL_SAM2:
        return {"model": state}, (
            f'sam2.build_sam.build_sam2("{sam2_config(model_type)[0]}", "{path}", device="cpu", '
            f"apply_postprocessing={postprocessing}) ({why}), then pass the model to SAM2ImagePredictor or "
            "SAM2AutomaticMaskGenerator as usual")
    return {"model": state}, (
        f'models.sam2.build_sam2_model("{model_type}", "{path}", apply_postprocessing={postprocessing}) ({why}); '
        "then pass the model to models.sam2.image_predictor or models.sam2.mask_generator (with the "
        "package's options): they return the package's SAM2ImagePredictor and SAM2AutomaticMaskGenerator at "
        f"the model's own feature sizes, since their constructors assume 1024 px and {model_type} is "
        f"{sam2_input_sizes(model_type)['image_size']} px")


SAM2_FAMILY = Family(
    name="sam2", title="SAM 2", model_types=tuple(SAM2_CONFIGS), network=SAM2Base, build=build_sam2_model,
    backbone=Sam2Backbone, lora_targets=SAM2_TARGETS, input_sizes=sam2_input_sizes, export=export_sam2,
    options=("model.compile",), official_checkpoints={name: file for name, (_, file) in OFFICIAL_SAM2.items()},
    auto_decoding=sam2_auto_decoding, metadata=lambda model_type: {"sam2_config": sam2_config(model_type)[0]},
    mask_generator=sam2_mask_generator,
)
