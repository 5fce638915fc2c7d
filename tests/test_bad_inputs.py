"""The catalogue of mistakes and faults users meet: each ends with a short message that names the
culprit and the fix (exit status non-zero, no traceback), and nothing already written is lost.

Most cases run the scripts' main() through engine.checks.run_main in this process (the same path
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
from engine.checkpoint import read_checkpoint
from engine.checks import run_main
from losses.wesam_loss import wesam_loss
from models import build_sam
from models.adapters import save_adapter
from models.lora import adapter_state_dict
from tests.conftest import ROOT, tiny_config_overrides
from tests.ondisk import write_image, write_mask
from utils import files
from utils.config import load_config

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


def read_only_folder(folder: Path, monkeypatch) -> Path:
    """`folder`, made read-only (for root, who writes through permissions, every folder answers as a
    read-only file system)."""
    if os.geteuid() == 0:
        def read_only(*args, **kwargs):
            raise OSError(errno.EROFS, "Read-only file system")
        monkeypatch.setattr(files.tempfile, "TemporaryFile", read_only)
    else:
        folder.mkdir()
        folder.chmod(0o555)
    return folder


def test_out_dir_on_a_read_only_file_system(tiny_overrides, tmp_path, capsys, monkeypatch):
    read_only_folder(tmp_path / "run", monkeypatch)
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
    """A folder dataset whose masks are all background: each image skipped, naming its mask; nothing
    to score, not mIoU 0."""
    from datasets.instances import SkippedImageWarning

    for i in range(3):
        write_image(tmp_path / "data/images" / f"{i}.png", seed=i)
        write_mask(tmp_path / "data/masks" / f"{i}.png", np.zeros((40, 60), np.uint8))
    overrides = ["dataset.name=folder", f"dataset.root={tmp_path / 'data'}", "dataset.interleave=1",
                 "model.type=vit_tiny", "model.checkpoint=", "accelerator=cpu", "dataset.eval_split=val"]
    with pytest.warns(SkippedImageWarning, match=r"mask '.*1.png' has no instance: every pixel is background"):
        code, message = cli(validate.main, overrides, capsys)
    assert code == 1 and "None of the 1 evaluation images could be used" in message


# --- faults during a run

def test_non_finite_loss_shows_the_message_alone(tiny_overrides, tmp_path, capsys):
    calls = []

    def nan_at_second_step(*args, **kwargs):
        calls.append(1)
        loss, terms = wesam_loss(*args, **kwargs)
        return (loss * float("nan"), terms) if len(calls) == 2 else (loss, terms)

    code, message = cli(lambda argv: adaptation.adapt(load_config(overrides=argv), loss_fn=nan_at_second_step),
                        tiny_overrides + ["eval_interval=1"], capsys)
    ckpt = tmp_path / "run/checkpoints/last.ckpt"
    assert code == 1 and message.startswith("Error: The loss is not finite at step 2")
    assert f"--resume {ckpt} opt.learning_rate=" in message
    assert read_checkpoint(ckpt)["step"] == 1  # the last good state, intact


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
    assert read_checkpoint(checkpoints / "last.ckpt")["step"] == 0
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
def test_signal_saves_the_current_step_and_resumes_exactly(straight_run, tmp_path, capsys, sig):
    """The signal arrives in the middle of step 2 (between evaluations): last.ckpt of step 2 is saved
    and the resumed run ends exactly as one that never stopped."""
    calls, handler = [], signal.getsignal(sig)

    def signal_during_second_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), sig)
        return wesam_loss(*args, **kwargs)

    run = tmp_path / "run"
    code, message = cli(lambda argv: adaptation.adapt(load_config(overrides=argv), loss_fn=signal_during_second_step),
                        tiny_config_overrides(run) + SIGNAL_RUN, capsys)
    ckpt = run / "checkpoints/last.ckpt"
    assert code == 128 + sig and "Traceback" not in message
    assert message.strip().splitlines()[-1] == (f"Stopped at step 2 of 4 ({sig.name}); saved {ckpt}. "
                                               f"Continue with: python adaptation.py --resume {ckpt}")
    assert read_checkpoint(ckpt)["step"] == 2
    assert signal.getsignal(sig) == handler, "the previous handler is back"
    adaptation.main(["--resume", str(ckpt)])
    for name, value in read_checkpoint(straight_run / "checkpoints/last.ckpt")["lora"]["student"].items():
        torch.testing.assert_close(read_checkpoint(ckpt)["lora"]["student"][name], value, rtol=0, atol=1e-7)


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
    state = read_checkpoint(run / "checkpoints/last.ckpt")
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
    assert [(g["lr"], g["weight_decay"]) for g in state["optimizer"]["param_groups"]] == [(1e-5, 0.0)]
    events = EventAccumulator(str(tmp_path / "run/tensorboard")).Reload()
    logged = {event.step: event.value for event in events.Scalars("train/lr")}
    assert logged[1] == pytest.approx(1e-2) and logged[2] == pytest.approx(1e-2)
    assert logged[3] == pytest.approx(1e-5) and logged[4] == pytest.approx(1e-5)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_grey_images_keep_their_range(tmp_path, suffix):
    from datasets.images import read_image

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

    from models.adapters import load_adapter

    (tmp_path / "new_file").touch()
    adapter = trained_run / "checkpoints/best-lora.safetensors"
    assert adapter.stat().st_mode == (tmp_path / "new_file").stat().st_mode
    with safe_open(str(adapter), framework="pt") as handle:
        assert handle.metadata()["model_type"] == "vit_tiny" and handle.metadata()["lora_rank"] == "4"
    old_style = tmp_path / "old.safetensors"
    save_file(load_file(str(adapter)), str(old_style), metadata={"model_type": '"vit_tiny"', "lora_rank": "4"})
    assert load_adapter(old_style)[1] == {"model_type": "vit_tiny", "lora_rank": 4}
    assert load_adapter(adapter)[1]["model_type"] == "vit_tiny" and load_adapter(adapter)[1]["lora_rank"] == 4


# --- one run per folder; what --resume is given is applied or refused, never dropped; data changed under a run

@pytest.mark.slow
def test_a_second_run_on_a_folder_in_use_is_refused_naming_the_first(tmp_path):
    """Two runs started on one out_dir: the second stops before any work, naming the first, which
    is left to finish alone (before, both ended 'Done' and the folder mixed their files)."""
    run = tmp_path / "run"
    overrides = [o for o in tiny_config_overrides(run) if not o.startswith(("num_steps", "eval_interval"))]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MASTER_", "LOCAL_RANK", "WORLD_SIZE", "RANK"))}
    first = subprocess.Popen([sys.executable, "adaptation.py", *overrides, "num_steps=100000", "eval_interval=50000"],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.time() + 60
        while not (run / "config.json").exists():
            assert first.poll() is None and time.time() < deadline, "the first run did not start"
            time.sleep(0.2)
        config_before = (run / "config.json").read_bytes()
        second = run_script("adaptation.py", *overrides, "num_steps=2", "prompt=point")
        assert second.returncode == 1 and "Traceback" not in second.stderr
        assert f"Error: '{run}' is in use by another run (process {first.pid} on " in second.stderr
        assert (run / "config.json").read_bytes() == config_before, "the second run wrote nothing"
    finally:
        first.kill()
        first.wait()
    assert run_script("adaptation.py", "--resume", str(run / "checkpoints/last.ckpt"), "num_steps=2").returncode == 0, \
        "a killed run leaves its folder free"


def test_resume_applies_what_it_is_given_or_refuses_it(tiny_overrides, tmp_path, capsys):
    """--resume applies the keys of config.json edited by hand, then --config, then key=value; a key
    that cannot change is refused naming where it came from."""
    run = tmp_path / "run"
    adaptation.main(tiny_overrides + ["num_steps=2"])
    ckpt = run / "checkpoints/last.ckpt"
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(dict(config, lora={"rank": 8})))
    code, message = cli(adaptation.main, ["--resume", str(ckpt)], capsys)
    assert code == 1 and f"lora.rank cannot change when resuming ('{run / 'config.json'}' gives 8, the run has 4)" \
        in message
    (run / "config.json").write_text(json.dumps(dict(config, num_steps=3)))
    adaptation.main(["--resume", str(ckpt)])
    assert f"Resuming with num_steps=3 (the run had 2; from '{run / 'config.json'}')" in capsys.readouterr().out
    assert json.loads((run / "summary.json").read_text())["last"]["step"] == 3
    user_file = tmp_path / "more.py"
    user_file.write_text("config = {'num_steps': 4, 'model': {'type': 'vit_tiny'}}\n")
    adaptation.main(["--resume", str(ckpt), "--config", str(user_file)])
    assert json.loads((run / "summary.json").read_text())["last"]["step"] == 4
    assert json.loads((run / "config.json").read_text())["num_steps"] == 4
    user_file.write_text("config = {'num_steps': 6, 'teacher': {'mode': 'ema'}}\n")
    code, message = cli(adaptation.main, ["--resume", str(ckpt), "--config", str(user_file)], capsys)
    assert code == 1 and f"teacher.mode cannot change when resuming (--config '{user_file}' gives 'ema'" in message
    code, message = cli(adaptation.main, ["--resume", str(ckpt), "model.type=vit_b"], capsys)
    assert code == 1 and "model.type cannot change when resuming (the command line gives 'vit_b'" in message


def test_a_resumed_run_on_changed_data_says_so_and_records_it(tiny_overrides, tmp_path, capsys):
    run = tmp_path / "run"
    adaptation.main(tiny_overrides + ["num_steps=2"])
    capsys.readouterr()
    adaptation.main(["--resume", str(run / "checkpoints/last.ckpt"), "num_steps=4", "dataset.synthetic.num_test=3"])
    out = capsys.readouterr().out
    assert "Warning: the test split of synthetic changed since step 2 was saved: 1 of its 4 images are no longer " \
           "there or changed, 0 are new (e.g. synthetic:" in out
    assert "The evaluations so far were measured on the earlier images" in out
    changes = json.loads((run / "summary.json").read_text())["data_changes"]
    assert [(c["step"], c["split"]) for c in changes] == [(2, "test")]


# --- data as users store it (issue 25): every case reads right, or says which file and why

def tagged_photo(path: Path, displayed: np.ndarray, orientation: int = 6) -> None:
    """Save `displayed` (H x W x 3) as a phone does: stored pixels turned so that EXIF `orientation`
    (6: shown rotated 90 degrees clockwise) displays it."""
    stored = np.ascontiguousarray(np.rot90(displayed, k=1)) if orientation == 6 else displayed
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(stored).save(path, exif=exif)


def phone_folder(root: Path, height: int = 48, width: int = 72) -> tuple[np.ndarray, np.ndarray]:
    """A folder dataset (one pooled pair of folders, interleave 1) of one phone photo whose mask was
    drawn on the picture as displayed; returns the displayed picture and its mask."""
    mask = np.zeros((height, width), np.uint8)
    mask[5:20, 10:30] = 1
    displayed = np.repeat(np.where(mask > 0, 230, 20).astype(np.uint8)[..., None], 3, axis=2)  # the object shows
    for stem in ("a", "b"):
        tagged_photo(root / "images" / f"{stem}.jpg", displayed)
        write_mask(root / "masks" / f"{stem}.png", mask)
    return displayed, mask


def test_exif_phone_photos_are_read_as_displayed_by_the_folder_loader(tmp_path):
    from datasets.layout import DataWarning
    from tests.ondisk import build

    displayed, mask = phone_folder(tmp_path)
    with pytest.warns(DataWarning, match=r"(?s)1 image file\(s\) of 1 .*rotated 90 degrees clockwise.*"
                                         r"folder loader's convention.*dataset.exif=ignore"):
        dataset = build("folder", tmp_path, "val", "dataset.interleave=1")
    image, masks, _ = dataset.load(0)
    assert image.shape == displayed.shape
    assert image[mask > 0].mean() > 200 and image[mask == 0].mean() < 50  # JPEG: close pixels, exact geometry
    np.testing.assert_array_equal(masks, mask[None].astype(bool))


def test_exif_ignored_says_so_when_the_sizes_disagree(tmp_path):
    from datasets.layout import DataWarning
    from datasets.instances import SkippedImageWarning
    from tests.ondisk import build

    phone_folder(tmp_path)
    with pytest.warns(DataWarning, match=r"as stored, the tag ignored \(dataset.exif=ignore\).*dataset.exif=apply"):
        dataset = build("folder", tmp_path, "val", "dataset.interleave=1", "dataset.exif=ignore")
    with pytest.warns(SkippedImageWarning, match=r"mask '.*png' is 72x48 but image '.*jpg' is 48x72 .*turned by "
                                                 r"90 degrees: an EXIF orientation tag.*dataset.exif"):
        assert dataset[0]["skipped"] == [0]


def test_exif_on_square_photos_is_still_named(tmp_path):
    """Square photos give no size mismatch: the warning when the dataset is built is what tells."""
    from datasets.layout import DataWarning
    from tests.ondisk import build

    phone_folder(tmp_path, 40, 40)
    with pytest.warns(DataWarning, match=r"1 image file\(s\) of 1.*set dataset.exif=apply"):
        build("folder", tmp_path, "val", "dataset.interleave=1", "dataset.exif=ignore")


def test_exif_coco_follows_the_stored_pixels_and_says_so(tmp_path):
    from datasets.layout import DataWarning
    from tests.ondisk import box_annotation, build, coco_image, write_coco_json

    displayed = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    tagged_photo(tmp_path / "images/a.png", displayed)
    write_coco_json(tmp_path / "annotations.json", [coco_image(1, "a.png", 40, 40)], [box_annotation(1, 2, 3, 20, 30)])
    with pytest.warns(DataWarning, match=r"coco loader's convention.*drawn on the stored pixels.*dataset.exif=apply"):
        dataset = build("coco", tmp_path, "val", "dataset.coco.val=annotations.json")
    np.testing.assert_array_equal(dataset.load(0)[0], np.rot90(displayed, k=1))
    with pytest.warns(DataWarning, match=r"\(dataset.exif=apply\)"):
        dataset = build("coco", tmp_path, "val", "dataset.coco.val=annotations.json", "dataset.exif=apply")
    np.testing.assert_array_equal(dataset.load(0)[0], displayed)


def test_exif_tag_on_a_mask_file_turns_it_too(tmp_path):
    """Masks saved with the photo's tag (stored like the photo) line up once both are displayed."""
    from datasets.layout import DataWarning
    from tests.ondisk import build

    displayed = np.random.default_rng(1).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    mask = np.zeros((30, 50), np.uint8)
    mask[2:9, 20:45] = 255
    for stem in ("a", "b"):
        tagged_photo(tmp_path / "images" / f"{stem}.png", displayed)
        tagged_photo(tmp_path / "masks" / f"{stem}.png", np.repeat(mask[..., None], 3, axis=2))
    with pytest.warns(DataWarning, match=r"1 image file\(s\) of 1 .*; 1 mask file\(s\) of 1"):
        dataset = build("folder", tmp_path, "val", "dataset.interleave=1")
    image, masks, _ = dataset.load(0)
    np.testing.assert_array_equal(image, displayed)
    np.testing.assert_array_equal(masks, mask[None] > 0)


