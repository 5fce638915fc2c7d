"""SAM 2 as a second backbone: builders and checkpoint messages, LoRA on the Hiera blocks against a
dense reference, WeSAM2Predictor's anchor (the adapter off) against SAM2ImagePredictor, the image path
that trains (only the parts it uses, decoding alike in train and eval mode), our path from a file on
disk through a dataset sample against the package's SAM2ImagePredictor on a model that the package's
build_sam2 built with and without its post-processing (model.decoding "meta" and "raw"), and the merged
export loaded strictly by build_sam2."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sam2.build_sam import build_sam2
from sam2.sam2_image_predictor import SAM2ImagePredictor

from datasets.images import read_image
from datasets.transforms import resize_square_image
from losses.segmentation import iou_head_loss
from engine.predictions import sample_outputs
from models import CheckpointError, WeSAM, build_sam, build_wesam
from models.backbones import evaluation_decoding
from models.lora import STUDENT, TEACHER, lora_layers, merged_state_dict, use_adapter
from models.sam2 import (
    IMAGE_PATH,
    OFFICIAL_SAM2,
    SAM2_CONFIGS,
    Sam2Backbone,
    WeSAM2Predictor,
    _official_signature,
    _state_signature,
    build_sam2_model,
    feature_sizes,
    image_predictor,
    load_sam2_state,
    sam2_config,
)
from tests.ondisk import build, labels, write_mask
from utils.config import ConfigError, load_config

# (height, width, PIL mode): the tiny SAM 2's input is 128, so these scale up and down, non-square
IMAGES = {"wide": (97, 150, "RGB"), "grey": (151, 203, "L"), "rgba_tall": (300, 190, "RGBA")}
BOXES = [[0.1, 0.15, 0.6, 0.55], [0.4, 0.3, 0.95, 0.9]]  # fractions of width and height, XYXY
POINTS = [[[0.3, 0.35], [0.05, 0.9]], [[0.7, 0.6], [0.2, 0.2]]]  # two objects, a positive and a negative point
# two instances of each image's label map, as fractions of width and height (XYXY)
INSTANCES = {1: (0.1, 0.15, 0.6, 0.55), 2: (0.55, 0.5, 0.95, 0.9)}


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    return build_sam2_model("sam2_tiny")


def randomise_lora(model: torch.nn.Module, adapter: str = STUDENT, scale: float = 0.05) -> None:
    with torch.no_grad():
        for layer in lora_layers(model):
            for parameter in layer.adapters[adapter].parameters():
                parameter.normal_(0, scale)


def native_prompts(height: int, width: int, prompt: str) -> dict[str, torch.Tensor]:
    scale = torch.tensor([width, height] * 2, dtype=torch.float)
    prompts = {}
    if "box" in prompt:
        prompts["boxes"] = torch.tensor(BOXES) * scale
    if "point" in prompt:
        prompts["points"] = torch.tensor(POINTS) * scale[:2]
        prompts["point_labels"] = torch.tensor([[1, 0], [1, 0]])
    return prompts


@pytest.fixture(scope="module")
def image_files(tmp_path_factory) -> dict[str, Path]:
    """A `folder` dataset's test split: images/<stem>.png (RGB, grey, RGBA; none square) and a label
    map of two instances each in masks/<stem>.png. Returns the image files."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    files = {}
    for stem, (height, width, mode) in IMAGES.items():
        pixels = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
        pixels[height // 5:height // 2, width // 6:width // 2, :3] = (220, 40, 30)
        files[stem] = root / "test" / "images" / f"{stem}.png"
        files[stem].parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, "RGBA").convert(mode).save(files[stem])
        rects = {value: (int(x1 * width), int(y1 * height), int(x2 * width), int(y2 * height))
                 for value, (x1, y1, x2, y2) in INSTANCES.items()}
        write_mask(root / "test" / "masks" / f"{stem}.png", labels(rects, height, width))
    return files


