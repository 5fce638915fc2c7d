"""SAM registry, LoRA and the WeSAM network against segment_anything's own predictor."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from segment_anything import SamPredictor

from models import CheckpointError, WeSAM, build_sam
from models.lora import (STUDENT, TEACHER, adapter_state_dict, ema_update, load_adapter_state_dict, lora_layers,
                         use_adapter)
from models.sam1 import SMALL_CONFIGS, sam_image_size


def tiny_sam(seed: int = 0):
    torch.manual_seed(seed)
    return build_sam("vit_tiny")


def randomise_lora(model: torch.nn.Module, adapter: str = STUDENT, scale: float = 0.05) -> None:
    with torch.no_grad():
        for layer in lora_layers(model):
            for parameter in layer.adapters[adapter].parameters():
                parameter.normal_(0, scale)


@pytest.fixture
def image() -> np.ndarray:
    """A 192 x 256 RGB image: longest side = the tiny SAM's input size, so no resampling happens
    and only padding (bottom-right, as SamPredictor) is exercised."""
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 255, (192, 256, 3), dtype=np.uint8)
    picture[40:120, 30:140] = (200, 40, 40)
    return picture


def padded_input(picture: np.ndarray, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    height, width = picture.shape[:2]
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[:height, :width] = picture
    return torch.from_numpy(canvas).permute(2, 0, 1)[None], torch.tensor([[0, 0, height, width]])


@pytest.mark.parametrize("prompt", ["box", "point", "box+point"])
def test_zero_lora_reproduces_sam_predictor(image, prompt):
    sam = tiny_sam()
    predictor = SamPredictor(copy.deepcopy(sam))
    model = WeSAM.on(sam, lora_rank=4).eval()
    size = model.image_size
    predictor.set_image(image)

    boxes = torch.tensor([[30.0, 40.0, 140.0, 120.0], [150.0, 10.0, 250.0, 180.0]])
    points = torch.tensor([[[60.0, 80.0], [5.0, 5.0]], [[200.0, 100.0], [100.0, 150.0]]])
    labels = torch.tensor([[1, 0], [1, 0]])
    prompts = {}
    if "box" in prompt:
        prompts["boxes"] = boxes
    if "point" in prompt:
        prompts["points"], prompts["point_labels"] = points, labels
    with torch.no_grad():
        expected_masks, expected_iou, expected_low = predictor.predict_torch(
            point_coords=prompts.get("points"), point_labels=prompts.get("point_labels"), boxes=prompts.get("boxes"),
            multimask_output=False, return_logits=True)
        images, valid = padded_input(image, size)
        for adapter in (STUDENT, None):
            out = model.predict(images, valid, [prompts], adapter=adapter)
            torch.testing.assert_close(out["logits"][0], expected_low, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(out["iou"][0], expected_iou, atol=1e-5, rtol=1e-5)
    assert out["logits"][0].shape == (2, 1, 4 * (size // 16), 4 * (size // 16))
    assert out["embeddings"].shape == (1, 64, size // 16, size // 16)


def test_anchor_is_unadapted_sam_when_lora_is_trained(image):
    sam = tiny_sam()
    reference = copy.deepcopy(sam).eval()
    model = WeSAM.on(sam, lora_rank=4).eval()
    randomise_lora(model)
    images, valid = padded_input(image, model.image_size)
    with torch.no_grad():
        anchor = model.predict(images, valid, [{"boxes": torch.tensor([[30.0, 40.0, 140.0, 120.0]])}], adapter=None)
        student = model.predict(images, valid, [{"boxes": torch.tensor([[30.0, 40.0, 140.0, 120.0]])}], adapter=STUDENT)
        base = reference.image_encoder(model.backbone.preprocess(images, valid))
    torch.testing.assert_close(anchor["embeddings"], base)
    assert not torch.allclose(student["embeddings"], base)


def test_lora_parameters_and_sharing():
    sam = tiny_sam()
    base_count = sum(p.numel() for p in sam.parameters())
    model = WeSAM.on(sam, lora_rank=4, teacher_mode="ema")
    config = SMALL_CONFIGS["vit_tiny"]
    per_adapter = config["depth"] * 4 * config["encoder_dim"] * 4
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == per_adapter
    # one frozen base: student, EMA teacher and anchor add only LoRA weights, no second SAM
    assert sum(p.numel() for p in model.parameters()) == base_count + 2 * per_adapter
    for layer in lora_layers(model):
        torch.testing.assert_close(layer.adapters[TEACHER].down_q.weight, layer.adapters[STUDENT].down_q.weight)
        assert torch.count_nonzero(layer.adapters[STUDENT].up_q.weight) == 0
        assert torch.count_nonzero(layer.adapters[STUDENT].up_v.weight) == 0


@pytest.mark.slow
def test_vit_b_lora_has_paper_parameter_count():
    model = WeSAM.on(build_sam("vit_b"), lora_rank=4)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 147_456
    assert len(lora_layers(model)) == 12
    assert model.image_size == sam_image_size("vit_b") == 1024


def test_lora_changes_only_q_and_v():
    sam = tiny_sam()
    model = WeSAM.on(sam, lora_rank=4)
    randomise_lora(model)
    layer = lora_layers(model)[0]
    dim = layer.base.out_features // 3
    x = torch.randn(2, 5, layer.base.in_features)
    with torch.no_grad():
        adapted = layer(x)
        with use_adapter(model, None):
            base = layer(x)
    assert not torch.allclose(adapted[..., :dim], base[..., :dim])
    torch.testing.assert_close(adapted[..., dim:2 * dim], base[..., dim:2 * dim])
    assert not torch.allclose(adapted[..., 2 * dim:], base[..., 2 * dim:])
    assert layer.active == STUDENT  # the context manager restores the previous adapter


def test_adapter_state_dict_round_trip_and_mismatch():
    source = WeSAM.on(tiny_sam(), lora_rank=4)
    randomise_lora(source)
    state = adapter_state_dict(source)
    assert set(state) == {f"image_encoder.blocks.{i}.attn.qkv.{p}" for i in range(2)
                          for p in ("down_q", "up_q", "down_v", "up_v")}
    target = WeSAM.on(tiny_sam(seed=1), lora_rank=4)
    load_adapter_state_dict(target, state)
    for key, value in adapter_state_dict(target).items():
        torch.testing.assert_close(value, state[key])
    with pytest.raises(ValueError, match="lora.rank"):
        load_adapter_state_dict(WeSAM.on(tiny_sam(), lora_rank=8), state)


def test_ema_update_moves_teacher_towards_student():
    model = WeSAM.on(tiny_sam(), lora_rank=4, teacher_mode="ema")
    randomise_lora(model, STUDENT)
    layer = lora_layers(model)[0]
    teacher_before = layer.adapters[TEACHER].up_q.weight.clone()
    student = layer.adapters[STUDENT].up_q.weight
    ema_update(model, rate=0.9)
    torch.testing.assert_close(layer.adapters[TEACHER].up_q.weight, 0.9 * teacher_before + 0.1 * student)
    assert not layer.adapters[TEACHER].up_q.weight.requires_grad


@pytest.mark.parametrize("mode", ["shared", "ema"])
def test_forward_gradients_reach_only_the_right_branches(image, mode):
    model = WeSAM.on(tiny_sam(), lora_rank=4, teacher_mode=mode)
    images, valid = padded_input(image, model.image_size)
    prompts = [{"boxes": torch.tensor([[30.0, 40.0, 140.0, 120.0], [150.0, 10.0, 250.0, 180.0]])}]
    outputs = model(images, images, valid, prompts)
    assert set(outputs) == {"anchor", "teacher", "student"}
    assert not outputs["anchor"]["embeddings"].requires_grad
    assert outputs["student"]["embeddings"].requires_grad
    assert outputs["teacher"]["embeddings"].requires_grad == (mode == "shared")
    outputs["student"]["logits"][0].sum().backward()
    assert all(p.grad is None for n, p in model.named_parameters() if "adapters" not in n)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if STUDENT in n)


def test_preprocess_normalises_and_zeroes_padding(image):
    model = WeSAM.on(tiny_sam(), lora_rank=4)
    images, valid = padded_input(image, model.image_size)
    x = model.backbone.preprocess(images, valid)
    assert torch.count_nonzero(x[..., 192:, :]) == 0
    expected = ((torch.from_numpy(image).permute(2, 0, 1).float() - model.sam.pixel_mean[:, :, 0:1])
                / model.sam.pixel_std)
    torch.testing.assert_close(x[0, :, :192, :256], expected)
    model.backbone.pixel_normalize = False  # the authors' code feeds RGB / 255 without normalisation
    torch.testing.assert_close(model.backbone.preprocess(images, valid)[0, :, :192, :256],
                               images[0, :, :192, :256].float() / 255.0)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_checkpoint_round_trip(tmp_path, suffix):
    sam = tiny_sam(seed=3)
    path = tmp_path / f"tiny{suffix}"
    if suffix == ".pth":
        torch.save(sam.state_dict(), path)
    else:
        save_file({k: v.contiguous() for k, v in sam.state_dict().items()}, str(path))
    loaded = build_sam("vit_tiny", path)
    for key, value in sam.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


def test_checkpoint_errors_say_what_to_do(tmp_path):
    with pytest.raises(CheckpointError, match=r"sam_vit_b_01ec64\.pth.*PREPARE\.md"):
        build_sam("vit_b", tmp_path / "missing.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="could not be read"):
        build_sam("vit_tiny", corrupt)
    looks_like_vit_b = tmp_path / "vit_b_like.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16)}, looks_like_vit_b)
    with pytest.raises(CheckpointError, match="set model.type=vit_b"):
        build_sam("vit_tiny", looks_like_vit_b)
    with pytest.raises(ValueError, match="vit_tiny"):
        build_sam("vit_x")


def test_relative_checkpoint_paths_fall_back_to_the_repository(tmp_path, monkeypatch):
    from models import weight_files

    repo = tmp_path / "repo"
    (repo / "weights").mkdir(parents=True)
    sam = tiny_sam(seed=5)
    save_file({k: v.contiguous() for k, v in sam.state_dict().items()}, str(repo / "weights" / "w.safetensors"))
    monkeypatch.setattr(weight_files, "REPO_ROOT", repo)
    monkeypatch.chdir(tmp_path)
    assert weight_files.resolve_path("weights/w.safetensors") == repo / "weights" / "w.safetensors"
    loaded = build_sam("vit_tiny", "weights/w.safetensors")
    torch.testing.assert_close(loaded.state_dict()["mask_decoder.iou_token.weight"],
                               sam.state_dict()["mask_decoder.iou_token.weight"])
    (tmp_path / "weights").mkdir()
    assert weight_files.resolve_path("weights/w.safetensors") == repo / "weights" / "w.safetensors"  # no file in cwd
    torch.save(sam.state_dict(), tmp_path / "weights" / "w.safetensors")
    assert weight_files.resolve_path("weights/w.safetensors") == Path("weights/w.safetensors")  # cwd wins
    assert weight_files.resolve_path("missing.pth") == Path("missing.pth")


def test_vit_small_has_patch_8_and_a_16_x_16_embedding():
    from models.sam1 import sam_embedding_size, sam_image_size

    sam = build_sam("vit_small")
    assert sam_image_size("vit_small") == 128 and sam_embedding_size("vit_small") == 16
    assert sam_embedding_size("vit_tiny") == 16 and sam_embedding_size("vit_b") == 64
    assert 2_000_000 < sum(p.numel() for p in sam.parameters()) < 3_000_000
    with torch.no_grad():
        embedding = sam.image_encoder(torch.zeros(1, 3, 128, 128))
    assert embedding.shape == (1, 96, 16, 16)
