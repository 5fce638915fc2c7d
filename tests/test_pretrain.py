"""tools/pretrain_source_sam.py: a short CPU run, exact resume, export, and its training scenes."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import pretrain_source_sam as pretrain  # noqa: E402

from engine.checkpoint import read_checkpoint  # noqa: E402
from models.sam1 import build_sam  # noqa: E402
from models.weight_files import read_state_dict  # noqa: E402
from tests.conftest import script_env  # noqa: E402
from utils.config import ConfigError  # noqa: E402

SHORT = ["--model-type", "vit_tiny", "--steps", "4", "--batch-size", "2", "--warmup", "2", "--eval-interval", "2",
         "--eval-images", "3", "--save-interval", "1", "--accelerator", "cpu", "--threads", "1"]


def test_training_scene_is_a_function_of_seed_and_step():
    first = pretrain.training_scene(0, 5, 1, 64, 4)
    again = pretrain.training_scene(0, 5, 1, 64, 4)
    other = pretrain.training_scene(0, 6, 1, 64, 4)
    assert first["image"].shape == (3, 64, 64) and first["image"].dtype == torch.uint8
    assert first["masks"].dtype == torch.bool and first["masks"].shape[1:] == (64, 64)
    torch.testing.assert_close(first["image"], again["image"])
    assert not torch.equal(first["image"], other["image"])
    n = len(first["masks"])
    prompts = first["prompts"]
    assert set(prompts) in ({"boxes"}, {"points", "point_labels"})
    if "boxes" in prompts:
        assert prompts["boxes"].shape == (n, 4) and (prompts["boxes"] >= 0).all() and (prompts["boxes"] <= 64).all()
    else:
        assert prompts["points"].shape == (n, 10, 2)


@pytest.mark.parametrize("resize", ["square", "longest_side"])
def test_scenes_of_another_side_are_resized_to_the_model_input_as_the_datasets_resize(resize):
    """--scene-size: the scene is rendered (and augmented) at its own side, then the image is resized to
    the model's input as the datasets resize it (SAM 2: floats; SAM: uint8) and the prompts scaled to
    its frame; the masks stay at the scene's side."""
    from datasets.transforms import resize_image, resize_square_image

    model_input = {"image_size": 128, "embedding_size": 8, "resize": resize}
    kinds = set()
    for step in range(12):
        native = pretrain.training_scene(0, step, 0, 64, 4)
        scaled = pretrain.training_scene(0, step, 0, 64, 4, model_input)
        image = native["image"].numpy().transpose(1, 2, 0)
        expected = resize_square_image(image, 128) if resize == "square" else resize_image(image, 128)
        assert scaled["image"].shape == (3, 128, 128) and scaled["image"].dtype == (
            torch.float32 if resize == "square" else torch.uint8)
        torch.testing.assert_close(scaled["image"], torch.from_numpy(expected.transpose(2, 0, 1)))
        torch.testing.assert_close(scaled["masks"], native["masks"])
        for key, value in native["prompts"].items():
            torch.testing.assert_close(scaled["prompts"][key], value * (2 if key in ("boxes", "points") else 1))
            kinds.add(key)
    assert {"boxes", "points"} <= kinds


@pytest.mark.parametrize("model_type", ["vit_tiny", "sam2_tiny"])
def test_scene_size_trains_any_model_and_is_fixed_on_resume(tmp_path, model_type):
    short = [*SHORT[:1], model_type, *SHORT[2:], "--out", str(tmp_path / "run")]
    result = pretrain.main(short + ["--scene-size", "64", "--stop-at", "1", "--eval-images", "2"])
    assert result["step"] == 1 and 0.2 < result["box_prior"] < 1.0
    with pytest.raises(ConfigError, match="on 64-px scenes; resume it with the same --model-type, --steps and "
                                          "--scene-size"):
        pretrain.main(short + ["--resume"])


def test_the_record_gives_the_command_of_the_whole_run():
    """A run made over sessions (--resume, --minutes) is recorded with the one command that makes it."""
    session = "python tools/pretrain_source_sam.py --steps 8 --resume --minutes 30 --out 'a b' --minutes=5"
    assert pretrain.whole_run_command(session) == "python tools/pretrain_source_sam.py --steps 8 --out 'a b'"


def test_both_prompt_kinds_and_jittered_boxes_occur():
    kinds, offsets = set(), []
    for step in range(30):
        scene = pretrain.training_scene(1, step, 0, 64, 3)
        kinds.add(frozenset(scene["prompts"]))
        if "boxes" in scene["prompts"]:
            from datasets.prompts import boxes_from_masks

            tight = torch.from_numpy(boxes_from_masks(scene["masks"].numpy()))
            offsets.append(float((scene["prompts"]["boxes"] - tight).abs().mean()))
    assert kinds == {frozenset({"boxes"}), frozenset({"points", "point_labels"})}
    assert np.mean(offsets) > 0.3  # boxes are jittered, not tight


