"""Which SAM a model.type is, and what the rest of the program needs to know of it: the one place
that tells SAM (models/registry.py, models/sam1.py) from SAM 2 (models/sam2.py) by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sam2.modeling.sam2_base import SAM2Base
from segment_anything.modeling import Sam
from torch import Tensor

from models.registry import OFFICIAL_CHECKPOINTS, SAM_CONFIGS, build_sam, sam_embedding_size, sam_image_size
from models.sam2 import OFFICIAL_SAM2, SAM2_CONFIGS, SMALL_SAM2, build_sam2_model, sam2_config

MODEL_TYPES = sorted(SAM_CONFIGS) + sorted(SAM2_CONFIGS)


def is_sam2(model_type: str) -> bool:
    return model_type in SAM2_CONFIGS


def input_sizes(model_type: str) -> dict[str, int | str]:
    """What a dataset needs to know of the model: its input side S, image-embedding side h, and how
    an image becomes S x S ("longest_side": SAM's resize and pad; "square": SAM 2's resize)."""
    if is_sam2(model_type):
        size = SMALL_SAM2[model_type][1]["image_size"] if model_type in SMALL_SAM2 else 1024
        return {"image_size": size, "embedding_size": size // 16, "resize": "square"}
    return {"image_size": sam_image_size(model_type), "embedding_size": sam_embedding_size(model_type),
            "resize": "longest_side"}


def backbone_metadata(model_type: str) -> dict[str, str]:
    """What an adapter file records of its model beside model.type: the backbone ("sam" or "sam2")
    and, for SAM 2, the package's configuration the model is built from."""
    if is_sam2(model_type):
        return {"backbone": "sam2", "sam2_config": sam2_config(model_type)[0]}
    return {"backbone": "sam"}


def evaluation_decoding(model_type: str, setting: str) -> str:
    """How evaluation and predict.py decode `model_type`'s single mask for `model.decoding` = `setting`:
    "meta" (as the package's predictor on its default build) or "raw" (the first mask token).

    "auto" is "meta" for the official SAM 2 configurations, whose checkpoints Meta trained with all
    four mask tokens; "raw" for the small SAM 2 made here (sam2_small was pretrained on the first token
    only, and its untrained multimask tokens are what the stability fallback would pick) and for SAM,
    whose predictor decodes the first token anyway."""
    if setting != "auto":
        return setting
    return "meta" if model_type in OFFICIAL_SAM2 else "raw"


def exported_checkpoint(model_type: str, state: dict[str, Tensor], path: str | Path,
                        decoding: str = "raw") -> tuple[Any, str]:
    """A plain state dict of `model_type` (LoRA merged) as the official tools read it from a file
    (SAM 2: {"model": state}, Meta's layout, which build_sam2 reads; SAM: the state dict itself), and
    the line of Python that loads it from `path`, with what to say of its use: for SAM 2, the
    post-processing setting under which SAM2ImagePredictor decodes as predict.py with `decoding`
    (evaluation_decoding) and, for the small configurations, the predictor and automatic mask
    generator at their own feature sizes."""
    if is_sam2(model_type):
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
            f"{input_sizes(model_type)['image_size']} px")
    loader = (f'segment_anything.sam_model_registry["{model_type}"](checkpoint="{path}")'
              if model_type in OFFICIAL_CHECKPOINTS else f'models.registry.build_sam("{model_type}", "{path}")')
    return state, loader


def build_network(model_type: str, checkpoint: str | Path | None = None, attention: str = "sam") -> Sam | SAM2Base:
    """The SAM or SAM 2 of `model_type` with random weights or those of `checkpoint`; SAM's image
    encoder with attention of kind `attention` (SAM 2 has the package's own)."""
    if is_sam2(model_type):
        return build_sam2_model(model_type, checkpoint)
    return build_sam(model_type, checkpoint, attention)