def pil_image(mode: str, grey: np.ndarray) -> tuple[Image.Image, np.ndarray]:
    """An image of PIL `mode` holding the uint8 `grey` picture (H x W), and the RGB pixels it must read as."""
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if mode == "1":
        return Image.fromarray(grey > 127), np.where(rgb > 127, 255, 0).astype(np.uint8)
    if mode in ("L", "LA", "RGBA", "P"):
        return Image.fromarray(grey).convert(mode), rgb
    if mode == "I;16":
        return Image.fromarray(grey.astype(np.uint16) * 257), rgb
    if mode == "I":
        return Image.fromarray(grey.astype(np.int32) * 257, "I"), rgb
    if mode == "F 0-1":
        return Image.fromarray(grey.astype(np.float32) / 255), rgb
    if mode == "F 0-255":
        return Image.fromarray(grey.astype(np.float32)), rgb
    raise ValueError(mode)


@pytest.mark.parametrize("mode, suffix", [("1", ".png"), ("L", ".png"), ("LA", ".png"), ("P", ".png"),
                                          ("RGBA", ".png"), ("I;16", ".png"), ("I", ".tif"), ("F 0-1", ".tif"),
                                          ("F 0-255", ".tif")])
def test_every_image_mode_reads_as_its_picture(tmp_path, mode, suffix):
    from datasets.images import read_image

    grey = np.random.default_rng(0).integers(0, 256, (12, 20)).astype(np.uint8)
    image, expected = pil_image(mode, grey)
    path = tmp_path / f"picture{suffix}"
    image.save(path)
    with Image.open(path) as saved:
        assert saved.mode == mode.split()[0]
    np.testing.assert_array_equal(read_image(path), expected)


