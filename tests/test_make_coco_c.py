"""tools/make_coco_c.py on a tiny COCO root: outputs, resuming, crash leftovers, bad sources, errors."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "make_coco_c.py"
SIZES = {"000000000001.jpg": (40, 48), "000000000002.jpg": (64, 33), "000000000003.jpg": (50, 50)}  # (w, h)


def load_tool():
    """tools/make_coco_c.py as the module `make_coco_c` (tools/ is not a package). It is registered
    in sys.modules so that dataclasses and the worker pool's pickling can find it by name."""
    spec = importlib.util.spec_from_file_location("make_coco_c", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_coco_c"] = module
    spec.loader.exec_module(module)
    return module


make_coco_c = load_tool()


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    """tmp_path/coco with val2017/ holding three small photo-like JPEGs of different sizes."""
    rng = np.random.default_rng(0)
    images = tmp_path / "coco" / "val2017"
    images.mkdir(parents=True)
    for name, (width, height) in SIZES.items():
        pixels = rng.integers(40, 216, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        Image.fromarray(pixels).resize((width, height), Image.BICUBIC).save(images / name, quality=90)
    return tmp_path / "coco"


def outputs(root: Path, corruptions: tuple[str, ...] = ("fog", "snow"), folder_suffix: str = "") -> list[Path]:
    return [root / "corruption" / (c + folder_suffix) / name for c in corruptions for name in SIZES]


def run(root: Path, *extra: str) -> int:
    return make_coco_c.main(["--root", str(root), "--corruptions", "fog,snow", *extra])


def test_writes_decodable_copies_of_the_right_size(coco_root: Path, capsys: pytest.CaptureFixture) -> None:
    assert run(coco_root) == 0
    for path in outputs(coco_root):
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB" and image.size == SIZES[path.name]
            with Image.open(coco_root / "val2017" / path.name) as source:
                assert not np.array_equal(np.asarray(image), np.asarray(source.convert("RGB")))
    assert "written: 6, skipped (already there): 0, failed: 0" in capsys.readouterr().out


def test_second_run_skips_everything(coco_root: Path, capsys: pytest.CaptureFixture) -> None:
    run(coco_root)
    mtimes = {path: path.stat().st_mtime_ns for path in outputs(coco_root)}
    capsys.readouterr()
    assert run(coco_root) == 0
    assert "written: 0, skipped (already there): 6, failed: 0" in capsys.readouterr().out
    assert {path: path.stat().st_mtime_ns for path in outputs(coco_root)} == mtimes


def test_crash_leftover_is_redone_with_the_same_bytes(coco_root: Path, capsys: pytest.CaptureFixture) -> None:
    run(coco_root)
    complete = {path: path.read_bytes() for path in outputs(coco_root)}
    # a run killed while writing leaves the temporary file and no final file
    victim = outputs(coco_root)[1]
    victim.unlink()
    victim.with_name(victim.name + ".tmp").write_bytes(complete[victim][:100])
    capsys.readouterr()
    assert run(coco_root) == 0
    assert "written: 1, skipped (already there): 5" in capsys.readouterr().out
    assert {path: path.read_bytes() for path in outputs(coco_root)} == complete
    assert not list(coco_root.glob("corruption/*/*.tmp"))


def test_workers_write_the_same_bytes(coco_root: Path, tmp_path: Path) -> None:
    run(coco_root)
    serial = {path.relative_to(coco_root): path.read_bytes() for path in outputs(coco_root)}
    other = tmp_path / "other"
    run(other, "--images", str(coco_root / "val2017"), "--workers", "2")
    assert {path.relative_to(other): path.read_bytes() for path in outputs(other)} == serial


def test_unreadable_source_is_skipped_and_counted(coco_root: Path, capsys: pytest.CaptureFixture) -> None:
    good = (coco_root / "val2017" / "000000000001.jpg").read_bytes()
    (coco_root / "val2017" / "000000000004.jpg").write_bytes(good[: len(good) // 3])  # truncated
    assert run(coco_root) == 1
    captured = capsys.readouterr()
    assert "failed: 1 unusable image(s), 2 output(s) not written" in captured.out
    assert "000000000004.jpg" in captured.err
    assert all(path.exists() for path in outputs(coco_root))
    assert not list(coco_root.glob("corruption/*/000000000004.jpg*"))


def test_too_small_source_is_skipped_and_counted(coco_root: Path, capsys: pytest.CaptureFixture) -> None:
    Image.new("RGB", (20, 64)).save(coco_root / "val2017" / "000000000005.jpg")
    assert run(coco_root) == 1
    captured = capsys.readouterr()
    assert "failed: 1 unusable image(s)" in captured.out and "000000000005.jpg" in captured.err


def test_other_severity_writes_its_own_folders(coco_root: Path) -> None:
    assert run(coco_root, "--severity", "2") == 0
    assert all(path.exists() for path in outputs(coco_root, folder_suffix="_s2"))
    assert not (coco_root / "corruption" / "fog").exists()


def test_missing_val2017_names_the_folder(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as error:
        make_coco_c.main(["--root", str(tmp_path)])
    message = str(error.value)
    assert str(tmp_path / "val2017") in message and "PREPARE.md" in message and "expected layout" in message


def test_unknown_corruption_is_refused(coco_root: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        make_coco_c.main(["--root", str(coco_root), "--corruptions", "fog,rain"])
    assert "rain" in capsys.readouterr().err


def test_help_runs_as_a_script() -> None:
    result = subprocess.run([sys.executable, str(TOOL), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--corruptions" in result.stdout and "--workers" in result.stdout
