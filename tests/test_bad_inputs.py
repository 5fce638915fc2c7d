"""The catalogue of mistakes and faults users meet: each ends with a short message that names the
culprit and the fix (exit status non-zero, no traceback), and nothing already written is lost.

Most cases run the scripts' main() through utils.checks.run_main in this process (the same path
as the command line, without the seconds of a new interpreter); the signal cases and a few others
run the real command line.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import adaptation
import validate
from models import build_sam
from models.lora import adapter_state_dict
from tests.conftest import ROOT, tiny_config_overrides
from tests.ondisk import write_image, write_mask
from utils import paths
from utils.checkpoint import load_state, save_adapter
from utils.checks import run_main

TINY = ["model.type=vit_tiny", "model.checkpoint=", "accelerator=cpu"]


def cli(main: Callable[[Sequence[str]], Any], argv: Sequence[str], capsys) -> tuple[int, str]:
    """Run main(argv) as the command line does; (exit status, message). An exception other than
    SystemExit (a traceback on the command line) fails the test."""
    with pytest.raises(SystemExit) as stop:
        run_main(lambda: main(list(argv)))
    code = stop.value.code
    err = capsys.readouterr().err
    if isinstance(code, str):  # sys.exit(message): printed by the interpreter, status 1
        return 1, code
    return code, err


def run_script(*args: str, **kwargs) -> subprocess.Popen | subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MASTER_", "LOCAL_RANK", "WORLD_SIZE", "RANK"))}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env,
                          **kwargs)


def snapshot(run: Path) -> dict[str, bytes]:
    """The bytes of every file a run has written (but its TensorBoard logs)."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and "tensorboard" not in p.parts}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A finished 2-step run of the tiny SAM: config.json, metrics, adapters, last.ckpt."""
    run = tmp_path_factory.mktemp("trained") / "run"
    adaptation.main(tiny_config_overrides(run) + ["num_steps=2", "opt.learning_rate=1e-2", "opt.warmup_steps=1"])
    return run


def validate_args(run: Path, ckpt: Path | str) -> list[str]:
    return ["--config", str(run / "config.json"), "--ckpt", str(ckpt)]


# --- adapters given to validate.py --ckpt (predict.py and tools/export.py read them the same way)

def bad_adapter(kind: str, run: Path, folder: Path) -> Path:
    """An adapter file that cannot be used, of the given kind."""
    good = run / "checkpoints/last-lora.safetensors"
    path = folder / f"{kind}.safetensors"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "not_safetensors":
        path.write_text("these are not weights\n")
    elif kind == "sam_pth":
        path = folder / "sam_vit_tiny.pth"
        torch.save(build_sam("vit_tiny").state_dict(), path)
    elif kind == "rank8_no_metadata":
        from models import build_wesam
        from utils.config import load_config
        cfg = load_config(user_config=json.loads((run / "config.json").read_text()), overrides=["lora.rank=8"])
        save_file(adapter_state_dict(build_wesam(cfg).sam), str(path))
    elif kind == "other_model_no_metadata":  # vit_small's LoRA: six blocks of width 160
        weights = {f"blocks.{i}.{part}": torch.zeros(shape) for i in range(6) for part, shape in
                   (("down_q", (4, 160)), ("up_q", (160, 4)), ("down_v", (4, 160)), ("up_v", (160, 4)))}
        save_file(weights, str(path))
    elif kind == "rank8_metadata":
        from safetensors.torch import load_file
        save_adapter(path, load_file(str(good)), {"model_type": "vit_tiny", "lora_rank": 8})
    return path


@pytest.mark.parametrize("kind, expected", [
    ("empty", "it is empty"),
    ("truncated", "not a readable safetensors adapter"),
    ("not_safetensors", "not a readable safetensors adapter"),
    ("sam_pth", "a SAM checkpoint goes to model.checkpoint"),
    ("rank8_no_metadata", "does not fit model.type=vit_tiny, lora.rank=4"),
    ("other_model_no_metadata", "does not fit model.type=vit_tiny, lora.rank=4"),
    ("rank8_metadata", "lora.rank=8"),
])
def test_unusable_adapter(trained_run, tmp_path, capsys, kind, expected):
    path = bad_adapter(kind, trained_run, tmp_path)
    code, message = cli(validate.main, validate_args(trained_run, path), capsys)
    assert code == 1 and message.startswith("Error: ")
    assert str(path) in message and expected in message
    assert "config.json" in message or "best-lora.safetensors" in message  # the fix


# --- --resume of a file that is not a run's last.ckpt

