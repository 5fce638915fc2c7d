"""The paper's configs (configs/paper/), its numbers (configs/paper/results.py, checked against the
published tables in results/paper_numbers.md) and tools/paper_table.py end to end on tiny on-disk datasets."""

from __future__ import annotations

import json
import re
import shlex
import time
from pathlib import Path

import pytest

from configs.paper import CONFIG_DIR, config_file
from configs.paper.results import (COCO_C_AVERAGE, COCO_C_COLUMNS, METHODS, PROMPTS, RESULTS, TABLE_DATASETS,
                                   TABLE_PROMPTS, paper_value)
from datasets import DATASETS
from datasets.corruptions import CORRUPTIONS
from tests.conftest import load_tool
from tests.ondisk import labels, write_image, write_mask
from tests.test_real_datasets import write_isic
from utils.config import ConfigError, load_config

PAPER_DATASETS = ("coco2017", "coco_c", "voc2012", "kvasir", "isic2016", "camo", "cod10k", "chameleon", "ocid", "osd")
PUBLISHED = Path(__file__).resolve().parents[1] / "results" / "paper_numbers.md"


paper_table = load_tool("paper_table")


# configs/paper

def test_there_is_one_config_per_paper_dataset():
    files = {p.stem for p in CONFIG_DIR.glob("*.py")} - {"__init__", "results", "common", "versions"}
    assert files == set(PAPER_DATASETS)


@pytest.mark.parametrize("name", PAPER_DATASETS)
def test_paper_config_loads_with_the_papers_settings(name):
    cfg = load_config(config_file(name))
    assert cfg.dataset.name == name and name in DATASETS
    assert cfg.dataset.root == ("data/coco2017" if name == "coco_c" else f"data/{name}")
    assert cfg.model.type == "vit_b" and cfg.model.checkpoint == "checkpoints/sam_vit_b_01ec64.pth"
    assert cfg.model.pixel_normalize is False and cfg.model.pad == "center"
    assert (cfg.opt.learning_rate, cfg.opt.weight_decay, cfg.opt.warmup_steps) == (1e-4, 1e-4, 250)
    assert cfg.batch_size == 1 and cfg.lora.rank == 4 and cfg.teacher.mode == "shared"
    assert cfg.coarse_as == "box" and cfg.loss.target == "teacher" and cfg.dataset.eval_split == "test"
    # the authors' data pipeline, loss quirks and metric (README, "Differences from the authors' code")
    assert cfg.augment.views_at == "native" and cfg.point_negatives == "canvas" and cfg.dataset.keep_vanished
    assert cfg.coarse_polygon == "authors"
    assert (cfg.loss.focal_bce, cfg.loss.iou_threshold, cfg.loss.iou_empty) == ("probabilities", 0.5, 0.0)
    assert (cfg.metric.threshold, cfg.metric.region, cfg.opt.warmup_from_zero, cfg.tf32) == (0.5, "canvas", True, True)
    assert cfg.dataset.coco.crowd == (name in ("coco2017", "coco_c"))
    # the first code release by default: 5 epochs on one device, evaluated once per epoch
    assert cfg.paper.code == "release" and cfg.devices == 1 and cfg.max_nums == 50
    assert (cfg.loss.focal_on, cfg.loss.contrastive_masks) == ("mean", "raw")
    assert cfg.num_steps == 5 * cfg.eval_interval
    assert config_file(name).read_text().startswith('"""')


def test_paper_code_head_sets_every_key_of_the_later_code():
    cfg = load_config(config_file("kvasir"), ["paper.code=head"])
    assert (cfg.loss.focal_on, cfg.loss.contrastive_masks, cfg.max_nums, cfg.devices) == ("pixel", "threshold", 40, 4)
    # 40,000 // 834 = 47 epochs of 834 // 4 = 208 steps on 4 devices, evaluated once per epoch
    assert (cfg.num_steps, cfg.eval_interval) == (47 * 208, 208)


def test_paper_code_leaves_keys_set_on_the_command_line_or_in_the_file():
    cfg = load_config(config_file("kvasir"), ["paper.code=head", "devices=1", "loss.focal_on=mean"])
    assert (cfg.devices, cfg.loss.focal_on, cfg.max_nums) == (1, "mean", 40)
    saved = load_config(user_config=cfg.to_dict(), overrides=["paper.code=release"])
    assert saved.max_nums == 40  # a saved config.json sets every key itself