def test_16_bit_colour_images_keep_their_range(tmp_path):
    import cv2

    from datasets.images import read_image

    rgb = np.random.default_rng(0).integers(0, 256, (10, 14, 3)).astype(np.uint16)
    for suffix in (".png", ".tif"):
        path = tmp_path / f"wide{suffix}"
        cv2.imwrite(str(path), (rgb * 257)[..., ::-1])  # cv2 writes BGR
        np.testing.assert_array_equal(read_image(path), rgb)


def test_unreadable_image_modes_are_refused_by_name(tmp_path):
    import cv2

    from datasets.images import read_image
    from datasets.instances import SampleError

    hdr = tmp_path / "hdr.tif"
    Image.fromarray(np.full((4, 4), 1000.0, np.float32)).save(hdr)
    with pytest.raises(SampleError, match=r"image '.*hdr.tif' is a float image with values in \[1000, 1000\]"):
        read_image(hdr)
    colour_float = tmp_path / "colour_float.tif"
    cv2.imwrite(str(colour_float), np.random.default_rng(0).random((4, 4, 3)).astype(np.float32))
    with pytest.raises(SampleError, match=r"cannot read image '.*colour_float.tif' .*multi-channel float TIFF"):
        read_image(colour_float)


def colour_instances(height: int = 30, width: int = 40) -> tuple[np.ndarray, list[np.ndarray]]:
    """A colour-coded instance mask: red, green (as dark as grey 76) and a dark red on black."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rects = {(255, 0, 0): (2, 2, 15, 12), (0, 130, 0): (18, 2, 35, 12), (10, 0, 0): (5, 16, 30, 27)}
    masks = []
    for colour, (x1, y1, x2, y2) in rects.items():
        rgb[y1:y2, x1:x2] = colour
        mask = np.zeros((height, width), bool)
        mask[y1:y2, x1:x2] = True
        masks.append(mask)
    return rgb, masks


def test_colour_coded_masks_give_one_instance_per_colour(tmp_path):
    from tests.ondisk import build, write_image

    rgb, expected = colour_instances()
    (tmp_path / "masks").mkdir()
    for stem in ("a", "b"):
        write_image(tmp_path / "images" / f"{stem}.png", height=30, width=40)
        Image.fromarray(rgb).save(tmp_path / "masks" / f"{stem}.png")
    masks = build("folder", tmp_path, "val", "dataset.interleave=1").load(0)[1]
    assert len(masks) == 3  # red and green no longer merge, dark red no longer vanishes
    assert sorted(m.sum() for m in masks) == sorted(m.sum() for m in expected)
    for mask in expected:
        assert any(np.array_equal(mask, m) for m in masks)


def test_anti_aliased_colour_masks_are_refused_not_split(tmp_path):
    import cv2

    from datasets.masks import read_label_map
    from datasets.instances import SampleError

    rgb, _ = colour_instances()
    smooth = cv2.GaussianBlur(rgb, (3, 3), 0)  # the blended edges a drawing tool's export leaves
    path = tmp_path / "smooth.png"
    Image.fromarray(smooth).save(path)
    with pytest.raises(SampleError, match=r"mask '.*smooth.png' is colour-coded .* no pixel whose 4 neighbours "
                                          r"share it: blended colours along edges from anti-aliasing or lossy"):
        read_label_map(path)
    jpeg = tmp_path / "lossy.jpg"
    Image.fromarray(rgb).save(jpeg, quality=80)
    with pytest.raises(SampleError, match="blended colours along edges"):
        read_label_map(jpeg)


def test_label_files_of_every_kind(tmp_path):
    """Grey saved as RGB, palette with a transparent index, grey + alpha, 1-bit, 16-bit colour, float."""
    import cv2

    from datasets.masks import read_label_map
    from datasets.instances import SampleError

    labels = np.zeros((10, 12), np.uint8)
    labels[1:4, 1:5], labels[5:9, 6:11] = 3, 7
    Image.fromarray(np.repeat(labels[..., None], 3, axis=2)).save(tmp_path / "grey_as_rgb.png")
    np.testing.assert_array_equal(read_label_map(tmp_path / "grey_as_rgb.png"), labels)

    indices = np.where(labels == 0, 9, labels).astype(np.uint8)  # index 9, transparent, is the background
    palette = Image.fromarray(indices, "P")
    palette.putpalette(list(np.random.default_rng(0).integers(0, 256, 768)))
    palette.save(tmp_path / "palette.png", transparency=9)
    np.testing.assert_array_equal(read_label_map(tmp_path / "palette.png"), labels)

    alpha = np.where(labels > 0, 255, 0).astype(np.uint8)
    Image.fromarray(np.stack([np.where(labels > 0, labels, 200), alpha], axis=2).astype(np.uint8), "LA").save(
        tmp_path / "grey_alpha.png")
    np.testing.assert_array_equal(read_label_map(tmp_path / "grey_alpha.png"), labels)

    Image.fromarray(labels > 0).save(tmp_path / "one_bit.png")
    np.testing.assert_array_equal(read_label_map(tmp_path / "one_bit.png"), np.where(labels > 0, 255, 0))

    cv2.imwrite(str(tmp_path / "wide_colour.png"), np.repeat(labels[..., None], 3, axis=2).astype(np.uint16) * 999)
    with pytest.raises(SampleError, match=r"mask '.*wide_colour.png' is 16-bit colour"):
        read_label_map(tmp_path / "wide_colour.png")
    Image.fromarray(labels.astype(np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(SampleError, match=r"mask '.*float.tif' is a float image"):
        read_label_map(tmp_path / "float.tif")


def test_binary_masks_in_colour_are_refused(tmp_path):
    from datasets.instances import SkippedImageWarning
    from tests.ondisk import build, write_image

    rgb, _ = colour_instances()
    write_image(tmp_path / "Images/Test/a.jpg", height=30, width=40)
    (tmp_path / "GT").mkdir()
    Image.fromarray(rgb).save(tmp_path / "GT/a.png")  # red is grey 76: background by the > 127 threshold
    dataset = build("camo", tmp_path, "test")
    with pytest.warns(SkippedImageWarning, match=r"binary mask '.*a.png' is in colour \(e.g. RGB \(255, 0, 0\)"):
        assert dataset[0]["skipped"] == [0]


def write_raw_coco(path: Path, images: list[dict], annotations: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1}]}))


def coco_folder(root: Path, count: int = 3) -> list[dict]:
    from tests.ondisk import coco_image, write_image

    for i in range(1, count + 1):
        write_image(root / "images" / f"{i}.png", seed=i)
    return [coco_image(i, f"{i}.png") for i in range(1, count + 1)]


def annotation(annotation_id: int, image_id: int, **extra) -> dict:
    from tests.ondisk import box_annotation

    return {"id": annotation_id, "iscrowd": 0, "category_id": 1, **box_annotation(image_id, 2, 2, 20, 20), **extra}


def test_coco_json_whose_parts_disagree_is_named_with_counts(tmp_path):
    from datasets.layout import DataWarning
    from tests.ondisk import build

    images = coco_folder(tmp_path)
    images.append({"id": 4, "file_name": "gone.png", "height": 40, "width": 60})
    images.append({"id": 5, "file_name": "1.png", "height": 40, "width": 60})
    annotations = [annotation(1, 1), annotation(2, 2), annotation(2, 3), annotation(4, 99), annotation(5, 98)]
    write_raw_coco(tmp_path / "annotations.json", images, annotations)
    with pytest.warns(DataWarning) as caught:
        dataset = build("coco", tmp_path, "val", "dataset.coco.val=annotations.json")
    messages = "\n".join(str(w.message) for w in caught)
    assert messages.count(str(tmp_path / "annotations.json")) == 4
    assert "2 of its 5 annotations name an image id that is not among its images (e.g. id 99)" in messages
    assert "1 annotation id(s) appear more than once (e.g. id 2)" in messages
    assert "1 file name(s) are listed under more than one image id (e.g. '1.png')" in messages
    assert "1 of its 5 images have no file" in messages and "'gone.png'" in messages
    assert len(dataset) == 3  # the ids with an annotation of their own: 1, 2, 3


def test_coco_json_with_repeated_image_ids_stops(tmp_path):
    from datasets import DatasetLayoutError
    from tests.ondisk import build

    images = coco_folder(tmp_path, 2)
    images[1]["id"] = 1
    write_raw_coco(tmp_path / "annotations.json", images, [annotation(1, 1)])
    with pytest.raises(DatasetLayoutError, match=r"lists 1 image id\(s\) more than once \(e.g. id 1, 2 times\)"):
        build("coco", tmp_path, "val", "dataset.coco.val=annotations.json")


def test_coco_json_without_annotations_says_so(tmp_path, capsys):
    images = coco_folder(tmp_path)
    write_raw_coco(tmp_path / "test.json", images, [])
    overrides = ["dataset.name=coco", f"dataset.root={tmp_path}", "dataset.coco.test=test.json", *TINY]
    code, message = cli(validate.main, overrides, capsys)
    assert code == 1 and f"'{tmp_path / 'test.json'}' has no annotations (3 images" in message
    assert "Traceback" not in message


def test_coco_json_whose_annotations_are_all_dropped_says_why(tmp_path):
    from datasets import DatasetLayoutError
    from tests.ondisk import build

    write_raw_coco(tmp_path / "test.json", coco_folder(tmp_path), [annotation(1, 1, iscrowd=1)])
    with pytest.raises(DatasetLayoutError, match=r"none of the 1 annotations of '.*test.json' is used: each is a "
                                                 r"crowd"):
        build("coco", tmp_path, "test", "dataset.coco.test=test.json")


def test_coco_training_json_without_annotations_is_images_only_with_auto_prompts(tmp_path):
    from datasets.files import ImagesOnlyDataset
    from tests.ondisk import build

    write_raw_coco(tmp_path / "train.json", coco_folder(tmp_path), [])
    dataset = build("coco", tmp_path, "train", "dataset.coco.train=train.json", "prompt_source=auto")
    assert isinstance(dataset, ImagesOnlyDataset) and len(dataset) == 3


def test_predict_writes_masks_in_the_stored_orientation_and_says_so(tmp_path, capsys):
    import predict

    displayed = np.random.default_rng(2).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    tagged_photo(tmp_path / "images/photo.png", displayed)
    predict.main(["--images", str(tmp_path / "images"), "--box", "2,2,20,40", "--out", str(tmp_path / "out"), *TINY])
    assert "aligned with the images' stored pixels (EXIF orientation tags are not applied" in capsys.readouterr().out
    assert np.array(Image.open(tmp_path / "out/photo.png")).shape == (50, 30)  # the stored 30-wide picture


def test_automatic_instances_of_a_turned_photo_are_not_those_of_the_stored_one(tmp_path):
    """The cache of automatic instances (keyed by image identity) tells the two readings apart."""
    import warnings

    from tests.ondisk import build

    phone_folder(tmp_path, 40, 40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shown, stored = (build("folder", tmp_path, "val", "dataset.interleave=1", f"dataset.exif={exif}")
                         for exif in ("apply", "ignore"))
    assert shown.image_identity(0) != stored.image_identity(0)
    assert stored.image_identity(0).endswith(str(stored.records[0].image.stat().st_mtime_ns))


def test_coco_images_not_of_the_json_size_are_named_before_any_work(tmp_path):
    """Photos annotated as displayed, read as COCO's stored pixels: counted when the split is built."""
    from datasets.layout import DataWarning
    from tests.ondisk import box_annotation, build, coco_image, write_coco_json

    for i in (1, 2):
        tagged_photo(tmp_path / f"images/{i}.png", np.zeros((40, 60, 3), np.uint8))  # displayed 60 wide
    write_coco_json(tmp_path / "test.json", [coco_image(i, f"{i}.png", 40, 60) for i in (1, 2)],
                    [box_annotation(i, 2, 3, 20, 30) for i in (1, 2)])
    with pytest.warns(DataWarning) as caught:
        dataset = build("coco", tmp_path, "test", "dataset.coco.test=test.json")
    sizes = [str(w.message) for w in caught if "not the size" in str(w.message)]
    assert len(sizes) == 1 and "2 of the 2 images of the test split" in sizes[0] and "is 40x60 as read" in sizes[0]
    assert "the json says 60x40: turned by 90 degrees" in sizes[0] and "tags now ignored" in sizes[0]
    with pytest.warns(DataWarning) as caught:
        build("coco", tmp_path, "test", "dataset.coco.test=test.json", "dataset.exif=apply")
    assert not any("not the size" in str(w.message) for w in caught)
    assert len(dataset) == 2


