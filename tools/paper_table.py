"""Reproduce one of the WeSAM paper's results tables: one adaptation run per dataset and prompt of
the table, with the dataset's configs/paper/<dataset>.py, beside the paper's numbers.

    python tools/paper_table.py --table coco_c|natural|medical|camouflaged|robotic
        [--root DATA] [--runs runs/paper] [--prompts box,point,coarse] [--datasets a,b]
        [--out results/paper_<table>.md] [key=value ...]

Tables and their rows: coco_c (the 15 corruptions of COCO-C, box prompts), natural (coco2017,
voc2012), medical (kvasir, isic2016), camouflaged (chameleon, camo, cod10k), robotic (ocid, osd),
each with the box, point and coarse prompts (the paper's "poly" is `coarse`).

Each row is one run in <runs>/<dataset>/<prompt> (coco_c: <runs>/coco_c/<corruption>/box). Its
Direct is the run's step 0 (the unadapted SAM), its WeSAM the last step; the best evaluation is
shown too, marked: like the authors' checkpoint it is chosen on the evaluated split itself. The
markdown table (also printed) puts them beside the paper's Direct, WeSAM and Supervised numbers
(configs/paper/results.py) and the differences, and is rewritten after every run.

--root DATA sets each dataset.root to DATA/<folder>, the folder name of the config's default root
(data/kvasir -> DATA/kvasir; coco_c uses DATA/coco2017). Trailing key=value overrides apply to
every run (e.g. model.checkpoint=... num_workers=8 num_steps=500). Before any run, the tool checks
that the data and the SAM checkpoint of every run still to do are there and lists whatever is
missing.

Resumable: a finished run is read back, an interrupted one continues from its last.ckpt, so the
same command again picks up where it stopped. A run folder made with other settings is refused
(use another --runs).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from configs.paper import config_file  # noqa: E402
from configs.paper.results import COCO_C_AVERAGE, PROMPTS, TABLE_DATASETS, TABLE_PROMPTS, TABLE_TITLES, paper_value  # noqa: E402
from datasets import DatasetLayoutError, DatasetSpec, UnusableDatasetError, build_dataset  # noqa: E402
from engine.checks import check_outputs  # noqa: E402
from engine.resume import adaptation_command  # noqa: E402
from models import CheckpointError  # noqa: E402
from models.backbones import input_sizes  # noqa: E402
from tools.experiments import config_differences, finished_summary, markdown_table, run_cell  # noqa: E402
from utils.config import ConfigError, load_config, parse_override  # noqa: E402
from utils.files import OutputPathError, check_output, path_argument, write_text  # noqa: E402

TABLES = tuple(TABLE_DATASETS)
# keys the table sets for each run, which an override must not change
TABLE_KEYS = ("prompt", "dataset.name", "dataset.corruption", "out_dir")
PENDING, NONE = "…", "–"


class PaperTableError(Exception):
    """The table cannot be made as asked: missing data, a bad option, a run made with other settings."""


@dataclass(frozen=True)
class Cell:
    """One row of the table: one adaptation run."""

    dataset: str  # the row's name: a dataset, or for coco_c a corruption
    prompt: str
    config_name: str  # configs/paper/<config_name>.py
    out_dir: Path
    overrides: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.dataset}/{self.prompt}"


def parse_list(text: str, allowed: Sequence[str], what: str) -> list[str]:
    """Comma-separated names, each one of `allowed`, in the order of `allowed`."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        raise PaperTableError(f"unknown {what} {', '.join(unknown) or '(none given)'}; valid: {', '.join(allowed)}")
    return [name for name in allowed if name in names]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", required=True, choices=TABLES, help="the paper table to reproduce")
    parser.add_argument("--root", type=path_argument,
                        help="folder holding every dataset folder (dataset.root = ROOT/<name>); default: each "
                             "config's own root, data/<name>")
    parser.add_argument("--runs", type=path_argument, default="runs/paper",
                        help="where the run folders go (default: runs/paper)")
    parser.add_argument("--prompts", help="comma-separated subset of box,point,coarse (default: the table's: "
                                          "box for coco_c, all three otherwise)")
    parser.add_argument("--datasets", help="comma-separated subset of the table's rows (coco_c: corruption names)")
    parser.add_argument("--out", type=path_argument, help="the markdown file (default: results/paper_<table>.md)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides for every run, e.g. "
                                                     "model.checkpoint=sam_vit_b_01ec64.pth num_steps=500")
    args = parser.parse_args(argv)
    args.root, args.runs, args.out = (Path(path) if path else None for path in (args.root, args.runs, args.out))
    return args