def test_paper_code_release_splits_osd_1_to_1_and_head_6_to_1():
    release = load_config(config_file("osd"))
    head = load_config(config_file("osd"), ["paper.code=head"])
    assert (release.dataset.interleave, release.eval_interval, release.num_steps) == (1, 56, 280)
    assert head.dataset.interleave == 6 and head.eval_interval == 96 // 4


def test_paper_code_needs_the_training_split_size():
    with pytest.raises(ConfigError, match="paper.train_images"):
        load_config(overrides=["paper.code=release"])


# configs/paper/results.py

SECTIONS = {"coco_c": "COCO-C", "natural": "Natural images", "medical": "Medical images",
            "camouflaged": "Camouflaged objects", "robotic": "Robotic images"}


def published_tables() -> dict[str, tuple[list[str], dict[str, list[float]]]]:
    """Table name (coco_c, natural, ...) -> (column titles, {method: values}) of results/paper_numbers.md."""
    text = PUBLISHED.read_text()
    tables = {}
    for table, title in SECTIONS.items():
        match = re.search(rf"^## {re.escape(title)}\b.*?\n(\|.*?)\n\n", text, re.DOTALL | re.MULTILINE)
        assert match, f"no table under '## {title}' in {PUBLISHED}"
        lines = [line for line in match.group(1).splitlines() if not line.startswith("|---")]
        split = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
        tables[table] = (split[0][1:], {row[0].strip("*"): [float(v) for v in row[1:]] for row in split[1:]})
    return tables


def test_every_number_matches_the_published_tables():
    tables = published_tables()
    for table in SECTIONS:
        titles, rows = tables[table]
        assert set(rows) == set(METHODS)
        columns = [(d, p) for d in TABLE_DATASETS[table] for p in TABLE_PROMPTS[table]]
        if table == "coco_c":
            assert titles[-1] == "Avg" and len(titles) == 16
            assert all(COCO_C_AVERAGE[m] == rows[m][15] for m in METHODS)
        else:  # the titles name the columns in our order: "<dataset> box | point | poly"
            assert [t.split()[1] for t in titles] == [{"coarse": "poly"}.get(p, p) for _, p in columns]
        for i, (dataset, prompt) in enumerate(columns):
            for method in METHODS:
                assert paper_value(table, dataset, prompt, method) == rows[method][i], (table, dataset, prompt, method)


def test_spot_checks_against_the_published_text():
    text = PUBLISHED.read_text()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "| **WeSAM** | 85.47 | 75.23 | 67.40 | 80.01 | 62.12 | 75.36 |" in text  # medical
    assert paper_value("medical", "kvasir", "box", "WeSAM") == 85.47
    assert paper_value("medical", "isic2016", "coarse", "WeSAM") == 75.36
    assert "| Direct | 74.29 | 55.06 | 65.64 | 69.21 | 69.21 | 60.79 |" in text  # natural
    assert paper_value("natural", "voc2012", "point", "Direct") == paper_value("natural", "voc2012", "box", "Direct")
    assert paper_value("natural", "coco2017", "box", "Supervised") == 81.50
    assert "| Supervised | 78.05 | 85.86 |" in text  # camouflaged: CHAMELEON comes first
    assert paper_value("camouflaged", "chameleon", "point", "Supervised") == 85.86
    assert paper_value("camouflaged", "cod10k", "coarse", "Direct") == 40.04
    assert "| **WeSAM** | 88.09 | 80.14 | 77.41 | 92.11 | 80.51 | 89.72 |" in text  # robotic
    assert paper_value("robotic", "osd", "box", "WeSAM") == 92.11
    assert "| Direct | 72.83 | 57.34 |" in text and "| 58.80 | 66.73 |" in text  # COCO-C
    assert paper_value("coco_c", "brightness", "box", "Direct") == 72.83
    assert paper_value("coco_c", "zoom_blur", "box", "Direct") == 58.80 and COCO_C_AVERAGE["Direct"] == 66.73
    assert rows["DePT"]  # the tables list every baseline


