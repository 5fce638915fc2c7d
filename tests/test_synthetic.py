"""Synthetic scenes, their target domains, and the dataset built from a configuration."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch

from configs.base_config import CHOICES, base_config
from datasets import DatasetSpec, build_dataset
from datasets.prompts import boxes_from_masks
from datasets.scenes import MIN_VISIBLE_FRACTION, SHAPES, box_prior_masks, render_scene, shape_mask
from datasets.shifts import SHIFTS, apply_shift, scene_style
from datasets.spec import SampleOptions
from datasets.synthetic import SyntheticDataset
from tests.ondisk import dataset_spec, sample_options
from utils.config import flatten, load_config


@pytest.mark.parametrize("style", ["source", "camouflage"])
@pytest.mark.parametrize("seed", range(4))
def test_render_scene_masks_are_disjoint_and_visible(seed, style):
    image, masks = render_scene(np.random.default_rng(seed), 96, 5, style)
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    assert masks.ndim == 3 and masks.shape[1:] == (96, 96) and masks.dtype == bool
    assert 1 <= len(masks) <= 5
    assert masks.sum(axis=0).max() == 1, "instances overlap"
    assert (masks.sum(axis=(1, 2)) >= MIN_VISIBLE_FRACTION * 96 * 96).all()


def test_small_scenes_always_have_a_visible_instance():
    for seed in range(200):
        _, masks = render_scene(np.random.default_rng(seed), 48, 5)
        assert len(masks) >= 1 and masks.any(axis=(1, 2)).all()


@pytest.mark.parametrize("kind", SHAPES)
def test_every_shape_is_a_blob_around_its_centre(kind):
    mask = shape_mask(np.random.default_rng(3), kind, 128, np.array([64.0, 64.0]), 30.0)
    ys, xs = np.nonzero(mask)
    assert mask.shape == (128, 128) and mask.sum() > 100
    reach = 30 * np.sqrt(2) + 1  # the corners of rectangles and L shapes
    assert xs.min() >= 64 - reach and xs.max() <= 64 + reach and ys.min() >= 64 - reach and ys.max() <= 64 + reach


def test_ring_and_crescent_are_not_convex():
    for kind in ("ring", "crescent", "ell", "star"):
        mask = shape_mask(np.random.default_rng(1), kind, 128, np.array([64.0, 64.0]), 30.0)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        hull = cv2.convexHull(max(contours, key=cv2.contourArea))
        assert mask.sum() < 0.9 * cv2.contourArea(hull), kind


def test_unknown_shape_and_style_raise():
    with pytest.raises(ValueError, match="Unknown shape 'blob'"):
        shape_mask(np.random.default_rng(0), "blob", 32, np.array([16.0, 16.0]), 5.0)
    with pytest.raises(ValueError, match="Unknown scene style 'night'"):
        render_scene(np.random.default_rng(0), 32, 2, "night")


def test_source_objects_stand_out_and_camouflaged_ones_blend_in():
    def contrast(style: str) -> float:
        gaps = []
        for seed in range(20):
            image, masks = render_scene(np.random.default_rng(seed), 96, 4, style)
            background = image[~masks.any(axis=0)].astype(float).mean(axis=0)
            gaps += [np.linalg.norm(image[m].astype(float).mean(axis=0) - background) for m in masks]
        return float(np.median(gaps))

    assert contrast("source") > 50
    assert contrast("camouflage") < 35


def test_box_prior_is_the_inscribed_ellipse():
    prior = box_prior_masks(np.array([[10, 20, 50, 40]], np.float32), 64)
    assert prior.shape == (1, 64, 64)
    np.testing.assert_allclose(prior.sum(), np.pi * 20 * 10, rtol=0.05)
    ys, xs = np.nonzero(prior[0])
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (10, 49, 20, 39)  # touches every side of the box
    assert prior[0, 30, 30] and not prior[0, 20, 10]


def test_render_scene_is_deterministic_per_seed():
    first = render_scene(np.random.default_rng(11), 64, 4)
    again = render_scene(np.random.default_rng(11), 64, 4)
    other = render_scene(np.random.default_rng(12), 64, 4)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_apply_shift_none_and_camouflage_leave_pixels_alone():
    image, _ = render_scene(np.random.default_rng(0), 64, 3)
    for shift in ("none", "camouflage"):
        assert apply_shift(image, shift, np.random.default_rng(0)) is image
    assert scene_style("camouflage") == "camouflage" and scene_style("medical") == "source"


def test_medical_look_is_reddish_soft_and_reproducible():
    image, _ = render_scene(np.random.default_rng(0), 96, 4)
    shifted = apply_shift(image, "medical", np.random.default_rng(5))
    assert shifted.shape == image.shape and shifted.dtype == np.uint8
    red, green, blue = shifted.reshape(-1, 3).astype(float).mean(axis=0)
    assert red > 1.5 * green and red > 1.5 * blue
    np.testing.assert_array_equal(shifted, apply_shift(image, "medical", np.random.default_rng(5)))


@pytest.mark.parametrize("shift", ["gaussian_noise", "defocus_blur", "contrast"])
def test_corruption_shifts_change_pixels_reproducibly(shift):
    image, _ = render_scene(np.random.default_rng(0), 64, 3)
    shifted = apply_shift(image, shift, np.random.default_rng(5))
    assert shifted.shape == image.shape and shifted.dtype == np.uint8
    assert np.abs(shifted.astype(int) - image).mean() > 5
    np.testing.assert_array_equal(shifted, apply_shift(image, shift, np.random.default_rng(5)))


def test_every_shift_is_known_and_unknown_raises():
    assert {"none", "camouflage", "medical", "gaussian_noise"} <= set(SHIFTS)
    with pytest.raises(ValueError, match="Unknown synthetic shift 'rain'"):
        apply_shift(np.zeros((4, 4, 3), np.uint8), "rain", np.random.default_rng(0))


def make_split(split: str, shift: str = "none", **kwargs) -> SyntheticDataset:
    return SyntheticDataset(split, 4, sample_options(64), scene_size=64, max_objects=6, shift=shift, **kwargs)


def test_synthetic_splits_never_share_a_scene():
    images = {split: [make_split(split).load(i)[0] for i in range(4)] for split in ("train", "val", "test", "pretrain")}
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
    spec = dataset_spec(cfg)
    for split, size in sizes.items():
        dataset = build_dataset(spec, split)
        assert isinstance(dataset, SyntheticDataset) and len(dataset) == size
        assert dataset.train == (split == "train")
        assert dataset.options.seed == cfg.seed and dataset.options.max_nums == 2
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


def test_dataset_spec_is_made_once_from_the_config(tiny_overrides):
    cfg = load_config(overrides=tiny_overrides + ["prompt=point", "dataset.coco.crowd=true", "augment.flip=false"])
    spec = DatasetSpec.from_config(cfg, 256, 16, "longest_side")
    sample = spec.sample
    assert (spec.name, sample.image_size, sample.embedding_size, sample.resize, sample.prompt) == (
        "synthetic", 256, 16, "longest_side", "point")
    assert spec.coco.crowd and not sample.flip and spec.synthetic.num_images("val") == 3 and sample.exif == "auto"
    with pytest.raises(dataclasses.FrozenInstanceError):
        sample.prompt = "box"
    # every split's dataset, and every dataset of a spec, makes its samples with the spec's one options object
    assert all(build_dataset(spec, split).options is sample for split in ("train", "val", "test"))


def test_each_sample_option_is_the_config_key_of_its_name():
    """SampleOptions.from_config reads each field (the model's sizes aside) from the one config key whose
    last part is the field's name: setting that key away from its default changes that field alone, to
    the key's value."""
    defaults = flatten(base_config)
    names = [field.name for field in dataclasses.fields(SampleOptions)]
    keys = {name: [key for key in defaults if key.split(".")[-1] == name]
            for name in names if name not in ("image_size", "embedding_size", "resize")}
    assert all(len(found) == 1 for found in keys.values()), keys
    default = SampleOptions.from_config(load_config(user_config={}), 64, 4, "square")
    for name, (key,) in keys.items():
        value = defaults[key]
        changed = next(c for c in CHOICES[key] if c != value) if key in CHOICES else \
            (not value) if isinstance(value, bool) else value + 1
        cfg = load_config(user_config={}, overrides=[f"{key}={changed}"])
        options = SampleOptions.from_config(cfg, 64, 4, "square")
        assert [n for n in names if getattr(options, n) != getattr(default, n)] == [name], key
        assert getattr(options, name) == changed, key


def test_the_default_dataset_is_what_the_config_fields_gave(tiny_overrides):
    """The embedded default's samples are those of SyntheticDataset built from the config fields one
    by one, as build_dataset did before the spec."""
    cfg = load_config(overrides=tiny_overrides)
    for split, size in (("train", 6), ("test", 4)):
        dataset = build_dataset(dataset_spec(cfg), split)
        options = SampleOptions(image_size=256, embedding_size=16, resize="longest_side", pad=cfg.model.pad,
                                exif=cfg.dataset.exif, keep_vanished=cfg.dataset.keep_vanished, prompt=cfg.prompt,
                                seed=cfg.seed, num_points=cfg.num_points, coarse_as=cfg.coarse_as,
                                coarse_polygon=cfg.coarse_polygon, point_negatives=cfg.point_negatives,
                                max_nums=cfg.max_nums, flip=cfg.augment.flip, strong=cfg.augment.strong,
                                views_at=cfg.augment.views_at, strong_from=cfg.augment.strong_from)
        by_hand = SyntheticDataset(split, size, options, scene_size=96, max_objects=cfg.dataset.synthetic.max_objects,
                                   shift="camouflage")
        item = (1, 77) if split == "train" else 1
        ours, theirs = dataset[item], by_hand[item]
        assert ours.keys() == theirs.keys()
        for key in ("image", "valid", "masks"):
            assert torch.equal(ours[key], theirs[key])
        assert ours["prompts"].keys() == theirs["prompts"].keys()
        assert all(torch.equal(ours["prompts"][k], theirs["prompts"][k]) for k in ours["prompts"])


def test_automatic_instances_are_given_at_construction(tiny_overrides):
    class OneSquare:
        def masks(self, index: int, height: int, width: int) -> np.ndarray:
            mask = np.zeros((1, height, width), bool)
            mask[0, 10:40, 20:50] = True
            return mask

    spec = dataset_spec(load_config(overrides=tiny_overrides + ["prompt_source=auto"]))
    labelled, automatic = build_dataset(spec, "test"), build_dataset(spec, "test", auto_instances=OneSquare())
    assert labelled.auto_instances is None
    sample = automatic[0]
    assert sample["masks"].shape[0] == 1
    np.testing.assert_array_equal(sample["image"].numpy(), labelled[0]["image"].numpy())
    # 96 px scene -> 256 px input: the square's box scales by 8 / 3
    np.testing.assert_allclose(sample["prompts"]["boxes"].numpy(), [[20 * 8 / 3, 10 * 8 / 3, 50 * 8 / 3, 40 * 8 / 3]],
                               rtol=1e-6)
