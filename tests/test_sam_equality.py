"""Our whole input path against SAM's own: file on disk -> dataset sample -> WeSAM.predict with LoRA
at zero gives the low-resolution logits of SamPredictor.set_image + predict_torch on the same file,
for images that must be scaled up and down, of odd and non-square sizes, grey and RGBA."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from segment_anything import SamPredictor

from datasets import build_dataset
from datasets.prompts import boxes_from_masks
from models import WeSAM, build_sam
from models.lora import STUDENT
from tests.ondisk import dataset_spec
from utils.config import load_config

# (height, width, PIL mode): the tiny SAM's input is 256, so these scale up, down, or not at all
IMAGES = {"up_odd": (97, 61, "RGB"), "down_wide": (300, 411, "RGB"), "grey": (151, 203, "L"),
          "rgba_tall": (513, 260, "RGBA"), "exact": (256, 190, "RGB")}


def write_folder(root: Path) -> None:
    """A `folder` dataset test split: each image with a label map of two objects."""
    rng = np.random.default_rng(0)
    for stem, (height, width, mode) in IMAGES.items():
        pixels = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
        pixels[height // 5:height // 2, width // 6:width // 2, :3] = (220, 40, 30, 255)[:3]
        image = Image.fromarray(pixels, "RGBA").convert(mode)
        (root / "test" / "images").mkdir(parents=True, exist_ok=True)
        image.save(root / "test" / "images" / f"{stem}.png")
        labels = np.zeros((height, width), np.uint8)
        labels[height // 5:height // 2, width // 6:width // 2] = 1
        yy, xx = np.ogrid[:height, :width]
        labels[((yy - 0.7 * height) / (0.2 * height)) ** 2 + ((xx - 0.6 * width) / (0.25 * width)) ** 2 < 1] = 2
        (root / "test" / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(labels).save(root / "test" / "masks" / f"{stem}.png")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("folder")
    write_folder(root)
    return root


def dataset(root: Path, prompt: str):
    cfg = load_config(overrides=["dataset.name=folder", f"dataset.root={root}", "accelerator=cpu",
                                 "model.type=vit_tiny", "model.checkpoint=", f"prompt={prompt}"])
    return build_dataset(dataset_spec(cfg), "test")


@pytest.fixture(scope="module")
def models() -> tuple[WeSAM, SamPredictor]:
    torch.manual_seed(0)
    sam = build_sam("vit_tiny")
    predictor = SamPredictor(copy.deepcopy(sam).eval())
    return WeSAM.on(sam, lora_rank=4).eval(), predictor


@pytest.mark.parametrize("prompt", ["box", "point", "box+point"])
def test_our_path_from_file_to_logits_equals_sam_predictor(folder, models, prompt):
    model, predictor = models
    boxes_set, points_set = dataset(folder, "box"), dataset(folder, "point")
    assert [r.image.stem for r in boxes_set.records] == sorted(IMAGES)
    for index, record in enumerate(boxes_set.records):
        box_sample, point_sample = boxes_set[index], points_set[index]
        prompts = {}
        if "box" in prompt:
            prompts.update(box_sample["prompts"])
        if "point" in prompt:
            prompts.update(point_sample["prompts"])
        image = np.array(Image.open(record.image).convert("RGB"))  # what a SamPredictor user passes
        with torch.no_grad():
            predictor.set_image(image)
            _, expected_iou, expected = predictor.predict_torch(
                point_coords=prompts.get("points"), point_labels=prompts.get("point_labels"),
                boxes=prompts.get("boxes"), multimask_output=False, return_logits=True)
            ours = model.predict(box_sample["image"][None], box_sample["valid"][None], [prompts], adapter=STUDENT)
        torch.testing.assert_close(ours["logits"][0], expected, atol=1e-4, rtol=0)
        torch.testing.assert_close(ours["iou"][0], expected_iou, atol=1e-4, rtol=0)
        # the prompts are SAM's transform of the native-size ones, and the valid region its input size
        native_masks = boxes_set.load(index)[1]
        np.testing.assert_allclose(box_sample["prompts"]["boxes"].numpy(),
                                   predictor.transform.apply_boxes(boxes_from_masks(native_masks), image.shape[:2]),
                                   rtol=0, atol=1e-4)
        assert tuple(box_sample["valid"][2:].tolist()) == predictor.input_size