@pytest.mark.parametrize("kind", ["truncated", "empty", "adapter", "sam_pth"])
def test_unusable_resume_file(trained_run, tmp_path, capsys, kind):
    good = trained_run / "checkpoints/last.ckpt"
    before = snapshot(trained_run)
    path = tmp_path / "checkpoints" / "last.ckpt"
    path.parent.mkdir()
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "adapter":
        path.write_bytes((trained_run / "checkpoints/last-lora.safetensors").read_bytes())
    else:
        torch.save(build_sam("vit_tiny").state_dict(), path)
    code, message = cli(adaptation.main, ["--resume", str(path)], capsys)
    assert code == 1 and str(path) in message and "Traceback" not in message
    fix = "not a training state" if kind == "sam_pth" else "could not be read"
    assert fix in message and "last.ckpt" in message
    assert snapshot(trained_run) == before


def test_last_ckpt_loads_with_weights_only(trained_run):
    state = torch.load(trained_run / "checkpoints/last.ckpt", weights_only=True)
    assert state["step"] == 2 and set(state["rng"][0]) >= {"python", "numpy", "torch"}


# --- configuration mistakes: stopped before any work

def test_config_file_with_a_syntax_error(tmp_path, capsys):
    config = tmp_path / "my_config.py"
    config.write_text('config = {\n    "num_steps": 10\n    "prompt": "box",\n}\n')
    code, message = cli(adaptation.main, ["--config", str(config), f"out_dir={tmp_path / 'run'}"], capsys)
    assert code == 1 and str(config) in message and "line 2" in message and "Fix that line" in message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override, expected", [
    ("opt.learning_rate=-1e-4", "'opt.learning_rate' is -0.0001; it must be in (0, 1]"),
    ("opt.learning_rate=1e6", "'opt.learning_rate' is 1e+06; it must be in (0, 1]"),
    ("opt.weight_decay=-1.0", "'opt.weight_decay' is -1; it must be 0 or more"),
])
def test_optimisation_values(tiny_overrides, tmp_path, capsys, override, expected):
    code, message = cli(adaptation.main, tiny_overrides + [override], capsys)
    assert code == 1 and expected in message
    assert not (tmp_path / "run").exists(), "stopped before any work"


def test_out_dir_is_a_file(tiny_overrides, tmp_path, capsys):
    (tmp_path / "run").write_text("a file")
    code, message = cli(adaptation.main, tiny_overrides, capsys)
    assert code == 1 and f"out_dir '{tmp_path / 'run'}' is a file" in message and "another out_dir" in message
    assert (tmp_path / "run").read_text() == "a file"


def test_out_dir_on_a_read_only_file_system(tiny_overrides, tmp_path, capsys, monkeypatch):
    if os.geteuid() == 0:  # root writes through permissions: simulate the file system's answer
        def read_only(*args, **kwargs):
            raise OSError(errno.EROFS, "Read-only file system")
        monkeypatch.setattr(paths.tempfile, "TemporaryFile", read_only)
    else:
        (tmp_path / "run").mkdir()
        (tmp_path / "run").chmod(0o555)
    code, message = cli(adaptation.main, tiny_overrides, capsys)
    assert code == 1 and f"out_dir '{tmp_path / 'run'}' cannot be written" in message and "writable out_dir" in message


def test_batch_larger_than_the_training_split(tiny_overrides, tmp_path, capsys):
    code, message = cli(adaptation.main, tiny_overrides + ["dataset.synthetic.num_train=2", "batch_size=3"], capsys)
    assert code == 1 and "has 2 image(s), fewer than batch_size x devices x num_nodes = 3 x 1 x 1" in message
    assert not (tmp_path / "run/checkpoints").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu(tiny_overrides, tmp_path, capsys):
    overrides = [o for o in tiny_overrides if not o.startswith("accelerator")] + ["accelerator=cuda"]
    code, message = cli(adaptation.main, overrides, capsys)
    assert code == 1 and "accelerator=cuda but no CUDA GPU is visible" in message and "accelerator=cpu" in message
    assert not (tmp_path / "run").exists()


def test_evaluation_split_with_no_scored_image(tmp_path, capsys):
    """A folder dataset whose masks are all background: nothing to score, not mIoU 0."""
    for i in range(3):
        write_image(tmp_path / "data/images" / f"{i}.png", seed=i)
        write_mask(tmp_path / "data/masks" / f"{i}.png", np.zeros((40, 60), np.uint8))
    overrides = ["dataset.name=folder", f"dataset.root={tmp_path / 'data'}", "dataset.interleave=1",
                 "model.type=vit_tiny", "model.checkpoint=", "accelerator=cpu", "dataset.eval_split=val"]
    code, message = cli(validate.main, overrides, capsys)
    assert code == 1 and "No image of the val split of folder was scored" in message
    assert "dataset.eval_split" in message


