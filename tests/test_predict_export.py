"""Using the adapted model, over both backbones (SAM's vit_tiny, SAM 2's sam2_tiny): predict.py's masks
equal validate.py's on the same data (validate.py --per-image and --visualize), validate.py reproduces a
run's evaluations from each of its files, predict.py writes masks at the stored size, and the merged
model of tools/export.py, loaded by the line it prints, gives the family's own predictor (segment_anything's
SamPredictor, sam2's SAM2ImagePredictor) predict.py's logits, masks and scores."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sam2.build_sam import build_sam2
from sam2.sam2_image_predictor import SAM2ImagePredictor
from segment_anything import SamPredictor

import models.sam1
import models.sam2
import predict
import validate
from datasets import build_dataset
from engine.checkpoint import load_student_adapter
from models import build_wesam
from models.adapters import save_adapter
from models.backbones import build_network
from models.lora import STUDENT, adapter_state_dict, load_adapter_state_dict, merged_state_dict
from models.predictor import generator_settings, make_generator
from tests.conftest import BACKBONES, TINY, read_csv
from tests.ondisk import box_annotation, coco_image, dataset_spec, decode_rle, write_coco_json, write_image
from tests.test_auto_prompts import FAST_AUTO
from tools import export
from utils.config import load_config
from utils.metrics import instance_scores

# the stored size of the images predicted on: SAM's (input 256) of longest side 256, which needs no resize, so
# that SamPredictor (which resizes with PIL) and our pipeline (cv2) see the same pixels; SAM 2's not square,
# so that its resize to the 128 px square changes the aspect ratio
IMAGE_SIZE = {"vit_tiny": (192, 256), "sam2_tiny": (90, 150)}
BOXES = [(10, 15, 100, 70), (60, 30, 140, 85)]
POINTS = ["40,30,50,40", "120,70"]  # one instance of two positive points, one of one


def box_args(boxes) -> list[str]:
    return sum((["--box", ",".join(map(str, box))] for box in boxes), [])


def random_adapter(path: Path, overrides: list[str], scale: float = 0.3) -> None:
    """An adapter of non-zero random weights for the model of `overrides` (as if trained)."""
    cfg = load_config(overrides=overrides)
    sam = build_wesam(cfg).sam
    generator = torch.Generator().manual_seed(0)
    weights = {k: scale * torch.randn(v.shape, generator=generator) for k, v in adapter_state_dict(sam).items()}
    save_adapter(path, weights, {"model_type": cfg.model.type, "lora_rank": cfg.lora.rank})


def assert_same_mask(ours: np.ndarray, logits: np.ndarray) -> None:
    """Our mask equals logits > 0 wherever the logit is not within float noise of 0."""
    certain = np.abs(logits) > 1e-4
    assert ours.shape == logits.shape and certain.mean() > 0.99
    np.testing.assert_array_equal(ours[certain], logits[certain] > 0)


def family_predictor(sam: torch.nn.Module):
    """The family's own single-image predictor on a plain network: SamPredictor, or SAM2ImagePredictor at the
    network's feature sizes (models/sam2.py image_predictor)."""
    return SamPredictor(sam) if isinstance(sam, models.sam1.Sam) else models.sam2.image_predictor(sam)


def plain_of(run: Path) -> torch.nn.Module:
    """The run's network without LoRA, drawn as build_wesam draws it."""
    cfg = load_config(run / "config.json")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return build_network(cfg.model.type)


def printed_loading_line(capsys) -> str:
    """The Python expression of the loading line that tools/export.py printed (before its advice, if any)."""
    return re.search(r"Load it with (.+?\))(?: \(|\.)", capsys.readouterr().out).group(1)


@pytest.fixture(params=BACKBONES)
def model_type(request) -> str:
    return request.param


@pytest.fixture
def coco_data(tmp_path: Path) -> tuple[Path, list[str]]:
    """Three images with rectangle annotations as a COCO dataset whose test split is all of them;
    the config overrides that evaluate it with the tiny SAM and an adapter at tmp_path/adapter."""
    height, width = IMAGE_SIZE["vit_tiny"]
    boxes = [(20, 30, 120, 110), (100, 60, 230, 170), (5, 5, 60, 40)]
    images = [coco_image(i + 1, f"{i}.png", height, width) for i in range(3)]
    for i in range(3):
        write_image(tmp_path / "data/images" / f"{i}.png", seed=i, height=height, width=width)
    annotations = [box_annotation(i + 1, *box) for i in range(3) for box in boxes[:i + 1]]
    write_coco_json(tmp_path / "data/test.json", images, annotations)
    overrides = TINY + ["dataset.name=coco", f"dataset.root={tmp_path / 'data'}", "dataset.coco.test=test.json",
                        "dataset.coco.annotations="]
    random_adapter(tmp_path / "adapter.safetensors", overrides)
    return tmp_path / "data", overrides


