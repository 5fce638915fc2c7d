"""Using the adapted model: predict.py's masks equal validate.py's on the same data, the merged
state dict of tools/export.py gives SamPredictor the adapted masks, validate.py --per-image and
--visualize."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from segment_anything import SamPredictor

import predict
import validate
from datasets import build_dataset
from models import build_sam, build_wesam
from models.adapters import save_adapter
from models.lora import STUDENT, adapter_state_dict, load_adapter_state_dict, merged_state_dict
from tests.ondisk import box_annotation, coco_image, dataset_spec, sample_options, write_coco_json, write_image
from tools import export
from utils.config import load_config
from utils.metrics import instance_scores

# vit_tiny's input is 256: images of longest side 256 need no resize, so SamPredictor (which
# resizes with PIL) and our pipeline (cv2) see the same pixels
HEIGHT, WIDTH = 192, 256
BOXES = [(20, 30, 120, 110), (100, 60, 230, 170), (5, 5, 60, 40)]
TINY = ["model.type=vit_tiny", "model.checkpoint=", "accelerator=cpu"]


def random_adapter(path: Path, overrides: list[str]) -> None:
    """An adapter of non-zero random weights for the model of `overrides` (as if trained)."""
    sam = build_wesam(load_config(overrides=overrides)).sam
    generator = torch.Generator().manual_seed(0)
    weights = {k: 0.3 * torch.randn(v.shape, generator=generator) for k, v in adapter_state_dict(sam).items()}
    save_adapter(path, weights, {"model_type": "vit_tiny", "lora_rank": 4})


@pytest.fixture
def coco_data(tmp_path: Path) -> tuple[Path, list[str]]:
    """Three images with rectangle annotations as a COCO dataset whose test split is all of them;
    the config overrides that evaluate it with the tiny SAM and an adapter at tmp_path/adapter."""
    images = [coco_image(i + 1, f"{i}.png", HEIGHT, WIDTH) for i in range(3)]
    for i in range(3):
        write_image(tmp_path / "data/images" / f"{i}.png", seed=i, height=HEIGHT, width=WIDTH)
    annotations = [box_annotation(i + 1, *box) for i in range(3) for box in BOXES[:i + 1]]
    write_coco_json(tmp_path / "data/test.json", images, annotations)
    overrides = TINY + ["dataset.name=coco", f"dataset.root={tmp_path / 'data'}", "dataset.coco.test=test.json",
                        "dataset.coco.annotations="]
    random_adapter(tmp_path / "adapter.safetensors", overrides)
    return tmp_path / "data", overrides


def decode(segmentation: dict) -> np.ndarray:
    return mask_utils.decode({"size": segmentation["size"], "counts": segmentation["counts"].encode()}).astype(bool)


def test_predict_equals_validate_and_per_image(coco_data, tmp_path):
    data, overrides = coco_data
    adapter = str(tmp_path / "adapter.safetensors")
    out_json, per_image = tmp_path / "adapted.json", tmp_path / "per_image.csv"
    result = validate.main(["--ckpt", adapter, "--out", str(out_json), "--per-image", str(per_image),
                            "--visualize", "2", *overrides])
    masks = predict.main(["--ckpt", adapter, "--images", str(data / "images"), "--coco", str(data / "test.json"),
                          "--out", str(tmp_path / "pred"), "--format", "rle", *overrides])
    # predict.py's masks, scored against the ground truth, give validate.py's numbers
    dataset = build_dataset(dataset_spec(load_config(overrides=overrides)), "test")
    with per_image.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["instances"]) for r in rows] == [1, 2, 3]
    mious = []
    for index in range(3):
        entries = [m for m in masks if m["image_id"] == index + 1]
        assert [m["instance"] for m in entries] == list(range(index + 1)) and entries[0]["category_id"] == 1
        pred = torch.from_numpy(np.stack([decode(m["segmentation"]) for m in entries]))
        truth = dataset[index]["masks"][:, :HEIGHT, :WIDTH]
        iou, f1 = instance_scores(pred, truth)
        assert float(iou.mean()) == pytest.approx(float(rows[index]["miou"]), abs=1e-6)
        assert float(f1.mean()) == pytest.approx(float(rows[index]["f1"]), abs=1e-6)
        mious.append(float(iou.mean()))
    assert np.mean(mious) == pytest.approx(result["miou"], abs=1e-6)  # evaluate()'s own mIoU
    assert any(float(r["gain"]) != 0 for r in rows) and all(
        float(r["gain"]) == pytest.approx(float(r["miou"]) - float(r["direct_miou"])) for r in rows)
    # --visualize 2: the image of largest gain and that of largest loss, beside the JSON
    pictures = sorted(p.name for p in (tmp_path / "adapted-visualize").iterdir())
    gains = sorted(rows, key=lambda r: float(r["gain"]))
    assert len(pictures) == 2 and pictures[0].startswith("00_gain") and pictures[1].startswith("01_loss")
    assert (pictures[0].endswith(f"_image{gains[-1]['index']}.png")
            and pictures[1].endswith(f"_image{gains[0]['index']}.png"))
    assert Image.open(tmp_path / "adapted-visualize" / pictures[0]).size[0] > 4 * 100

    # label maps: the same masks, a later one on top
    predict.main(["--ckpt", adapter, "--images", str(data / "images"), "--coco", str(data / "test.json"),
                  "--out", str(tmp_path / "png"), *overrides])
    labels = np.array(Image.open(tmp_path / "png/2.png"))
    expected = np.zeros((HEIGHT, WIDTH), np.uint8)
    for m in (m for m in masks if m["image_id"] == 3):
        expected[decode(m["segmentation"])] = m["instance"] + 1
    np.testing.assert_array_equal(labels, expected)
    assert Image.open(tmp_path / "png/2_overlay.png").size == (WIDTH, HEIGHT)


def test_merged_export_gives_sam_predictor_the_adapted_masks(tmp_path):
    """tools/export.py merges the adapter into qkv; SamPredictor on the merged model reproduces
    the adapted logits (to 1e-4) and predict.py's masks, for box and point prompts."""
    random_adapter(tmp_path / "adapter.safetensors", TINY)
    write_image(tmp_path / "images/scene.png", seed=3, height=HEIGHT, width=WIDTH)
    merged = export.main(["--ckpt", str(tmp_path / "adapter.safetensors"), "--out", str(tmp_path / "merged.pth"),
                          *TINY])
    state = torch.load(merged, weights_only=True)
    assert not any("adapters" in key or "qkv.qkv" in key for key in state)
    predictor = SamPredictor(build_sam("vit_tiny", merged))  # strict load: exactly a plain SAM's keys
    predictor.set_image(np.array(Image.open(tmp_path / "images/scene.png")))

    common = ["--ckpt", str(tmp_path / "adapter.safetensors"), "--images", str(tmp_path / "images"), "--format", "rle"]
    boxes = predict.main(common + ["--out", str(tmp_path / "boxes"), *sum((["--box", ",".join(map(str, b))]
                                                                         for b in BOXES), []), *TINY])
    points = [[40, 50, 80, 90], [150, 100]]
    by_points = predict.main(common + ["--out", str(tmp_path / "points"), "--points", "40,50,80,90",
                                       "--points", "150,100", *TINY])
    adapted = build_wesam(load_config(overrides=TINY))
    load_adapter_state_dict(adapted.sam, adapter_state_dict_of(tmp_path / "adapter.safetensors"), STUDENT)
    for box, ours in zip(BOXES, boxes):
        logits, score, _ = predictor.predict(box=np.array(box), multimask_output=False, return_logits=True)
        assert_same_mask(decode(ours["segmentation"]), logits[0])
        assert ours["score"] == pytest.approx(float(score[0]), abs=1e-4)
    for coords, ours in zip(points, by_points):
        coords = np.array(coords, np.float32).reshape(-1, 2)
        logits, _, _ = predictor.predict(point_coords=coords, point_labels=np.ones(len(coords)),
                                         multimask_output=False, return_logits=True)
        assert_same_mask(decode(ours["segmentation"]), logits[0])
    # the logits themselves, against our network with the adapter
    with torch.no_grad():
        sample = predict.PromptedImages([{"path": tmp_path / "images/scene.png", "boxes": np.array(BOXES, np.float32)}],
                                        sample_options(256, seed=0))[0]
        from engine.predictions import sample_logits
        ours = sample_logits(adapted, sample, STUDENT)
        theirs, _, _ = predictor.predict_torch(None, None, boxes=sample["prompts"]["boxes"], multimask_output=False,
                                               return_logits=True)
    torch.testing.assert_close(ours, theirs[:, 0], atol=1e-4, rtol=0)


