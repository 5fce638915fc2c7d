"""tools/benchmark_shift.py and tools/experiments.py: cells, resumable runs, the written table and plots."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import benchmark_shift  # noqa: E402

from tools.experiments import RunMismatchError, markdown_table, mean_spread  # noqa: E402
from utils.config import ConfigError  # noqa: E402


def test_mean_spread_and_markdown_table():
    assert mean_spread([0.5, 0.7]) == "60.0 ± 10.0"
    assert mean_spread([0.1234]) == "12.3"
    assert mean_spread([]) == "–"
    table = markdown_table(["a", "b"], [["x", 1], ["y", 2]])
    assert table.splitlines() == ["| a | b |", "|:---|---:|", "| x | 1 |", "| y | 2 |"]


def test_cells_combine_method_domain_prompt_and_seed_overrides():
    args = benchmark_shift.parse_args(["--domains", "medical", "--methods", "supervised", "num_steps=7"])
    assert args.methods == ["supervised"]  # Direct is step 0 of any method's runs
    assert benchmark_shift.cell_overrides(args, "medical", "point", "supervised", "2") == [
        "num_steps=7", "dataset.synthetic.shift=medical", "prompt=point", "seed=2", "loss.target=ground_truth",
        "augment.strong=false"]
    assert benchmark_shift.METHODS["self_training"][1] == ["loss.anchor=0", "loss.contrastive=0"]
    with pytest.raises(SystemExit):
        benchmark_shift.parse_args(["--methods", "tent"])
    # the no-label runs of a domain share the anchor's instances, whatever their seed and prompt
    assert benchmark_shift.cell_overrides(args, "medical", "box", "wesam_auto", "1")[-2:] == [
        "prompt_source=auto", "auto.cache=runs/shift_benchmark/medical/auto_instances"]


def test_each_default_domain_reads_its_own_config_file():
    args = benchmark_shift.parse_args([])
    for domain in args.domains:
        assert benchmark_shift.domain_config(args, domain) == str(ROOT / "configs" / "shift" / f"{domain}.py")
    with pytest.raises(ConfigError,
                       match=r"No config for domain 'fog': .*fog\.py does not exist.*--config configs/config\.py"):
        benchmark_shift.domain_config(args, "fog")
    one_file = benchmark_shift.parse_args(["--config", "configs/config.py"])
    assert benchmark_shift.domain_config(one_file, "fog") == "configs/config.py"


@pytest.mark.slow
def test_benchmark_runs_every_cell_writes_the_table_and_reuses_finished_runs(tmp_path, tiny_overrides):
    overrides = [o for o in tiny_overrides if not o.startswith("out_dir")] + [
        "model.type=vit_tiny", "opt.learning_rate=1e-3", "opt.decay_steps=[2,9]"]
    for domain, factor in (("none", 0.5), ("medical", 0.1)):  # a schedule per domain, as in configs/shift/
        (tmp_path / f"config_{domain}.py").write_text(f"config = {{'opt': {{'decay_factor': {factor}}}}}\n")
    argv = ["--config", str(tmp_path / "config_{domain}.py"), "--domains", "none,medical", "--prompts", "box",
            "--methods", "wesam,supervised", "--seeds", "0,1", "--runs", str(tmp_path / "runs"),
            "--out", str(tmp_path / "results"), *overrides]
    text = benchmark_shift.main(argv)
    summaries = sorted((tmp_path / "runs").glob("*/box/*/seed*/summary.json"))
    assert len(summaries) == 2 * 2 * 2
    for path in summaries:
        summary = json.loads(path.read_text())
        assert summary["last"]["step"] == summary["num_steps"] == 4 and summary["seconds"] > 0
    supervised = json.loads((tmp_path / "runs/medical/box/supervised/seed1/summary.json").read_text())
    config = json.loads((tmp_path / "runs/medical/box/supervised/seed1/config.json").read_text())
    assert config["loss"]["target"] == "ground_truth" and config["seed"] == 1 and not config["augment"]["strong"]
    assert config["dataset"]["synthetic"]["shift"] == "medical" and config["opt"]["decay_factor"] == 0.1
    assert json.loads((tmp_path / "runs/none/box/wesam/seed0/config.json").read_text())["opt"]["decay_factor"] == 0.5
    assert 0 < supervised["last"]["area_ratio"]

    written = (tmp_path / "results" / "shift_benchmark.md").read_text()
    assert written == text
    assert "## Prompt: box" in text and "| Method | none | medical |" in text
    assert "focal alpha the number of masks;" in text
    # each domain's schedule, naming only the decays that fall inside the run
    assert "none: lr 0.001 (×0.5 at steps 2); medical: lr 0.001 (×0.1 at steps 2); batch" in text
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert set(rows) >= {"Direct", benchmark_shift.METHODS["wesam"][0], benchmark_shift.METHODS["supervised"][0]}
    assert " ± " in rows["Direct"] and " s |" in rows[benchmark_shift.METHODS["supervised"][0]]
    assert (tmp_path / "results" / "shift_none.png").stat().st_size > 1000
    assert (tmp_path / "results" / "shift_medical.png").exists()

    started = time.time()
    assert benchmark_shift.main(argv) == text
    assert time.time() - started < 20  # every run is read back, none repeated
    assert sorted((tmp_path / "runs").glob("*/box/*/seed*/summary.json")) == summaries
    with pytest.raises(RunMismatchError, match="num_steps 4 there, 5 now"):
        benchmark_shift.main(argv + ["num_steps=5"])
    # a run made before a key existed ran with what the key's default keeps; any other value differs
    for config in (tmp_path / "runs").glob("*/box/*/seed*/config.json"):
        saved = json.loads(config.read_text())
        del saved["model"]["compile"]
        config.write_text(json.dumps(saved))
    assert benchmark_shift.main(argv) == text
    with pytest.raises(RunMismatchError, match="model.compile None there, 'inductor' now"):
        benchmark_shift.main(argv + ["model.compile=inductor"])


def test_rows_of_new_methods_join_an_existing_table():
    """--methods wesam_auto adds its rows to the table that the other methods' runs wrote, keeping them."""
    def runs(gain: float, recall: float | None = None) -> list[dict]:
        extra = {"auto_instances": {"diagnostic": {"recall": recall, "mean_best_iou": 0.4}}} if recall else {}
        return [{"direct": {"miou": 0.5}, "last": {"miou": 0.5 + gain, "area_ratio": 1.0, "pseudo_label_iou": 0.6},
                 "seconds": 10.0, **extra}]

    first = benchmark_shift.parse_args(["--domains", "medical", "--prompts", "box,coarse", "--methods",
                                        "wesam,supervised", "--seeds", "0"])
    old = benchmark_shift.report(first, {("medical", p, m): runs(0.1) for p in ("box", "coarse")
                                         for m in ("wesam", "supervised")})
    added = benchmark_shift.parse_args(["--domains", "medical", "--prompts", "box", "--methods", "wesam_auto",
                                        "--seeds", "0"])
    text = benchmark_shift.report(added, {("medical", "box", "wesam_auto"): runs(0.05, 0.47)}, old)
    box = text.partition("## Prompt: box")[2].partition("## Prompt:")[0]
    assert [line.split(" | ")[0] for line in box.splitlines() if line.startswith("| ")][1:] == [
        "| Direct", f"| {benchmark_shift.METHODS['wesam'][0]}", f"| {benchmark_shift.METHODS['supervised'][0]}",
        f"| {benchmark_shift.METHODS['wesam_auto'][0]}"]
    assert "55.0 (+5.0) · area 1.00 · PL 0.60 · recall 0.47, best IoU 0.40 · 10 s |" in box
    assert text.partition("## Prompt: coarse")[2] == old.partition("## Prompt: coarse")[2]  # not run now: as it was
    assert text.startswith(old.partition("## Prompt:")[0].rstrip("\n"))
    assert "Rows WeSAM, no labels (auto prompts): added by `python tools/benchmark_shift.py --domains medical" in text