def test_predict_equals_validate_and_per_image(coco_data, tmp_path):
    """SAM on images that need no resize, so that its evaluation, in the input frame, is at the stored size:
    predict.py's masks scored against the ground truth give validate.py's numbers, image by image."""
    data, overrides = coco_data
    height, width = IMAGE_SIZE["vit_tiny"]
    adapter = str(tmp_path / "adapter.safetensors")
    out_json, per_image = tmp_path / "adapted.json", tmp_path / "per_image.csv"
    result = validate.main(["--ckpt", adapter, "--out", str(out_json), "--per-image", str(per_image),
                            "--visualize", "2", *overrides])
    masks = predict.main(["--ckpt", adapter, "--images", str(data / "images"), "--coco", str(data / "test.json"),
                          "--out", str(tmp_path / "pred"), "--format", "rle", *overrides])
    # predict.py's masks, scored against the ground truth, give validate.py's numbers
    dataset = build_dataset(dataset_spec(load_config(overrides=overrides)), "test")
    rows = read_csv(per_image)
    assert [int(r["instances"]) for r in rows] == [1, 2, 3]
    mious = []
    for index in range(3):
        entries = [m for m in masks if m["image_id"] == index + 1]
        assert [m["instance"] for m in entries] == list(range(index + 1)) and entries[0]["category_id"] == 1
        pred = torch.from_numpy(np.stack([decode_rle(m["segmentation"]) for m in entries]))
        truth = dataset[index]["masks"][:, :height, :width]
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
    expected = np.zeros((height, width), np.uint8)
    for m in (m for m in masks if m["image_id"] == 3):
        expected[decode_rle(m["segmentation"])] = m["instance"] + 1
    np.testing.assert_array_equal(labels, expected)
    assert Image.open(tmp_path / "png/2_overlay.png").size == (width, height)


# --- a finished run's files (tests/conftest.py finished_runs)

def test_validate_reproduces_the_runs_evaluations(finished_runs, model_type, tmp_path):
    run = finished_runs(model_type)
    summary = json.loads((run / "summary.json").read_text())
    checkpoints = run / "checkpoints"
    validate.main(["--ckpt", str(checkpoints / "best-lora.safetensors"), "--per-image", str(tmp_path / "rows.csv")])
    rows = read_csv(tmp_path / "rows.csv")  # each image's scores, with and without the adapter
    assert len(rows) == 4 and all(int(r["instances"]) > 0 for r in rows)
    assert np.mean([float(r["miou"]) for r in rows]) == pytest.approx(summary["best"]["miou"], abs=1e-6)
    assert np.mean([float(r["direct_miou"]) for r in rows]) == pytest.approx(summary["direct"]["miou"], abs=1e-6)
    for name, expected in (("best-lora.safetensors", summary["best"]), ("last-lora.safetensors", summary["last"]),
                           ("last.ckpt", summary["last"])):
        adapted = validate.main(["--ckpt", str(checkpoints / name)])  # config: the run's config.json
        assert adapted["miou"] == pytest.approx(expected["miou"], abs=1e-6), name
        assert adapted["f1"] == pytest.approx(expected["f1"], abs=1e-6) and adapted["num_images"] == 4
    direct = validate.main(["--config", str(run / "config.json")])
    assert direct["miou"] == pytest.approx(summary["direct"]["miou"], abs=1e-6)


def test_sam2_meta_decoding_evaluates_and_writes_rows_alike(finished_runs, tmp_path):
    """model.decoding=meta: the evaluation and its per-image rows decode alike, unlike raw (sam2_tiny's
    default)."""
    run = finished_runs("sam2_tiny")
    direct = validate.main(["--config", str(run / "config.json")])
    meta = validate.main(["--config", str(run / "config.json"), "--per-image", str(tmp_path / "meta.csv"),
                          "model.decoding=meta"])
    assert np.mean([float(r["miou"]) for r in read_csv(tmp_path / "meta.csv")]) == pytest.approx(meta["miou"], abs=1e-6)
    assert abs(meta["miou"] - direct["miou"]) > 1e-4


