"""Adapter files (models/adapters.py) as validate.py --ckpt, predict.py and tools/export.py read them: a
file that cannot be used (empty, cut, not safetensors, a SAM checkpoint, another rank or model) stops
with one line naming it and the fix; an adapter names its backbone, and a config of the other family
refuses it; adapters are plain files with plain-text metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sam2
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import predict
import validate
from models import build_sam, build_wesam
from models.adapters import load_adapter, save_adapter
from models.lora import adapter_state_dict
from models.sam2 import sam2_config
from tests.conftest import BACKBONES, cli
from tests.ondisk import write_image
from tools import export
from utils.config import load_config


def validate_args(run: Path, ckpt: Path | str) -> list[str]:
    return ["--config", str(run / "config.json"), "--ckpt", str(ckpt)]


def bad_adapter(kind: str, run: Path, folder: Path) -> Path:
    """An adapter file that cannot be used, of the given kind."""
    good = run / "checkpoints/last-lora.safetensors"
    path = folder / f"{kind}.safetensors"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "not_safetensors":
        path.write_text("these are not weights\n")
    elif kind == "sam_pth":
        path = folder / "sam_vit_tiny.pth"
        torch.save(build_sam("vit_tiny").state_dict(), path)
    elif kind == "rank8_no_metadata":
        cfg = load_config(user_config=json.loads((run / "config.json").read_text()), overrides=["lora.rank=8"])
        save_file(adapter_state_dict(build_wesam(cfg).sam), str(path))
    elif kind == "other_model_no_metadata":  # vit_small's LoRA: six blocks of width 160
        weights = {f"blocks.{i}.{part}": torch.zeros(shape) for i in range(6) for part, shape in
                   (("down_q", (4, 160)), ("up_q", (160, 4)), ("down_v", (4, 160)), ("up_v", (160, 4)))}
        save_file(weights, str(path))
    elif kind == "rank8_metadata":
        save_adapter(path, load_file(str(good)), {"model_type": "vit_tiny", "lora_rank": 8})
    return path


@pytest.mark.parametrize("kind, expected", [
    ("empty", "it is empty"),
    ("truncated", "not a readable safetensors adapter"),
    ("not_safetensors", "not a readable safetensors adapter"),
    ("sam_pth", "a SAM checkpoint goes to model.checkpoint"),
    ("rank8_no_metadata", "does not fit model.type=vit_tiny, lora.rank=4"),
    ("other_model_no_metadata", "does not fit model.type=vit_tiny, lora.rank=4"),
    ("rank8_metadata", "lora.rank=8"),
])
def test_unusable_adapter(trained_run, tmp_path, capsys, kind, expected):
    path = bad_adapter(kind, trained_run, tmp_path)
    code, message = cli(validate.main, validate_args(trained_run, path), capsys)
    assert code == 1 and message.startswith("Error: ")
    assert str(path) in message and expected in message
    assert "config.json" in message or "best-lora.safetensors" in message  # the fix


@pytest.mark.parametrize("model_type", BACKBONES)
def test_adapter_names_its_backbone_and_a_config_of_the_other_is_refused(finished_runs, tmp_path, capsys,
                                                                         model_type):
    """A run's adapter records its model.type, rank and family (SAM 2: the package's yaml it is built from);
    validate.py, predict.py and tools/export.py given it with a config of the other family stop with a
    message naming both model types, no traceback."""
    run = finished_runs(model_type)
    other = next(t for t in BACKBONES if t != model_type)
    adapter = run / "checkpoints/best-lora.safetensors"
    _, metadata = load_adapter(adapter)
    assert metadata["model_type"] == model_type and metadata["lora_rank"] == 4
    if model_type == "sam2_tiny":
        assert metadata["backbone"] == "sam2" and metadata["sam2_config"] == "configs/sam2.1/sam2.1_hiera_t.yaml"
        assert metadata["sam2_config"] == sam2_config("sam2_tiny")[0]
        assert (Path(sam2.__file__).parent / metadata["sam2_config"]).is_file()  # a yaml of the package
    else:
        assert metadata["backbone"] == "sam" and "sam2_config" not in metadata

    other_config = [f"model.type={other}", "model.checkpoint=", "accelerator=cpu"]
    code, message = cli(validate.main, ["--ckpt", str(adapter), *other_config], capsys)
    assert code == 1 and f"model.type={model_type}" in message and other in message and "Traceback" not in message
    write_image(tmp_path / "images/a.png")
    code, message = cli(predict.main, ["--ckpt", str(adapter), "--images", str(tmp_path / "images"), "--box",
                                       "10,10,50,30", "--out", str(tmp_path / "pred"), *other_config], capsys)
    assert code == 1 and f"model.type={model_type}" in message and not (tmp_path / "pred").exists()
    code, message = cli(export.main, ["--ckpt", str(adapter), "--out", str(tmp_path / "merged.pt"), *other_config],
                        capsys)
    assert code == 1 and f"model.type={model_type}" in message and not (tmp_path / "merged.pt").exists()
    # and with the config.json of a run of the other family
    other_run = finished_runs(other) / "config.json"
    code, message = cli(validate.main, ["--ckpt", str(adapter), "--config", str(other_run)], capsys)
    assert code == 1 and f"model.type={model_type}" in message and other in message


def test_adapter_files_are_plain(trained_run, tmp_path):
    """Adapters get the mode of any new file (not 0600) and plain-text metadata; files written
    with JSON-quoted metadata still read the same."""
    (tmp_path / "new_file").touch()
    adapter = trained_run / "checkpoints/best-lora.safetensors"
    assert adapter.stat().st_mode == (tmp_path / "new_file").stat().st_mode
    with safe_open(str(adapter), framework="pt") as handle:
        assert handle.metadata()["model_type"] == "vit_tiny" and handle.metadata()["lora_rank"] == "4"
    old_style = tmp_path / "old.safetensors"
    save_file(load_file(str(adapter)), str(old_style), metadata={"model_type": '"vit_tiny"', "lora_rank": "4"})
    assert load_adapter(old_style)[1] == {"model_type": "vit_tiny", "lora_rank": 4}
    assert load_adapter(adapter)[1]["model_type"] == "vit_tiny" and load_adapter(adapter)[1]["lora_rank"] == 4
