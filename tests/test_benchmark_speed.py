"""tools/benchmark_speed.py end to end at a tiny size (a measurement script: only its output is checked)."""

from __future__ import annotations

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
    from models.registry import build_sam_at_size

    base = build_sam_at_size("vit_tiny", 64)
    batch = tool.make_batch(64, 3, torch.device("cpu"))
    reference = tool.step_flops(tool.make_mode("reference", base, torch.device("cpu"), None), batch,
                                torch.device("cpu"))
    fast = tool.step_flops(tool.make_mode("fast", base, torch.device("cpu"), None), batch, torch.device("cpu"))
    assert reference > 0 and abs(fast - reference) / reference < 0.05  # the same model work, however computed