# --- output paths, config ranges and prompts: every mistake is stopped before any work (issue 25)

def forbid_work(monkeypatch, *modules) -> None:
    """Make building a model or a dataset in `modules` fail the test: the check must come first."""
    def work(*args, **kwargs):
        raise AssertionError("work started before the mistake was caught")

    for module in modules:
        for name in ("build_wesam", "build_dataset", "build_network", "Fabric"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, work)


def path_mistake(kind: str, tmp_path: Path, expected: str) -> Path:
    """An output path of the given kind of mistake, for an output that should be an `expected`
    ("file" or "folder")."""
    (tmp_path / "a_file").write_text("keep me")
    (tmp_path / "a_folder").mkdir(exist_ok=True)
    return {"other_kind": tmp_path / ("a_folder" if expected == "file" else "a_file"),
            "below_a_file": tmp_path / "a_file" / "sub" / ("out.json" if expected == "file" else "out"),
            "trailing_slash": Path(f"{tmp_path / 'new'}/")}[kind]


PATH_MESSAGES = {"other_kind": ("is a folder, not a file", "is a file, not a folder"),
                 "below_a_file": ("which is a file, not a folder",) * 2,
                 "trailing_slash": ("ends with '/'",) * 2}


def script_args(script: str, option: str, path: str, tmp_path: Path) -> list[str]:
    """A command line of `script` that is right but for `option`'s path."""
    write_image(tmp_path / "images/a.png")
    if script == "predict":
        return ["--images", str(tmp_path / "images"), "--box", "1,1,20,20", "--out", path, *TINY]
    if script == "export":
        return ["--ckpt", str(tmp_path / "adapter.safetensors"), "--out", path, *TINY]
    return [option, path, *TINY]  # validate --out / --per-image


