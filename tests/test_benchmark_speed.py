"""tools/benchmark_speed.py end to end at a tiny size (a measurement script: only its output is checked)."""

from __future__ import annotations

import math

import pytest

from tests.conftest import load_tool


def test_benchmark_speed_writes_every_mode_side_by_side(tmp_path):
    out = tmp_path / "speed.md"
    results = load_tool("benchmark_speed").main(["--model", "vit_tiny", "--size", "64", "--device", "cpu",
                                                 "--repeats", "1", "--out", str(out)])
    assert set(results) == {"reference", "fast", "fast_fp32", "memory_saving"}
    for measured in results.values():
        assert measured["train"] > 0 and measured["eval"] > 0 and measured["memory"] > 0
    text = out.read_text()
    assert "vit_tiny at 64 px" in text and "Model FLOPs of a training step" in text
    rows = [line for line in text.splitlines() if line.startswith(("| reference", "| fast", "| memory_saving"))]
    assert len(rows) == 4 and rows[0].split("|")[4].strip() == "1.00x"


def test_benchmark_speed_counts_the_same_flops_as_a_direct_count():
    tool = load_tool("benchmark_speed")
    import torch

    torch.manual_seed(0)
    from models.sam1 import build_sam_at_size

    base = build_sam_at_size("vit_tiny", 64)
    batch = tool.make_batch(64, 3, torch.device("cpu"))
    reference = tool.step_flops(tool.make_mode("reference", base, torch.device("cpu"), None), batch,
                                torch.device("cpu"))
    fast = tool.step_flops(tool.make_mode("fast", base, torch.device("cpu"), None), batch, torch.device("cpu"))
    assert reference > 0 and abs(fast - reference) / reference < 0.05  # the same model work, however computed


def test_benchmark_speed_measures_sam2_in_the_same_columns(tmp_path):
    out = tmp_path / "speed.md"
    tool = load_tool("benchmark_speed")
    results = tool.main(["--model", "sam2_tiny", "--device", "cpu", "--repeats", "1", "--warmup", "0",
                         "--threads", "1", "--out", str(out)])
    assert set(results) == {"fast", "fast_fp32"}  # SAM 2 has no "sam" attention to be the reference
    for measured in results.values():
        assert all(math.isfinite(value) and value > 0 for value in measured.values())
    text = out.read_text()
    assert "## sam2_tiny at 128 px" in text and "--size 128" in text  # the configuration's own size
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in text.splitlines()
            if line.startswith(("| fast ", "| fast_fp32 "))}
    assert set(rows) == {"fast", "fast_fp32"}
    for name, cells in rows.items():
        step, _, versus, evaluation, _, _, peak, _, flops = (cell.strip() for cell in cells)
        assert versus == "-"
        assert float(step) == round(results[name]["train"], 3) and float(evaluation) == round(results[name]["eval"], 3)
        assert float(peak) > 0 and float(flops) >= 0
    with pytest.raises(SystemExit):  # a SAM 2 size is its configuration's; reference mode is SAM 1's
        tool.main(["--model", "sam2_tiny", "--size", "256", "--out", str(out)])
    with pytest.raises(SystemExit):
        tool.main(["--model", "sam2_tiny", "--modes", "reference", "--out", str(out)])
