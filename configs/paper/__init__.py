"""The WeSAM paper's settings, one config file per dataset (`python adaptation.py --config
configs/paper/<dataset>.py [prompt=point]`), and the paper's numbers (results.py).
tools/paper_table.py runs them table by table."""

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent


def config_file(dataset: str) -> Path:
    """configs/paper/<dataset>.py, the paper config of a dataset name (coco2017, coco_c, ...)."""
    return CONFIG_DIR / f"{dataset}.py"
