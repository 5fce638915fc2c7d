"""engine/evaluate.py's metric options: the logit threshold and the scored region (image or padded canvas)."""

from __future__ import annotations

import pytest
import torch
from lightning_fabric import Fabric

from engine.evaluate import evaluate
from tests.test_instances import RectDataset


class FixedLogits(torch.nn.Module):
    """Predicts logit 0.3 on each instance's true mask, 2.0 in the padding, -5 elsewhere."""

    def predict(self, images, valid, prompts, adapter=None, decoding="raw"):
        logits = []
        for image, box_prompts, (top, left, height, width) in zip(images, prompts, valid.tolist()):
            count = len(box_prompts["boxes"])
            out = torch.full((count, 1, *image.shape[-2:]), -5.0)
            out[..., :, left + width:] = 2.0
            for i, (x1, y1, x2, y2) in enumerate(box_prompts["boxes"].round().int().tolist()):
                out[i, 0, y1:y2, x1:x2] = 0.3
            logits.append(out)
        return {"logits": logits}


@pytest.mark.parametrize("threshold, region, expected", [(0.0, "image", 1.0), (0.5, "image", 0.0)])
def test_threshold_decides_which_logits_count(threshold, region, expected):
    metrics = evaluate(Fabric(accelerator="cpu", devices=1), FixedLogits(), RectDataset(num_images=2), None,
                       threshold=threshold, region=region)
    assert metrics["miou"] == pytest.approx(expected) and metrics["num_images"] == 2


def test_canvas_region_scores_the_padding_too():
    dataset = RectDataset(num_images=1)  # 64 x 40 images padded to 64 x 64: 24 columns of padding
    image_only = evaluate(Fabric(accelerator="cpu", devices=1), FixedLogits(), dataset, None)
    canvas = evaluate(Fabric(accelerator="cpu", devices=1), FixedLogits(), dataset, None, region="canvas")
    assert image_only["miou"] == pytest.approx(1.0)
    masks = dataset[0]["masks"]
    padding = 64 * 24
    expected = (masks.sum((1, 2)).double() / (masks.sum((1, 2)) + padding)).mean().item()
    assert canvas["miou"] == pytest.approx(expected)