SCRIPT_OUTPUTS = [("predict", "--out", "folder"), ("export", "--out", "file"), ("validate", "--out", "file"),
                  ("validate", "--per-image", "file")]


@pytest.mark.parametrize("script, option, expected, kind", [
    (*output, kind) for output in SCRIPT_OUTPUTS
    for kind in ("other_kind", "below_a_file") + (("trailing_slash",) if output[2] == "file" else ())])
def test_script_output_path_mistakes(tmp_path, capsys, monkeypatch, script, option, expected, kind):
    import predict
    from tools import export

    module = {"predict": predict, "export": export, "validate": validate}[script]
    forbid_work(monkeypatch, module)
    path = path_mistake(kind, tmp_path, expected)
    given = f"{path}/" if kind == "trailing_slash" else str(path)
    code, message = cli(module.main, script_args(script, option, given, tmp_path), capsys)
    assert code == 1 and message.startswith(f"Error: {option} '")
    assert PATH_MESSAGES[kind][expected == "folder"] in message
    assert "Traceback" not in message and (tmp_path / "a_file").read_text() == "keep me"


def test_validate_visualize_folder_is_a_file(tmp_path, capsys, monkeypatch):
    forbid_work(monkeypatch, validate)
    (tmp_path / "metrics-visualize").write_text("keep me")
    code, message = cli(validate.main, ["--ckpt", str(tmp_path / "adapter.safetensors"), "--out",
                                        str(tmp_path / "metrics.json"), "--visualize", "2", *TINY], capsys)
    assert code == 1 and message.startswith(f"Error: --visualize's folder '{tmp_path / 'metrics-visualize'}' is a file")
    assert "choose another --out" in message and (tmp_path / "metrics-visualize").read_text() == "keep me"