def test_model_types_and_builders():
    assert set(SAM2_CONFIGS) == {f"{v}_hiera_{s}" for v in ("sam2", "sam2.1") for s in ("t", "s", "b+", "l")} | {
        "sam2_tiny", "sam2_small", "sam2_small256"}
    for model_type, (config, checkpoint) in OFFICIAL_SAM2.items():
        assert sam2_config(model_type) == (config, [])
        assert checkpoint.startswith(model_type.split("_hiera")[0]) and checkpoint.endswith(".pt")
    with pytest.raises(ValueError, match="sam2.1_hiera_t"):
        build_sam2_model("sam2_huge")
    # what identifies a checkpoint's configuration (trunk width, blocks, 2.1), read from the yaml files
    assert [_official_signature(name) for name in ("sam2.1_hiera_t", "sam2_hiera_s", "sam2.1_hiera_b+",
                                                   "sam2_hiera_l")] == [(96, 12, True), (96, 16, False),
                                                                        (112, 24, True), (144, 48, False)]
    model = tiny_model()
    assert not model.training and model.image_size == 128
    # the eval-only fallback to the most stable multimask output is off (anchor and student decode alike)
    assert not model.sam_mask_decoder.dynamic_multimask_via_stability
    # the package's default build switches it on with the threshold and margin that "meta" decoding uses
    # (the decoder's own: models/sam2.py stability_fallback)
    default = build_sam2_model("sam2_tiny", apply_postprocessing=True).sam_mask_decoder
    assert default.dynamic_multimask_via_stability
    assert (default.dynamic_multimask_stability_thresh, default.dynamic_multimask_stability_delta) == (
        model.sam_mask_decoder.dynamic_multimask_stability_thresh,
        model.sam_mask_decoder.dynamic_multimask_stability_delta) == (0.98, 0.05)
    assert feature_sizes(model) == [(32, 32), (16, 16), (8, 8)]
    # model.decoding=auto: Meta's post-processing for the official checkpoints, the first token for ours
    assert {name: evaluation_decoding(name, "auto") for name in SAM2_CONFIGS} == {
        name: "meta" if name in OFFICIAL_SAM2 else "raw" for name in SAM2_CONFIGS}
    assert evaluation_decoding("vit_b", "auto") == "raw"
    assert [evaluation_decoding(name, setting) for name in ("sam2_small", "sam2.1_hiera_l")
            for setting in ("meta", "raw")] == ["meta", "raw"] * 2
    with pytest.raises(ConfigError, match="model.decoding"):
        load_config(overrides=["model.decoding=best"])
    blocks = model.image_encoder.trunk.blocks
    stage_changes = [i for i, block in enumerate(blocks) if block.dim != block.dim_out]
    assert stage_changes == [1, 2, 4]
    assert [blocks[i].attn.qkv.out_features for i in stage_changes] == [3 * 2 * blocks[i].dim for i in stage_changes]


def write_checkpoint(path: Path, state: dict[str, torch.Tensor]) -> Path:
    torch.save({"model": state}, path)
    return path


