"""The seam between a SAM family and the rest of the program: the `Backbone` the loop, the losses, the
predictors and the tools drive, and the `Family`, one registry entry (models/backbones.py FAMILIES)
that says what else the program needs of a family by model.type. models/sam1.py (SAM) and
models/sam2.py (SAM 2) each give one of each; docs/extending.md, "Adding a backbone", the steps.

Prompts of one image are a dict of tensors (N instances, K points), in the S x S input frame:
    boxes        N x 4        XYXY
    points       N x K x 2    XY, with
    point_labels N x K        1 positive, 0 negative
    mask_inputs  N x 1 x 4h x 4w   mask prompt logits (h x w: image-embedding size)
Any subset may be present; every mask of an image is decoded in one batched decoder call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypedDict

from torch import Tensor, nn

from models.lora import Adapter

Prompts = dict[str, Tensor]


class InputSizes(TypedDict):
    """What a dataset needs to know of a model: its input side S, its image-embedding side h, and how an
    image becomes S x S (datasets/transforms.py: "longest_side" resize and pad, as SAM;
    "square" resize to the square as floats in [0, 1], as SAM 2)."""

    image_size: int
    embedding_size: int
    resize: str


class Backbone(Protocol):
    """A family's network with LoRA, as WeSAM drives it: an nn.Module (WeSAM holds it as a submodule),
    built by Family.backbone(network, lora_rank, adapters, lora_targets=..., **options).

      sam              the network with LoRA (adapter state dicts, merges and anchor digests read it)
      lora_parameters  {lora.targets entry: weights of one adapter on its layers alone, "total": on them all};
                       {} for rank 0 (no LoRA, the image path trainable: full-supervision pretraining)
      pixel_normalize  whether the input is normalised by a pixel mean and std (the automatic instances'
                       cache key records it)
    """

    sam: nn.Module
    lora_parameters: dict[str, int]
    pixel_normalize: bool
    # the maps of decode's features, by stride of the input (tools/reachability.py swaps them one by one):
    # SAM its image embedding, ("stride16",) (vit_small: ("stride8",)); SAM 2 ("stride16", "stride8",
    # "stride4"), the embedding the decoder's transformer attends to and the high-resolution maps of its
    # mask upsampling
    feature_levels: tuple[str, ...]

    @property
    def image_size(self) -> int:
        """Input side S."""

    def preprocess(self, images: Tensor, valid: Tensor) -> Tensor:
        """B x 3 x S x S images as the datasets give them (uint8, or floats in [0, 1] for resize "square"),
        the image inside region `valid` (B x 4: top, left, height, width) -> the network's input."""

    def encode(self, images: Tensor, adapter: Adapter) -> tuple[Tensor, list[Any]]:
        """Network input -> image embeddings B x C x h x w with `adapter` (None: the unadapted anchor; a
        tuple: one per equal slice of the batch, models/lora.py LoRALayer), and each image's decoder
        features (whatever decode takes; no adapted layer may run after encode)."""

    def decode(self, features: Any, prompts: Prompts, decoding: str = "raw") -> tuple[Tensor, Tensor]:
        """One image's decoder features and N prompts -> low-res logits N x 1 x 4h x 4w and IoU N x 1,
        one mask per prompt: the first mask token's ("raw", what training decodes), or as the family's
        own predictor decodes a single mask ("meta")."""

    def postprocess(self, logits: Tensor, valid: Tensor, original_size: tuple[int, int]) -> Tensor:
        """Low-res logits N x 1 x 4h x 4w of an image (region `valid` of the input) -> N x 1 x H x W at
        its original size, as the family's own predictor."""

    def swap_features(self, features: Any, donor: Any, levels: tuple[str, ...]) -> Any:
        """One image's decoder features (as encode gives them) with the maps of `levels` (a subset of
        feature_levels) those of `donor`, the features of another image of the same size (the same scene
        unshifted): the very tensors of each, nothing copied. SAM: the C x h x w embedding; SAM 2:
        (C x h x w embedding, [C/8 x 4h x 4w (stride 4), C/4 x 2h x 2w (stride 8)])."""


@dataclass(frozen=True)
class Family:
    """One SAM family: one entry of models/backbones.py FAMILIES. What the program needs of it is here
    or behind its Backbone; nothing outside models/ asks which family runs."""

    name: str  # recorded as "backbone" in adapter files ("sam", "sam2")
    title: str  # in messages ("SAM", "SAM 2")
    model_types: tuple[str, ...]  # the model.type values it builds
    network: type[nn.Module]  # the class of the networks `build` returns (WeSAM.on finds the family from it)
    # (model.type, checkpoint file or None) -> the network, in eval mode, random weights without a file;
    # models/weight_files.py CheckpointError with what to do for a file that is missing or does not fit
    build: Callable[[str, str | Path | None], nn.Module]
    # (network, lora_rank, adapters, lora_targets=..., **options) -> its Backbone; `options` those of
    # `options` below, under the names of models/backbones.py BACKBONE_OPTIONS
    backbone: Callable[..., Backbone]
    lora_targets: tuple[str, ...]  # the lora.targets entries it takes (models/lora.py placements)
    input_sizes: Callable[[str], InputSizes]  # of each model.type
    # (model.type, merged state dict, path, decoding) -> (what tools/export.py writes to `path`, the line
    # of Python that loads it into the family's own tools, decoding as predict.py with `decoding`)
    export: Callable[[str, dict[str, Tensor], str | Path, str], tuple[Any, str]]
    options: tuple[str, ...] = ()  # config keys its backbone takes (the others must stay at their default)
    # model.type -> the file of its official weights (PREPARE.md); the others are made here
    official_checkpoints: Mapping[str, str] = field(default_factory=dict)
    auto_decoding: Callable[[str], str] = lambda model_type: "raw"  # model.decoding=auto of a model.type
    metadata: Callable[[str], dict[str, str]] = lambda model_type: {}  # adapter metadata beside "backbone"
    # (model, generator settings, multimask, model.pad, adapter) -> the package's automatic mask generator
    # on WeSAM `model` (prompt_source=auto); None: the family has none, and prompt_source=auto is refused
    mask_generator: Callable[..., Any] | None = None
    authors_code: bool = False  # paper.code (the authors' code's settings, configs/paper/versions.py) applies
    # benchmarks (tools/benchmark_speed.py): the network with model.attention of a kind (models/attention.py),
    # the same parameters; and one of a model.type's shape at another input side, random weights. None: the
    # family has only its own attention / only its model types' input sizes
    attention: Callable[[nn.Module, str], nn.Module] | None = None
    build_at_size: Callable[[str, int], nn.Module] | None = None