def plan(args: argparse.Namespace) -> list[Cell]:
    """The cells of the table, in the paper's column order (dataset, then prompt)."""
    table = args.table
    datasets = list(TABLE_DATASETS[table])
    if args.datasets:
        datasets = parse_list(args.datasets, datasets, f"dataset(s) for --table {table}")
    prompts = parse_list(args.prompts, PROMPTS, "prompt(s)") if args.prompts else list(TABLE_PROMPTS[table])
    for text in args.overrides:
        key, _ = parse_override(text)
        if key in TABLE_KEYS:
            raise PaperTableError(f"override '{text}': the table sets {key} for each run; "
                                  "use --prompts / --datasets / --runs instead")
    cells = []
    for dataset in datasets:
        config_name = "coco_c" if table == "coco_c" else dataset
        extra = [f"dataset.corruption={dataset}"] if table == "coco_c" else []
        if args.root is not None:
            default_root = load_config(config_file(config_name)).dataset.root
            extra.append(f"dataset.root={args.root / Path(default_root).name}")
        folder = args.runs / "coco_c" / dataset if table == "coco_c" else args.runs / dataset
        for prompt in prompts:
            cells.append(Cell(dataset, prompt, config_name, folder / prompt,
                              (f"prompt={prompt}", *extra, *args.overrides)))
    return cells


def resolve(cell: Cell):
    """The full config of a cell's run, as adaptation.py will resolve it."""
    return load_config(config_file(cell.config_name), [*cell.overrides, f"out_dir={cell.out_dir}"])


def check_existing_runs(cells: list[Cell], configs: dict[Cell, Any]) -> None:
    """Refuse run folders whose config.json differs from what the table would run there now."""
    differing = {cell: differences for cell in cells
                 if (differences := config_differences(cell.out_dir, configs[cell].to_dict()))}
    if differing:
        first = next(iter(differing))
        extend = adaptation_command("--resume", first.out_dir / "checkpoints" / "last.ckpt",
                                    f"num_steps={configs[first].num_steps}")
        raise PaperTableError("these run folders hold runs made with other settings (nothing was run):\n"
                              + "\n".join(f"  {cell.out_dir}: " + "; ".join(differences)
                                          for cell, differences in differing.items())
                              + "\nUse another --runs folder, or the same overrides as before (to extend a finished "
                              f"run to the table's num_steps, for the first: {extend}).")