def test_photometric_augmentation_changes_intensity_only():
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    changed = [pretrain.photometric(image, np.random.default_rng(s)) for s in range(10)]
    assert all(c.shape == image.shape and c.dtype == np.uint8 for c in changed)
    assert sum(not np.array_equal(c, image) for c in changed) >= 8


def test_learning_rate_warms_up_then_decays_to_zero():
    factors = [pretrain.learning_rate_factor(s, 10, 100) for s in range(101)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[100] == pytest.approx(0.0, abs=1e-9)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))


@pytest.mark.slow
def test_short_run_resumes_exactly_renders_ahead_and_exports_loadable_weights(tmp_path):
    whole = pretrain.main(SHORT + ["--out", str(tmp_path / "whole")])
    assert whole["step"] == 4 and [h["step"] for h in whole["history"]] == [2, 4]
    assert all(0.0 <= h["miou"] <= 1.0 for h in whole["history"]) and 0.2 < whole["box_prior"] < 1.0
    assert (tmp_path / "whole" / "metrics.csv").read_text().startswith("step,miou,f1,box_prior,seconds")

    pretrain.main(SHORT + ["--out", str(tmp_path / "split"), "--stop-at", "2"])
    assert read_checkpoint(tmp_path / "split" / "last.ckpt")["step"] == 2
    with pytest.raises(ConfigError, match="already holds a run.*--resume"):  # never continued by accident
        pretrain.main(SHORT + ["--out", str(tmp_path / "split")])
    resumed = pretrain.main(SHORT + ["--out", str(tmp_path / "split"), "--resume"])
    assert resumed["step"] == 4
    a = read_checkpoint(tmp_path / "whole" / "last.ckpt")
    b = read_checkpoint(tmp_path / "split" / "last.ckpt")
    for key, value in a["model"].items():  # exact: weights, optimizer, random states and the step's rate
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=0, msg=key)
    assert len(b["sessions"]) == 2 and b["sessions"][1]["start_step"] == 2
    assert [h["miou"] for h in b["history"]] == [h["miou"] for h in a["history"]]
    assert set(b["rng"][0]) >= {"python", "numpy", "torch"}

    rendered_ahead = pretrain.main(SHORT + ["--out", str(tmp_path / "workers"), "--workers", "2"])
    c = read_checkpoint(tmp_path / "workers" / "last.ckpt")
    for key, value in a["model"].items():  # data loader workers render the same scenes
        torch.testing.assert_close(c["model"][key], value, msg=key)
    assert [h["miou"] for h in rendered_ahead["history"]] == pytest.approx([h["miou"] for h in a["history"]])

    with pytest.raises(ConfigError, match="for 4 steps on scenes of its input size; resume it with the same "
                                          "--model-type, --steps and --scene-size"):
        pretrain.main([*SHORT[:3], "5", *SHORT[4:], "--out", str(tmp_path / "whole"), "--resume"])
    with pytest.raises(ConfigError, match="does not exist"):
        pretrain.main(SHORT + ["--out", str(tmp_path / "nothing"), "--resume"])

    target = tmp_path / "weights" / "tiny.safetensors"
    pretrain.main(["--out", str(tmp_path / "whole"), "--export", str(target)])
    sam = build_sam("vit_tiny", target)
    for key, value in read_state_dict(target).items():
        torch.testing.assert_close(sam.state_dict()[key], value)
    pretrain.main(SHORT + ["--out", str(tmp_path / "stage2"), "--init", str(target), "--stop-at", "0"])
    for key, value in read_checkpoint(tmp_path / "stage2" / "last.ckpt")["model"].items():
        torch.testing.assert_close(value, a["model"][key], msg=key)  # a second stage starts from the export
    record = json.loads(target.with_suffix(".json").read_text())
    assert record["model_type"] == "vit_tiny" and record["step"] == 4
    assert record["command"].startswith("python tools/pretrain_source_sam.py")
    assert record["history"][-1]["miou"] == pytest.approx(a["history"][-1]["miou"])
    assert record["sessions"][0]["device"].startswith("CPU")
    assert record["init"] is None

    # the second stage's export over the file it started from nests the first stage's record
    pretrain.main(["--out", str(tmp_path / "stage2"), "--export", str(target)])
    staged = json.loads(target.with_suffix(".json").read_text())
    assert "--init" in staged["command"] and staged["step"] == 0
    assert staged["init"] == record