def test_output_in_a_folder_that_cannot_be_written(tmp_path, capsys, monkeypatch):
    """A read-only folder (or file system): the message names the option and the reason."""
    import predict

    target = read_only_folder(tmp_path / "locked", monkeypatch)
    forbid_work(monkeypatch, predict, validate)
    code, message = cli(validate.main, ["--per-image", str(target / "rows.csv"), *TINY], capsys)
    assert code == 1 and f"--per-image '{target / 'rows.csv'}' cannot be written (" in message
    assert "choose a writable --per-image" in message
    write_image(tmp_path / "images/a.png")
    code, message = cli(predict.main, ["--images", str(tmp_path / "images"), "--box", "1,1,9,9",
                                       "--out", str(target / "masks"), *TINY], capsys)
    assert code == 1 and f"--out '{target / 'masks'}' cannot be written (" in message


@pytest.mark.parametrize("key, kind", [("out_dir", "below_a_file"), ("auto.cache", "other_kind"),
                                       ("auto.cache", "below_a_file")])
def test_adaptation_output_folders(tiny_overrides, tmp_path, capsys, monkeypatch, key, kind):
    forbid_work(monkeypatch, adaptation)
    path = path_mistake(kind, tmp_path, "folder")
    overrides = [o for o in tiny_overrides if not o.startswith(f"{key}=")] + [f"{key}={path}", "prompt_source=auto"]
    code, message = cli(adaptation.main, overrides, capsys)
    assert code == 1 and message.startswith(f"Error: {key} '{path}'") and f"choose another {key}=..." in message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("tool, argv, option, expected", [
    ("benchmark_speed", ["--model", "vit_tiny", "--size", "64", "--device", "cpu"], "--out", "file"),
    ("benchmark_shift", [], "--out", "folder"),
    ("benchmark_shift", [], "--runs", "folder"),
    ("paper_table", ["--table", "camouflaged"], "--out", "file"),
    ("paper_table", ["--table", "camouflaged"], "--runs", "folder"),
    ("pretrain_source_sam", [], "--out", "folder"),
    ("pretrain_source_sam", [], "--export", "file"),
])
@pytest.mark.parametrize("kind", ["other_kind", "below_a_file"])
def test_tool_output_path_mistakes(tmp_path, capsys, monkeypatch, tool, argv, option, expected, kind):
    from tests.conftest import load_tool

    module = load_tool(tool)
    forbid_work(monkeypatch, module)
    if tool == "paper_table":
        monkeypatch.setattr(module, "plan", lambda args: pytest.fail("work started"))
    if tool == "benchmark_shift":
        monkeypatch.setattr(module, "run_all", lambda args: pytest.fail("work started"))
    path = path_mistake(kind, tmp_path, expected)
    code, message = cli(module.main, [*argv, option, str(path)], capsys)
    assert code == 1 and message.startswith(f"Error: {option} '{path}'")
    assert PATH_MESSAGES[kind][expected == "folder"] in message and (tmp_path / "a_file").read_text() == "keep me"


