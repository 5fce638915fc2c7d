"""Synthetic scenes, their domain shifts, and the dataset built from a configuration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datasets import build_dataset
from datasets.prompts import boxes_from_masks
from datasets.synthetic import MIN_VISIBLE_FRACTION, SyntheticDataset, apply_shift, render_scene
from utils.config import load_config


@pytest.mark.parametrize("seed", range(6))
def test_render_scene_masks_are_disjoint_and_visible(seed):
    image, masks = render_scene(np.random.default_rng(seed), 96, 5)
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    assert masks.ndim == 3 and masks.shape[1:] == (96, 96) and masks.dtype == bool
    assert 1 <= len(masks) <= 5
    assert masks.sum(axis=0).max() == 1, "instances overlap"
    assert (masks.sum(axis=(1, 2)) >= MIN_VISIBLE_FRACTION * 96 * 96).all()


def test_small_scenes_always_have_a_visible_instance():
    for seed in range(300):
        _, masks = render_scene(np.random.default_rng(seed), 48, 5)
        assert len(masks) >= 1 and masks.any(axis=(1, 2)).all()


@pytest.mark.parametrize("seed", range(3))
def test_render_scene_instances_are_flat_colours_on_a_noisy_background(seed):
    # Objects are one colour (or two, striped) while the background carries noise: an instance's
    # visible pixels are exactly the ones painted last with its colours.
    image, masks = render_scene(np.random.default_rng(seed), 96, 5)
    background = ~masks.any(axis=0)
    assert len(np.unique(image[background], axis=0)) > 100
    for mask in masks:
        assert len(np.unique(image[mask], axis=0)) <= 2


def test_render_scene_is_deterministic_per_seed():
    first = render_scene(np.random.default_rng(11), 64, 4)
    again = render_scene(np.random.default_rng(11), 64, 4)
    other = render_scene(np.random.default_rng(12), 64, 4)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_apply_shift_none_is_identity():
    image, _ = render_scene(np.random.default_rng(0), 64, 3)
    assert apply_shift(image, "none", np.random.default_rng(0)) is image


def test_apply_shift_low_contrast_shrinks_towards_grey():
    image, _ = render_scene(np.random.default_rng(0), 64, 3)
    shifted = apply_shift(image, "low_contrast", np.random.default_rng(0))
    assert shifted.shape == image.shape and shifted.dtype == np.uint8
    np.testing.assert_allclose(shifted.std(), 0.3 * image.std(), rtol=0.05)
    # 30 % contrast around 128: every pixel moves to within 0.3 x 128 (+1 for truncation) of 128.
    assert (np.abs(shifted.astype(int) - 128) <= 0.3 * 128 + 1).all()
    np.testing.assert_allclose(shifted.astype(float), 128 + (image.astype(float) - 128) * 0.3, atol=1)


def test_apply_shift_noise_changes_pixels_reproducibly():
    image, _ = render_scene(np.random.default_rng(0), 64, 3)
    noisy = apply_shift(image, "noise", np.random.default_rng(5))
    assert noisy.shape == image.shape and noisy.dtype == np.uint8
    assert (noisy != image).mean() > 0.9
    np.testing.assert_array_equal(noisy, apply_shift(image, "noise", np.random.default_rng(5)))
    assert not np.array_equal(noisy, apply_shift(image, "noise", np.random.default_rng(6)))


def test_apply_shift_unknown_raises():
    with pytest.raises(ValueError, match="Unknown synthetic shift 'fog'"):
        apply_shift(np.zeros((4, 4, 3), np.uint8), "fog", np.random.default_rng(0))


def make_split(split: str, **kwargs) -> SyntheticDataset:
    return SyntheticDataset(split, 4, scene_size=64, image_size=64, prompt="box", train=False, **kwargs)


def test_synthetic_splits_never_share_a_scene():
    images = {split: [make_split(split).load(i)[0] for i in range(4)] for split in ("train", "val", "test")}
    flat = [image for split_images in images.values() for image in split_images]
    for i, a in enumerate(flat):
        for b in flat[i + 1:]:
            assert not np.array_equal(a, b)


def test_synthetic_load_is_deterministic_and_follows_scene_seed():
    image, masks, boxes = make_split("val").load(2)
    again, again_masks, _ = make_split("val").load(2)
    assert boxes is None
    np.testing.assert_array_equal(image, again)
    np.testing.assert_array_equal(masks, again_masks)
    assert not np.array_equal(image, make_split("val", scene_seed=1).load(2)[0])


def test_synthetic_sample_matches_the_scene():
    dataset = make_split("test", shift="none")
    image, masks, _ = dataset.load(1)
    sample = dataset[1]
    assert len(dataset) == 4
    np.testing.assert_array_equal(sample["image"].numpy().transpose(1, 2, 0), image)
    np.testing.assert_array_equal(sample["masks"].numpy(), masks)
    np.testing.assert_array_equal(sample["prompts"]["boxes"].numpy(), boxes_from_masks(masks))


@pytest.mark.parametrize("prompt, coarse_as, keys", [
    ("box", "box", {"boxes"}), ("point", "box", {"points", "point_labels"}), ("coarse", "box", {"boxes"}),
    ("coarse", "mask", {"mask_inputs"}),
])
def test_build_dataset_for_each_prompt_type(tiny_overrides, prompt, coarse_as, keys):
    cfg = load_config(overrides=tiny_overrides + [f"prompt={prompt}", f"coarse_as={coarse_as}", "max_nums=2"])
    sizes = {"train": 6, "val": 3, "test": 4}
    for split, size in sizes.items():
        dataset = build_dataset(cfg, split)
        assert isinstance(dataset, SyntheticDataset) and len(dataset) == size
        assert dataset.train == (split == "train")
        assert dataset.seed == cfg.seed and dataset.max_nums == (2 if split == "train" else 0)
        sample = dataset[(0, 7)] if split == "train" else dataset[0]
        assert sample["image"].shape == (3, 256, 256) and sample["image"].dtype == torch.uint8
        assert ("image_strong" in sample) == (split == "train")
        # A 96 px scene is resized to vit_tiny's 256 px input: no padding needed.
        assert sample["valid"].tolist() == [0, 0, 256, 256]
        n = sample["masks"].shape[0]
        assert 1 <= n <= (2 if split == "train" else cfg.dataset.synthetic.max_objects)
        prompts = sample["prompts"]
        assert set(prompts) == keys
        if "boxes" in prompts:
            assert prompts["boxes"].shape == (n, 4)
        if "points" in prompts:
            assert prompts["points"].shape == (n, 10, 2) and prompts["point_labels"].shape == (n, 10)
        if "mask_inputs" in prompts:
            assert prompts["mask_inputs"].shape == (n, 1, 64, 64)
