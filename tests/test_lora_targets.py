"""Where LoRA goes (lora.targets, issue 32): each target's layers on SAM (vit_tiny) and SAM 2 (sam2_tiny);
with the adapter off the network is the base exactly; a merged adapter loads strictly into a plain model
and gives the adapted logits; adapter files round-trip (and those written before lora.targets load); the
EMA teacher, one adapter per batch slice, memory_saving; the trainable parameters printed and recorded;
runs with a wide placement resume exactly, export, and train under DDP and bf16; mistakes are refused."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import save_file

import adaptation
import validate
from engine.auto_instances import anchor_digest, weights_digest
from engine.checkpoint import load_student_adapter, read_checkpoint
from models import WeSAM, build_wesam, check_model_config
from models.adapters import load_adapter, save_adapter, targets_text
from models.backbones import build_network, exported_checkpoint
from models.lora import (STUDENT, TEACHER, LoRAConv2d, LoRALinear, adapter_state_dict, lora_layers,
                         merged_state_dict)
from models.sam1 import SAM_TARGETS
from models.sam2 import SAM2_TARGETS
from models.weight_files import CheckpointError
from tests.conftest import cli, read_csv, run_overrides, run_script
from tools import export
from utils.config import ConfigError, load_config, parse_override

TARGETS = {"vit_tiny": SAM_TARGETS, "sam2_tiny": SAM2_TARGETS}
# placements that reach every kind of layer: fused qkv (all three parts), Linear, Conv2d (k x k and 1 x 1)
SAM_WIDE = ["qkv", "proj", "mlp", "patch_embed"]
SAM2_WIDE = ["qkv", "proj", "mlp", "stride4", "stride8"]
PLACEMENTS = [(model_type, [target]) for model_type, targets in TARGETS.items() for target in targets] + [
    ("vit_tiny", SAM_WIDE), ("sam2_tiny", SAM2_WIDE)]


def placement_id(value) -> str:
    return "+".join(value) if isinstance(value, list) else value


def plain(model_type: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network(model_type)


def randomise(model: torch.nn.Module, adapter: str = STUDENT, seed: int = 0) -> None:
    """A trained-looking adapter: every weight non-zero."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model):
            for parameter in layer.adapters[adapter].parameters():
                parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator))


def batch(size: int, count: int = 2) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, torch.Tensor]]]:
    """`count` uint8 images of side `size` (no padding), their valid regions and two box prompts each."""
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=generator)
    boxes = torch.tensor([[0.1, 0.2, 0.6, 0.7], [0.4, 0.1, 0.9, 0.5]]) * size
    return images, torch.tensor([[0, 0, size, size]] * count), [{"boxes": boxes}] * count


def features(outputs: dict) -> list[torch.Tensor]:
    """Every tensor the image encoder gave the decoder (SAM 2: with the conv_s0 / conv_s1 maps)."""
    flat = []
    for item in outputs["features"]:
        flat += [item[0], *item[1]] if isinstance(item, tuple) else [item]
    return flat


# --- which layers each target adapts

