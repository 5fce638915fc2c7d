"""SAM 2 runs (issue 26, "Everything else as for SAM 1" and "Using the result"): adaptation.py with the
random sam2_tiny (128 px) on a few synthetic images, with either teacher and every prompt, exact resume,
bf16-mixed, DDP on two CPU processes and prompt_source=auto; then predict.py, validate.py and
tools/export.py on the run's adapter, as for SAM 1 (tests/test_e2e.py, tests/test_predict_export.py)."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sam2
import torch
from PIL import Image
from sam2.build_sam import build_sam2
from sam2.sam2_image_predictor import SAM2ImagePredictor

import adaptation
import engine.adapt
import predict
import validate
from datasets import build_dataset
from engine.auto_instances import top_instances
from engine.checkpoint import load_student_adapter, read_checkpoint
import models.sam2
from losses.wesam_loss import wesam_loss
from models import build_wesam
from models.adapters import load_adapter, save_adapter
from models.lora import STUDENT, TEACHER, adapter_state_dict, lora_layers
from models.predictor import generator_settings, make_generator
from models.sam2 import Sam2Backbone, WeSAM2Predictor, build_sam2_model, image_predictor, mask_generator, sam2_config
from tests.conftest import tiny_config_overrides
from tests.ondisk import dataset_spec, write_image
from tests.test_auto_prompts import FAST_AUTO
from tests.test_bad_inputs import cli
from tests.test_e2e import read_csv, run_script
from tests.test_predict_export import assert_same_mask, decode, random_adapter
from tests.test_sam2 import randomise_lora
from tools import export
from utils.config import ConfigError, load_config

# SAM2Base's parameters that the image path never uses: never in the optimizer, never trainable
NOT_IMAGE_PATH = ("memory_attention.", "memory_encoder.", "obj_ptr_proj.", "obj_ptr_tpos_proj.", "mask_downsample.",
                  "sam_mask_decoder.pred_obj_score_head.", "no_obj_ptr", "no_obj_embed_spatial", "maskmem_tpos_enc",
                  "no_mem_pos_enc")
# a stored image that is not square, so that SAM 2's resize changes its aspect ratio
HEIGHT, WIDTH = 90, 150
BOXES = [(10, 15, 100, 70), (60, 30, 140, 85)]
SAM2_TINY_BLOCKS = 5  # Hiera stages 1 + 1 + 2 + 1 (models/sam2.py SMALL_SAM2)


def sam2_overrides(out_dir: Path, *extra: str) -> list[str]:
    """A fast run of the random sam2_tiny (128 px) on the tiny synthetic dataset, writing to out_dir."""
    return [*tiny_config_overrides(out_dir), "model.type=sam2_tiny", "opt.warmup_steps=1", "opt.learning_rate=1e-2",
            *extra]


def check_run_files(run: Path, steps: list[int]) -> dict[str, Any]:
    """The files of a finished SAM 2 run, as tests/test_e2e.py checks SAM 1's; its summary."""
    rows = read_csv(run / "metrics.csv")
    assert [int(r["step"]) for r in rows] == steps
    assert all(0.0 <= float(r["miou"]) <= 1.0 and 0.0 <= float(r["f1"]) <= 1.0 for r in rows)
    assert rows[0]["pseudo_label_iou"] == "" and all(0.0 <= float(r["pseudo_label_iou"]) <= 1.0 for r in rows[1:])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["direct"]["step"] == 0 and summary["last"]["step"] == steps[-1]
    assert summary["best"]["miou"] == max(float(r["miou"]) for r in rows)
    for name in ("best-lora.safetensors", "last-lora.safetensors"):  # sam2_tiny's 5 Hiera blocks
        weights, _ = load_adapter(run / "checkpoints" / name)
        assert len(weights) == 4 * SAM2_TINY_BLOCKS and all(v.dtype == torch.float32 for v in weights.values())
    return summary