def test_auto_instances_cache_below_a_file(tmp_path, capsys, monkeypatch):
    from tests.conftest import load_tool

    module = load_tool("auto_instances")
    forbid_work(monkeypatch, module)
    path = path_mistake("below_a_file", tmp_path, "folder")
    code, message = cli(module.main, [f"auto.cache={path}", *TINY], capsys)
    assert code == 1 and "The cache file" in message and "which is a file" in message
    assert "choose another auto.cache=..." in message


def test_make_coco_c_output_below_a_file(tmp_path):
    write_image(tmp_path / "images/a.jpg")
    (tmp_path / "root").write_text("keep me")
    result = run_script("tools/make_coco_c.py", "--root", str(tmp_path / "root"), "--images", str(tmp_path / "images"),
                        "--corruptions", "fog")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: --root's output folder")
    assert "which is a file, not a folder; choose another --root" in result.stderr


def test_a_write_that_fails_late_is_a_message(tmp_path, capsys, monkeypatch):
    """validate.py's --per-image path is taken by a folder while the evaluation runs: the check
    passed, the write fails, and the message names the file (no traceback)."""
    import engine.evaluate

    per_image = tmp_path / "rows.csv"
    real_evaluate = validate.evaluate

    def evaluate_then_block(*args, **kwargs):
        per_image.mkdir()
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(validate, "evaluate", evaluate_then_block)
    assert engine.evaluate.evaluate is real_evaluate
    overrides = TINY + ["dataset.synthetic.num_test=2", "dataset.synthetic.image_size=64"]
    code, message = cli(validate.main, ["--per-image", str(per_image), *overrides], capsys)
    assert code == 1 and message.startswith(f"Error: Could not write '{per_image}' (")


def test_a_png_that_cannot_be_written_is_a_message(tmp_path):
    import predict

    (tmp_path / "taken.png").mkdir()
    with pytest.raises(files.OutputPathError, match=f"Could not write '{tmp_path / 'taken.png'}'"):
        predict.save_png(np.zeros((4, 4), np.uint8), tmp_path / "taken.png")


@pytest.mark.parametrize("script", ["adaptation", "validate", "predict", "export", "auto_instances"])
@pytest.mark.parametrize("override, expected", [
    ("seed=-1", "'seed' is -1; it must be in [0, 2147483647]"),
    ("loss.temperature=0", "'loss.temperature' is 0; it must be more than 0"),
    ("opt.learning_rate=2.0", "'opt.learning_rate' is 2; it must be in (0, 1]"),
    ("auto.box_nms_thresh=1.5", "'auto.box_nms_thresh' is 1.5; it must be in [0, 1]"),
    ("opt.decay_steps=[10,-1]", "'opt.decay_steps' holds -1; each of its numbers must be 0 or more"),
])
def test_config_values_outside_their_range_stop_every_script(tmp_path, capsys, monkeypatch, script, override,
                                                              expected):
    import predict
    from tests.conftest import load_tool

    modules = {"adaptation": adaptation, "validate": validate, "predict": predict}
    module = modules.get(script) or load_tool(script)
    forbid_work(monkeypatch, module)
    write_image(tmp_path / "images/a.png")
    argv = {"adaptation": [f"out_dir={tmp_path / 'run'}"], "validate": [],
            "predict": ["--images", str(tmp_path / "images"), "--box", "1,1,9,9", "--out", str(tmp_path / "out")],
            "export": ["--ckpt", str(tmp_path / "adapter.safetensors"), "--out", str(tmp_path / "merged.pth")],
            "auto_instances": [f"out_dir={tmp_path / 'run'}"]}[script]
    code, message = cli(module.main, [*argv, *TINY, override], capsys)
    assert code == 1 and f"Error: Config key {expected}" in message
    assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists()


def test_non_finite_value_in_a_saved_config_json(tmp_path, capsys):
    """A run's config.json given to validate.py can hold NaN (Python's json writes and reads it)."""
    config = tmp_path / "config.json"
    config.write_text('{"metric": {"threshold": NaN}}')
    code, message = cli(validate.main, ["--config", str(config), *TINY], capsys)
    assert code == 1 and "Config key 'metric.threshold' is nan; it must be a finite number" in message