def test_results_cover_every_table_dataset_prompt_and_method():
    assert COCO_C_COLUMNS == CORRUPTIONS  # the paper's column order is the corruptions module's
    for table, datasets in TABLE_DATASETS.items():
        assert set(RESULTS[table]) == set(datasets)
        for dataset in datasets:
            assert set(RESULTS[table][dataset]) == set(TABLE_PROMPTS[table])
            for prompt in TABLE_PROMPTS[table]:
                assert tuple(RESULTS[table][dataset][prompt]) == METHODS
    assert TABLE_PROMPTS["coco_c"] == ("box",) and TABLE_PROMPTS["medical"] == PROMPTS
    assert paper_value("coco_c", "fog", "point", "WeSAM") is None
    for method in METHODS:  # the printed Avg is the row mean, except DePT's (as printed)
        mean = sum(paper_value("coco_c", c, "box", method) for c in CORRUPTIONS) / 15
        assert abs(mean - COCO_C_AVERAGE[method]) < (0.5 if method == "DePT" else 0.01)


# tools/paper_table.py

def write_kvasir(root: Path, count: int = 6) -> None:
    """Kvasir-SEG's layout: images/, masks/ (binary JPEGs) and kavsir_bboxes.json (5:1: count - 1 train)."""
    entries = {}
    for i in range(count):
        stem = f"cju{i:04d}"
        write_image(root / "images" / f"{stem}.jpg", seed=i)
        write_mask(root / "masks" / f"{stem}.jpg", labels({255: (5 + i, 5, 25, 30)}))
        entries[stem] = {"height": 40, "width": 60,
                         "bbox": [{"label": "polyp", "xmin": 5 + i, "ymin": 5, "xmax": 24, "ymax": 29}]}
    (root / "kavsir_bboxes.json").write_text(json.dumps(entries))


TINY = ["model.type=vit_tiny", "model.checkpoint=", "num_steps=2", "eval_interval=2", "accelerator=cpu",
        "log_interval=1"]


