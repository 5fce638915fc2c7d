"""prompt_source=auto: the anchor's instances in everything mode (models/predictor.py, models/sam1.py,
engine/auto_instances.py, datasets/auto_prompts.py), their cache, their recall, images-only datasets, and an
adaptation that never reads a training label; SAM 2's instances are those of the package's
SAM2AutomaticMaskGenerator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything.utils.amg import mask_to_rle_pytorch

import adaptation
from datasets import build_dataset
from datasets.auto_prompts import AutoInstances, diagnose, match_counts
from datasets.instances import InstanceDataset
from datasets.synthetic import SyntheticDataset
from engine.auto_instances import cached_instances, top_instances
from models import build_wesam
from models.lora import lora_layers
from models.predictor import generator_settings
from models.sam1 import WeSAMPredictor
from models.sam2 import build_sam2_model, mask_generator
from tests.conftest import cli, load_tool, run_overrides, tiny_config_overrides
from tests.ondisk import build, coco_image, dataset_spec, sample_options, write_coco_json, write_image, write_mask
from utils.config import load_config

# a grid of 4 x 4 points and no filter (quality, NMS): the random tiny SAM finds instances quickly
FAST_AUTO = ["prompt_source=auto", "auto.points_per_side=4", "auto.pred_iou_thresh=0", "auto.stability_score_thresh=0",
             "auto.box_nms_thresh=1",
             "auto.top_k=3"]


def tiny_setup(tmp_path: Path, *overrides: str):
    cfg = load_config(overrides=[*tiny_config_overrides(tmp_path / "run"), *FAST_AUTO, *overrides])
    return cfg, build_wesam(cfg)


def synthetic(cfg, num_images: int = 2) -> SyntheticDataset:
    return SyntheticDataset("train", num_images, sample_options(256), scene_size=96, max_objects=3, shift="camouflage")


class OneImage(InstanceDataset):
    """One fixed image of any size and its masks."""

    def __init__(self, image: np.ndarray, masks: np.ndarray, image_size: int, **options) -> None:
        super().__init__(sample_options(image_size, **options), train=False)
        self.records = [(image, masks)]

    def load(self, index: int):
        return (*self.records[index], None)


@pytest.mark.parametrize("pad", ["bottom_right", "center"])
def test_the_generator_sees_what_wesam_sees(tmp_path, pad):
    """The predictor's embedding of an image is WeSAM's encoding (LoRA off) of the sample that the
    dataset makes of it, for a non-square image, x / 255 input and either padding."""
    cfg, model = tiny_setup(tmp_path, "model.pixel_normalize=false", f"model.pad={pad}")
    for layer in lora_layers(model.sam):  # a non-zero adapter, which the anchor must not use
        torch.nn.init.normal_(layer.adapters["student"].up_q.weight)
    image = np.random.default_rng(0).integers(0, 256, (300, 180, 3), dtype=np.uint8)
    dataset = OneImage(image, np.zeros((0, 300, 180), bool), image_size=256, pad=pad)
    sample = dataset[0]
    predictor = WeSAMPredictor(model, pad, None)
    predictor.set_image(image)
    with torch.no_grad():
        x = model.backbone.preprocess(sample["image"][None], sample["valid"][None])
        expected = model.backbone.encode(x, None)[0]
        adapted = model.backbone.encode(x, "student")[0]
    assert torch.allclose(predictor.features, expected, atol=1e-5)
    assert not torch.allclose(predictor.features, adapted, atol=1e-3)
    # a mask comes back at the image's own size, from where the image lies in the padded input
    masks, _, _ = predictor.predict(np.array([[90.0, 150.0]]), np.array([1]), multimask_output=False)
    assert masks.shape == (1, 300, 180)


def test_top_k_by_predicted_iou_times_stability():
    rle = {"size": [2, 2], "counts": [4]}
    records = [{"segmentation": rle, "predicted_iou": iou, "stability_score": stability}
               for iou, stability in ((0.9, 0.5), (0.6, 0.9), (0.99, 0.99), (0.7, 0.7))]
    kept = top_instances(records, 3)
    assert [(k["predicted_iou"], k["stability_score"]) for k in kept] == [(0.99, 0.99), (0.6, 0.9), (0.7, 0.7)]


def test_recall_parts_and_background_of_a_hand_made_case():
    truth = np.zeros((3, 4, 4), bool)
    truth[0, :2, :2] = True  # 4 pixels: found exactly
    truth[1, 2:, :] = True  # 8 pixels: best match covers 4 of them (IoU 0.5)
    truth[2, 0, 3] = True  # 1 pixel: missed
    found = np.zeros((4, 4, 4), bool)
    found[0, :2, :2] = True
    found[1, 3, :] = True
    found[2, 2, 0] = True  # inside object 1: a part
    found[3, :2, 2] = True  # outside every object: background
    assert match_counts(truth, found) == {"found_gt": 2, "best_iou": pytest.approx(1.5), "matched": 2, "parts": 1,
                                          "background": 1}
    assert match_counts(truth, found[:0])["found_gt"] == 0 and match_counts(truth[:0], found)["background"] == 4
    dataset = OneImage(np.zeros((4, 4, 3), np.uint8), truth, image_size=4)
    rles = [{"rle": rle} for rle in mask_to_rle_pytorch(torch.from_numpy(found))]
    assert np.array_equal(AutoInstances([rles]).masks(0, 4, 4), found)
    assert diagnose(dataset, AutoInstances([rles])) == {
        "recall": 2 / 3, "mean_best_iou": pytest.approx(0.5), "gt_instances": 3, "matched": 0.5, "parts": 0.25,
        "background": 0.25}


def test_cache_is_reused_and_rebuilt_when_its_key_changes(tmp_path):
    cfg, model = tiny_setup(tmp_path)
    dataset = synthetic(cfg)
    path = tmp_path / "cache" / "anchor.json"
    first, record = cached_instances(path, model, dataset, cfg.auto, cfg.model.pad, diagnostic=True)
    assert record["built"] and 0 <= record["diagnostic"]["recall"] <= 1 and record["instances_per_image"] == 3
    again, record = cached_instances(path, model, dataset, cfg.auto, cfg.model.pad)
    assert not record["built"] and again.images == first.images
    cfg.auto.top_k = 2  # other settings
    fewer, record = cached_instances(path, model, dataset, cfg.auto, cfg.model.pad)
    assert record["built"] and fewer.images == [instances[:2] for instances in first.images]
    with torch.no_grad():  # another anchor; a LoRA change is not one
        lora_layers(model.sam)[0].adapters["student"].up_q.weight.add_(1.0)
        assert not cached_instances(path, model, dataset, cfg.auto, cfg.model.pad)[1]["built"]
        model.sam.mask_decoder.iou_prediction_head.layers[0].bias.add_(1.0)
    assert cached_instances(path, model, dataset, cfg.auto, cfg.model.pad)[1]["built"]
    assert cached_instances(path, model, synthetic(cfg, 3), cfg.auto, cfg.model.pad)[1]["built"]  # other images


@pytest.mark.slow
def test_adaptation_without_labels_resumes_with_its_cache_and_refreshes(tmp_path, monkeypatch):
    """The training split's labels are never read (its `load` raises); evaluation is the usual one;
    a resumed run reads the cache instead of making the instances again."""
    load = SyntheticDataset.load

    def evaluation_only(self, index):
        assert self.stream != 0, "a training label was read"
        return load(self, index)

    monkeypatch.setattr(SyntheticDataset, "load", evaluation_only)
    run = tmp_path / "run"
    overrides = [*tiny_config_overrides(run), *FAST_AUTO, "auto.diagnostic=false", "auto.refresh_every=2",
                 "num_steps=2"]
    result = adaptation.main(overrides)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["last"] == result["last"] and summary["auto_instances"]["built"]
    assert "diagnostic" not in summary["auto_instances"] and summary["last"]["pseudo_label_iou"] is None
    assert (run / "auto_instances" / "anchor.json").is_file()
    assert not (run / "auto_instances" / "refresh-000002.json").exists()  # the last step needs no refresh
    adaptation.main(["--resume", str(run / "checkpoints" / "last.ckpt"), "num_steps=4"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["last"]["step"] == 4 and not summary["auto_instances"]["built"]
    assert (run / "auto_instances" / "refresh-000002.json").is_file()

    monkeypatch.setattr(SyntheticDataset, "load", load)  # with labels: the diagnostic, once
    other = tmp_path / "other"
    adaptation.main([*tiny_config_overrides(other), *FAST_AUTO, "num_steps=2", f"auto.cache={run / 'auto_instances'}"])
    shared = json.loads((other / "summary.json").read_text())["auto_instances"]
    assert not shared["built"] and 0 <= shared["diagnostic"]["recall"] <= 1  # measured on the cache made without it


def write_images(folder: Path, count: int) -> None:
    for i in range(count):
        write_image(folder / f"im{i}.png", seed=i)


def test_automatic_prompts_come_from_sam2s_generator_on_the_anchor(tmp_path):
    """prompt_source=auto: the training instances are those of the package's SAM2AutomaticMaskGenerator
    on the unadapted model (thresholds at 0, so the random model finds some)."""
    run = tmp_path / "run"
    cfg = load_config(overrides=run_overrides("sam2_tiny", run, *FAST_AUTO, "num_steps=2"))
    result = adaptation.adapt(cfg)
    found = json.loads((run / "summary.json").read_text())["auto_instances"]
    assert found["built"] and found["instances_per_image"] == cfg.auto.top_k and found["images_without_instances"] == 0
    assert result["last"]["step"] == 2 and result["last"]["pseudo_label_iou"] is None
    cached = json.loads((run / "auto_instances/anchor.json").read_text())["images"]

    with torch.random.fork_rng(devices=[]):  # the run's network without LoRA, as build_wesam draws it
        torch.manual_seed(cfg.seed)
        plain = build_sam2_model("sam2_tiny")
    generator = mask_generator(plain, output_mode="uncompressed_rle", multimask_output=cfg.auto.multimask,
                               **generator_settings(cfg.auto))
    train = build_dataset(dataset_spec(cfg), "train")
    assert len(cached) == len(train) == cfg.dataset.synthetic.num_train
    for index, instances in enumerate(cached):
        image = train.load_image(index)
        expected = top_instances(generator.generate(image), cfg.auto.top_k)
        assert [i["rle"] for i in instances] == [e["rle"] for e in expected]
        assert instances[0]["rle"]["size"] == list(image.shape[:2])
        for ours, theirs in zip(instances, expected):
            assert ours["predicted_iou"] == pytest.approx(theirs["predicted_iou"], abs=1e-5)


def test_folder_and_coco_of_images_only(tmp_path):
    write_images(tmp_path / "folder" / "train" / "images", 3)
    write_images(tmp_path / "folder" / "test" / "images", 2)
    write_mask(tmp_path / "folder" / "test" / "masks" / "im0.png", np.eye(40, 60, dtype=np.uint8))
    train = build("folder", tmp_path / "folder", "train", "prompt_source=auto")
    assert len(train) == 3 and not train.has_labels and train.load_image(0).shape == (40, 60, 3)
    assert build("folder", tmp_path / "folder", "test", "prompt_source=auto").has_labels
    with pytest.raises(FileNotFoundError, match="labels are needed.*set prompt_source=auto to adapt without labels"):
        build("folder", tmp_path / "folder", "train")
    write_images(tmp_path / "pooled" / "images", 8)  # no masks at all: the 6:1 split, nothing to evaluate
    assert len(build("folder", tmp_path / "pooled", "train", "prompt_source=auto")) == 7
    with pytest.raises(FileNotFoundError, match="the test split is evaluated.*scoring needs labels"):
        build("folder", tmp_path / "pooled", "test", "prompt_source=auto")

    write_images(tmp_path / "coco" / "images", 5)
    assert len(build("coco", tmp_path / "coco", "train", "prompt_source=auto")) == 5  # interleave 6:1 of 5 images
    write_coco_json(tmp_path / "coco" / "test.json", [coco_image(1, "im4.png")], [])
    only = build("coco", tmp_path / "coco", "train", "prompt_source=auto", "dataset.coco.test=test.json")
    assert [r.image.name for r in only.records] == ["im0.png", "im1.png", "im2.png", "im3.png"]
    with pytest.raises(FileNotFoundError, match="annotations.json' not found: labels are needed"):
        build("coco", tmp_path / "coco", "train")


def test_images_only_with_labels_stops_before_any_work(tmp_path, capsys):
    write_images(tmp_path / "data" / "train" / "images", 2)
    run = tmp_path / "run"
    code, message = cli(adaptation.main, [*tiny_config_overrides(run), "dataset.name=folder",
                                          f"dataset.root={tmp_path / 'data'}"], capsys)
    assert code == 1 and "labels are needed" in message and "prompt_source=auto" in message
    assert not (run / "checkpoints").exists()
    code, message = cli(adaptation.main, [*tiny_config_overrides(run), *FAST_AUTO, "loss.target=ground_truth"], capsys)
    assert code == 1 and "loss.target=ground_truth trains on labels" in message


def test_the_tool_measures_a_split_and_reads_the_cache_again(tmp_path):
    tool = load_tool("auto_instances")
    argv = ["--split", "val", *tiny_config_overrides(tmp_path / "run"), *FAST_AUTO]
    first = tool.main(argv)
    assert first["built"] and set(first["diagnostic"]) >= {"recall", "parts", "background"}
    assert (tmp_path / "run" / "auto_instances" / "anchor-val.json").is_file()
    assert tool.main(argv) == {**first, "built": False}
