"""Many adaptation runs and their tables: what tools/paper_table.py and tools/benchmark_shift.py share.

A cell is one adaptation run (engine/adapt.py adapt) in its own out_dir. Runs are resumable as a set: a finished run
(its summary.json reached num_steps) is read back instead of run again, and an interrupted one
continues from its last.ckpt, so a killed benchmark picks up where it stopped; a folder holding a
run with other settings is refused rather than mixed into a table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from configs.base_config import base_config
from engine.adapt import adapt
from engine.resume import resume_config
from utils.config import flatten, load_config

# keys that may differ between an existing run and a request for it: where and how fast it runs,
# not what it computes
RUN_ONLY_KEYS = ("out_dir", "dataset.root", "accelerator", "strategy", "num_workers", "val_batch_size",
                 "log_interval", "save_interval")


class RunMismatchError(RuntimeError):
    """A run folder holds a run made with other settings than those asked for."""


def finished_summary(out_dir: Path) -> dict[str, Any] | None:
    """summary.json of the run in `out_dir` if it has reached its num_steps, else None."""
    path = Path(out_dir) / "summary.json"
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    return summary if summary["last"]["step"] >= summary["num_steps"] else None


def config_differences(out_dir: Path, cfg: Mapping[str, Any]) -> list[str]:
    """How the config.json of the run in `out_dir` (if any) differs from `cfg`, key by key. A key
    that the saved config lacks (the run predates it) counts as its default: a new key's default
    keeps the behaviour from before it."""
    path = Path(out_dir) / "config.json"
    if not path.exists():
        return []
    saved, wanted, defaults = flatten(json.loads(path.read_text())), flatten(cfg), flatten(base_config)
    return [f"{key} {saved.get(key)!r} there, {value!r} now" for key, value in wanted.items()
            if key not in RUN_ONLY_KEYS and saved.get(key, defaults.get(key)) != value]


def run_cell(out_dir: Path, overrides: Sequence[str], config_file: str | None = None) -> dict[str, Any]:
    """summary.json of the adaptation run in `out_dir` with `overrides`, running or resuming it if needed.

    The summary holds direct, best and last metrics, the evaluation history, num_steps and the
    run's wall time in seconds. A folder holding a run with other settings raises RunMismatchError.
    """
    out_dir = Path(out_dir)
    overrides = [*overrides, f"out_dir={out_dir}"]
    cfg = load_config(config_file, overrides)
    differences = config_differences(out_dir, cfg.to_dict())
    if differences:
        raise RunMismatchError(f"{out_dir} holds a run made with other settings: {'; '.join(differences)}. "
                               "Use another folder, or the same settings as before.")
    summary = finished_summary(out_dir)
    if summary is not None:
        return summary
    last_ckpt = out_dir / "checkpoints" / "last.ckpt"
    if last_ckpt.exists():
        adapt(resume_config(last_ckpt, overrides), resume=last_ckpt)
    else:
        adapt(cfg)
    return json.loads((out_dir / "summary.json").read_text())


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
