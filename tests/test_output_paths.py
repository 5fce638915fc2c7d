"""Output paths are checked before any work, on every script and tool: a file where a folder is wanted
or the other way round, a path below a file, a trailing '/' on a file, a folder that cannot be written
(read-only, or a read-only file system) each stop with one line naming the option and the fix, and
leave every file as it was; a write that fails late is a message too; missing parent folders are no
mistake. What an output may replace: tests/test_outputs.py."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest

import adaptation
import engine.evaluate
import predict
import validate
from tests.conftest import TINY, cli, forbid_work, load_tool, run_script
from tests.ondisk import write_image
from tools import export
from utils import files


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


def test_out_dir_is_a_file(tiny_overrides, tmp_path, capsys):
    (tmp_path / "run").write_text("a file")
    code, message = cli(adaptation.main, tiny_overrides, capsys)
    assert code == 1 and f"out_dir '{tmp_path / 'run'}' is a file" in message and "another out_dir" in message
    assert (tmp_path / "run").read_text() == "a file"


def test_out_dir_on_a_read_only_file_system(tiny_overrides, tmp_path, capsys, monkeypatch):
    read_only_folder(tmp_path / "run", monkeypatch)
    code, message = cli(adaptation.main, tiny_overrides, capsys)
    assert code == 1 and f"out_dir '{tmp_path / 'run'}' cannot be written" in message and "writable out_dir" in message


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
    (tmp_path / "taken.png").mkdir()
    with pytest.raises(files.OutputPathError, match=f"Could not write '{tmp_path / 'taken.png'}'"):
        predict.save_png(np.zeros((4, 4), np.uint8), tmp_path / "taken.png")


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