# --- faults during a run

def test_non_finite_loss_shows_the_message_alone(tiny_overrides, tmp_path, capsys, monkeypatch):
    real_loss, calls = adaptation.wesam_loss, []

    def nan_at_second_step(*args, **kwargs):
        calls.append(1)
        loss, terms = real_loss(*args, **kwargs)
        return (loss * float("nan"), terms) if len(calls) == 2 else (loss, terms)

    monkeypatch.setattr(adaptation, "wesam_loss", nan_at_second_step)
    code, message = cli(adaptation.main, tiny_overrides + ["eval_interval=1"], capsys)
    ckpt = tmp_path / "run/checkpoints/last.ckpt"
    assert code == 1 and message.startswith("Error: The loss is not finite at step 2")
    assert f"--resume {ckpt} opt.learning_rate=" in message
    assert load_state(ckpt)["step"] == 1  # the last good state, intact


def test_disk_full_while_writing_last_ckpt(tiny_overrides, tmp_path, capsys, monkeypatch):
    real_save, calls = torch.save, []

    def full_at_second_save(obj, path, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            Path(path).write_bytes(b"partial")  # the writer got this far
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_at_second_save)
    code, message = cli(adaptation.main, tiny_overrides + ["eval_interval=1"], capsys)
    checkpoints = tmp_path / "run/checkpoints"
    assert code == 1 and "No space left on the disk of" in message and str(checkpoints) in message
    assert "the previous 'last.ckpt' is intact" in message
    assert load_state(checkpoints / "last.ckpt")["step"] == 0
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best-lora.safetensors", "last-lora.safetensors",
                                                             "last.ckpt"], "no temporary file left"


SIGNAL_RUN = ["num_steps=4", "eval_interval=3", "opt.learning_rate=1e-2", "opt.warmup_steps=1"]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> Path:
    """A 4-step run that never stopped, to compare the runs stopped by a signal with."""
    run = tmp_path_factory.mktemp("straight") / "run"
    adaptation.main(tiny_config_overrides(run) + SIGNAL_RUN)
    return run


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_the_current_step_and_resumes_exactly(straight_run, tmp_path, capsys, monkeypatch, sig):
    """The signal arrives in the middle of step 2 (between evaluations): last.ckpt of step 2 is saved
    and the resumed run ends exactly as one that never stopped."""
    real_loss, calls, handler = adaptation.wesam_loss, [], signal.getsignal(sig)

    def signal_during_second_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), sig)
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(adaptation, "wesam_loss", signal_during_second_step)
    run = tmp_path / "run"
    code, message = cli(adaptation.main, tiny_config_overrides(run) + SIGNAL_RUN, capsys)
    monkeypatch.undo()
    ckpt = run / "checkpoints/last.ckpt"
    assert code == 128 + sig and "Traceback" not in message
    assert message.strip().splitlines()[-1] == (f"Stopped at step 2 of 4 ({sig.name}); saved {ckpt}. "
                                               f"Continue with: python adaptation.py --resume {ckpt}")
    assert load_state(ckpt)["step"] == 2
    assert signal.getsignal(sig) == handler, "the previous handler is back"
    adaptation.main(["--resume", str(ckpt)])
    for name, value in load_state(straight_run / "checkpoints/last.ckpt")["lora"]["student"].items():
        torch.testing.assert_close(load_state(ckpt)["lora"]["student"][name], value, rtol=0, atol=1e-7)


