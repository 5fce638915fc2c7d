"""Outputs never replace what a user owns: no script writes over one of its inputs, over a file of a
run, or over files that no run of this repository wrote; two images never write one mask file;
--resume writes only into a run folder (or where out_dir= says); `~` and $VARIABLES name the same
folder for every writer; every command we print pastes into a shell as it is. Each refusal is one
line naming the file and the fix, and leaves every file as it was."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import adaptation
import predict
import validate
from engine.resume import adaptation_command
from models import build_sam
from tests.conftest import TINY, cli, load_tool, snapshot, tiny_config_overrides
from tests.ondisk import write_image
from tools import export


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished 2-step run of the tiny SAM in a folder whose path holds a space."""
    folder = tmp_path_factory.mktemp("outputs") / "my runs" / "a"
    adaptation.main(tiny_config_overrides(folder) + ["num_steps=2"])
    return folder


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` (its run's TensorBoard logs but not) and its bytes."""
    return snapshot(folder)


def refused(main, argv: list[str], capsys, *expected: str) -> str:
    """Run main(argv) as the command line does: it must stop with one line holding each of `expected`."""
    code, message = cli(main, argv, capsys)
    assert code == 1 and message.startswith("Error: ") and len(message.splitlines()) == 1, message
    for text in expected:
        assert text in message, message
    return message


# --- predict.py

@pytest.fixture
def images(tmp_path) -> Path:
    """A folder holding a.jpg and a.png, two images whose masks would both be a.png."""
    write_image(tmp_path / "images/a.png", seed=1, height=48, width=64)
    write_image(tmp_path / "images/a.jpg", seed=2, height=48, width=64)
    return tmp_path / "images"


def predict_args(images: Path, out: Path, *extra: str) -> list[str]:
    return ["--images", str(images), "--box", "2,2,40,30", "--out", str(out), *extra, *TINY]


def test_predict_refuses_to_write_into_the_images_folder(images, capsys):
    before = files_of(images)
    refused(predict.main, predict_args(images, images), capsys,
            f"--out '{images}' is also --images '{images}', which the script reads", "Choose another --out")
    assert files_of(images) == before
    single = images / "a.png"  # one image given, --out its folder: its mask would be the image's own name
    refused(predict.main, predict_args(single, images), capsys, f"--out '{single}' is also --images '{single}'")
    assert files_of(images) == before


def test_images_sharing_a_stem_get_masks_of_their_own(images, tmp_path, capsys):
    before = files_of(images)
    predict.main(predict_args(images, tmp_path / "masks"))
    assert "their masks are named after the whole file name (a.jpg.png, a.jpg_overlay.png)" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == [
        "a.jpg.png", "a.jpg_overlay.png", "a.png.png", "a.png_overlay.png"]
    overlays = [np.asarray(Image.open(tmp_path / "masks" / f"a.{kind}_overlay.png")) for kind in ("jpg", "png")]
    assert not np.array_equal(*overlays), "each overlay is drawn on its own image"
    assert files_of(images) == before
    with pytest.raises(predict.ConfigError, match="'a.jpg' and 'a.jpg.tif' would both write 'a.jpg.png'; rename one"):
        predict.output_stems([Path("a.jpg"), Path("a.png"), Path("a.jpg.tif")])


def test_predict_replaces_only_files_it_wrote(images, tmp_path, capsys):
    """An --out holding a person's files (ground-truth masks of the same names) is refused; an
    --out of an earlier predict.py is written again."""
    truth = tmp_path / "truth"
    write_image(truth / "b.png", seed=5, height=48, width=64)
    write_image(images.parent / "b.jpg", seed=6, height=48, width=64)
    before = files_of(truth)
    refused(predict.main, predict_args(images.parent / "b.jpg", truth), capsys,
            f"--out: '{truth / 'b.png'}' is there already and predict.py did not write it", "choose another --out")
    assert files_of(truth) == before
    predict.main(predict_args(images.parent / "b.jpg", tmp_path / "masks"))
    first = files_of(tmp_path / "masks")
    predict.main(predict_args(images.parent / "b.jpg", tmp_path / "masks"))
    assert files_of(tmp_path / "masks") == first
    # a prompt file named like an output: --format rle's masks.json
    coco = tmp_path / "masks/masks.json"
    coco.write_text('{"images": [{"id": 1, "file_name": "b.jpg", "height": 48, "width": 64}], '
                    '"annotations": [{"id": 1, "image_id": 1, "bbox": [2, 2, 30, 20], "category_id": 1}]}')
    code, message = cli(predict.main, ["--images", str(images.parent / "b.jpg"), "--coco", str(coco), "--out",
                                       str(tmp_path / "masks"), "--format", "rle", *TINY], capsys)
    assert code == 1 and f"--out '{coco}' is also --coco '{coco}'" in message


# --- validate.py and tools/export.py

def test_validate_writes_over_no_input_and_no_run_file(run, tmp_path, capsys):
    adapter = run / "checkpoints/best-lora.safetensors"
    before = files_of(run)
    refused(validate.main, ["--ckpt", str(adapter), "--out", str(run / "config.json")], capsys,
            f"--out '{run / 'config.json'}' is also the config file '{run / 'config.json'}'")
    refused(validate.main, ["--ckpt", str(adapter), "--out", str(run / "summary.json")], capsys,
            f"--out '{run / 'summary.json'}' is a file of the run in '{run}'")
    refused(validate.main, ["--ckpt", str(adapter), "--out", str(tmp_path / "m.json"), "--per-image",
                            str(tmp_path / "m.json")], capsys, "--per-image and --out are the same path")
    refused(validate.main, ["--ckpt", str(adapter), "--out", str(adapter)], capsys, f"is also --ckpt '{adapter}'")
    assert files_of(run) == before and not (tmp_path / "m.json").exists()


def test_export_writes_over_no_input_and_no_run_file(run, tmp_path, capsys):
    adapter = run / "checkpoints/best-lora.safetensors"
    sam = tmp_path / "sam_vit_tiny.pth"
    torch.save(build_sam("vit_tiny").state_dict(), sam)
    before, sam_bytes = files_of(run), sam.read_bytes()
    for out, expected in [(adapter, f"--out '{adapter}' is also --ckpt"),
                          (sam, f"--out '{sam}' is also model.checkpoint"),
                          (run / "checkpoints/last-lora.safetensors", f"is a file of the run in '{run}'"),
                          (run, f"--out '{run}' is a folder, not a file"),
                          (adapter.parent, f"--out '{adapter.parent}' is a folder, not a file")]:
        refused(export.main, ["--ckpt", str(adapter), "--out", str(out), f"model.checkpoint={sam}"], capsys, expected)
    assert files_of(run) == before and sam.read_bytes() == sam_bytes


# --- adaptation.py: run folders

def test_resume_of_a_checkpoint_outside_its_run_folder_is_refused_with_a_command_that_works(run, tmp_path, capsys):
    """A last.ckpt copied to backup/ used to continue in the folder above it, writing over the
    metrics.csv and summary.json a person kept there; the printed command continues it in a folder
    of its own, pasted as it is (the path holds a space)."""
    project = tmp_path / "my project"
    (project / "backup").mkdir(parents=True)
    (project / "metrics.csv").write_text("mine\n")
    (project / "summary.json").write_text('{"mine": true}\n')
    (project / "backup/last.ckpt").write_bytes((run / "checkpoints/last.ckpt").read_bytes())
    before, run_before = files_of(project), files_of(run)
    message = refused(adaptation.main, ["--resume", str(project / "backup/last.ckpt"), "num_steps=3"], capsys,
                      f"Checkpoint '{project / 'backup/last.ckpt'}' is not in a run folder",
                      f"'{project}' holds no run")
    assert files_of(project) == before
    command = message.split("Continue the run in a folder of its own: ")[1]
    words = shlex.split(command)
    assert words == ["python", "adaptation.py", "--resume", str(project / "backup/last.ckpt"),
                     f"out_dir={project / 'backup/resumed'}", "num_steps=3"]
    adaptation.main(words[2:])
    assert files_of(project)["metrics.csv"] == b"mine\n" and files_of(project)["summary.json"] == b'{"mine": true}\n'
    resumed = project / "backup/resumed"
    assert [row.split(",")[0] for row in (resumed / "metrics.csv").read_text().splitlines()] == ["step", "0", "2", "3"]
    assert files_of(run) == run_before, "the run the checkpoint came from is untouched"


def test_a_new_run_never_writes_over_files_no_run_wrote(tmp_path, capsys):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "config.json").write_text('{"editor": "mine"}\n')
    (folder / "metrics.csv").write_text("mine\n")
    before = files_of(folder)
    refused(adaptation.main, tiny_config_overrides(folder), capsys,
            f"out_dir '{folder}' holds config.json, metrics.csv, not written by a run of this repository")
    assert files_of(folder) == before and not (folder / ".lock").exists()
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    refused(adaptation.main, tiny_config_overrides(data) + ["dataset.name=folder", f"dataset.root={data}"], capsys,
            f"out_dir '{data}' is also dataset.root '{data}'")
    assert sorted(data.rglob("*")) == [data / "images"]


def test_the_printed_resume_command_pastes_into_a_shell(run, capsys):
    """With a space in out_dir, the --resume command we print is quoted: a shell gives adaptation.py
    the checkpoint's path as one word."""
    message = refused(adaptation.main, tiny_config_overrides(run), capsys, f"'{run}' already holds a run")
    command = re.search(r"Continue it with: (.*) \(or choose another out_dir=\.\.\.\)", message).group(1)
    words = subprocess.run(["bash", "-c", "printf '%s\\n' " + command], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    assert words == ["python", "adaptation.py", "--resume", str(run / "checkpoints/last.ckpt")]
    assert adaptation_command("--resume", "a b/c'd") == """python adaptation.py --resume 'a b/c'"'"'d'"""


def test_home_folder_in_out_dir_is_one_folder_for_every_writer(tmp_path, monkeypatch):
    """out_dir="~/runs/x" in a config file made a folder named '~' in the working directory while
    TensorBoard wrote to the home folder; now all of the run is in the home folder, and a --resume
    given with ~ (quoted, so no shell expanded it) finds it."""
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    config = tmp_path / "config.py"
    config.write_text("config = {'out_dir': '~/runs/x', 'num_steps': 2}\n")
    overrides = [o for o in tiny_config_overrides(tmp_path) if not o.startswith(("out_dir", "num_steps"))]
    adaptation.main(["--config", str(config), *overrides])
    assert list(work.iterdir()) == []
    run = home / "runs/x"
    assert {"config.json", "metrics.csv", "summary.json", "checkpoints", "tensorboard"} <= {
        path.name for path in run.iterdir()}
    assert list((run / "tensorboard").iterdir()), "TensorBoard writes into the run's folder"
    adaptation.main(["--resume", "~/runs/x/checkpoints/last.ckpt", "num_steps=3"])
    assert (run / "metrics.csv").read_text().splitlines()[-1].startswith("3,")
    assert list(work.iterdir()) == []


# --- tools

def test_pretraining_writes_over_no_run_state_and_no_foreign_file(tmp_path, capsys):
    pretrain = load_tool("pretrain_source_sam")
    folder = tmp_path / "pretrain"
    folder.mkdir()
    (folder / "metrics.csv").write_text("mine\n")
    refused(pretrain.main, ["--out", str(folder), "--model-type", "vit_tiny", "--steps", "1"], capsys,
            f"--out '{folder}' holds metrics.csv, not written by a run of this repository")
    assert sorted(p.name for p in folder.iterdir()) == ["metrics.csv"]
    (folder / "last.ckpt").write_bytes(b"a run's state")
    refused(pretrain.main, ["--out", str(folder), "--export", str(folder / "last.ckpt")], capsys,
            f"--export '{folder / 'last.ckpt'}' is also the run's checkpoint")
    assert (folder / "last.ckpt").read_bytes() == b"a run's state"


def test_coco_c_refuses_to_read_its_own_output_folder(tmp_path):
    make_coco_c = load_tool("make_coco_c")
    fog = tmp_path / "corruption/fog"
    write_image(fog / "000000000001.jpg", seed=1, height=64, width=64)
    before = files_of(tmp_path)
    with pytest.raises(make_coco_c.OutputPathError, match=f"--images '{fog}' is one of the output folders"):
        make_coco_c.main(["--root", str(tmp_path), "--images", str(fog), "--corruptions", "fog,snow"])
    assert files_of(tmp_path) == before
