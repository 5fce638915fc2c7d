"""Many adaptation runs and their tables: what tools/paper_table.py and tools/benchmark_shift.py share.

A cell is one adaptation.py run in its own out_dir. Runs are resumable as a set: a finished run
(its summary.json reached num_steps) is read back instead of run again, and an interrupted one
continues from its last.ckpt, so a killed benchmark picks up where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np


def run_cell(out_dir: Path, overrides: Sequence[str], config_file: str | None = None) -> dict[str, Any]:
    """summary.json of the adaptation run in `out_dir` with `overrides`, running or resuming it if needed.

    The summary holds direct, best and last metrics, the evaluation history, num_steps and the
    run's wall time in seconds.
    """
    import adaptation

    out_dir = Path(out_dir)
    summary_path, last_ckpt = out_dir / "summary.json", out_dir / "checkpoints" / "last.ckpt"
    overrides = [*overrides, f"out_dir={out_dir}"]
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        if summary["last"]["step"] >= summary["num_steps"]:
            return summary
    if last_ckpt.exists():
        adaptation.main(["--resume", str(last_ckpt), *overrides])
    else:
        adaptation.main(([] if config_file is None else ["--config", config_file]) + overrides)
    return json.loads(summary_path.read_text())


def mean_spread(values: Iterable[float], scale: float = 100.0, digits: int = 1) -> str:
    """'mean ± std' of values x scale (population std over seeds), or 'mean' for one value."""
    values = np.asarray(list(values), dtype=float) * scale
    if len(values) == 0:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std():.{digits}f}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; the first column is left-aligned, the rest right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