def test_predict_writes_masks_at_the_stored_size(finished_runs, model_type, tmp_path):
    height, width = IMAGE_SIZE[model_type]
    write_image(tmp_path / "images/scene.png", seed=5, height=height, width=width)
    adapter = str(finished_runs(model_type) / "checkpoints/best-lora.safetensors")
    images = str(tmp_path / "images")
    masks = predict.main(["--ckpt", adapter, "--images", images, "--out", str(tmp_path / "png"), *box_args(BOXES)])
    labels = np.array(Image.open(tmp_path / "png/scene.png"))
    assert labels.shape == (height, width) and Image.open(tmp_path / "png/scene_overlay.png").size == (width, height)
    assert [m["instance"] for m in masks] == [0, 1]
    expected = np.zeros((height, width), np.uint8)
    for entry in masks:
        assert entry["segmentation"]["size"] == [height, width]
        expected[decode_rle(entry["segmentation"])] = entry["instance"] + 1
    np.testing.assert_array_equal(labels, expected)
    points = predict.main(["--ckpt", adapter, "--images", images, "--out", str(tmp_path / "points"),
                           "--format", "rle", *sum((["--points", p] for p in POINTS), [])])
    assert [m["instance"] for m in points] == [0, 1]
    assert all(tuple(decode_rle(m["segmentation"]).shape) == (height, width) for m in points)


@pytest.mark.parametrize("model_type, decoding", [("vit_tiny", "raw"), ("sam2_tiny", "raw"), ("sam2_tiny", "meta")],
                         indirect=["model_type"])
