"""The backbone seam (models/family.py) and the family registry (models/backbones.py): a third family,
written and registered in this file alone, adapts, predicts and exports through the same scripts as SAM
and SAM 2; model.type and lora.targets are checked by the registry (the config's schema lists no model),
with the config's message style and before any work."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning_fabric import Fabric
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer
from torch import nn

import adaptation
import predict
import validate
from datasets import DatasetSpec, build_dataset
from engine.evaluate import evaluate
from models import build_wesam, check_model_config, model_types
from models.adapters import load_adapter
from models.backbones import FAMILIES, backbone_metadata, evaluation_decoding, family_of, input_sizes
from models.family import Family, InputSizes
from models.lora import DEFAULT_TARGETS, STUDENT, Adapter, add_lora_targets, blocks_placement, use_adapter
from models.sam1 import SamBackbone
from tests.conftest import cli, forbid_work, tiny_config_overrides
from tests.ondisk import decode_rle, write_image
from tools import export, reachability
from utils.config import ConfigError, load_config

# --- a toy third family: segment_anything's modules at 64 px, fed another way than SAM (the image resized
# to the square as floats in [0, 1], scaled to [-1, 1], no padding), LoRA on q, v and the MLP of its blocks

TOY_SHAPES = {"toy_tiny": dict(image_size=64, patch=8, width=32, depth=2, heads=2, prompt_dim=32)}


class ToySam(nn.Module):
    """Image encoder, prompt encoder and mask decoder of segment_anything, nothing else."""

    def __init__(self, image_size: int, patch: int, width: int, depth: int, heads: int, prompt_dim: int) -> None:
        super().__init__()
        side = image_size // patch
        self.image_encoder = ImageEncoderViT(img_size=image_size, patch_size=patch, embed_dim=width, depth=depth,
                                             num_heads=heads, out_chans=prompt_dim)
        self.prompt_encoder = PromptEncoder(embed_dim=prompt_dim, image_embedding_size=(side, side),
                                            input_image_size=(image_size, image_size), mask_in_chans=8)
        self.mask_decoder = MaskDecoder(num_multimask_outputs=3, transformer_dim=prompt_dim,
                                        transformer=TwoWayTransformer(depth=1, embedding_dim=prompt_dim, mlp_dim=64,
                                                                      num_heads=heads))


def build_toy(model_type: str, checkpoint: str | None = None) -> ToySam:
    network = ToySam(**TOY_SHAPES[model_type])
    if checkpoint:
        network.load_state_dict(torch.load(checkpoint, weights_only=True))  # strict
    return network.eval()


class ToyBackbone(nn.Module):
    """The toy's image path with LoRA: the Backbone of models/family.py."""

    pixel_normalize = False
    feature_levels = ("stride8",)  # decode's one map, the 8 x 8 image embedding
    # its prompt encoder and decoder are segment_anything's, as SAM's, and so are its features
    decode, swap_features = SamBackbone.decode, SamBackbone.swap_features

    def __init__(self, sam: ToySam, lora_rank: int, adapters: tuple[str, ...] = (STUDENT,),
                 lora_targets: tuple[str, ...] = DEFAULT_TARGETS) -> None:
        super().__init__()
        self.sam = sam
        placements = {target: blocks_placement("image_encoder.blocks", sam.image_encoder.blocks, target)
                      for target in lora_targets}
        self.lora_parameters = add_lora_targets(sam, lora_rank, placements, adapters) if lora_rank else {}

    @property
    def image_size(self) -> int:
        return self.sam.image_encoder.img_size

    def preprocess(self, images: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return images.float() * 2 - 1

    def encode(self, images: torch.Tensor, adapter: Adapter = STUDENT) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with use_adapter(self.sam, adapter):
            embeddings = self.sam.image_encoder(images)
        return embeddings, list(embeddings)

    def postprocess(self, logits: torch.Tensor, valid: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(logits, original_size, mode="bilinear", align_corners=False)


def toy_sizes(model_type: str) -> InputSizes:
    size = TOY_SHAPES[model_type]["image_size"]
    return {"image_size": size, "embedding_size": size // TOY_SHAPES[model_type]["patch"], "resize": "square"}


TOY = Family(name="toy", title="the toy SAM", model_types=tuple(TOY_SHAPES), network=ToySam, build=build_toy,
             backbone=ToyBackbone, lora_targets=("qv", "mlp"), input_sizes=toy_sizes,
             export=lambda model_type, state, path, decoding: (state, f'build_toy("{model_type}", "{path}")'))


@pytest.fixture
def toy_family(monkeypatch):
    """The toy family registered for one test: its one entry."""
    monkeypatch.setitem(FAMILIES, TOY.name, TOY)


def rle_masks(results: list[dict]) -> np.ndarray:
    return np.stack([decode_rle(r["segmentation"]) for r in results])


@pytest.mark.slow
def test_a_third_family_adapts_predicts_and_exports(toy_family, tmp_path, capsys):
    """adaptation.py trains the toy's LoRA and writes its adapters; predict.py with the adapter gives the
    masks that predict.py gives without it on tools/export.py's merged network, which the toy's own
    builder loads strictly; without either, the masks of the unadapted toy differ."""
    run = tmp_path / "run"
    result = adaptation.main([*tiny_config_overrides(run), "model.type=toy_tiny", "lora.targets=qv,mlp",
                              "opt.learning_rate=1e-2", "opt.warmup_steps=1"])
    assert [result[key]["step"] for key in ("direct", "last")] == [0, 4]
    weights, metadata = load_adapter(run / "checkpoints/last-lora.safetensors")
    assert (metadata["backbone"], metadata["model_type"], metadata["lora_targets"]) == ("toy", "toy_tiny", "qv,mlp")
    assert any(value.abs().sum() > 0 for key, value in weights.items() if ".up" in key)  # trained from zero

    merged = export.main(["--ckpt", str(run / "checkpoints/last-lora.safetensors"), "--out", str(tmp_path / "m.pth")])
    assert f'Load it with build_toy("toy_tiny", "{merged}")' in capsys.readouterr().out
    write_image(tmp_path / "images/scene.png", seed=1, height=48, width=80)
    common = ["--images", str(tmp_path / "images"), "--box", "5,5,40,30", "--box", "30,10,75,45", "--format", "rle"]
    config = ["--config", str(run / "config.json")]
    adapted = predict.main([*common, "--ckpt", str(run / "checkpoints/last-lora.safetensors"),
                            "--out", str(tmp_path / "adapted")])
    exported = predict.main([*common, *config, "--out", str(tmp_path / "exported"), f"model.checkpoint={merged}"])
    direct = predict.main([*common, *config, "--out", str(tmp_path / "direct")])
    assert rle_masks(adapted).shape == (2, 48, 80)
    assert np.mean(rle_masks(adapted) != rle_masks(exported)) < 1e-3  # the same up to float noise at 0
    assert [r["score"] for r in exported] == pytest.approx([r["score"] for r in adapted], abs=1e-4)
    assert max(abs(a["score"] - d["score"]) for a, d in zip(adapted, direct)) > 1e-4


def test_the_registry_answers_for_a_third_family(toy_family):
    assert model_types()[-1] == "toy_tiny" and family_of("toy_tiny") is TOY
    assert input_sizes("toy_tiny") == {"image_size": 64, "embedding_size": 8, "resize": "square"}
    assert backbone_metadata("toy_tiny") == {"backbone": "toy"}
    assert evaluation_decoding("toy_tiny", "auto") == "raw"
    model = build_wesam(load_config(overrides=["model.type=toy_tiny", "model.checkpoint=", "lora.targets=mlp"]))
    assert isinstance(model.backbone, ToyBackbone) and model.backbone.lora_parameters["total"] > 0


def test_the_reachability_tool_swaps_a_third_family_s_features(toy_family, tmp_path):
    """tools/reachability.py asks the backbone for its feature levels and their swap: the toy's one map."""
    configs = [load_config(overrides=[*tiny_config_overrides(tmp_path / "run"), "model.type=toy_tiny",
                                      f"dataset.synthetic.shift={shift}"]) for shift in ("glass_blur", "none")]
    shifted, clean = (build_dataset(DatasetSpec.from_config(cfg, **input_sizes("toy_tiny")), "val") for cfg in configs)
    model = build_wesam(configs[0])
    metrics = reachability.feature_swap(model, shifted, clean, 0.0, "image")
    assert list(metrics) == ["shifted (Direct)", "clean stride8", "clean, all levels"]
    fabric = Fabric(accelerator="cpu", devices=1)
    assert metrics["shifted (Direct)"]["miou"] == pytest.approx(evaluate(fabric, model, shifted, None)["miou"])
    assert metrics["clean stride8"]["miou"] == pytest.approx(evaluate(fabric, model, clean, None)["miou"])


@pytest.mark.parametrize(("override", "message"), [
    ("lora.targets=qv,patch_embed", r"names patch_embed, which the toy SAM \(model.type=toy_tiny\) does not have; "
                                    r"its targets: qv, mlp\."),
    ("memory_saving=true", r"memory_saving=True is not an option of the toy SAM \(model.type=toy_tiny\), which has "
                           r"no such setting: leave memory_saving at False\."),
    ("prompt_source=auto", r"prompt_source=auto finds instances with an automatic mask generator, which the toy SAM "
                           r"\(model.type=toy_tiny\) does not have; use prompt_source=labels\."),
])
def test_what_a_family_lacks_is_refused_with_one_line(toy_family, override, message):
    with pytest.raises(ConfigError, match=message):
        check_model_config(load_config(overrides=["model.type=toy_tiny", override]))


def test_an_unknown_model_type_is_named_with_the_registry_s_types(tmp_path, monkeypatch, capsys):
    """The config loads any model.type; the registry refuses an unknown one as the config refuses a
    choice, before a run does any work."""
    assert {"vit_b", "vit_l", "vit_h", "vit_tiny", "sam2.1_hiera_t", "sam2_tiny"} <= set(model_types())
    cfg = load_config(overrides=["model.type=vit_smal"])
    with pytest.raises(ConfigError) as info:
        check_model_config(cfg)
    assert str(info.value) == (f"Config key 'model.type' is 'vit_smal'; allowed values: {', '.join(model_types())}. "
                               "Did you mean 'vit_small'?")
    forbid_work(monkeypatch, adaptation, validate)
    code, message = cli(adaptation.main, [*tiny_config_overrides(tmp_path / "run"), "model.type=vit_smal"], capsys)
    assert code == 1 and message.strip().endswith("Did you mean 'vit_small'?") and not (tmp_path / "run").exists()
    code, message = cli(validate.main, ["model.type=vit_smal", "accelerator=cpu"], capsys)
    assert code == 1 and message.strip().endswith("Did you mean 'vit_small'?")
