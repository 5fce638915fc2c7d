"""tools/reachability.py: the feature swap of each backbone's levels, its metric against evaluate(),
full fine-tuning of one part of the image path, and the written tables."""

from __future__ import annotations

import pytest
import torch
from lightning_fabric import Fabric

from conftest import load_tool, tiny_config_overrides
from datasets import DatasetSpec, build_dataset, collate
from engine.evaluate import evaluate
from models import build_wesam
from models.backbones import build_network, input_sizes
from models.wesam import WeSAM
from utils.config import ConfigError, load_config

reachability = load_tool("reachability")


def tiny_cfg(tmp_path, model_type: str, shift: str = "glass_blur", *extra: str):
    return load_config(overrides=[*tiny_config_overrides(tmp_path / "run"), f"model.type={model_type}",
                                  f"dataset.synthetic.shift={shift}", "dataset.eval_split=val", *extra])


def split(cfg, name: str = "val"):
    return build_dataset(DatasetSpec.from_config(cfg, **input_sizes(cfg.model.type)), name)


@pytest.mark.parametrize("model_type", ["vit_tiny", "sam2_tiny"])
def test_swapped_levels_come_from_the_donor_and_the_rest_stay(tmp_path, model_type):
    cfg = tiny_cfg(tmp_path, model_type)
    model = build_wesam(cfg).eval()
    batch = collate([split(cfg)[0], split(cfg)[1]])
    with torch.no_grad():
        own, donor = model.predict(batch["images"], batch["valid"], batch["prompts"], adapter=None)["features"]
    backbone = model.backbone
    levels = backbone.feature_levels
    assert levels == (("stride16",) if model_type == "vit_tiny" else ("stride16", "stride8", "stride4"))

    def flat(features) -> list[torch.Tensor]:  # SAM: the embedding; SAM 2: (embedding, [stride 4, stride 8])
        return [features] if isinstance(features, torch.Tensor) else [features[0], *features[1]]

    assert all(a is b for a, b in zip(flat(backbone.swap_features(own, donor, ())), flat(own)))
    assert all(a is b for a, b in zip(flat(backbone.swap_features(own, donor, levels)), flat(donor)))
    if model_type == "sam2_tiny":
        by_level = dict(zip(("stride16", "stride4", "stride8"), range(3)))
        for level, position in by_level.items():
            swapped = flat(backbone.swap_features(own, donor, (level,)))
            assert [s is d for s, d in zip(swapped, flat(donor))] == [i == position for i in range(3)]


@pytest.mark.parametrize("model_type", ["vit_tiny", "sam2_tiny"])
def test_direct_and_all_levels_equal_evaluate_on_the_shifted_and_the_clean_split(tmp_path, model_type):
    cfg = tiny_cfg(tmp_path, model_type)
    clean_cfg = tiny_cfg(tmp_path, model_type, "none")
    model = build_wesam(cfg)
    shifted, clean = split(cfg), split(clean_cfg)
    metrics = reachability.feature_swap(model, shifted, clean, cfg.metric.threshold, cfg.metric.region)
    fabric = Fabric(accelerator="cpu", devices=1)
    assert list(metrics) == list(reachability.level_sets(model.backbone.feature_levels))
    for name, dataset in (("shifted (Direct)", shifted), ("clean, all levels", clean)):
        expected = evaluate(fabric, model, dataset, None)
        assert metrics[name]["miou"] == pytest.approx(expected["miou"], abs=1e-6)
        assert metrics[name]["area_ratio"] == pytest.approx(expected["area_ratio"], rel=1e-5)  # batched with its twin
    assert metrics["shifted (Direct)"]["miou"] != metrics["clean, all levels"]["miou"]


def test_sam_names_its_one_level_by_its_embedding_s_stride():
    assert WeSAM.on(build_network("vit_small"), lora_rank=0).backbone.feature_levels == ("stride8",)  # patch 8
    assert WeSAM.on(build_network("sam2_small256"), lora_rank=0).backbone.feature_levels == (
        "stride16", "stride8", "stride4")


def test_level_sets_name_each_level_alone_all_but_each_and_all():
    assert reachability.level_sets(("stride16",)) == {"shifted (Direct)": (), "clean stride16": ("stride16",),
                                                      "clean, all levels": ("stride16",)}
    sets = reachability.level_sets(("a", "b", "c"))
    assert sets["clean all but b"] == ("a", "c") and sets["clean c"] == ("c",) and len(sets) == 8


@pytest.mark.parametrize("model_type", ["vit_tiny", "sam2_tiny"])
def test_full_fine_tuning_trains_only_its_part_of_the_image_path(tmp_path, model_type):
    cfg = tiny_cfg(tmp_path, model_type)
    trained = {part: {name for name, p in reachability.full_model(cfg, part).sam.named_parameters()
                      if p.requires_grad} for part in reachability.FULL_PARTS}
    assert trained["encoder"] and all(name.startswith("image_encoder.") for name in trained["encoder"])
    assert trained["decoder"] and not any(name.startswith("image_encoder.") for name in trained["decoder"])
    assert trained["all"] == trained["encoder"] | trained["decoder"]
    if model_type == "sam2_tiny":  # the image path only: no memory modules, no object-score head
        assert not any(name.startswith(("memory_", "sam_mask_decoder.pred_obj_score_head")) for name in trained["all"])
    with pytest.raises(ConfigError, match="'full:neck' fine-tunes an unknown part; choose one of full:encoder"):
        reachability.placement_overrides("full:neck")
    assert reachability.placement_overrides("qv+stride4")[-1] == "lora.targets=['qv', 'stride4']"


def test_a_placement_the_model_lacks_is_refused_before_any_work(tmp_path):
    overrides = [o for o in tiny_config_overrides(tmp_path / "unused") if not o.startswith("dataset.synthetic.shift")]
    with pytest.raises(ConfigError, match=r"lora.targets=\['qx'\] names qx, which SAM \(model.type=vit_tiny\) "
                                          "does not have"):
        reachability.main(["--config", "configs/config.py", "--domains", "glass_blur", "--placements", "qv,qx",
                           "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "table.md"), *overrides])
    assert not (tmp_path / "runs").exists() and not (tmp_path / "table.md").exists()


@pytest.mark.slow
def test_the_tool_swaps_fine_tunes_writes_the_table_and_reads_finished_runs_back(tmp_path):
    overrides = [o for o in tiny_config_overrides(tmp_path / "unused") if not o.startswith(("out_dir", "dataset.synth"
                                                                                            "etic.shift"))]
    argv = ["--config", "configs/config.py", "--domains", "glass_blur,camouflage", "--bound-domains", "glass_blur",
            "--placements", "full:decoder", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "table.md"),
            *overrides, "model.type=sam2_tiny", "num_steps=2", "eval_interval=1"]
    text = reachability.main(argv)
    assert "| glass_blur | " in text and "| camouflage | no clean twin (a scene style) |" in text
    assert "clean all but stride4" in text and "| placement (lora.targets) | trained parameters | glass_blur |" in text
    assert "| `full:decoder` |" in text and not (tmp_path / "runs" / "camouflage" / "full_decoder").exists()
    assert (tmp_path / "table.md").read_text() == text
    summary = tmp_path / "runs" / "glass_blur" / "full_decoder" / "seed0" / "summary.json"
    swap = tmp_path / "runs" / "glass_blur" / "swap-val.json"
    stamps = summary.stat().st_mtime_ns, swap.stat().st_mtime_ns
    assert reachability.main(argv) == text  # finished: read back, nothing measured again
    assert (summary.stat().st_mtime_ns, swap.stat().st_mtime_ns) == stamps