# Each prompt mistake, however the prompt is given: (the arguments, the file's content, what the message says).
# Images are 60 x 40 pixels (write_image's default).
PROMPT_MISTAKES = {
    "box_nan": (["--box", "nan,0,5,5"], None, "--box 'nan,0,5,5' holds a number that is not finite"),
    "box_inf": (["--box", "0,0,inf,5"], None, "--box '0,0,inf,5' holds a number that is not finite"),
    "box_text": (["--box", "a,b,c,d"], None, "--box 'a,b,c,d' is not numbers separated by commas"),
    "box_three": (["--box", "1,2,3"], None, "--box '1,2,3' has 3 number(s); a box is 4: x1, y1, x2, y2"),
    "box_five": (["--box", "1,2,3,4,5"], None, "has 5 number(s); a box is 4"),
    "box_flat_x": (["--box", "5,0,5,10"], None, "--box '5,0,5,10' is an empty box: x1, y1, x2, y2 needs x1 < x2"),
    "box_swapped_x": (["--box", "10,0,5,10"], None, "is an empty box"),
    "box_swapped_y": (["--box", "0,10,5,2"], None, "is an empty box"),
    "box_right_of_image": (["--box", "70,0,90,10"], None, "--box '70,0,90,10' lies outside the image 'a.png' "
                                                        "(60 x 40 pixels)"),
    "box_above_image": (["--box", "0,-30,10,-5"], None, "lies outside the image 'a.png'"),
    "second_box": (["--box", "0,0,5,5", "--box", "0,0,5"], None, "--box '0,0,5' has 3 number(s)"),
    "points_nan": (["--points", "nan,1"], None, "--points 'nan,1' holds a number that is not finite"),
    "points_odd": (["--points", "1,2,3"], None, "--points '1,2,3' has 3 number(s); points are pairs x,y"),
    "points_text": (["--points", "x,1"], None, "--points 'x,1' is not numbers separated by commas"),
    "points_outside": (["--points", "5,5,61,10"], None, "--points '5,5,61,10': the point 61,10 lies outside"),
    "points_negative": (["--points=-1,5"], None, "the point -1,5 lies outside the image 'a.png'"),
    "json_nan": (["--boxes-json"], '{"a.png": [[NaN, 0, 5, 5]]}', "box 0 holds a number that is not finite"),
    "json_infinity": (["--boxes-json"], '{"a.png": [[0, 0, 5, 5], [0, 0, Infinity, 5]]}',
                      "box 1 holds a number that is not finite"),
    "json_string": (["--boxes-json"], '{"a.png": [["1", 2, 3, 4]]}', "box 0 is not a list of numbers"),
    "json_bool": (["--boxes-json"], '{"a.png": [[true, 0, 5, 5]]}', "box 0 is not a list of numbers"),
    "json_null": (["--boxes-json"], '{"a.png": [null]}', "box 0 is not a list of numbers"),
    "json_short": (["--boxes-json"], '{"a.png": [[0, 0, 5]]}', "box 0 has 3 number(s); a box is 4"),
    "json_flat": (["--boxes-json"], '{"a.png": [[0, 5, 10, 5]]}', "box 0 is an empty box"),
    "json_swapped": (["--boxes-json"], '{"a.png": [[10, 0, 5, 5]]}', "box 0 is an empty box"),
    "json_outside": (["--boxes-json"], '{"a.png": [[100, 100, 200, 200]]}', "box 0 lies outside the image 'a.png'"),
    "coco_zero_width": (["--coco"], [[0, 0, 0, 5]], "the bbox of annotation 1 is an empty box: x, y, width, height "
                                                    "needs width and height more than 0"),
    "coco_negative_height": (["--coco"], [[0, 0, 5, -3]], "the bbox of annotation 1 is an empty box"),
    "coco_nan": (["--coco"], [[0, 0, 5, 5], [float("nan"), 0, 5, 5]], "the bbox of annotation 2 holds a number"),
    "coco_text": (["--coco"], ["0,0,5,5"], "the bbox of annotation 1 is not a list of numbers"),
    "coco_outside": (["--coco"], [[60, 0, 5, 5]], "the bbox of annotation 1 lies outside the image 'a.png'"),
}


@pytest.mark.parametrize("case", sorted(PROMPT_MISTAKES))
def test_every_way_of_giving_prompts_is_checked_alike(tmp_path, capsys, monkeypatch, case):
    import predict

    forbid_work(monkeypatch, predict)
    write_image(tmp_path / "images/a.png")
    argv, content, expected = PROMPT_MISTAKES[case]
    if argv == ["--boxes-json"]:
        (tmp_path / "boxes.json").write_text(content)
        argv = ["--boxes-json", str(tmp_path / "boxes.json")]
    elif argv == ["--coco"]:
        annotations = [{"id": i + 1, "image_id": 1, "bbox": bbox} for i, bbox in enumerate(content)]
        (tmp_path / "coco.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png"}],
                                                        "annotations": annotations}))
        argv = ["--coco", str(tmp_path / "coco.json")]
    code, message = cli(predict.main, ["--images", str(tmp_path / "images"), *argv, "--out", str(tmp_path / "out"),
                                       *TINY], capsys)
    assert code == 1 and expected in message and "Traceback" not in message
    if content is not None:  # the file and the image are named
        assert "The boxes of 'a.png' in" in message
    assert not (tmp_path / "out").exists()


def test_missing_parent_folders_are_no_mistake(tmp_path):
    """The check creates nothing; the writer creates the missing folders."""
    path = files.check_output(tmp_path / "a/b/metrics.json", "--out")
    assert not (tmp_path / "a").exists() and list(tmp_path.iterdir()) == []
    files.write_json(path, {"miou": 0.5})
    assert json.loads(path.read_text()) == {"miou": 0.5}
    assert files.check_output(tmp_path / "a/b/metrics.json", "--out") == path, "an existing file is overwritten"
    assert files.check_output(tmp_path / "a", "out_dir", "folder") == tmp_path / "a"
    with pytest.raises(files.OutputPathError, match="--out is empty"):
        files.check_output("", "--out")


def test_benchmark_shift_checks_every_cell_before_the_first_run(tmp_path, capsys, monkeypatch):
    """A seed outside its range stops the benchmark before any run, not at that seed's first cell."""
    from tests.conftest import load_tool

    module = load_tool("benchmark_shift")
    monkeypatch.setattr(module, "run_all", lambda args: pytest.fail("work started"))
    code, message = cli(module.main, ["--seeds", "0,-1", "--runs", str(tmp_path / "runs"), "--out",
                                      str(tmp_path / "results"), *TINY], capsys)
    assert code == 1 and "Config key 'seed' is -1; it must be in [0, 2147483647]" in message
    assert not (tmp_path / "runs").exists()