def check_inputs(table: str, cells: list[Cell], configs: dict[Cell, Any]) -> None:
    """Before any run: every dataset folder (and COCO-C corruption folder) and SAM checkpoint the
    runs still to do need exists, and each dataset has its layout. Lists every problem at once."""
    missing: dict[str, str] = {}  # path -> what it is; datasets first, then checkpoints
    checkpoints: dict[str, str] = {}
    for cell in cells:
        cfg = configs[cell]
        root = Path(cfg.dataset.root)
        if not root.is_dir():
            what = ("COCO 2017 with its corruption/ folders" if cfg.dataset.name == "coco_c"
                    else f"the {cfg.dataset.name} dataset")
            missing.setdefault(str(root), f"{what} (dataset.root)")
        elif cfg.dataset.name == "coco_c" and not (root / "corruption" / cfg.dataset.corruption).is_dir():
            missing.setdefault(str(root / "corruption" / cfg.dataset.corruption),
                               f"COCO-C {cfg.dataset.corruption}: python tools/make_coco_c.py --root "
                               f"{shlex.quote(str(root))}")
        if cfg.model.checkpoint and not Path(cfg.model.checkpoint).is_file():
            checkpoints.setdefault(cfg.model.checkpoint, f"the SAM {cfg.model.type} checkpoint (model.checkpoint)")
    missing.update(checkpoints)
    if missing:
        width = max(map(len, missing)) + 3
        lines = "\n".join(f"  {path.ljust(width)}{what}" for path, what in missing.items())
        raise PaperTableError(
            f"--table {table}: these folders and files do not exist, so nothing was run:\n{lines}\n"
            "PREPARE.md says where to get each dataset and checkpoint and how to lay it out. --root DIR points at "
            "a folder holding every dataset folder (DIR/kvasir, DIR/coco2017, ...), model.checkpoint=FILE at the "
            "SAM weights.")
    layout_errors, checked = [], set()
    for cell in cells:  # coco_c: the corruptions share everything but the folder checked above
        cfg = configs[cell]
        if cfg.dataset.name in checked:
            continue
        checked.add(cfg.dataset.name)
        for split in dict.fromkeys(("train", cfg.dataset.eval_split)):
            try:
                build_dataset(DatasetSpec.from_config(cfg, **input_sizes(cfg.model.type)), split)
            except DatasetLayoutError as error:
                layout_errors.append(str(error))
                break
    if layout_errors:
        raise PaperTableError(f"--table {table}: datasets without the expected layout (nothing was run):\n\n"
                              + "\n\n".join(layout_errors))


def percent(value: float | None) -> str:
    return NONE if value is None else f"{100 * value:.2f}"


def difference(ours: float | None, paper: float | None) -> str:
    return NONE if ours is None or paper is None else f"{100 * ours - paper:+.2f}"


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def table_row(name: str, prompt: str, ours: dict[str, Any] | None, paper: dict[str, float | None]) -> list[str]:
    """A row: ours (fractions; None while pending) beside the paper's (percent; None where it has none)."""
    pending = ours is None
    ours = ours or {}
    paper_cells = [NONE if paper[m] is None else f"{paper[m]:.2f}" for m in ("Direct", "WeSAM", "Supervised")]
    best = PENDING if pending else f"{percent(ours['best'])}" + (
        f" (step {ours['best_step']})" if ours.get("best_step") is not None else "")
    return [name, prompt, PENDING if pending else str(ours["steps"]),
            PENDING if pending else percent(ours["direct"]), PENDING if pending else percent(ours["last"]), best,
            *paper_cells, difference(ours.get("direct"), paper["Direct"]),
            difference(ours.get("last"), paper["WeSAM"]), PENDING if pending else duration(ours["seconds"])]


def ours_of(summary: dict[str, Any]) -> dict[str, Any]:
    return {"direct": summary["direct"]["miou"], "last": summary["last"]["miou"], "best": summary["best"]["miou"],
            "best_step": summary["best"]["step"], "steps": summary["last"]["step"], "seconds": summary["seconds"]}