def test_checkpoint_loading_and_messages(tmp_path):
    source = tiny_model(seed=1)
    path = write_checkpoint(tmp_path / "tiny.pt", source.state_dict())
    loaded = build_sam2_model("sam2_tiny", path)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)

    with pytest.raises(CheckpointError, match=r"does not exist \(the official file is 'sam2.1_hiera_tiny.pt'\)"):
        build_sam2_model("sam2.1_hiera_t", tmp_path / "missing.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="could not be read"):
        build_sam2_model("sam2_tiny", tmp_path / "broken.pt")
    torch.manual_seed(0)
    sam1 = write_checkpoint(tmp_path / "sam1.pt", build_sam("vit_tiny").state_dict())
    with pytest.raises(CheckpointError, match="It is a SAM 1 checkpoint"):
        build_sam2_model("sam2_tiny", sam1)

    # the same tiny model on the 2.0 configuration: 2.1 adds parameters, so neither loads the other
    config, overrides = sam2_config("sam2_tiny")
    model_2_0 = build_sam2(config.replace("sam2.1", "sam2"), None, device="cpu", hydra_overrides_extra=overrides,
                           apply_postprocessing=False)
    assert set(source.state_dict()) - set(model_2_0.state_dict()) == {
        "no_obj_embed_spatial", "obj_ptr_tpos_proj.weight", "obj_ptr_tpos_proj.bias"}
    checkpoint_2_0 = write_checkpoint(tmp_path / "tiny_2_0.pt", model_2_0.state_dict())
    with pytest.raises(CheckpointError, match="It is a SAM 2.0 checkpoint and model.type=sam2_tiny is a SAM 2.1 "):
        build_sam2_model("sam2_tiny", checkpoint_2_0)
    with pytest.raises(CheckpointError, match="It is a SAM 2.1 checkpoint and model.type=sam2_hiera_t is a SAM 2.0 "):
        load_sam2_state(model_2_0, "sam2_hiera_t", torch.load(path)["model"], path)


def test_lora_on_a_stage_change_block_equals_dense_reference():
    backbone = Sam2Backbone(tiny_model(), lora_rank=4, adapters=(STUDENT, TEACHER))
    layers = lora_layers(backbone)
    assert len(layers) == len(backbone.sam.image_encoder.trunk.blocks)
    randomise_lora(backbone)
    layer = layers[2]  # stage change: 16 -> 3 x 32
    dim = layer.base.out_features // 3
    assert (layer.base.in_features, dim) == (16, 32)
    lora = layer.adapters[STUDENT]
    delta = torch.zeros_like(layer.base.weight)
    delta[:dim] = lora.up_q.weight @ lora.down_q.weight
    delta[2 * dim:] = lora.up_v.weight @ lora.down_v.weight
    assert torch.count_nonzero(delta[:dim]) and torch.count_nonzero(delta[2 * dim:])
    base_weight = layer.base.weight.clone()
    x = torch.randn(2, 4, 4, 16)  # Hiera's B x H x W x C
    with torch.no_grad():
        torch.testing.assert_close(layer(x), F.linear(x, base_weight + delta, layer.base.bias), rtol=0, atol=1e-6)
        with use_adapter(backbone, None):
            assert torch.equal(layer(x), F.linear(x, base_weight, layer.base.bias))
        with use_adapter(backbone, TEACHER):  # a zero copy until trained: the base exactly
            assert torch.equal(layer(x), F.linear(x, base_weight, layer.base.bias))

    merged = merged_state_dict(backbone.sam)
    key = "image_encoder.trunk.blocks.2.attn.qkv.weight"
    assert torch.equal(merged[key], base_weight + delta)
    assert torch.equal(merged[key][dim:2 * dim], base_weight[dim:2 * dim])
    assert torch.equal(layer.base.weight, base_weight)  # merging leaves the adapted network as it was
    assert not any("adapters" in k or ".base." in k for k in merged)


def square_batch(count: int, size: int = 128, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """B x 3 x S x S images as the datasets give SAM 2 (floats in [0, 1]) and their valid regions."""
    images = torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(seed))
    return images, torch.tensor([[0, 0, size, size]] * count)


def test_lora_trains_only_the_student_and_the_anchor_is_the_plain_model():
    plain = tiny_model()
    model = WeSAM.on(copy.deepcopy(plain), lora_rank=4)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == sum(4 * 2 * (b.attn.qkv.base.in_features + b.attn.qkv.base.out_features // 3)
                            for b in model.sam.image_encoder.trunk.blocks)
    randomise_lora(model)
    images, valid = square_batch(2)
    prompts = [{"boxes": torch.tensor([[10.0, 20.0, 90.0, 100.0]])}, {"boxes": torch.tensor([[0.0, 0.0, 64.0, 64.0]])}]
    with torch.no_grad():
        anchor = model.predict(images, valid, prompts, adapter=None)
        reference = WeSAM.on(plain, lora_rank=0).predict(images, valid, prompts)
    assert torch.equal(anchor["embeddings"], reference["embeddings"])
    assert torch.equal(anchor["logits"][1], reference["logits"][1])
    student = model.predict(images, valid, prompts)
    assert not torch.allclose(student["embeddings"], anchor["embeddings"])
    backbone = model.backbone
    with torch.no_grad():  # one adapter per batch slice (Hiera's windows stay grouped by image)
        mixed, _ = backbone.encode(backbone.preprocess(images, valid), adapter=(STUDENT, None))
    torch.testing.assert_close(mixed[0], student["embeddings"][0].detach(), rtol=0, atol=1e-5)
    torch.testing.assert_close(mixed[1], anchor["embeddings"][1], rtol=0, atol=1e-5)
    (student["logits"][0].sum() + student["iou"][1].sum()).backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert grads and all(".adapters.student." in name for name in grads)
    assert all(p.grad.abs().sum() > 0 for name, p in model.named_parameters() if ".up_q." in name)


def test_wesam2_predictor_without_adapter_equals_sam2_image_predictor():
    cfg = load_config(overrides=["model.type=sam2_tiny", "model.checkpoint=", "accelerator=cpu"])
    model = build_wesam(cfg).eval()
    randomise_lora(model.sam)  # a trained-looking student, which the anchor must not use
    reference = image_predictor(copy.deepcopy(model.sam))
    for layer in lora_layers(reference.model):
        layer.active = None
    image = np.random.default_rng(0).integers(0, 256, (90, 150, 3), dtype=np.uint8)
    point = {"point_coords": np.array([[40.0, 30.0], [120.0, 70.0]]), "point_labels": np.array([1, 0]),
             "multimask_output": False, "return_logits": True}
    outputs = {}
    for name, predictor in (("reference", reference), ("anchor", WeSAM2Predictor(model, None)),
                            ("student", WeSAM2Predictor(model, STUDENT))):
        predictor.set_image(image)
        outputs[name] = predictor.predict(**point)
    masks, iou, low_res = outputs["anchor"]
    assert low_res.shape == (1, 32, 32) and masks.shape == (1, 90, 150)
    np.testing.assert_allclose(low_res, outputs["reference"][2], rtol=0, atol=1e-4)
    np.testing.assert_allclose(iou, outputs["reference"][1], rtol=0, atol=1e-5)
    np.testing.assert_allclose(masks, outputs["reference"][0], rtol=0, atol=1e-4)
    assert np.abs(outputs["student"][2] - low_res).max() > 1e-3  # the adapter matters: a real comparison


def test_image_path_trains_only_what_it_uses():
    """Rank 0 (pretraining): the parts of SAM2Base the image path never uses (memory attention and
    encoder, object pointers, the object-score head) stay frozen, so that every trained parameter gets
    a gradient (DDP raises on one without) and the optimizer holds nothing else."""
    model = WeSAM.on(tiny_model(), lora_rank=0).train()
    trained = {name for name, p in model.sam.named_parameters() if p.requires_grad}
    frozen = {name for name, p in model.sam.named_parameters() if not p.requires_grad}
    assert all(name.startswith(IMAGE_PATH) for name in trained)
    assert {name.split(".")[0] for name in frozen} >= {"memory_attention", "memory_encoder", "obj_ptr_proj",
                                                       "mask_downsample", "sam_mask_decoder"}
    assert all(name.startswith("sam_mask_decoder.pred_obj_score_head.") for name in frozen
               if name.startswith("sam_mask_decoder."))
    images, valid = square_batch(2)
    prompts = [{"boxes": torch.tensor([[10.0, 20.0, 90.0, 100.0]]), "points": torch.tensor([[[50.0, 60.0]]]),
                "point_labels": torch.tensor([[1]]), "mask_inputs": torch.randn(1, 1, 32, 32)},
               {"points": torch.tensor([[[30.0, 30.0], [100.0, 100.0]]]), "point_labels": torch.tensor([[1, 0]])}]
    outputs = model.predict(images, valid, prompts)
    (sum(logits.sum() for logits in outputs["logits"]) + sum(iou.sum() for iou in outputs["iou"])).backward()
    without = sorted(name for name, p in model.sam.named_parameters() if p.requires_grad and p.grad is None)
    assert without == []


def test_decoding_is_alike_in_train_and_eval_mode_and_the_iou_head_ends_in_a_sigmoid():
    """Built without the eval-only postprocessing, so the anchor and teacher (no gradients) decode as
    the training student; SAM 2's IoU head applies its own sigmoid, and the IoU loss none more."""
    model = WeSAM.on(tiny_model(), lora_rank=4)
    randomise_lora(model)
    images, valid = square_batch(1)
    prompts = [{"points": torch.tensor([[[40.0, 50.0]], [[90.0, 20.0]]]), "point_labels": torch.tensor([[1], [1]])}]
    with torch.no_grad():
        train = model.train().predict(images, valid, prompts)
        evaluation = model.eval().predict(images, valid, prompts)
    assert torch.equal(train["logits"][0], evaluation["logits"][0])
    assert torch.equal(train["iou"][0], evaluation["iou"][0])
    decoder = model.sam.sam_mask_decoder
    assert decoder.iou_prediction_head.sigmoid_output and not decoder.dynamic_multimask_via_stability
    # "raw" is the first token even on the package's default build (post-processing on), which keeps its switch
    default = WeSAM.on(build_sam2_model("sam2_tiny", apply_postprocessing=True), lora_rank=4).eval()
    default.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(default.predict(images, valid, prompts)["logits"][0], evaluation["logits"][0])
        meta = default.predict(images, valid, prompts, decoding="meta")["logits"][0]
    assert not torch.allclose(meta, evaluation["logits"][0])
    assert default.sam.sam_mask_decoder.dynamic_multimask_via_stability and not decoder.dynamic_multimask_via_stability
    iou = evaluation["iou"][0]
    assert ((iou > 0) & (iou < 1)).all()
    target = torch.zeros(2, 1, 128, 128)
    target[:, :, 20:80, 30:90] = 1
    logits = torch.randn(2, 1, 128, 128)
    actual = ((logits > 0) & (target > 0)).flatten(1).sum(1) / ((logits > 0) | (target > 0)).flatten(1).sum(1)
    torch.testing.assert_close(iou_head_loss(iou, logits, target), F.mse_loss(iou.flatten(), actual))


def native(prompts: dict[str, torch.Tensor], height: int, width: int, size: int) -> dict[str, torch.Tensor]:
    """A sample's prompts (S x S input frame) in the image's own pixels, as a SAM 2 user gives them."""
    scale = torch.tensor([width / size, height / size])
    out = {}
    if "boxes" in prompts:
        out["boxes"] = prompts["boxes"] * scale.repeat(2)
    if "points" in prompts:
        out["points"], out["point_labels"] = prompts["points"] * scale, prompts["point_labels"]
    return out


def built_by_the_package(model_type: str, state: dict[str, torch.Tensor], apply_postprocessing: bool):
    """The package's build_sam2 of `model_type`'s configuration, with or without its eval-only
    post-processing, holding the weights `state` (loaded strictly)."""
    config, overrides = sam2_config(model_type)
    sam = build_sam2(config, None, device="cpu", hydra_overrides_extra=overrides,
                     apply_postprocessing=apply_postprocessing)
    sam.load_state_dict(state)
    return sam


@pytest.mark.parametrize("decoding", ["raw", "meta"])
@pytest.mark.parametrize("prompt", ["box", "point", "box+point"])
def test_our_path_from_file_equals_sam2_image_predictor(image_files, prompt, decoding):
    """A file on disk -> a dataset sample (our reader, SAM 2's input path) -> WeSAM with LoRA at zero,
    decoded as model.decoding says, against SAM2ImagePredictor.set_image + predict (single mask) on
    the same file, on a model the package's build_sam2 built with apply_postprocessing=True for
    "meta" (its default) and False for "raw": the low-res logits and IoU head of the evaluation, and
    predict.py's logits at the image's size (sample_outputs), to 1e-4. Random weights leave every
    first-token mask unstable, so "meta" takes the multimask fallback here (its masks differ from raw's)."""
    torch.manual_seed(0)
    sam = build_sam2_model("sam2_tiny")
    predictor = image_predictor(built_by_the_package("sam2_tiny", sam.state_dict(), decoding == "meta"))
    model = WeSAM.on(sam, lora_rank=4).eval()  # LoRA at zero
    root = next(iter(image_files.values())).parent.parent.parent
    datasets = {kind: build("folder", root, "test", "model.type=sam2_tiny", f"prompt={kind}")
                for kind in ("box", "point")}
    for index, path in enumerate(sorted(image_files.values())):
        samples = {kind: dataset[index] for kind, dataset in datasets.items()}
        sample = samples["box"]
        prompts = {**(samples["box"]["prompts"] if "box" in prompt else {}),
                   **(samples["point"]["prompts"] if "point" in prompt else {})}
        height, width = read_image(path).shape[:2]
        assert sample["image"].dtype == torch.float32 and sample["image"].shape == (3, 128, 128)
        given = native(prompts, height, width, 128)
        with torch.no_grad():
            predictor.set_image(np.array(Image.open(path).convert("RGB")))  # what a SAM 2 user passes
            masks, iou, low_res = predictor.predict(
                point_coords=given.get("points"), point_labels=given.get("point_labels"), box=given.get("boxes"),
                multimask_output=False, return_logits=True)
            ours = model.predict(sample["image"][None], sample["valid"][None], [prompts], adapter=STUDENT,
                                 decoding=decoding)
            raw = model.predict(sample["image"][None], sample["valid"][None], [prompts], adapter=STUDENT)
        upsampled, scores = sample_outputs(model, sample, STUDENT, [prompts], original_size=(height, width),
                                           decoding=decoding)
        logits = ours["logits"][0]
        assert logits.shape == (2, 1, 32, 32) and ours["iou"][0].shape == (2, 1)
        assert logits.abs().max() < 32  # so the predictor's clamp to +-32 leaves its logits comparable
        assert (logits[0] - logits[1]).abs().max() > 1e-3  # the two objects' masks differ: a real comparison
        assert ((logits - raw["logits"][0]).abs().amax((1, 2, 3)) > 1e-3).all() == (decoding == "meta")
        assert low_res.shape == (2, 1, 32, 32)  # N > 1: the predictor keeps the batch dimension
        torch.testing.assert_close(logits, torch.from_numpy(low_res), rtol=0, atol=1e-4)
        torch.testing.assert_close(ours["iou"][0], torch.from_numpy(iou), rtol=0, atol=1e-4)
        torch.testing.assert_close(upsampled, torch.from_numpy(masks)[:, 0], rtol=0, atol=1e-4)
        torch.testing.assert_close(scores, torch.from_numpy(iou)[:, 0], rtol=0, atol=1e-4)


def test_meta_decoding_keeps_a_stable_first_mask():
    """Where the first token's mask is stable (stability score >= 0.98: here its logits made large),
    "meta" keeps it, as the package's predictor on its default build does: the fallback is per mask,
    not a switch to the multimask outputs."""
    torch.manual_seed(0)
    sam = build_sam2_model("sam2_tiny")
    with torch.no_grad():  # the first mask token's hypernetwork scaled up: logits far from 0, so stable
        sam.sam_mask_decoder.output_hypernetworks_mlps[0].layers[-1].weight.mul_(1000.0)
    predictor = image_predictor(built_by_the_package("sam2_tiny", sam.state_dict(), True))
    model = WeSAM.on(sam, lora_rank=4).eval()
    pixels = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)  # the input size: no resize
    images, valid = torch.from_numpy(pixels).permute(2, 0, 1)[None] / 255.0, torch.tensor([[0, 0, 128, 128]])
    prompts = [{"boxes": torch.tensor([[10.0, 20.0, 90.0, 100.0], [0.0, 0.0, 64.0, 64.0]])}]
    with torch.no_grad():
        meta = model.predict(images, valid, prompts, decoding="meta")
        raw = model.predict(images, valid, prompts, decoding="raw")
        predictor.set_image(pixels)
        _, iou, low_res = predictor.predict(box=prompts[0]["boxes"].numpy(), multimask_output=False,
                                            return_logits=True)
    decoder = sam.sam_mask_decoder
    assert (decoder._get_stability_scores(raw["logits"][0]) >= decoder.dynamic_multimask_stability_thresh).all()
    assert torch.equal(meta["logits"][0], raw["logits"][0]) and torch.equal(meta["iou"][0], raw["iou"][0])
    torch.testing.assert_close(meta["logits"][0].clamp(-32, 32), torch.from_numpy(low_res), rtol=0, atol=1e-3)
    torch.testing.assert_close(meta["iou"][0], torch.from_numpy(iou), rtol=0, atol=1e-4)


def test_the_dataset_resizes_as_sam2_transforms(image_files):
    """The sample's image is the package's own ToTensor + Resize of the file, and its masks and boxes
    are scaled per axis (SAM 2 does not keep the aspect ratio)."""
    path = image_files["rgba_tall"]
    dataset = build("folder", path.parent.parent.parent, "test", "model.type=sam2_tiny")
    sample = dataset[[record.image for record in dataset.records].index(path)]
    pixels = read_image(path)
    height, width = pixels.shape[:2]
    expected = SAM2ImagePredictor(tiny_model())._transforms.transforms[0](torch.from_numpy(pixels).permute(2, 0, 1)
                                                                          .float() / 255)
    torch.testing.assert_close(sample["image"], expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.from_numpy(resize_square_image(pixels, 128)).permute(2, 0, 1), expected,
                               rtol=0, atol=1e-6)
    assert sample["valid"].tolist() == [0, 0, 128, 128] and sample["masks"].shape == (2, 128, 128)
    x1, y1, x2, y2 = INSTANCES[1]
    box = sample["prompts"]["boxes"][0]
    # the box of the first instance (exclusive ends), x scaled by 128 / W and y by 128 / H
    torch.testing.assert_close(box, torch.tensor([int(x1 * width) * 128 / width, int(y1 * height) * 128 / height,
                                                  int(x2 * width) * 128 / width, int(y2 * height) * 128 / height]),
                               rtol=0, atol=1.0)


def test_object_score_does_not_blank_the_logits():
    """The video path sets every logit to -1024 when the object score is <= 0; ours keeps them."""
    model = WeSAM.on(tiny_model(), lora_rank=4)
    backbone = model.backbone
    images, valid = square_batch(1)
    with torch.no_grad():
        backbone.sam.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(-100.0)
        embeddings, features = backbone.encode(backbone.preprocess(images, valid))
        points = {"points": torch.tensor([[[60.0, 70.0]]]), "point_labels": torch.tensor([[1]])}
        logits, _ = model.decode(features[0], points)
        video = backbone.sam._forward_sam_heads(
            embeddings, point_inputs={"point_coords": points["points"], "point_labels": points["point_labels"]},
            high_res_features=[feature[None] for feature in features[0][1]], multimask_output=False)
    assert (video[3] == -1024).all()
    assert logits.min() > -1000


def test_merged_export_loads_strictly_in_build_sam2_and_gives_the_adapted_masks(tmp_path):
    model = WeSAM.on(tiny_model(), lora_rank=4).eval()
    randomise_lora(model)
    path = tmp_path / "merged.pt"
    torch.save({"model": merged_state_dict(model.sam)}, path)
    config, overrides = sam2_config("sam2_tiny")
    exported = build_sam2(config, str(path), device="cpu", hydra_overrides_extra=overrides, apply_postprocessing=False)
    images, valid = square_batch(1)
    prompts = [{"boxes": torch.tensor([[10.0, 20.0, 80.0, 100.0]]), "points": torch.tensor([[[40.0, 50.0]]]),
                "point_labels": torch.tensor([[1]])}]
    with torch.no_grad():
        adapted = model.predict(images, valid, prompts)
        plain = WeSAM.on(exported, lora_rank=0).predict(images, valid, prompts)
        anchor = model.predict(images, valid, prompts, adapter=None)
    torch.testing.assert_close(plain["logits"][0], adapted["logits"][0], rtol=0, atol=1e-4)
    torch.testing.assert_close(plain["iou"][0], adapted["iou"][0], rtol=0, atol=1e-5)
    assert torch.equal((plain["logits"][0] > 0), (adapted["logits"][0] > 0))
    assert not torch.allclose(anchor["logits"][0], adapted["logits"][0])


@pytest.mark.slow
def test_sam2_1_hiera_t_at_1024_equals_the_predictor_built_each_way(image_files):
    """The official tiny configuration (random weights) at its real size, where the package's own
    SAM2ImagePredictor (feature sizes 256/128/64) runs as it is: on build_sam2's default model
    (post-processing on) it gives our "meta" decoding, on one built without post-processing our "raw"."""
    torch.manual_seed(0)
    sam = build_sam2_model("sam2.1_hiera_t")
    assert _state_signature(sam.state_dict()) == _official_signature("sam2.1_hiera_t")
    assert feature_sizes(sam) == SAM2ImagePredictor(sam)._bb_feat_sizes
    predictors = {decoding: SAM2ImagePredictor(built_by_the_package("sam2.1_hiera_t", sam.state_dict(),
                                                                    decoding == "meta"))
                  for decoding in ("meta", "raw")}
    model = WeSAM.on(sam, lora_rank=4).eval()
    path = image_files["wide"]
    dataset = build("folder", path.parent.parent.parent, "test", "model.type=sam2.1_hiera_t", "prompt=box")
    sample = dataset[[record.image for record in dataset.records].index(path)]
    pixels = read_image(path)
    given = native(sample["prompts"], *pixels.shape[:2], 1024)
    ours = {}
    with torch.no_grad():
        _, features = model.backbone.encode(model.backbone.preprocess(sample["image"][None]))
        for decoding, predictor in predictors.items():
            predictor.set_image(pixels)
            _, iou, low_res = predictor.predict(box=given["boxes"], multimask_output=False, return_logits=True)
            ours[decoding], ours_iou = model.decode(features[0], sample["prompts"], decoding)
            assert ours[decoding].shape == (2, 1, 256, 256)
            torch.testing.assert_close(ours[decoding].clamp(-32, 32), torch.from_numpy(low_res), rtol=0, atol=1e-4)
            torch.testing.assert_close(ours_iou, torch.from_numpy(iou), rtol=0, atol=1e-4)
    assert (ours["meta"] - ours["raw"]).abs().max() > 1e-3  # the fallback was taken (random weights: unstable)


SAM2_DOMAINS = sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "configs" / "sam2").glob("*.py")
                      if p.stem != "__init__")


