"""WeSAMPredictor and WeSAM2Predictor: segment_anything's SamPredictor and sam2's SAM2ImagePredictor
fed exactly as WeSAM is, with an adapter, and the packages' automatic mask generators ("everything"
mode) built on them."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
from sam2.sam2_image_predictor import SAM2ImagePredictor
from segment_anything import SamAutomaticMaskGenerator, SamPredictor

from models.wesam import WeSAM
from utils.padding import pad_offsets

# SamAutomaticMaskGenerator's arguments set by the config section `auto`
GENERATOR_KEYS = ("points_per_side", "points_per_batch", "pred_iou_thresh", "stability_score_thresh",
                  "box_nms_thresh", "min_mask_region_area")


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


def generator_settings(auto: Any) -> dict[str, Any]:
    """The config section `auto` as SamAutomaticMaskGenerator's arguments."""
    return {key: auto[key] for key in GENERATOR_KEYS}


def make_generator(model: WeSAM, auto: Any, pad: str,
                   adapter: str | None) -> SamAutomaticMaskGenerator | SAM2AutomaticMaskGenerator:
    """The automatic mask generator of `model`'s backbone (SAM's or SAM 2's) with `adapter` (None: the
    anchor), RLE output; SAM 2 pads nothing (`pad` is SAM's)."""
    if model.backbone.family == "sam2":
        generator = SAM2AutomaticMaskGenerator(model.sam, output_mode="uncompressed_rle",
                                               multimask_output=auto.multimask, **generator_settings(auto))
        generator.predictor = WeSAM2Predictor(model, adapter)
        return generator
    generator = SamAutomaticMaskGenerator(model.sam, output_mode="uncompressed_rle", **generator_settings(auto))
    generator.predictor = WeSAMPredictor(model, pad, adapter, auto.multimask)
    return generator