def adapter_state_dict_of(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    return load_file(str(path))


def assert_same_mask(ours: np.ndarray, logits: np.ndarray) -> None:
    """Our mask equals logits > 0 wherever the logit is not within float noise of 0."""
    certain = np.abs(logits) > 1e-4
    assert ours.shape == logits.shape and certain.mean() > 0.99
    np.testing.assert_array_equal(ours[certain], logits[certain] > 0)


@pytest.mark.slow
def test_merged_vit_b_loads_in_the_official_registry(tmp_path):
    """segment_anything's own vit_b builder loads the merged file as is (strict), and each merged
    qkv projection equals ours with the adapter (the whole network's equality: the vit_tiny test)."""
    from segment_anything import sam_model_registry

    cfg = load_config(overrides=["model.type=vit_b", "model.checkpoint=", "accelerator=cpu"])
    with pytest.warns(UserWarning, match="random weights"):
        adapted = build_wesam(cfg)
    generator = torch.Generator().manual_seed(0)
    load_adapter_state_dict(adapted.sam, {k: 0.05 * torch.randn(v.shape, generator=generator)
                                          for k, v in adapter_state_dict(adapted.sam).items()})
    torch.save(merged_state_dict(adapted.sam), tmp_path / "merged.pth")
    official = sam_model_registry["vit_b"](checkpoint=str(tmp_path / "merged.pth"))
    tokens = torch.randn(2, 7, 768, generator=generator)
    with torch.no_grad():
        for ours, theirs in zip(adapted.sam.image_encoder.blocks, official.image_encoder.blocks):
            torch.testing.assert_close(ours.attn.qkv(tokens), theirs.attn.qkv(tokens), atol=1e-4, rtol=0)


def test_prompts_partly_outside_the_image_and_points_on_its_border_are_used(tmp_path):
    """A detector's box may overrun the image: it is kept as given (SAM takes coordinates beyond
    the border) and gives a mask; a point on the border is inside."""
    write_image(tmp_path / "images/a.png", height=HEIGHT, width=WIDTH)
    common = ["--images", str(tmp_path / "images"), "--format", "rle", *TINY]
    boxes = predict.main(common + ["--out", str(tmp_path / "boxes"), "--box=-20,-10,60,50",
                                   "--box", f"200,150,{WIDTH + 40},{HEIGHT + 30}"])
    points = predict.main(common + ["--out", str(tmp_path / "points"), "--points", f"0,0,{WIDTH},{HEIGHT}"])
    assert [m["instance"] for m in boxes] == [0, 1] and [m["instance"] for m in points] == [0]
    for entry in boxes + points:
        assert tuple(decode(entry["segmentation"]).shape) == (HEIGHT, WIDTH)
    assert (tmp_path / "boxes/a_overlay.png").is_file() and (tmp_path / "points/masks.json").is_file()