def test_each_target_adapts_the_layers_it_names():
    """vit_tiny: 2 ViT blocks; sam2_tiny: Hiera stages of 1, 1, 2, 1 blocks (stage 2 starts at block 1,
    which widens: its shortcut projection), a neck of 4 lateral convolutions (level i: convs[3 - i])."""
    def paths(model_type: str, targets: list[str]) -> dict[str, str]:
        model = WeSAM.on(plain(model_type), 4, lora_targets=targets)
        return {layer.path: "".join(suffix.strip("_") for suffix, *_ in layer.spans)
                if isinstance(layer, LoRALinear) else "conv" for layer in lora_layers(model)}

    blocks = "image_encoder.blocks"
    assert paths("vit_tiny", ["qv"]) == {f"{blocks}.{i}.attn.qkv": "qv" for i in range(2)}
    assert paths("vit_tiny", ["qkv"]) == {f"{blocks}.{i}.attn.qkv": "qkv" for i in range(2)}
    assert paths("vit_tiny", ["proj"]) == {f"{blocks}.{i}.attn.proj": "" for i in range(2)}
    assert paths("vit_tiny", ["mlp"]) == {f"{blocks}.{i}.mlp.{lin}": "" for i in range(2) for lin in ("lin1", "lin2")}
    assert paths("vit_tiny", ["patch_embed"]) == {"image_encoder.patch_embed.proj": "conv"}
    # overlapping targets: a layer is adapted once, on the union of their parts
    assert paths("vit_tiny", ["qv", "qkv"]) == paths("vit_tiny", ["qkv"])

    trunk = "image_encoder.trunk"
    assert paths("sam2_tiny", ["qv"]) == {f"{trunk}.blocks.{i}.attn.qkv": "qv" for i in range(5)}
    assert paths("sam2_tiny", ["mlp"]) == {f"{trunk}.blocks.{i}.mlp.layers.{j}": "" for i in range(5) for j in (0, 1)}
    assert paths("sam2_tiny", ["patch_embed"]) == {f"{trunk}.patch_embed.proj": "conv"}

    def block(index: int) -> dict[str, str]:
        return {f"{trunk}.blocks.{index}.attn.qkv": "qkv", f"{trunk}.blocks.{index}.attn.proj": "",
                f"{trunk}.blocks.{index}.mlp.layers.0": "", f"{trunk}.blocks.{index}.mlp.layers.1": ""}

    assert paths("sam2_tiny", ["stride4"]) == {f"{trunk}.patch_embed.proj": "conv", **block(0),
                                               "image_encoder.neck.convs.3.conv": "conv",
                                               "sam_mask_decoder.conv_s0": "conv"}
    assert paths("sam2_tiny", ["stride8"]) == {**block(1), f"{trunk}.blocks.1.proj": "",
                                               "image_encoder.neck.convs.2.conv": "conv",
                                               "sam_mask_decoder.conv_s1": "conv"}
    assert paths("sam2_tiny", ["qv", "stride4"])[f"{trunk}.blocks.0.attn.qkv"] == "qkv"
    assert paths("sam2_tiny", ["qv", "stride4"])[f"{trunk}.blocks.2.attn.qkv"] == "qv"


@pytest.mark.parametrize("model_type, targets", PLACEMENTS, ids=placement_id)
def test_the_parameter_counts_are_those_of_the_adapter(model_type, targets):
    """The counts the run prints: each target alone, and their total, which is what trains."""
    model = WeSAM.on(plain(model_type), 4, teacher_mode="ema", lora_targets=targets)
    counts = model.backbone.lora_parameters
    assert list(counts) == [*targets, "total"]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert counts["total"] == trainable == sum(v.numel() for v in adapter_state_dict(model.sam).values())
    for target in targets:  # each target's count is that of a model with it alone
        alone = WeSAM.on(plain(model_type), 4, lora_targets=[target])
        assert counts[target] == sum(p.numel() for p in alone.parameters() if p.requires_grad)
    assert sum(counts[t] for t in targets) >= counts["total"]


def test_a_layer_named_by_two_targets_counts_once():
    qkv = WeSAM.on(plain("sam2_tiny"), 4, lora_targets=["qkv"]).backbone.lora_parameters["total"]
    both = WeSAM.on(plain("sam2_tiny"), 4, lora_targets=["qv", "qkv"]).backbone.lora_parameters
    assert both["total"] == qkv < both["qv"] + both["qkv"]


# --- the anchor, the merge, one adapter per batch slice

@pytest.mark.parametrize("model_type, targets", PLACEMENTS, ids=placement_id)
def test_without_adapter_the_network_is_the_base_exactly(model_type, targets):
    """The anchor (adapter None) is the base network bit for bit, conv_s0 / conv_s1 (applied inside
    forward_image, under the adapter) included; the student's adapter changes the masks."""
    base = plain(model_type)
    model = WeSAM.on(copy.deepcopy(base), 4, lora_targets=targets).eval()
    randomise(model)
    images, valid, prompts = batch(model.image_size)
    with torch.no_grad():
        anchor = model.predict(images, valid, prompts, adapter=None)
        reference = WeSAM.on(base, 0).eval().predict(images, valid, prompts)
        student = model.predict(images, valid, prompts)
    for ours, theirs in zip(features(anchor) + anchor["logits"], features(reference) + reference["logits"],
                            strict=True):
        assert torch.equal(ours, theirs)
    assert (student["logits"][0] - anchor["logits"][0]).abs().max() > 1e-3 * anchor["logits"][0].abs().max()