@pytest.mark.parametrize("domain", SAM2_DOMAINS)
def test_the_sam2_configs_build_the_shipped_sam2_small(domain):
    """configs/sam2/<domain>.py names the shipped weights (at most 30 MiB), which load strictly, with
    the record of how they were made beside them, and its placement (lora.targets) builds."""
    import json

    from models import build_wesam

    cfg = load_config(f"configs/sam2/{domain}.py")
    assert cfg.model.type == "sam2_small" and cfg.dataset.synthetic.shift == domain
    weights = Path(__file__).resolve().parent.parent / cfg.model.checkpoint
    assert weights.stat().st_size <= 30 * 2**20
    record = json.loads(weights.with_suffix(".json").read_text())
    assert record["model_type"] == "sam2_small" and record["history"][-1]["miou"] > record["history"][-1]["box_prior"]
    model = build_wesam(cfg)
    assert isinstance(model.backbone, Sam2Backbone) and model.image_size == 128
    assert set(SAM2_DOMAINS) >= {"glass_blur", "defocus_blur", "medical", "gaussian_noise"}


@pytest.mark.parametrize("override", ["memory_saving=true", "model.pixel_normalize=false"])
def test_sam1_options_without_a_sam2_twin_are_refused(override):
    from models import build_wesam

    cfg = load_config(overrides=["model.type=sam2_tiny", "model.checkpoint=", override])
    with pytest.raises(ConfigError, match=rf"{override.split('=')[0]}=\w+ is not an option of SAM 2 \(model.type="
                                          r"sam2_tiny\), which has no such setting"):
        build_wesam(cfg)
