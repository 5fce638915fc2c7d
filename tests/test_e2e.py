"""End-to-end over both backbones, SAM (vit_tiny) and SAM 2 (sam2_tiny, 128 px), random weights, a few
synthetic images: adaptation.py with either teacher and every prompt, then validate.py on its files;
exact resume (and what it refuses), a crash between evaluations, bf16-mixed, DDP on two CPU processes.
Using a run's adapter (predict.py, tools/export.py): tests/test_predict_export.py."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

import adaptation
import engine.adapt
import validate
from engine.checkpoint import read_checkpoint
from losses.wesam_loss import wesam_loss
from models import build_wesam
from models.adapters import load_adapter
from models.backbones import family_of
from models.lora import STUDENT, TEACHER, adapter_state_dict, lora_layers
from tests.conftest import BACKBONES, assert_same_adapters, read_csv, run_overrides, run_script
from utils.config import ConfigError, load_config

# blocks of each tiny model that LoRA adapts (lora.targets=qv): 4 weights each, A and B of q and of v
LORA_BLOCKS = {"vit_tiny": 2, "sam2_tiny": 5}  # SAM 2: Hiera stages 1 + 1 + 2 + 1 (models/sam2.py SMALL_SAM2)
# parameters that the image path never uses, never in the optimizer, never trainable: SAM2Base's video
# parts (SAM's image path uses every parameter)
NOT_IMAGE_PATH = {"vit_tiny": (),
                  "sam2_tiny": ("memory_attention.", "memory_encoder.", "obj_ptr_proj.", "obj_ptr_tpos_proj.",
                                "mask_downsample.", "sam_mask_decoder.pred_obj_score_head.", "no_obj_ptr",
                                "no_obj_embed_spatial", "maskmem_tpos_enc", "no_mem_pos_enc")}
# a backbone of another family, for each (resuming onto it is refused)
OTHER = {model_type: BACKBONES[(i + 1) % len(BACKBONES)] for i, model_type in enumerate(BACKBONES)}


def check_run_files(run: Path, steps: list[int]) -> dict[str, Any]:
    """The files of a finished run of evaluations at `steps`; its summary."""
    config = json.loads((run / "config.json").read_text())
    assert config["out_dir"] == str(run)
    rows = read_csv(run / "metrics.csv")
    assert [int(r["step"]) for r in rows] == steps
    assert all(0.0 <= float(r["miou"]) <= 1.0 and 0.0 <= float(r["f1"]) <= 1.0 for r in rows)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["direct"]["step"] == 0 and summary["last"]["step"] == steps[-1]
    assert summary["best"]["miou"] == max(float(r["miou"]) for r in rows)
    assert summary["direct"]["miou"] == pytest.approx(float(rows[0]["miou"]))
    # the teacher's pseudo-label mIoU over each evaluation interval (none before training, none when supervised)
    supervised = config["loss"]["target"] == "ground_truth"
    assert rows[0]["pseudo_label_iou"] == "" and "pseudo_label_iou" not in summary["direct"]
    assert all((r["pseudo_label_iou"] == "") if supervised else 0.0 <= float(r["pseudo_label_iou"]) <= 1.0
               for r in rows[1:])
    for name in ("best-lora.safetensors", "last-lora.safetensors"):
        weights, _ = load_adapter(run / "checkpoints" / name)
        assert len(weights) == 4 * LORA_BLOCKS[config["model"]["type"]]
        assert all(v.dtype == torch.float32 for v in weights.values())
    assert (run / "checkpoints" / "last.ckpt").stat().st_size > 0
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
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


# SAM: every prompt with either teacher; SAM 2 (slower): every prompt, each teacher twice
RUNS = [("vit_tiny", mode, prompt) for mode in ("shared", "ema")
        for prompt in ("box", "point", "coarse:box", "coarse:mask")] + [
    ("sam2_tiny", "shared", "box"), ("sam2_tiny", "ema", "point"), ("sam2_tiny", "shared", "coarse:mask"),
    ("sam2_tiny", "ema", "coarse:box")]


@pytest.mark.slow
@pytest.mark.parametrize("model_type, mode, prompt", RUNS)
def test_adapt_then_validate(tmp_path, monkeypatch, model_type, mode, prompt):
    """A run trains only the student LoRA of every block (and the EMA teacher follows it), its losses
    finite with every term of the full loss; validate.py on its files reproduces its evaluations."""
    prompt, _, coarse_as = prompt.partition(":")
    recorder = Recorder(monkeypatch)
    run = tmp_path / "run"
    cfg = load_config(overrides=run_overrides(model_type, run, f"teacher.mode={mode}", f"prompt={prompt}",
                                              f"coarse_as={coarse_as or 'box'}", "teacher.ema_rate=0.5"))
    result = adaptation.adapt(cfg, loss_fn=recorder.loss)
    summary = check_run_files(run, [0, 2, 4])
    assert result["last"] == summary["last"] and summary["direct"]["num_images"] == 4

    # every step's loss and terms are finite, with the anchor and contrastive terms of the full loss
    assert len(recorder.steps) == 4
    for step in recorder.steps:
        assert math.isfinite(step["loss"]) and step["loss"] > 0
        assert {"focal", "dice", "iou", "anchor", "contrastive"} <= set(step["terms"])
        assert all(math.isfinite(v) for v in step["terms"].values()), step["terms"]

    # the optimizer holds exactly the student LoRA of every adapted block: no teacher adapter, nothing of the
    # frozen network (SAM 2: no memory module, object pointer or object-score head)
    (model,), (optimizer,) = recorder.models, recorder.optimizers
    names = {id(p): name for name, p in model.named_parameters()}
    optimized = {names[id(p)] for group in optimizer.param_groups for p in group["params"]}
    assert len(lora_layers(model.sam)) == LORA_BLOCKS[model_type]
    assert optimized == {name for name in names.values() if ".adapters.student." in name}
    assert len(optimized) == 4 * LORA_BLOCKS[model_type]
    frozen = NOT_IMAGE_PATH[model_type]
    unused = [name for name in names.values() if name.removeprefix("backbone.sam.").startswith(frozen)]
    for prefix in frozen:
        assert any(name.removeprefix("backbone.sam.").startswith(prefix) for name in unused), prefix
    assert not any(p.requires_grad for name, p in model.named_parameters() if name in unused)

    # the LoRA weights of every block changed (B starts at zero); the run's files hold the trained ones
    adapters = (STUDENT, TEACHER) if mode == "ema" else (STUDENT,)
    initial = {name: adapter_state_dict(build_wesam(cfg).sam, name) for name in adapters}
    saved = read_checkpoint(run / "checkpoints/last.ckpt")["lora"]
    assert set(saved) == set(initial)
    for name, weights in initial.items():
        for key, value in weights.items():
            assert not torch.equal(saved[name][key], value), f"{name} {key} did not change"
        for key, value in adapter_state_dict(model.sam, name).items():
            assert torch.equal(saved[name][key], value)
    if mode == "ema":  # the teacher follows the student by EMA, without being trained itself
        assert any(not torch.equal(saved[TEACHER][k], v) for k, v in saved[STUDENT].items())

    # validate.py on the saved adapter reproduces the run's own last evaluation
    out = tmp_path / "last.json"
    adapted = validate.main(["--config", str(run / "config.json"),
                             "--ckpt", str(run / "checkpoints/last-lora.safetensors"), "--out", str(out)])
    assert json.loads(out.read_text()) == adapted
    assert set(adapted) == {"dataset", "prompt", "miou", "f1", "area_ratio", "num_images", "num_instances",
                            "skipped_images"}
    assert adapted["prompt"] == prompt and adapted["num_images"] == 4 and adapted["num_instances"] >= 4
    assert adapted["miou"] == pytest.approx(summary["last"]["miou"], abs=1e-6)
    direct = validate.main(["--config", str(run / "config.json")])
    assert direct["miou"] == pytest.approx(summary["direct"]["miou"], abs=1e-6)
    from_state = validate.main(["--ckpt", str(run / "checkpoints/last.ckpt")])  # config: the run's config.json
    assert from_state["miou"] == pytest.approx(adapted["miou"], abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("model_type, mode", [("vit_tiny", "shared"), ("vit_tiny", "ema"), ("sam2_tiny", "ema")])
def test_resume_continues_exactly(tmp_path, model_type, mode):
    """A run stopped after 2 steps and resumed ends bit for bit as one that ran its 4 steps straight; a
    key the run cannot change is refused, and so is moving the run onto another."""
    common = [o for o in run_overrides(model_type, tmp_path) if not o.startswith("out_dir")] + [
        f"teacher.mode={mode}", "teacher.ema_rate=0.5", "opt.warmup_steps=2", "prompt=point"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    adaptation.main(common + [f"out_dir={straight}"])
    adaptation.main(common + [f"out_dir={split}", "num_steps=2"])
    ckpt = split / "checkpoints/last.ckpt"
    for key, changed in (("teacher.mode", "shared" if mode == "ema" else "ema"), ("lora.rank", "8"),
                         ("model.type", OTHER[model_type]), ("model.decoding", "meta")):  # Direct decoded raw
        with pytest.raises(ConfigError, match=f"{key} cannot change when resuming"):
            adaptation.main(["--resume", str(ckpt), f"{key}={changed}"])
    with pytest.raises(ConfigError, match="already holds a run"):  # out_dir= moves a run, never onto another
        adaptation.main(["--resume", str(ckpt), f"out_dir={straight}"])
    adaptation.main(["--resume", str(ckpt), "num_steps=4"])
    check_run_files(split, [0, 2, 4])
    assert set(read_checkpoint(ckpt)["lora"]) == ({STUDENT, TEACHER} if mode == "ema" else {STUDENT})
    assert_same_adapters(straight / "checkpoints/last.ckpt", ckpt)
    assert read_csv(straight / "metrics.csv") == read_csv(split / "metrics.csv")


@pytest.mark.slow
def test_crash_between_evaluations_loses_nothing(tiny_overrides, tmp_path):
    """save_interval=1 writes last.ckpt after every step: a crash at step 4 resumes from step 3."""
    common = [o for o in tiny_overrides if not o.startswith(("out_dir", "num_steps", "eval_interval"))] + [
        "num_steps=6", "eval_interval=4", "save_interval=1", "opt.warmup_steps=2", "opt.learning_rate=1e-2",
        "num_workers=1"]
    adaptation.main(common + [f"out_dir={tmp_path / 'straight'}"])
    calls = []

    def crash_at_fourth_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("simulated crash")
        return wesam_loss(*args, **kwargs)

    with pytest.raises(RuntimeError, match="simulated crash"):
        adaptation.adapt(load_config(overrides=common + [f"out_dir={tmp_path / 'crashed'}"]),
                         loss_fn=crash_at_fourth_step)
    assert read_checkpoint(tmp_path / "crashed/checkpoints/last.ckpt")["step"] == 3
    # a run folder moved (or copied to another machine) resumes in its new place
    moved = (tmp_path / "crashed").rename(tmp_path / "moved")
    adaptation.main(["--resume", str(moved / "checkpoints/last.ckpt")])
    assert not (tmp_path / "crashed").exists()
    assert_same_adapters(tmp_path / "straight/checkpoints/last.ckpt", moved / "checkpoints/last.ckpt", atol=1e-7)
    assert json.loads((moved / "config.json").read_text())["out_dir"] == str(moved)
    assert read_csv(tmp_path / "straight/metrics.csv") == read_csv(moved / "metrics.csv")


@pytest.mark.slow
def test_existing_run_is_never_overwritten(tiny_overrides, tmp_path):
    adaptation.main(tiny_overrides + ["num_steps=2"])
    before = (tmp_path / "run/checkpoints/last.ckpt").read_bytes()
    with pytest.raises(ConfigError, match="--resume"):
        adaptation.main(tiny_overrides)
    assert (tmp_path / "run/checkpoints/last.ckpt").read_bytes() == before


@pytest.mark.slow
@pytest.mark.parametrize("model_type", BACKBONES)
def test_bf16_mixed_precision(tmp_path, monkeypatch, model_type):
    """precision=bf16-mixed on the CPU: training and evaluation decode in bf16, the losses and scores are
    finite, the adapters are kept in float32."""
    recorder = Recorder(monkeypatch)
    backbone = family_of(model_type).backbone
    decoded, decode = [], backbone.decode

    def recorded_decode(self, *args, **kwargs):  # Fabric hands the outputs back in float32: look inside
        logits, iou = decode(self, *args, **kwargs)
        decoded.append((logits.dtype, iou.dtype, torch.is_autocast_enabled("cpu")))
        return logits, iou

    monkeypatch.setattr(backbone, "decode", recorded_decode)
    cfg = load_config(overrides=run_overrides(model_type, tmp_path / "run", "precision=bf16-mixed", "num_steps=2"))
    result = adaptation.adapt(cfg, loss_fn=recorder.loss)
    assert decoded and set(decoded) == {(torch.bfloat16, torch.bfloat16, True)}  # training and evaluation in bf16
    assert recorder.steps and all(math.isfinite(step["loss"]) for step in recorder.steps)
    for evaluation in (result["direct"], result["last"]):
        assert all(math.isfinite(evaluation[k]) for k in ("miou", "f1", "area_ratio"))
        assert 0.0 < evaluation["miou"] <= 1.0 and evaluation["num_images"] == 4
    weights = read_checkpoint(tmp_path / "run/checkpoints/last.ckpt")["lora"][STUDENT]
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in weights.values())


@pytest.mark.slow
def test_command_line_reports_config_errors(tmp_path):
    result = run_script("adaptation.py", f"out_dir={tmp_path}", "opt.learnig_rate=1e-3")
    assert result.returncode != 0
    assert "opt.learnig_rate" in result.stderr and "opt.learning_rate" in result.stderr
    assert not (tmp_path / "checkpoints").exists()
    result = run_script("validate.py", "prompt=polygon")
    assert result.returncode != 0 and "box, point, coarse" in result.stderr
    result = run_script("validate.py", "--ckpt", str(tmp_path / "missing.safetensors"))
    assert result.returncode != 0 and "missing.safetensors" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("model_type, mode", [("vit_tiny", "shared"), ("vit_tiny", "ema"), ("sam2_tiny", "shared")])
def test_two_process_ddp_on_cpu(tmp_path, model_type, mode):
    """devices=2 on the CPU (gloo): DDP finds no trainable parameter without a gradient (SAM 2's memory
    modules are frozen), and the loop checks at every evaluation that the LoRA weights agree."""
    overrides = [o for o in run_overrides(model_type, tmp_path / "run") if not o.startswith(
        "dataset.synthetic.num_test")] + ["devices=2", "strategy=ddp", "dataset.synthetic.num_test=5",
                                          f"teacher.mode={mode}"]
    result = run_script("adaptation.py", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "unused parameters" not in result.stderr and "differ between ranks" not in result.stderr
    summary = check_run_files(tmp_path / "run", [0, 2, 4])
    assert summary["last"]["num_images"] == 5  # ranks take 3 and 2 images; each is counted once
    state = read_checkpoint(tmp_path / "run/checkpoints/last.ckpt")
    assert len(state["rng"]) == 2
    assert any(v.abs().sum() > 0 for k, v in state["lora"][STUDENT].items() if ".up_" in k)
