"""The automatic mask generator ("everything" mode, prompt_source=auto) of a WeSAM model: its family's
(Family.mask_generator: segment_anything's SamAutomaticMaskGenerator, sam2's SAM2AutomaticMaskGenerator)
on the package's predictor fed exactly as WeSAM is (models/sam1.py WeSAMPredictor, models/sam2.py
WeSAM2Predictor), with an adapter."""

from __future__ import annotations

from typing import Any

from models.backbones import family_of_network
from models.wesam import WeSAM

# SamAutomaticMaskGenerator's arguments set by the config section `auto`
GENERATOR_KEYS = ("points_per_side", "points_per_batch", "pred_iou_thresh", "stability_score_thresh",
                  "box_nms_thresh", "min_mask_region_area")


def generator_settings(auto: Any) -> dict[str, Any]:
    """The config section `auto` as SamAutomaticMaskGenerator's arguments."""
    return {key: auto[key] for key in GENERATOR_KEYS}


def make_generator(model: WeSAM, auto: Any, pad: str, adapter: str | None) -> Any:
    """The automatic mask generator of `model`'s family with `adapter` (None: the anchor), RLE output."""
    return family_of_network(model.sam).mask_generator(model, generator_settings(auto), auto.multimask, pad, adapter)
