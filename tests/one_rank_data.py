"""adaptation.py's command line, but the process of rank WESAM_OTHER_DATA_RANK reads its data from
WESAM_OTHER_DATA_ROOT: a run whose ranks see different data, as nodes with their own copies do.
Fabric's launcher starts the other ranks with this same command line."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import adaptation  # noqa: E402
from engine.checks import run_main  # noqa: E402

if __name__ == "__main__":
    other = os.environ.get("LOCAL_RANK", "0") == os.environ["WESAM_OTHER_DATA_RANK"]
    argv = sys.argv[1:] + ([f"dataset.root={os.environ['WESAM_OTHER_DATA_ROOT']}"] if other else [])
    run_main(lambda: adaptation.main(argv))