def table_rows(text: str) -> dict[tuple[str, str], list[str]]:
    """(dataset, prompt) -> the cells of each row of the markdown table."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] not in ("dataset",):
            rows[cells[0], cells[1]] = cells
    return rows


def test_paper_table_runs_a_table_on_tiny_data_and_reuses_finished_runs(tmp_path):
    data, runs, out = tmp_path / "data", tmp_path / "runs", tmp_path / "medical.md"
    write_kvasir(data / "kvasir")
    write_isic(data / "isic2016")
    argv = ["--table", "medical", "--root", str(data), "--runs", str(runs), "--prompts", "box", "--out", str(out),
            *TINY]
    text = paper_table.main(argv)
    assert out.read_text() == text
    rows = table_rows(text)
    assert set(rows) == {("kvasir", "box"), ("isic2016", "box")}
    for (dataset, _), cells in rows.items():
        summary = json.loads((runs / dataset / "box" / "summary.json").read_text())
        assert summary["dataset"] == dataset and summary["last"]["step"] == 2
        assert cells[2] == "2"
        direct, last = float(cells[3]), float(cells[4])
        assert 0 <= direct <= 100 and 0 <= last <= 100
        assert direct == pytest.approx(100 * summary["direct"]["miou"], abs=0.006)
        assert last == pytest.approx(100 * summary["last"]["miou"], abs=0.006)
        assert cells[5].endswith(f"(step {summary['best']['step']})")
        paper = [paper_value("medical", dataset, "box", m) for m in ("Direct", "WeSAM", "Supervised")]
        assert cells[6:9] == [f"{v:.2f}" for v in paper]
        assert float(cells[9]) == pytest.approx(direct - paper[0], abs=0.011)
        assert float(cells[10]) == pytest.approx(last - paper[1], abs=0.011)
    assert "…" not in text and "configs/paper/isic2016.py" in text and "model.type=vit_tiny" in text

    # a second call reads the finished runs back: no adaptation, same table
    written = {path: path.stat().st_mtime_ns for path in runs.rglob("*") if path.is_file()}
    started = time.time()
    assert paper_table.main(argv) == text
    assert time.time() - started < 5
    assert {path: path.stat().st_mtime_ns for path in runs.rglob("*") if path.is_file()} == written, \
        "a run was run again"

    # the same folders with other settings are refused before anything runs
    with pytest.raises(paper_table.PaperTableError, match=r"(?s)other settings.*num_steps 2 there, 3 now") as refused:
        paper_table.main([*argv, "num_steps=3"])
    command = str(refused.value).split("to extend a finished run to the table's num_steps, for the first: ")[1]
    assert shlex.split(command.removesuffix(").")) == [
        "python", "adaptation.py", "--resume", str(runs / "kvasir/box/checkpoints/last.ckpt"), "num_steps=3"]


def test_paper_table_lists_every_missing_dataset_folder_before_running(tmp_path):
    write_kvasir(tmp_path / "kvasir")
    argv = ["--table", "medical", "--root", str(tmp_path), "--runs", str(tmp_path / "runs"),
            "--out", str(tmp_path / "t.md"), *TINY]
    with pytest.raises(paper_table.PaperTableError) as error:
        paper_table.main(argv)
    message = str(error.value)
    assert str(tmp_path / "isic2016") in message and "PREPARE.md" in message and "nothing was run" in message
    assert str(tmp_path / "kvasir") not in message
    # and the missing SAM checkpoint, in the same message
    with pytest.raises(paper_table.PaperTableError, match=r"nope\.pth +the SAM vit_tiny checkpoint") as error:
        paper_table.main([*argv, "model.checkpoint=nope.pth"])
    assert str(tmp_path / "isic2016") in str(error.value)
    # a folder that exists but lacks the layout: the loader's message, still before any run
    (tmp_path / "isic2016").mkdir()
    with pytest.raises(paper_table.PaperTableError, match=r"(?s)ISBI2016_ISIC_Part1_Training_GroundTruth.csv.*"
                                                          r"Expected layout"):
        paper_table.main(argv)
    assert not (tmp_path / "runs").exists()


def test_paper_table_coco_c_needs_each_corruption_folder(tmp_path):
    (tmp_path / "coco2017" / "corruption" / "fog").mkdir(parents=True)
    argv = ["--table", "coco_c", "--root", str(tmp_path), "--runs", str(tmp_path / "runs"),
            "--out", str(tmp_path / "t.md"), *TINY]
    with pytest.raises(paper_table.PaperTableError) as error:
        paper_table.main(argv)
    message = str(error.value)
    assert "make_coco_c.py" in message and message.count("corruption/") == 14  # every one but fog
    assert not (tmp_path / "runs").exists(), "nothing may run"
    assert "corruption/fog" not in message
    cells = paper_table.plan(paper_table.parse_args([*argv[:2], "--datasets", "snow,fog"]))
    assert [(c.dataset, c.prompt) for c in cells] == [("fog", "box"), ("snow", "box")]  # the paper's order
    assert cells[0].out_dir == Path("runs/paper/coco_c/fog/box") and "dataset.corruption=fog" in cells[0].overrides


def test_paper_table_refuses_overrides_of_what_the_table_sets(tmp_path):
    with pytest.raises(paper_table.PaperTableError, match="the table sets prompt"):
        paper_table.main(["--table", "robotic", "--out", str(tmp_path / "t.md"), "prompt=point"])
    with pytest.raises(paper_table.PaperTableError, match="valid: chameleon, camo, cod10k"):
        paper_table.main(["--table", "camouflaged", "--datasets", "kvasir", "--out", str(tmp_path / "t.md")])


def fake_summary(direct: float, last: float, steps: int = 10) -> dict:
    return {"direct": {"miou": direct, "step": 0}, "last": {"miou": last, "step": steps},
            "best": {"miou": last, "step": steps}, "num_steps": steps, "seconds": 3600.0}


def test_paper_table_coco_c_average_and_pending_rows():
    cells = paper_table.plan(paper_table.parse_args(["--table", "coco_c"]))
    summaries = {cell: fake_summary(0.5, 0.6) for cell in cells}
    rows = table_rows(paper_table.render("coco_c", cells, summaries, Path("runs/paper"), []))
    assert len(rows) == 16 and rows["fog", "box"][3:7] == ["50.00", "60.00", "60.00 (step 10)", "72.39"]
    # all 15 done: the paper's printed Avg; our mean over the corruptions; the total time
    assert rows["average", ""][3:9] == ["50.00", "60.00", "60.00", "66.73", "71.05", "74.35"]
    assert rows["average", ""][9:] == ["-16.73", "-11.05", "15.0 h"]
    # two done: the paper's mean over the same two; the other rows pending
    done = {cell: summaries[cell] for cell in cells if cell.dataset in ("fog", "snow")}
    text = paper_table.render("coco_c", cells, done, Path("runs/paper"), [])
    rows = table_rows(text)
    assert rows["average of 2", ""][6] == f"{(72.39 + 69.02) / 2:.2f}"
    assert rows["brightness", "box"][3] == "…" and rows["brightness", "box"][6] == "72.83"
    assert "13 of 15 runs not finished" in text