class Recorder:
    """adapt()'s network, optimizer and step losses, caught as the run makes them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.models: list[Any] = []
        self.optimizers: list[torch.optim.Optimizer] = []
        self.steps: list[dict[str, Any]] = []
        recorder = self

        def build(cfg):
            recorder.models.append(build_wesam(cfg))
            return recorder.models[-1]

        class RecordedAdam(torch.optim.Adam):
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, **kwargs)
                recorder.optimizers.append(self)

        monkeypatch.setattr(engine.adapt, "build_wesam", build)
        monkeypatch.setattr(torch.optim, "Adam", RecordedAdam)

    def loss(self, outputs, *args, **kwargs):
        loss, terms = wesam_loss(outputs, *args, **kwargs)
        self.steps.append({"loss": float(loss.detach()), "terms": {k: float(v.detach()) for k, v in terms.items()}})
        return loss, terms


@pytest.mark.parametrize("mode, prompt", [("shared", "box"), ("ema", "point"), ("shared", "coarse:mask"),
                                          ("ema", "coarse:box")])
def test_adaptation_trains_only_the_lora_of_every_hiera_block(tmp_path, monkeypatch, mode, prompt):
    prompt, _, coarse_as = prompt.partition(":")
    recorder = Recorder(monkeypatch)
    cfg = load_config(overrides=sam2_overrides(tmp_path / "run", f"teacher.mode={mode}", f"prompt={prompt}",
                                               f"coarse_as={coarse_as or 'box'}", "teacher.ema_rate=0.5"))
    result = adaptation.adapt(cfg, loss_fn=recorder.loss)
    summary = check_run_files(tmp_path / "run", [0, 2, 4])
    assert result["last"] == summary["last"] and summary["direct"]["num_images"] == 4

    # every step's loss and terms are finite, with the anchor and contrastive terms of the full loss
    assert len(recorder.steps) == 4
    for step in recorder.steps:
        assert math.isfinite(step["loss"]) and step["loss"] > 0
        assert {"focal", "dice", "iou", "anchor", "contrastive"} <= set(step["terms"])
        assert all(math.isfinite(v) for v in step["terms"].values()), step["terms"]

    # the optimizer holds exactly the student LoRA of every Hiera block: no memory module, object pointer or
    # object-score head, no teacher adapter, nothing of the frozen network
    (model,), (optimizer,) = recorder.models, recorder.optimizers
    names = {id(p): name for name, p in model.named_parameters()}
    optimized = {names[id(p)] for group in optimizer.param_groups for p in group["params"]}
    blocks = model.sam.image_encoder.trunk.blocks
    assert len(lora_layers(model.sam)) == len(blocks) == SAM2_TINY_BLOCKS
    assert optimized == {name for name in names.values() if ".adapters.student." in name}
    assert len(optimized) == 4 * len(blocks)
    unused = [name for name in names.values() if name.removeprefix("backbone.sam.").startswith(NOT_IMAGE_PATH)]
    assert any(".memory_attention." in n for n in unused) and any("pred_obj_score_head" in n for n in unused)
    assert not any(p.requires_grad for name, p in model.named_parameters() if name in unused)

    # the LoRA weights of every block changed (B starts at zero); the run's files hold the trained ones
    adapters = (STUDENT, TEACHER) if mode == "ema" else (STUDENT,)
    initial = {name: adapter_state_dict(build_wesam(cfg).sam, name) for name in adapters}
    saved = read_checkpoint(tmp_path / "run/checkpoints/last.ckpt")["lora"]
    assert set(saved) == set(initial)
    for name, weights in initial.items():
        for key, value in weights.items():
            assert not torch.equal(saved[name][key], value), f"{name} {key} did not change"
        for key, value in adapter_state_dict(model.sam, name).items():
            assert torch.equal(saved[name][key], value)
    if mode == "ema":  # the teacher follows the student by EMA, without being trained itself
        assert any(not torch.equal(saved[TEACHER][k], v) for k, v in saved[STUDENT].items())


def test_resume_continues_exactly(tmp_path):
    """A run stopped after 2 steps and resumed ends bit for bit as one that ran its 4 steps straight."""
    common = [o for o in sam2_overrides(tmp_path) if not o.startswith("out_dir")] + [
        "teacher.mode=ema", "teacher.ema_rate=0.5", "opt.warmup_steps=2", "prompt=point"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    adaptation.main(common + [f"out_dir={straight}"])
    adaptation.main(common + [f"out_dir={split}", "num_steps=2"])
    with pytest.raises(ConfigError, match="model.type cannot change when resuming"):
        adaptation.main(["--resume", str(split / "checkpoints/last.ckpt"), "model.type=vit_tiny"])
    with pytest.raises(ConfigError, match="model.decoding cannot change when resuming"):  # Direct decoded raw
        adaptation.main(["--resume", str(split / "checkpoints/last.ckpt"), "model.decoding=meta"])
    adaptation.main(["--resume", str(split / "checkpoints/last.ckpt"), "num_steps=4"])
    check_run_files(split, [0, 2, 4])
    a, b = (read_checkpoint(run / "checkpoints/last.ckpt") for run in (straight, split))
    assert a["step"] == b["step"] == 4 and set(a["lora"]) == set(b["lora"]) == {STUDENT, TEACHER}
    for adapter in a["lora"]:
        for key, value in a["lora"][adapter].items():
            torch.testing.assert_close(b["lora"][adapter][key], value, rtol=0, atol=0)
    assert read_csv(straight / "metrics.csv") == read_csv(split / "metrics.csv")


def test_bf16_mixed_precision(tmp_path, monkeypatch):
    recorder = Recorder(monkeypatch)
    decoded = []
    decode = Sam2Backbone.decode

    def recorded_decode(self, *args, **kwargs):  # Fabric hands the outputs back in float32: look inside
        logits, iou = decode(self, *args, **kwargs)
        decoded.append((logits.dtype, iou.dtype, torch.is_autocast_enabled("cpu")))
        return logits, iou

    monkeypatch.setattr(Sam2Backbone, "decode", recorded_decode)
    cfg = load_config(overrides=sam2_overrides(tmp_path / "run", "precision=bf16-mixed", "num_steps=2"))
    result = adaptation.adapt(cfg, loss_fn=recorder.loss)
    assert decoded and set(decoded) == {(torch.bfloat16, torch.bfloat16, True)}  # training and evaluation in bf16
    assert all(math.isfinite(step["loss"]) for step in recorder.steps)
    for evaluation in (result["direct"], result["last"]):
        assert all(math.isfinite(evaluation[k]) for k in ("miou", "f1", "area_ratio"))
        assert 0.0 < evaluation["miou"] <= 1.0 and evaluation["num_images"] == 4
    weights = read_checkpoint(tmp_path / "run/checkpoints/last.ckpt")["lora"][STUDENT]
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in weights.values())


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tmp_path):
    """devices=2 on the CPU (gloo): DDP finds no trainable parameter without a gradient (the memory
    modules are frozen), and the loop checks at every evaluation that the LoRA weights agree."""
    overrides = [o for o in sam2_overrides(tmp_path / "run") if not o.startswith("dataset.synthetic.num_test")] + [
        "devices=2", "strategy=ddp", "dataset.synthetic.num_test=5"]
    result = run_script("adaptation.py", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "unused parameters" not in result.stderr and "differ between ranks" not in result.stderr
    summary = check_run_files(tmp_path / "run", [0, 2, 4])
    assert summary["last"]["num_images"] == 5  # ranks take 3 and 2 images; each is counted once
    state = read_checkpoint(tmp_path / "run/checkpoints/last.ckpt")
    assert len(state["rng"]) == 2
    assert any(v.abs().sum() > 0 for k, v in state["lora"][STUDENT].items() if ".up_" in k)


def test_automatic_prompts_come_from_sam2s_generator_on_the_anchor(tmp_path):
    """prompt_source=auto: the training instances are those of the package's SAM2AutomaticMaskGenerator
    on the unadapted model (thresholds at 0, so the random model finds some)."""
    run = tmp_path / "run"
    cfg = load_config(overrides=sam2_overrides(run, *FAST_AUTO, "num_steps=2"))
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


def test_wesam2_predictor_without_adapter_equals_sam2_image_predictor():
    cfg = load_config(overrides=["model.type=sam2_tiny", "model.checkpoint=", "accelerator=cpu"])
    model = build_wesam(cfg).eval()
    randomise_lora(model.sam)  # a trained-looking student, which the anchor must not use
    reference = image_predictor(copy.deepcopy(model.sam))
    for layer in lora_layers(reference.model):
        layer.active = None
    image = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    point = {"point_coords": np.array([[40.0, 30.0], [120.0, 70.0]]), "point_labels": np.array([1, 0]),
             "multimask_output": False, "return_logits": True}
    outputs = {}
    for name, predictor in (("reference", reference), ("anchor", WeSAM2Predictor(model, None)),
                            ("student", WeSAM2Predictor(model, STUDENT))):
        predictor.set_image(image)
        outputs[name] = predictor.predict(**point)
    masks, iou, low_res = outputs["anchor"]
    assert low_res.shape == (1, 32, 32) and masks.shape == (1, HEIGHT, WIDTH)
    np.testing.assert_allclose(low_res, outputs["reference"][2], rtol=0, atol=1e-4)
    np.testing.assert_allclose(iou, outputs["reference"][1], rtol=0, atol=1e-5)
    np.testing.assert_allclose(masks, outputs["reference"][0], rtol=0, atol=1e-4)
    assert np.abs(outputs["student"][2] - low_res).max() > 1e-3  # the adapter matters: a real comparison


# --- using a SAM 2 run's adapter

@pytest.fixture(scope="module")
def sam2_run(tmp_path_factory) -> Path:
    """A finished 4-step SAM 2 run (evaluations at 0, 2, 4) and a non-square image beside it."""
    root = tmp_path_factory.mktemp("sam2_run")
    adaptation.main(sam2_overrides(root / "run"))
    write_image(root / "images/scene.png", seed=5, height=HEIGHT, width=WIDTH)
    return root / "run"


def test_validate_reproduces_the_runs_evaluations(sam2_run, tmp_path):
    summary = json.loads((sam2_run / "summary.json").read_text())
    checkpoints = sam2_run / "checkpoints"
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
    direct = validate.main(["--config", str(sam2_run / "config.json")])
    assert direct["miou"] == pytest.approx(summary["direct"]["miou"], abs=1e-6)
    # model.decoding=meta: the evaluation and its per-image rows decode alike, unlike raw (sam2_tiny's default)
    meta = validate.main(["--config", str(sam2_run / "config.json"), "--per-image", str(tmp_path / "meta.csv"),
                          "model.decoding=meta"])
    assert np.mean([float(r["miou"]) for r in read_csv(tmp_path / "meta.csv")]) == pytest.approx(meta["miou"], abs=1e-6)
    assert abs(meta["miou"] - direct["miou"]) > 1e-4


def test_predict_writes_masks_at_the_stored_size(sam2_run, tmp_path):
    images = sam2_run.parent / "images"
    adapter = str(sam2_run / "checkpoints/best-lora.safetensors")
    boxes = sum((["--box", ",".join(map(str, box))] for box in BOXES), [])
    masks = predict.main(["--ckpt", adapter, "--images", str(images), "--out", str(tmp_path / "png"), *boxes])
    labels = np.array(Image.open(tmp_path / "png/scene.png"))
    assert labels.shape == (HEIGHT, WIDTH) and Image.open(tmp_path / "png/scene_overlay.png").size == (WIDTH, HEIGHT)
    assert [m["instance"] for m in masks] == [0, 1]
    expected = np.zeros((HEIGHT, WIDTH), np.uint8)
    for entry in masks:
        assert entry["segmentation"]["size"] == [HEIGHT, WIDTH]
        expected[decode(entry["segmentation"])] = entry["instance"] + 1
    np.testing.assert_array_equal(labels, expected)
    points = predict.main(["--ckpt", adapter, "--images", str(images), "--out", str(tmp_path / "points"),
                           "--format", "rle", "--points", "40,30,50,40", "--points", "120,70"])
    assert [m["instance"] for m in points] == [0, 1]
    assert all(tuple(decode(m["segmentation"]).shape) == (HEIGHT, WIDTH) for m in points)


def printed_loading_line(capsys) -> str:
    """The Python expression of the loading line that tools/export.py printed (before its advice)."""
    return re.search(r"Load it with (.+?\)) \(", capsys.readouterr().out).group(1)


@pytest.mark.parametrize("decoding", ["raw", "meta"])
def test_export_gives_sam2_image_predictor_the_masks_of_predict(sam2_run, tmp_path, monkeypatch, capsys, decoding):
    """tools/export.py writes {"model": merged} that build_sam2_model and the package's build_sam2 load
    strictly, and prints a loading line whose post-processing setting follows model.decoding;
    SAM2ImagePredictor on the model that line loads gives predict.py's logits with that decoding
    (bilinear straight to the size of a non-square image) to 1e-4, its masks and its scores."""
    adapter = sam2_run / "checkpoints/last-lora.safetensors"
    out = export.main(["--ckpt", str(adapter), "--out", str(tmp_path / "merged.pt"), f"model.decoding={decoding}"])
    line = printed_loading_line(capsys)
    assert line == (f'models.sam2.build_sam2_model("sam2_tiny", "{out}", '
                    f'apply_postprocessing={decoding == "meta"})')
    state = torch.load(out, weights_only=True)
    assert set(state) == {"model"}
    plain = plain_of(sam2_run)
    assert set(state["model"]) == set(plain.state_dict())  # a plain SAM 2's keys, no LoRA
    loaded = eval(line, {"models": models})  # the line as printed
    config, overrides = sam2_config("sam2_tiny")  # the package's own builder and strict loader, the same setting
    merged = build_sam2(config, str(out), device="cpu", hydra_overrides_extra=overrides,
                        apply_postprocessing=decoding == "meta")
    for key, value in merged.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)

    recorded, sample_outputs = [], predict.sample_outputs

    def recording(*args, **kwargs):  # the logits and scores predict.py thresholds and writes
        recorded.append(sample_outputs(*args, **kwargs))
        return recorded[-1]

    monkeypatch.setattr(predict, "sample_outputs", recording)
    image_file = sam2_run.parent / "images/scene.png"
    boxes = sum((["--box", ",".join(map(str, box))] for box in BOXES), [])
    ours = predict.main(["--ckpt", str(adapter), "--images", str(image_file), "--out", str(tmp_path / "pred"),
                         "--format", "rle", *boxes, f"model.decoding={decoding}"])
    (logits, _), = recorded
    assert logits.shape == (len(BOXES), HEIGHT, WIDTH)

    for sam in (loaded, merged):
        predictor = image_predictor(sam)
        predictor.set_image(np.array(Image.open(image_file).convert("RGB")))
        for index, box in enumerate(BOXES):
            theirs, iou, _ = predictor.predict(box=np.array(box, np.float32), multimask_output=False,
                                               return_logits=True)
            assert theirs.shape == (1, HEIGHT, WIDTH)
            np.testing.assert_allclose(logits[index].numpy(), theirs[0], rtol=0, atol=1e-4)
            assert_same_mask(decode(ours[index]["segmentation"]), theirs[0])
            assert ours[index]["score"] == pytest.approx(float(iou[0]), abs=1e-4)
    # the adapter is in the merged weights: the unadapted model's masks differ; so do those of the other setting
    for other in (plain, build_sam2_model("sam2_tiny", out, apply_postprocessing=decoding == "raw")):
        predictor = image_predictor(other)
        predictor.set_image(np.array(Image.open(image_file).convert("RGB")))
        theirs, _, _ = predictor.predict(box=np.array(BOXES[0], np.float32), multimask_output=False,
                                         return_logits=True)
        assert np.abs(theirs[0] - logits[0].numpy()).max() > 1e-3


def test_sam2_small_and_its_export_work_with_the_packages_predictor_and_generator(tmp_path, capsys):
    """The shipped sam2_small (128 px) and its merged export, loaded by the line tools/export.py prints,
    in the package's SAM2ImagePredictor and SAM2AutomaticMaskGenerator as image_predictor and
    mask_generator give them (nothing patched): the predictor's masks are predict.py's, without and
    with the adapter, and the generator's are those of our generator on the adapted model. The
    package's own constructor, which assumes 1024 px, fails on it."""
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
    shipped = build_sam2_model("sam2_small", cfg.model.checkpoint)
    image_file = tmp_path / "scene.png"
    write_image(image_file, seed=3, height=HEIGHT, width=WIDTH)
    image = np.array(Image.open(image_file).convert("RGB"))
    with pytest.raises(RuntimeError):  # the package's predictor reshapes to 256 x 256 (1024 px) features
        SAM2ImagePredictor(exported).set_image(image)

    boxes = sum((["--box", ",".join(map(str, box))] for box in BOXES), [])
    for sam, ckpt in ((shipped, []), (exported, ["--ckpt", str(adapter)])):
        out = tmp_path / f"pred{len(ckpt)}"
        ours = predict.main([*ckpt, "--config", config, "--images", str(image_file), "--out", str(out),
                             "--format", "rle", *boxes])
        predictor = image_predictor(sam)
        predictor.set_image(image)
        for index, box in enumerate(BOXES):
            theirs, iou, _ = predictor.predict(box=np.array(box, np.float32), multimask_output=False,
                                               return_logits=True)
            assert_same_mask(decode(ours[index]["segmentation"]), theirs[0])
            assert ours[index]["score"] == pytest.approx(float(iou[0]), abs=1e-4)

    settings = {"output_mode": "uncompressed_rle", "multimask_output": cfg.auto.multimask,
                **generator_settings(cfg.auto)}
    theirs = mask_generator(exported, **settings).generate(image)
    model = build_wesam(cfg)
    load_student_adapter(model.sam, adapter, cfg.model.type, cfg.lora.rank, cfg.lora.targets)
    expected = make_generator(model.eval(), cfg.auto, cfg.model.pad, STUDENT).generate(image)
    assert len(theirs) == len(expected) > 0 and theirs[0]["segmentation"]["size"] == [HEIGHT, WIDTH]
    for mask, reference in zip(theirs, expected):
        assert mask["segmentation"] == reference["segmentation"]
        assert mask["predicted_iou"] == pytest.approx(reference["predicted_iou"], abs=1e-5)