def test_the_anchor_has_one_digest_whatever_the_placement():
    """prompt_source=auto caches the anchor's instances under the digest of its weights: the same
    network, so the same digest, with any targets and without LoRA."""
    digests = {anchor_digest(WeSAM.on(plain("sam2_tiny"), rank, lora_targets=targets))
               for rank, targets in ((0, ["qv"]), (4, ["qv"]), (4, SAM2_WIDE))}
    assert digests == {weights_digest(plain("sam2_tiny").state_dict())}


@pytest.mark.parametrize("model_type, targets", PLACEMENTS, ids=placement_id)
def test_a_merged_adapter_loads_strictly_into_a_plain_model_with_the_adapted_logits(tmp_path, model_type, targets):
    """merged_state_dict, written as tools/export.py writes it, loads strictly in build_sam /
    build_sam2_model (the package's loaders for the official types: tests/test_predict_export.py)
    and decodes as the adapted model."""
    model = WeSAM.on(plain(model_type), 4, lora_targets=targets).eval()
    randomise(model)
    path = tmp_path / "merged.pt"
    data, _ = exported_checkpoint(model_type, merged_state_dict(model.sam), path)
    torch.save(data, path)
    merged = build_network(model_type, path)  # load_state_dict(strict=True)
    images, valid, prompts = batch(model.image_size)
    with torch.no_grad():
        adapted = model.predict(images, valid, prompts)
        plain_merged = WeSAM.on(merged, 0).eval().predict(images, valid, prompts)
    for ours, theirs in zip(features(adapted) + adapted["logits"], features(plain_merged) + plain_merged["logits"],
                            strict=True):
        torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-4 * max(1.0, float(ours.abs().max())))
    assert set(data.get("model", data)) == set(plain(model_type).state_dict())  # the official keys, no LoRA


@pytest.mark.slow
def test_a_wide_merge_of_vit_b_loads_in_the_official_registry(tmp_path):
    """segment_anything's own vit_b builder loads the merged file strictly, and each of its adapted
    layers (qkv, proj, MLP linears, patch-embedding convolution) equals ours with the adapter."""
    from segment_anything import sam_model_registry

    model = WeSAM.on(plain("vit_b"), 4, lora_targets=SAM_WIDE)
    randomise(model)
    torch.save(merged_state_dict(model.sam), tmp_path / "merged.pth")
    official = dict(sam_model_registry["vit_b"](checkpoint=str(tmp_path / "merged.pth")).named_modules())
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for layer in lora_layers(model):
            shape = (2, 7, layer.base.in_features) if isinstance(layer, LoRALinear) else (1, 3, 64, 64)
            x = torch.randn(shape, generator=generator)
            torch.testing.assert_close(official[layer.path](x), layer(x), rtol=0, atol=1e-4)


@pytest.mark.parametrize("model_type, targets", [("vit_tiny", SAM_WIDE), ("sam2_tiny", SAM2_WIDE)],
                         ids=placement_id)
def test_one_adapter_per_batch_slice_on_every_kind_of_layer(model_type, targets):
    model = WeSAM.on(plain(model_type), 4, lora_targets=targets).eval()
    randomise(model)
    assert {type(layer) for layer in lora_layers(model)} == {LoRALinear, LoRAConv2d}
    images, valid, prompts = batch(model.image_size)
    with torch.no_grad():
        mixed = model.predict(images, valid, prompts, adapter=(STUDENT, None))
        student = model.predict(images[:1], valid[:1], prompts[:1])
        anchor = model.predict(images[1:], valid[1:], prompts[1:], adapter=None)
    torch.testing.assert_close(mixed["logits"][0], student["logits"][0], rtol=0, atol=1e-4)
    torch.testing.assert_close(mixed["logits"][1], anchor["logits"][0], rtol=0, atol=1e-4)


def test_memory_saving_runs_the_patch_embedding_with_the_adapter():
    """memory_saving runs SAM's encoder piece by piece: the patch embedding too takes the adapter."""
    base = plain("vit_tiny")
    model = WeSAM.on(copy.deepcopy(base), 4, lora_targets=["patch_embed", "qv"])
    saving = WeSAM.on(copy.deepcopy(base), 4, lora_targets=["patch_embed", "qv"], memory_saving=True)
    randomise(model)
    randomise(saving)
    images, valid, prompts = batch(model.image_size)
    for adapter in (STUDENT, None):
        expected = model.predict(images, valid, prompts, adapter)["embeddings"]
        torch.testing.assert_close(saving.predict(images, valid, prompts, adapter)["embeddings"], expected,
                                   rtol=0, atol=1e-5)