def test_export_gives_the_familys_predictor_the_masks_of_predict(finished_runs, tmp_path, monkeypatch, capsys,
                                                                 model_type, decoding):
    """tools/export.py merges the run's adapter into a plain network's keys, loaded strictly by the line it
    prints (SAM 2: its post-processing setting follows model.decoding; the package's build_sam2 loads the
    file too); the family's own predictor on that model gives predict.py's logits (to 1e-4; SAM 2: bilinear
    straight to the size of a non-square image), masks and scores, for boxes and points."""
    run = finished_runs(model_type)
    adapter = run / "checkpoints/last-lora.safetensors"
    out = export.main(["--ckpt", str(adapter), "--out", str(tmp_path / "merged.pt"), f"model.decoding={decoding}"])
    line = printed_loading_line(capsys)
    plain = plain_of(run)
    if model_type == "vit_tiny":
        assert line == f'models.sam1.build_sam("vit_tiny", "{out}")'
        merged = torch.load(out, weights_only=True)
    else:
        assert line == (f'models.sam2.build_sam2_model("sam2_tiny", "{out}", '
                        f'apply_postprocessing={decoding == "meta"})')
        state = torch.load(out, weights_only=True)
        assert set(state) == {"model"}
        merged = state["model"]
    assert set(merged) == set(plain.state_dict())  # a plain network's keys, no LoRA
    loaded = eval(line, {"models": models})  # the line as printed
    sams = [loaded]
    if model_type == "sam2_tiny":  # the package's own builder and strict loader, with the same setting
        config, overrides = models.sam2.sam2_config("sam2_tiny")
        sams.append(build_sam2(config, str(out), device="cpu", hydra_overrides_extra=overrides,
                               apply_postprocessing=decoding == "meta"))
        for key, value in sams[1].state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value)

    recorded, sample_outputs = [], predict.sample_outputs

    def recording(*args, **kwargs):  # the logits and scores predict.py thresholds and writes
        recorded.append(sample_outputs(*args, **kwargs))
        return recorded[-1]

    monkeypatch.setattr(predict, "sample_outputs", recording)
    height, width = IMAGE_SIZE[model_type]
    image_file = tmp_path / "images/scene.png"
    write_image(image_file, seed=3, height=height, width=width)
    common = ["--ckpt", str(adapter), "--images", str(image_file), "--format", "rle", f"model.decoding={decoding}"]
    ours = predict.main([*common, "--out", str(tmp_path / "boxes"), *box_args(BOXES)])
    ours += predict.main([*common, "--out", str(tmp_path / "points"), *sum((["--points", p] for p in POINTS), [])])
    logits = torch.cat([outputs[0] for outputs in recorded])
    assert logits.shape == (len(BOXES) + len(POINTS), height, width)
    prompts = [{"box": np.array(box, np.float32)} for box in BOXES] + [
        {"point_coords": np.array(p.split(","), np.float32).reshape(-1, 2),
         "point_labels": np.ones(len(p.split(",")) // 2)} for p in POINTS]

    image = np.array(Image.open(image_file).convert("RGB"))
    for sam in sams:
        predictor = family_predictor(sam)
        predictor.set_image(image)
        for index, prompt in enumerate(prompts):
            theirs, iou, _ = predictor.predict(**prompt, multimask_output=False, return_logits=True)
            assert theirs.shape == (1, height, width)
            np.testing.assert_allclose(logits[index].numpy(), theirs[0], rtol=0, atol=1e-4)
            assert_same_mask(decode_rle(ours[index]["segmentation"]), theirs[0])
            assert ours[index]["score"] == pytest.approx(float(iou[0]), abs=1e-4)
    # the adapter is in the merged weights: the unadapted model's masks differ; SAM 2: so do those of the other
    # post-processing setting
    others = [plain] + ([models.sam2.build_sam2_model("sam2_tiny", out, apply_postprocessing=decoding == "raw")]
                        if model_type == "sam2_tiny" else [])
    for other in others:
        predictor = family_predictor(other)
        predictor.set_image(image)
        theirs, _, _ = predictor.predict(**prompts[0], multimask_output=False, return_logits=True)
        assert np.abs(theirs[0] - logits[0].numpy()).max() > 1e-3


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


def test_sam2_small_and_its_export_work_with_the_packages_predictor_and_generator(tmp_path, capsys):
    """The shipped sam2_small (128 px) and its merged export, loaded by the line tools/export.py prints,
    in the package's SAM2ImagePredictor and SAM2AutomaticMaskGenerator as image_predictor and
    mask_generator give them (nothing patched): the predictor's masks are predict.py's, without and
    with the adapter, and the generator's are those of our generator on the adapted model. The
    package's own constructor, which assumes 1024 px, fails on it."""
    height, width = IMAGE_SIZE["sam2_tiny"]
    config = "configs/sam2/glass_blur.py"
    cfg = load_config(config, FAST_AUTO[1:])  # the auto.* settings that keep masks of a random adapter
    weights = {k: 0.05 * torch.randn(v.shape, generator=torch.Generator().manual_seed(0))
               for k, v in adapter_state_dict(build_wesam(cfg).sam).items()}
    adapter = tmp_path / "adapter.safetensors"
    save_adapter(adapter, weights, {"model_type": "sam2_small", "lora_rank": cfg.lora.rank})
    export.main(["--ckpt", str(adapter), "--out", str(tmp_path / "merged.pt"), "--config", config])
    line = printed_loading_line(capsys)
    # raw: its multimask tokens were never trained (README, "SAM 2")
    assert line == f'models.sam2.build_sam2_model("sam2_small", "{tmp_path / "merged.pt"}", apply_postprocessing=False)'
    exported = eval(line, {"models": models})
    shipped = models.sam2.build_sam2_model("sam2_small", cfg.model.checkpoint)
    image_file = tmp_path / "scene.png"
    write_image(image_file, seed=3, height=height, width=width)
    image = np.array(Image.open(image_file).convert("RGB"))
    with pytest.raises(RuntimeError):  # the package's predictor reshapes to 256 x 256 (1024 px) features
        SAM2ImagePredictor(exported).set_image(image)

    for sam, ckpt in ((shipped, []), (exported, ["--ckpt", str(adapter)])):
        out = tmp_path / f"pred{len(ckpt)}"
        ours = predict.main([*ckpt, "--config", config, "--images", str(image_file), "--out", str(out),
                             "--format", "rle", *box_args(BOXES)])
        predictor = models.sam2.image_predictor(sam)
        predictor.set_image(image)
        for index, box in enumerate(BOXES):
            theirs, iou, _ = predictor.predict(box=np.array(box, np.float32), multimask_output=False,
                                               return_logits=True)
            assert_same_mask(decode_rle(ours[index]["segmentation"]), theirs[0])
            assert ours[index]["score"] == pytest.approx(float(iou[0]), abs=1e-4)

    settings = {"output_mode": "uncompressed_rle", "multimask_output": cfg.auto.multimask,
                **generator_settings(cfg.auto)}
    theirs = models.sam2.mask_generator(exported, **settings).generate(image)
    model = build_wesam(cfg)
    load_student_adapter(model.sam, adapter, cfg.model.type, cfg.lora.rank, cfg.lora.targets)
    expected = make_generator(model.eval(), cfg.auto, cfg.model.pad, STUDENT).generate(image)
    assert len(theirs) == len(expected) > 0 and theirs[0]["segmentation"]["size"] == [height, width]
    for mask, reference in zip(theirs, expected):
        assert mask["segmentation"] == reference["segmentation"]
        assert mask["predicted_iou"] == pytest.approx(reference["predicted_iou"], abs=1e-5)
