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


# --- output paths, config ranges and prompts: every mistake is stopped before any work (issue 25)

def forbid_work(monkeypatch, *modules) -> None:
    """Make building a model or a dataset in `modules` fail the test: the check must come first."""
    def work(*args, **kwargs):
        raise AssertionError("work started before the mistake was caught")

    for module in modules:
        for name in ("build_wesam", "build_dataset", "build_sam_at_size", "Fabric"):
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

    if os.geteuid() == 0:  # root writes through permissions: simulate the file system's answer
        def read_only(*args, **kwargs):
            raise OSError(errno.EROFS, "Read-only file system")
        monkeypatch.setattr(paths.tempfile, "TemporaryFile", read_only)
    else:
        (tmp_path / "locked").mkdir()
        (tmp_path / "locked").chmod(0o555)
    forbid_work(monkeypatch, predict, validate)
    target = tmp_path / "locked"
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
    import utils.evaluate

    per_image = tmp_path / "rows.csv"
    real_evaluate = validate.evaluate

    def evaluate_then_block(*args, **kwargs):
        per_image.mkdir()
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(validate, "evaluate", evaluate_then_block)
    assert utils.evaluate.evaluate is real_evaluate
    overrides = TINY + ["dataset.synthetic.num_test=2", "dataset.synthetic.image_size=64"]
    code, message = cli(validate.main, ["--per-image", str(per_image), *overrides], capsys)
    assert code == 1 and message.startswith(f"Error: Could not write '{per_image}' (")


def test_a_png_that_cannot_be_written_is_a_message(tmp_path):
    import predict

    (tmp_path / "taken.png").mkdir()
    with pytest.raises(paths.OutputPathError, match=f"Could not write '{tmp_path / 'taken.png'}'"):
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
    from utils.checkpoint import write_json

    path = paths.check_output(tmp_path / "a/b/metrics.json", "--out")
    assert not (tmp_path / "a").exists() and list(tmp_path.iterdir()) == []
    write_json(path, {"miou": 0.5})
    assert json.loads(path.read_text()) == {"miou": 0.5}
    assert paths.check_output(tmp_path / "a/b/metrics.json", "--out") == path, "an existing file is overwritten"
    assert paths.check_output(tmp_path / "a", "out_dir", "folder") == tmp_path / "a"
    with pytest.raises(paths.OutputPathError, match="--out is empty"):
        paths.check_output("", "--out")


def test_benchmark_shift_checks_every_cell_before_the_first_run(tmp_path, capsys, monkeypatch):
    """A seed outside its range stops the benchmark before any run, not at that seed's first cell."""
    from tests.conftest import load_tool

    module = load_tool("benchmark_shift")
    monkeypatch.setattr(module, "run_all", lambda args: pytest.fail("work started"))
    code, message = cli(module.main, ["--seeds", "0,-1", "--runs", str(tmp_path / "runs"), "--out",
                                      str(tmp_path / "results"), *TINY], capsys)
    assert code == 1 and "Config key 'seed' is -1; it must be in [0, 2147483647]" in message
    assert not (tmp_path / "runs").exists()