def test_the_ema_teacher_follows_the_student_on_every_layer():
    model = WeSAM.on(plain("sam2_tiny"), 4, teacher_mode="ema", lora_targets=SAM2_WIDE)
    layers = lora_layers(model)
    assert any(isinstance(layer, LoRAConv2d) for layer in layers)
    for layer in layers:  # a copy of the untrained student (B zero: the base network), never trained
        for student, teacher in zip(layer.adapters[STUDENT].parameters(), layer.adapters[TEACHER].parameters(),
                                    strict=True):
            assert torch.equal(student, teacher) and not teacher.requires_grad and student.requires_grad
    randomise(model)
    before = {key: value.clone() for key, value in adapter_state_dict(model.sam, TEACHER).items()}
    model.update_teacher(0.9)
    student = adapter_state_dict(model.sam, STUDENT)
    for key, value in adapter_state_dict(model.sam, TEACHER).items():
        torch.testing.assert_close(value, 0.9 * before[key] + 0.1 * student[key])


# --- adapter files

@pytest.mark.parametrize("model_type, targets", [("vit_tiny", ["qv", "patch_embed"]), ("sam2_tiny", SAM2_WIDE)],
                         ids=placement_id)
def test_an_adapter_file_round_trips_and_names_its_layers(tmp_path, model_type, targets):
    overrides = [f"model.type={model_type}", "model.checkpoint=", "accelerator=cpu"]
    cfg = load_config(overrides=[*overrides, f"lora.targets={','.join(targets)}"])
    model = build_wesam(cfg)
    randomise(model.sam)
    weights = adapter_state_dict(model.sam)
    layers = dict(plain(model_type).named_modules())
    assert all(key.rpartition(".")[0] in layers for key in weights)  # "<layer path>.<down|up>[_q|_k|_v]"
    path = tmp_path / "adapter.safetensors"
    save_adapter(path, weights, {"model_type": model_type, "lora_rank": 4, "lora_targets": targets_text(targets)})
    loaded = build_wesam(cfg)
    load_student_adapter(loaded.sam, path, model_type, 4, list(reversed(targets)))  # the order changes nothing
    for key, value in adapter_state_dict(loaded.sam).items():
        assert torch.equal(value, weights[key])

    other = load_config(overrides=overrides)  # lora.targets=[qv]
    with pytest.raises(CheckpointError, match=f"trained with lora.targets={targets_text(targets)} but the config has "
                                              "qv; pass lora.targets="):
        load_student_adapter(build_wesam(other).sam, path, model_type, 4, other.lora.targets)
    bare = tmp_path / "bare.safetensors"  # no metadata: the weights themselves do not fit
    save_file(weights, str(bare))
    with pytest.raises(CheckpointError, match="does not fit .*lora.targets=qv: .*different lora.targets"):
        load_student_adapter(build_wesam(other).sam, bare, model_type, 4, other.lora.targets)