def render(table: str, cells: list[Cell], summaries: dict[Cell, dict[str, Any]], runs: Path,
           overrides: Sequence[str]) -> str:
    """The markdown page of the table, with pending rows for the runs not done yet."""
    header = ["dataset", "prompt", "steps", "Direct", "WeSAM", "WeSAM best †", "paper Direct", "paper WeSAM",
              "paper Supervised", "Δ Direct", "Δ WeSAM", "time"]
    rows = []
    for cell in cells:
        paper = {m: paper_value(table, cell.dataset, cell.prompt, m) for m in ("Direct", "WeSAM", "Supervised")}
        summary = summaries.get(cell)
        rows.append(table_row(cell.dataset, cell.prompt, None if summary is None else ours_of(summary), paper))
    done = [cell for cell in cells if cell in summaries]
    if table == "coco_c" and len(done) > 1:
        rows.append(average_row(table, cells, done, summaries))
    config_names = sorted({cell.config_name for cell in cells})
    lines = [
        f"# Paper table: {TABLE_TITLES[table]}", "",
        "Ours: one WeSAM run per row, with " + ", ".join(f"`configs/paper/{n}.py`" for n in config_names)
        + (f" and the overrides `{' '.join(overrides)}`" if overrides else "") + f"; run folders in `{runs}`. "
        "**Direct** is the unadapted SAM (the run's step 0), **WeSAM** the adapted one at the last step. "
        "mIoU in %; Δ = ours − paper (Δ WeSAM uses our last step).", "",
        "Paper: the WeSAM paper's numbers (CVPR 2024, project page; `configs/paper/results.py`); "
        "its poly column is our `coarse` prompt, – where it gives no number.", "",
        markdown_table(header, rows),
        "† The best evaluation of the run and its step, chosen on the evaluated split itself, as the authors "
        "chose their checkpoint: an optimistic number, shown for comparison with theirs.", "",
        "Our mIoU is measured on the resized image without its padding, at logit 0; the authors' on the padded "
        "1024 × 1024 canvas at logit 0.5 (docs/differences.md).",
    ]
    if len(done) < len(cells):
        lines += ["", f"{len(cells) - len(done)} of {len(cells)} runs not finished ({PENDING}); the same command "
                      "continues them."]
    return "\n".join(lines) + "\n"


def average_row(table: str, cells: list[Cell], done: list[Cell], summaries: dict[Cell, dict[str, Any]]) -> list[str]:
    """COCO-C: the mean over the finished corruptions, beside the paper's mean over the same ones
    (its printed Avg when all 15 are there)."""
    ours = [ours_of(summaries[cell]) for cell in done]
    mean = {key: sum(o[key] for o in ours) / len(ours) for key in ("direct", "last", "best", "seconds")}
    every = {cell.dataset for cell in done} == set(TABLE_DATASETS[table]) and {c.prompt for c in done} == {"box"}
    paper = {}
    for method in ("Direct", "WeSAM", "Supervised"):
        values = [paper_value(table, cell.dataset, cell.prompt, method) for cell in done]
        paper[method] = (COCO_C_AVERAGE[method] if every else
                         None if None in values else sum(values) / len(values))
    name = "average" if every else f"average of {len(done)}"
    row = table_row(name, "", {**mean, "best_step": None, "steps": NONE}, paper)
    row[-1] = duration(sum(o["seconds"] for o in ours))  # total time
    return row


def main(argv: Sequence[str] | None = None) -> str:
    """Run (or read back) every run of the table, write the markdown and return it."""
    args = parse_args(argv)
    out = check_output(args.out or Path("results") / f"paper_{args.table}.md", "--out")
    check_outputs([("--out", out)], [])  # never a file of one of the runs
    check_output(args.runs, "--runs", "folder")
    cells = plan(args)
    configs = {cell: resolve(cell) for cell in cells}
    check_existing_runs(cells, configs)
    summaries = {cell: summary for cell in cells if (summary := finished_summary(cell.out_dir)) is not None}
    to_run = [cell for cell in cells if cell not in summaries]
    if to_run:
        check_inputs(args.table, to_run, configs)
    print(f"--table {args.table}: {len(cells)} runs, {len(summaries)} finished, {len(to_run)} to run or continue")
    write_text(out, render(args.table, cells, summaries, args.runs, args.overrides))
    for number, cell in enumerate(to_run, start=1):
        print(f"[{number}/{len(to_run)}] {cell.label}: {cell.out_dir}", flush=True)
        summaries[cell] = run_cell(cell.out_dir, cell.overrides, str(config_file(cell.config_name)))
        write_text(out, render(args.table, cells, summaries, args.runs, args.overrides))
    text = render(args.table, cells, summaries, args.runs, args.overrides)
    write_text(out, text)
    print(text)
    print(f"Written to {out}")
    return text


if __name__ == "__main__":
    try:
        main()
    except (PaperTableError, ConfigError, CheckpointError, FileNotFoundError, UnusableDatasetError,
            OutputPathError) as error:
        sys.exit(f"Error: {error}")