def plain_of(run: Path):
    """The run's SAM 2 without LoRA, drawn as build_wesam draws it."""
    cfg = load_config(run / "config.json")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return build_sam2_model(cfg.model.type)


def test_adapter_names_its_backbone_and_a_sam1_config_is_refused(sam2_run, tmp_path, capsys):
    adapter = sam2_run / "checkpoints/best-lora.safetensors"
    _, metadata = load_adapter(adapter)
    assert metadata["model_type"] == "sam2_tiny" and metadata["lora_rank"] == 4
    assert metadata["backbone"] == "sam2" and metadata["sam2_config"] == "configs/sam2.1/sam2.1_hiera_t.yaml"
    assert metadata["sam2_config"] == sam2_config("sam2_tiny")[0]
    assert (Path(sam2.__file__).parent / metadata["sam2_config"]).is_file()  # a yaml of the package

    # a SAM 2 adapter with a SAM 1 config, and a SAM 1 adapter with a SAM 2 run's config: a message, no traceback
    sam1_config = ["model.type=vit_tiny", "model.checkpoint=", "accelerator=cpu"]
    code, message = cli(validate.main, ["--ckpt", str(adapter), *sam1_config], capsys)
    assert code == 1 and "model.type=sam2_tiny" in message and "vit_tiny" in message and "Traceback" not in message
    sam1_adapter = tmp_path / "sam1.safetensors"
    random_adapter(sam1_adapter, sam1_config)
    code, message = cli(validate.main, ["--ckpt", str(sam1_adapter), "--config", str(sam2_run / "config.json")],
                        capsys)
    assert code == 1 and "model.type=vit_tiny" in message and "sam2_tiny" in message
    images = sam2_run.parent / "images"
    code, message = cli(predict.main, ["--ckpt", str(adapter), "--images", str(images), "--box", "10,10,50,50",
                                       "--out", str(tmp_path / "pred"), *sam1_config], capsys)
    assert code == 1 and "model.type=sam2_tiny" in message
    code, message = cli(export.main, ["--ckpt", str(adapter), "--out", str(tmp_path / "merged.pt"), *sam1_config],
                        capsys)
    assert code == 1 and "model.type=sam2_tiny" in message and not (tmp_path / "merged.pt").exists()