def test_sam2_pretraining_resumes_exactly_trains_its_image_path_and_exports_a_loadable_model(tmp_path):
    """The same tool pretrains a small SAM 2: the parts of SAM2Base the image path never uses keep
    their initial weights, and the export loads strictly into models.sam2.build_sam2_model."""
    from models.sam2 import build_sam2_model

    short = [*SHORT[:1], "sam2_tiny", *SHORT[2:]]
    pretrain.main(short + ["--out", str(tmp_path / "whole")])
    pretrain.main(short + ["--out", str(tmp_path / "split"), "--stop-at", "2"])
    pretrain.main(short + ["--out", str(tmp_path / "split"), "--resume"])
    a = read_checkpoint(tmp_path / "whole" / "last.ckpt")
    b = read_checkpoint(tmp_path / "split" / "last.ckpt")
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=0, msg=key)
    torch.manual_seed(0)  # the run's --seed 0 draws the same initial weights
    initial = build_sam2_model("sam2_tiny").state_dict()
    changed = {key for key, value in a["model"].items() if not torch.equal(value, initial[key])}
    assert any(key.startswith("image_encoder.trunk.") for key in changed)
    assert not any(key.startswith(("memory_attention.", "memory_encoder.", "obj_ptr_proj.",
                                   "sam_mask_decoder.pred_obj_score_head.")) for key in changed)
    target = tmp_path / "sam2_tiny.safetensors"
    pretrain.main(["--out", str(tmp_path / "split"), "--export", str(target)])
    model = build_sam2_model("sam2_tiny", target)
    for key, value in a["model"].items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0, msg=key)
    record = json.loads(target.with_suffix(".json").read_text())  # made over two sessions, recorded as one run
    assert record["command"] == shlex.join(["python", "tools/pretrain_source_sam.py", *short, "--out",
                                            str(tmp_path / "split")])
    assert [session["start_step"] for session in record["sessions"]] == [0, 2]


@pytest.mark.slow
def test_two_processes_share_each_batch_and_train_the_same_model(tmp_path):
    import subprocess

    single = tmp_path / "one"
    pretrain.main(SHORT + ["--out", str(single)])
    command = [sys.executable, str(ROOT / "tools" / "pretrain_source_sam.py"), *SHORT, "--devices", "2",
               "--out", str(tmp_path / "two")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    a, b = read_checkpoint(single / "last.ckpt"), read_checkpoint(tmp_path / "two" / "last.ckpt")
    assert b["step"] == 4 and b["sessions"][0]["device"].endswith("x 2 processes")
    for key, value in a["model"].items():  # the same batches, gradients summed in another order
        torch.testing.assert_close(b["model"][key], value, rtol=1e-3, atol=1e-4, msg=key)
    assert [h["miou"] for h in b["history"]] == pytest.approx([h["miou"] for h in a["history"]], abs=1e-3)


@pytest.mark.slow
def test_a_folder_in_use_is_refused_and_sigterm_saves_the_step_to_resume(tmp_path):
    """The same rules as adaptation.py: one run per folder, and SIGTERM saves last.ckpt at the end of
    the step, printing the command that continues it."""
    import signal
    import subprocess
    import time

    out = tmp_path / "run"
    args = ["--model-type", "vit_tiny", "--steps", "1000", "--batch-size", "2", "--warmup", "2", "--eval-interval",
            "1000", "--eval-images", "3", "--save-interval", "1", "--accelerator", "cpu", "--threads", "1",
            "--out", str(out)]
    env = script_env()
    tool = [sys.executable, "tools/pretrain_source_sam.py"]
    first = subprocess.Popen([*tool, *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env=env)
    try:
        deadline = time.time() + 90
        while not (out / "last.ckpt").exists():
            assert first.poll() is None and time.time() < deadline, "the run did not save a step"
            time.sleep(0.2)
        second = subprocess.run([*tool, *args, "--resume"], cwd=ROOT, capture_output=True, text=True, env=env,
                                timeout=120)
        assert second.returncode == 1 and "Traceback" not in second.stderr
        assert f"is in use by another pretraining (process {first.pid} on " in second.stderr
        first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate(timeout=120)
    finally:
        first.kill()
    step = read_checkpoint(out / "last.ckpt")["step"]
    assert first.returncode == 128 + signal.SIGTERM and "Traceback" not in stderr
    assert f"Stopped at step {step} of 1000 (SIGTERM); saved {out / 'last.ckpt'}. Continue with: " in stderr
    assert stderr.strip().endswith("--resume")
    resumed = pretrain.main([*args, "--resume", "--stop-at", str(step + 1)])
    assert resumed["step"] == step + 1