@pytest.mark.slow
def test_sigterm_on_the_command_line(tmp_path):
    run = tmp_path / "run"
    overrides = [o for o in tiny_config_overrides(run) if not o.startswith(("num_steps", "eval_interval"))]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MASTER_", "LOCAL_RANK", "WORLD_SIZE", "RANK"))}
    process = subprocess.Popen([sys.executable, "adaptation.py", *overrides, "num_steps=100000", "eval_interval=50000",
                                "log_interval=50000"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    deadline = time.time() + 90
    while not (run / "checkpoints/last.ckpt").exists() and time.time() < deadline:  # written after Direct
        time.sleep(0.2)
    before = snapshot(run)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM and "Traceback" not in stderr, stderr[-2000:]
    state = load_state(run / "checkpoints/last.ckpt")
    assert stderr.strip().splitlines()[-1].startswith(f"Stopped at step {state['step']} of 100000 (SIGTERM)")
    assert {k: v for k, v in snapshot(run).items() if k != "checkpoints/last.ckpt"} == \
        {k: v for k, v in before.items() if k != "checkpoints/last.ckpt"}, "only last.ckpt changed"


@pytest.mark.parametrize("case, expected", [
    ("no_images", "is neither an image file nor a folder"),
    ("unknown_image", "image(s) of the prompt file are not in --images (e.g. 'other.png'), none is"),
    ("bad_boxes", "The boxes of 'a.png' in"),
])
def test_predict_prompt_mistakes(tmp_path, capsys, case, expected):
    import predict

    write_image(tmp_path / "images/a.png")
    table = {"unknown_image": {"other.png": [[0, 0, 5, 5]]}, "bad_boxes": {"a.png": [[0, 0, 5]]}}.get(case, {})
    (tmp_path / "boxes.json").write_text(json.dumps(table))
    images = tmp_path / ("missing" if case == "no_images" else "images")
    code, message = cli(predict.main, ["--images", str(images), "--boxes-json", str(tmp_path / "boxes.json"),
                                       "--out", str(tmp_path / "out"), *TINY], capsys)
    assert code == 1 and expected in message
    assert not (tmp_path / "out").exists()


# --- the command line itself

def test_command_line_prints_the_message_without_a_traceback(trained_run, tmp_path):
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    result = run_script("validate.py", *validate_args(trained_run, empty))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"Error: Adapter file '{empty}'")


def test_a_bug_of_ours_keeps_its_traceback():
    def buggy() -> None:
        raise KeyError("a bug")

    with pytest.raises(KeyError, match="a bug"):
        run_main(buggy)


# --- silent wrong results

def test_resume_with_a_new_learning_rate_uses_it(tiny_overrides, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    adaptation.main(tiny_overrides + ["num_steps=2", "opt.learning_rate=1e-2", "opt.warmup_steps=1",
                                      "opt.weight_decay=0.5"])
    ckpt = tmp_path / "run/checkpoints/last.ckpt"
    adaptation.main(["--resume", str(ckpt), "num_steps=4", "opt.learning_rate=1e-5", "opt.weight_decay=0.0"])
    state = torch.load(ckpt, weights_only=True)
    assert state["scheduler"]["base_lrs"] == [1e-5]
    assert [(g["lr"], g["weight_decay"]) for g in state["optimizer"]["param_groups"]] == [(1e-5, 0.0)]
    events = EventAccumulator(str(tmp_path / "run/tensorboard")).Reload()
    logged = {event.step: event.value for event in events.Scalars("train/lr")}
    assert logged[1] == pytest.approx(1e-2) and logged[2] == pytest.approx(1e-2)
    assert logged[3] == pytest.approx(1e-5) and logged[4] == pytest.approx(1e-5)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_grey_images_keep_their_range(tmp_path, suffix):
    from datasets.files import read_image

    grey = np.random.default_rng(0).integers(0, 256, (20, 30)).astype(np.uint8)
    path = tmp_path / f"microscopy{suffix}"
    Image.fromarray(grey.astype(np.uint16) * 257).save(path)  # the same picture over 0-65535
    assert Image.open(path).mode.startswith("I")
    pixels = read_image(path)
    assert pixels.dtype == np.uint8 and pixels.shape == (20, 30, 3)
    np.testing.assert_array_equal(pixels, np.repeat(grey[..., None], 3, axis=2))


def test_adapter_files_are_plain(trained_run, tmp_path):
    """Adapters get the mode of any new file (not 0600) and plain-text metadata; files written
    with JSON-quoted metadata still read the same."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from utils.checkpoint import load_adapter

    (tmp_path / "new_file").touch()
    adapter = trained_run / "checkpoints/best-lora.safetensors"
    assert adapter.stat().st_mode == (tmp_path / "new_file").stat().st_mode
    with safe_open(str(adapter), framework="pt") as handle:
        assert handle.metadata()["model_type"] == "vit_tiny" and handle.metadata()["lora_rank"] == "4"
    old_style = tmp_path / "old.safetensors"
    save_file(load_file(str(adapter)), str(old_style), metadata={"model_type": '"vit_tiny"', "lora_rank": "4"})
    assert load_adapter(old_style)[1] == {"model_type": "vit_tiny", "lora_rank": 4}
    assert load_adapter(adapter)[1]["model_type"] == "vit_tiny" and load_adapter(adapter)[1]["lora_rank"] == 4