def former_keys(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The student adapter of a q/v model as files before lora.targets named it: blocks.{i}.down_q..."""
    return {f"blocks.{index}.{part}": getattr(layer.adapters[STUDENT], part).weight.detach().clone()
            for index, layer in enumerate(lora_layers(model)) for part in ("down_q", "up_q", "down_v", "up_v")}


@pytest.mark.parametrize("model_type", ["vit_tiny", "sam2_tiny"])
def test_an_adapter_written_before_lora_targets_loads(tmp_path, model_type):
    cfg = load_config(overrides=[f"model.type={model_type}", "model.checkpoint=", "accelerator=cpu"])
    model = build_wesam(cfg)
    randomise(model.sam)
    path = tmp_path / "former.safetensors"
    save_file(former_keys(model.sam), str(path), metadata={"model_type": model_type, "lora_rank": "4"})
    loaded = build_wesam(cfg)
    load_student_adapter(loaded.sam, path, model_type, 4, ["qv"])
    assert adapter_state_dict(loaded.sam).keys() == adapter_state_dict(model.sam).keys()
    for key, value in adapter_state_dict(model.sam).items():
        assert torch.equal(adapter_state_dict(loaded.sam)[key], value)
    with pytest.raises(CheckpointError, match="trained with lora.targets=qv but the config has qkv"):
        load_student_adapter(build_wesam(load_config(overrides=[f"model.type={model_type}", "model.checkpoint=",
                                                                "lora.targets=qkv"])).sam,
                             path, model_type, 4, ["qkv"])


# --- mistakes

def test_sam1_given_a_sam2_target_stops_with_a_message(capsys):
    cfg = load_config(overrides=["model.type=vit_tiny", "model.checkpoint=", "lora.targets=qv,stride4"])
    with pytest.raises(ConfigError, match=r"lora.targets=\['qv', 'stride4'\] names stride4, which SAM "
                                          r"\(model.type=vit_tiny\) does not have; its targets: qv, qkv, proj, mlp, "
                                          r"patch_embed\."):
        build_wesam(cfg)
    code, message = cli(validate.main, ["model.type=vit_tiny", "model.checkpoint=", "lora.targets=stride8",
                                        "accelerator=cpu"], capsys)
    assert code == 1 and "lora.targets" in message and "stride8" in message and "Traceback" not in message


def test_each_entry_of_lora_targets_is_checked():
    """Against the targets of the model's family (models/__init__.py check_model_config, before any work:
    the config's schema knows no family), with the closest one named."""
    assert set(SAM_TARGETS) < set(SAM2_TARGETS)
    with pytest.raises(ConfigError, match=r"lora.targets=\['qv', 'stide4'\] names stide4, which SAM 2 \(model.type="
                                          r"sam2_tiny\) does not have; its targets: qv, qkv, .*Did you mean 'stride4'"):
        check_model_config(load_config(overrides=["model.type=sam2_tiny", "lora.targets=qv,stide4"]))
    with pytest.raises(ConfigError, match="Config key 'lora.targets' is an empty list; name at least one of: qv"):
        check_model_config(load_config(overrides=["lora.targets=[]"]))
    with pytest.raises(ConfigError, match="must be of type list"):
        load_config(user_config={"lora": {"targets": "qv"}}, source="a test")
    for text in ("lora.targets=qv,stride4", "lora.targets=[qv, stride4]", "lora.targets=['qv', 'stride4']"):
        assert parse_override(text) == ("lora.targets", ["qv", "stride4"])
    assert load_config(overrides=["model.type=sam2_tiny", "lora.targets=mlp"]).lora.targets == ["mlp"]


# --- runs

@pytest.mark.slow
def test_a_run_with_a_wide_placement_resumes_exactly_and_exports(tmp_path, capsys):
    """SAM 2 with the EMA teacher on a placement of every layer kind: the trainable parameters printed
    and recorded, exact resume, lora.targets fixed on resume, every adapted layer trained; the adapter
    reproduces the run in validate.py and merges in tools/export.py into a strictly loading SAM 2."""
    targets = f"lora.targets={','.join(SAM2_WIDE)}"
    common = [o for o in run_overrides("sam2_tiny", tmp_path) if not o.startswith("out_dir")] + [
        "teacher.mode=ema", "teacher.ema_rate=0.5", "opt.warmup_steps=2", "prompt=point", targets]
    straight, split = tmp_path / "straight", tmp_path / "split"
    adaptation.main(common + [f"out_dir={straight}"])
    printed = capsys.readouterr().out
    counts = build_wesam(load_config(straight / "config.json")).backbone.lora_parameters
    assert (f"LoRA rank 4 on {', '.join(SAM2_WIDE)}: {counts['total']:,} trainable parameters (sam2_tiny; alone: "
            + ", ".join(f"{t} {counts[t]:,}" for t in SAM2_WIDE) + ")") in printed
    weights, metadata = load_adapter(straight / "checkpoints/last-lora.safetensors")
    assert metadata["lora_targets"] == ",".join(SAM2_WIDE) and metadata["lora_rank"] == 4
    assert metadata["trainable_parameters"] == counts["total"] == sum(v.numel() for v in weights.values())

    adaptation.main(common + [f"out_dir={split}", "num_steps=2"])
    ckpt = split / "checkpoints/last.ckpt"
    with pytest.raises(ConfigError, match="lora.targets cannot change when resuming"):
        adaptation.main(["--resume", str(ckpt), "lora.targets=qv"])
    adaptation.main(["--resume", str(ckpt), "num_steps=4"])
    a, b = (read_checkpoint(run / "checkpoints/last.ckpt") for run in (straight, split))
    assert a["trainable_parameters"] == b["trainable_parameters"] == counts["total"]
    assert set(a["lora"]) == set(b["lora"]) == {STUDENT, TEACHER}
    for adapter in a["lora"]:
        assert a["lora"][adapter].keys() == b["lora"][adapter].keys()
        for key, value in a["lora"][adapter].items():
            torch.testing.assert_close(b["lora"][adapter][key], value, rtol=0, atol=0)
    assert read_csv(straight / "metrics.csv") == read_csv(split / "metrics.csv")
    trained = a["lora"][STUDENT]
    assert all(trained[key].abs().sum() > 0 for key in trained if ".up" in key)  # every layer's B moved off zero

    summary = json.loads((split / "summary.json").read_text())
    adapter = split / "checkpoints/last-lora.safetensors"
    assert validate.main(["--ckpt", str(adapter)])["miou"] == pytest.approx(summary["last"]["miou"], abs=1e-6)
    out = export.main(["--ckpt", str(adapter), "--out", str(tmp_path / "merged.pt")])
    merged = build_network("sam2_tiny", out)  # strict
    model = build_wesam(load_config(split / "config.json"))
    load_student_adapter(model.sam, adapter, "sam2_tiny", 4, SAM2_WIDE)
    images, valid, prompts = batch(model.image_size)
    with torch.no_grad():
        ours = model.eval().predict(images, valid, prompts)["logits"]
        theirs = WeSAM.on(merged, 0).eval().predict(images, valid, prompts)["logits"]
    for mine, exported in zip(ours, theirs, strict=True):
        torch.testing.assert_close(exported, mine, rtol=0, atol=1e-4 * max(1.0, float(mine.abs().max())))


@pytest.mark.slow
def test_a_wide_placement_trains_in_bf16(tmp_path):
    cfg = load_config(overrides=run_overrides("sam2_tiny", tmp_path / "run", "precision=bf16-mixed", "num_steps=2",
                                              f"lora.targets={','.join(SAM2_WIDE)}"))
    result = adaptation.adapt(cfg)
    assert all(0.0 < result[k]["miou"] <= 1.0 for k in ("direct", "last"))
    weights = read_checkpoint(tmp_path / "run/checkpoints/last.ckpt")["lora"][STUDENT]
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in weights.values())
    assert all(weights[key].abs().sum() > 0 for key in weights if ".up" in key)


