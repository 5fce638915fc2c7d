"""The weights shipped in models/weights/ (vit_small, sam2_small, sam2_small256): each loads strictly into the
model type it was made for, fits a repository (at most 30 MiB), and has beside it the record of how
tools/pretrain_source_sam.py made it, whose command is the run's."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch

from conftest import load_tool
from models.backbones import build_network
from models.weight_files import read_state_dict

WEIGHTS = Path(__file__).resolve().parent.parent / "models" / "weights"
SHIPPED = sorted(WEIGHTS.glob("*.safetensors"))
pretrain = load_tool("pretrain_source_sam")


def test_the_shipped_files_are_the_source_models():
    assert [path.name for path in SHIPPED] == ["sam2_small256_source.safetensors", "sam2_small_source.safetensors",
                                               "vit_small_source.safetensors"]


@pytest.mark.parametrize("weights", SHIPPED, ids=lambda path: path.stem)
def test_shipped_weights_load_strictly_into_their_model_type_with_their_record(weights):
    record = json.loads(weights.with_suffix(".json").read_text())
    assert weights.stat().st_size <= 30 * 2**20
    assert weights.stem == f"{record['model_type']}_source"
    state = read_state_dict(weights)
    network = build_network(record["model_type"], weights)  # load_state_dict(strict=True)
    for key, value in state.items():
        torch.testing.assert_close(network.state_dict()[key], value, rtol=0, atol=0, msg=key)
    assert record["step"] == record["args"]["steps"] and record["history"][-1]["step"] == record["step"]
    assert record["history"][-1]["miou"] > record["history"][-1]["box_prior"]


@pytest.mark.parametrize("weights", SHIPPED, ids=lambda path: path.stem)
def test_the_records_command_gives_the_runs_settings(weights):
    """The command, parsed by the tool, gives the recorded settings, but for those of a session (a record
    made before the command left them out may still name --resume); settings newer than a record are at
    their defaults."""
    record = json.loads(weights.with_suffix(".json").read_text())
    words = shlex.split(record["command"])
    assert words[:2] == ["python", "tools/pretrain_source_sam.py"]
    parsed, defaults = vars(pretrain.parse_args(words[2:])), vars(pretrain.parse_args([]))
    sessions = {option.removeprefix("--").replace("-", "_") for option in pretrain.SESSION_OPTIONS}
    assert {key: value for key, value in parsed.items() if key not in sessions} == {
        key: record["args"].get(key, defaults[key]) for key in parsed if key not in sessions}


def test_sam2_small256_is_sam2_small_trained_further_at_256_px_on_the_128_px_scenes():
    record = json.loads((WEIGHTS / "sam2_small256_source.json").read_text())
    assert record["args"]["init"] == "models/weights/sam2_small_source.safetensors"
    assert record["init"] == json.loads((WEIGHTS / "sam2_small_source.json").read_text())
    assert record["args"]["scene_size"] == 128 and "--resume" not in record["command"]
    assert build_network("sam2_small256").image_size == 256