@pytest.mark.slow
def test_a_wide_placement_trains_under_two_process_ddp_on_cpu(tmp_path):
    """Every adapted layer has a gradient on every rank (DDP would stop on an unused parameter), and
    the ranks' weights agree at every evaluation."""
    overrides = [o for o in run_overrides("sam2_tiny", tmp_path / "run")
                 if not o.startswith("dataset.synthetic.num_test")] + [
        "devices=2", "strategy=ddp", "dataset.synthetic.num_test=5", f"lora.targets={','.join(SAM2_WIDE)}"]
    result = run_script("adaptation.py", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "unused parameters" not in result.stderr and "differ between ranks" not in result.stderr
    state = read_checkpoint(tmp_path / "run/checkpoints/last.ckpt")
    assert len(state["rng"]) == 2 and state["config"]["lora"]["targets"] == SAM2_WIDE
    trained = state["lora"][STUDENT]
    assert any(".conv_s0." in key for key in trained)
    assert all(trained[key].abs().sum() > 0 for key in trained if ".up" in key)


def test_a_former_run_state_loads_its_adapters(tmp_path):
    """A last.ckpt written before lora.targets (its config has no lora.targets; its adapters the former
    keys) gives its student to validate.py, predict.py and tools/export.py (load_student_adapter); the
    resume of such a file: tests/test_run_state.py."""
    run = tmp_path / "run"
    cfg = load_config(overrides=["model.type=vit_tiny", "model.checkpoint=", "accelerator=cpu", f"out_dir={run}"])
    model = build_wesam(cfg)
    randomise(model.sam)
    config = cfg.to_dict()
    del config["lora"]["targets"]
    path = tmp_path / "last.ckpt"
    torch.save({"config": config, "lora": {STUDENT: former_keys(model.sam)}}, path)
    loaded = build_wesam(cfg)
    load_student_adapter(loaded.sam, path, "vit_tiny", 4, ["qv"])
    for key, value in adapter_state_dict(model.sam).items():
        assert torch.equal(adapter_state_dict(loaded.sam)[key], value)
    with pytest.raises(CheckpointError, match="trained with lora.targets=qv but the config has mlp"):
        load_student_adapter(loaded.sam, path, "vit_tiny", 4, ["mlp"])
