"""The sample structure of InstanceDataset, batching, and the resumable StepSampler."""

from __future__ import annotations

from itertools import islice

import numpy as np
import pytest
import torch

from datasets.instances import InstanceDataset, StepSampler, collate, sample_seed
from datasets.prompts import boxes_from_masks
from datasets.transforms import resize_image
from tests.ondisk import sample_options
from utils.config import ConfigError, load_config

RECTS = [(2, 3, 14, 20), (20, 30, 38, 60), (5, 40, 15, 52), (25, 2, 33, 12), (0, 58, 40, 64), (30, 18, 36, 26)]


class RectDataset(InstanceDataset):
    """Images of height x width with one coloured rectangle (XYXY) per instance; boxes come from masks."""

    def __init__(self, height: int = 64, width: int = 40, rects=RECTS, num_images: int = 4, train: bool = False,
                 **options) -> None:
        super().__init__(sample_options(**options), train)
        self.height, self.width, self.rects = height, width, rects
        self.records = list(range(num_images))

    def load(self, index: int):
        image = np.full((self.height, self.width, 3), 10 + index, np.uint8)
        masks = np.zeros((len(self.rects), self.height, self.width), bool)
        for i, (x1, y1, x2, y2) in enumerate(self.rects):
            image[y1:y2, x1:x2] = (40 * (i + 1), 255 - 30 * i, 7 * i)
            masks[i, y1:y2, x1:x2] = True
        return image, masks, None


def assert_samples_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a["prompts"].keys() == b["prompts"].keys()
    for key in ("image", "valid", "masks") + (("image_strong",) if "image_strong" in a else ()):
        assert torch.equal(a[key], b[key]), key
    for key in a["prompts"]:
        assert torch.equal(a["prompts"][key], b["prompts"][key]), key
    assert a["index"] == b["index"]


def assert_boxes_match_masks(sample: dict, atol: float) -> None:
    np.testing.assert_allclose(sample["prompts"]["boxes"].numpy(), boxes_from_masks(sample["masks"].numpy()),
                               rtol=0, atol=atol)


# one sample

def test_eval_sample_keys_shapes_and_dtypes():
    sample = RectDataset()[1]
    assert set(sample) == {"image", "valid", "masks", "prompts", "index", "skipped"}
    assert sample["skipped"] == []
    assert sample["image"].shape == (3, 64, 64) and sample["image"].dtype == torch.uint8
    assert sample["valid"].dtype == torch.int64 and sample["valid"].tolist() == [0, 0, 64, 40]
    assert sample["masks"].shape == (6, 64, 64) and sample["masks"].dtype == torch.bool
    assert set(sample["prompts"]) == {"boxes"} and sample["prompts"]["boxes"].shape == (6, 4)
    assert sample["index"] == 1


def test_train_sample_has_a_strong_view_of_the_same_geometry():
    dataset = RectDataset(train=True, flip=False)
    sample = dataset[(2, 99)]
    assert set(sample) == {"image", "image_strong", "valid", "masks", "prompts", "index", "skipped"}
    assert sample["image_strong"].shape == (3, 64, 64) and sample["image_strong"].dtype == torch.uint8
    assert sample["index"] == 2
    # The strong view is padded like the weak view, after the photometric ops, so padding stays zero.
    assert (sample["image_strong"][:, :, 40:] == 0).all()
    changed = [not torch.equal(dataset[(2, seed)]["image_strong"], dataset[(2, seed)]["image"]) for seed in range(6)]
    assert any(changed)


@pytest.mark.parametrize("pad, top, left", [("bottom_right", 0, 0), ("center", 0, 12)])
def test_eval_sample_padding_offsets_image_masks_and_boxes(pad, top, left):
    dataset = RectDataset(pad=pad)
    sample = dataset[0]
    image, masks, _ = dataset.load(0)
    assert sample["valid"].tolist() == [top, left, 64, 40]
    chw = sample["image"].numpy()
    np.testing.assert_array_equal(chw[:, top:top + 64, left:left + 40], image.transpose(2, 0, 1))
    outside = np.ones((64, 64), bool)
    outside[top:top + 64, left:left + 40] = False
    assert (chw[:, outside] == 0).all()
    np.testing.assert_array_equal(sample["masks"].numpy()[:, top:top + 64, left:left + 40], masks)
    assert not sample["masks"].numpy()[:, outside].any()
    expected = np.array(RECTS, np.float32) + np.array([left, top, left, top], np.float32)
    np.testing.assert_array_equal(sample["prompts"]["boxes"].numpy(), expected)
    assert_boxes_match_masks(sample, atol=0)


@pytest.mark.parametrize("pad, top, left", [("bottom_right", 0, 0), ("center", 12, 0)])
def test_train_sample_box_prompts_follow_flip_and_pad(pad, top, left):
    # A landscape image needs no resize, so boxes must match the flipped, padded masks exactly.
    rects = [(2, 3, 14, 20), (30, 20, 60, 38), (40, 5, 52, 15), (2, 25, 12, 40), (20, 0, 28, 6)]
    dataset = RectDataset(height=40, width=64, rects=rects, train=True, pad=pad, strong=False)
    flipped = set()
    for seed in range(12):
        sample = dataset[(0, seed)]
        assert sample["valid"].tolist() == [top, left, 40, 64]
        masks = sample["masks"].numpy()
        assert len(masks) == len(rects)
        assert not masks[:, :top].any() and not masks[:, top + 40:].any()
        assert_boxes_match_masks(sample, atol=1e-4)
        flipped.add(masks[0, top:top + 40].tobytes())
    assert len(flipped) == 4, "expected all four flip combinations over 12 seeds"


@pytest.mark.parametrize("pad", ["bottom_right", "center"])
def test_resized_sample_box_prompts_follow_resize_flip_and_pad(pad):
    # 100 x 60 -> 64 x 38 (SAM's rounding), so the box is scaled and may differ from the mask's by a pixel.
    rects = [(5, 10, 30, 40), (35, 50, 58, 95), (10, 60, 20, 80)]
    dataset = RectDataset(height=100, width=60, rects=rects, train=True, pad=pad, strong=False)
    left = 13 if pad == "center" else 0
    for seed in range(6):
        sample = dataset[(0, seed)]
        assert sample["valid"].tolist() == [0, left, 64, 38]
        assert sample["masks"].shape == (3, 64, 64)
        masks = sample["masks"].numpy()
        assert not masks[:, :, :left].any() and not masks[:, :, left + 38:].any()
        assert_boxes_match_masks(sample, atol=1.5)


def test_instances_lost_in_the_resize_are_dropped():
    rects = [(1, 1, 2, 2), (10, 10, 50, 50)]  # nearest resize 200 -> 64 samples pixels 0, 3, 6...: (1, 1) vanishes
    sample = RectDataset(height=200, width=200, rects=rects)[0]
    assert sample["masks"].shape == (1, 64, 64)
    assert sample["prompts"]["boxes"].shape == (1, 4)
    assert_boxes_match_masks(sample, atol=1.5)


def test_instances_lost_in_the_resize_are_kept_in_evaluation_with_keep_vanished():
    rects = [(1, 1, 2, 2), (10, 10, 50, 50)]
    sample = RectDataset(height=200, width=200, rects=rects, keep_vanished=True)[0]
    assert sample["masks"].shape == (2, 64, 64) and not sample["masks"][0].any()
    assert sample["prompts"]["boxes"].shape == (2, 4)
    train = RectDataset(height=200, width=200, rects=rects, keep_vanished=True, train=True)[(0, 3)]
    assert train["masks"].shape == (1, 64, 64), "training never keeps an instance without pixels"


def test_native_views_are_the_views_of_the_native_image_then_sams_resize():
    kwargs = dict(height=100, width=60, train=True, views_at="native")
    native = RectDataset(**kwargs)
    sample = native[(1, 9)]
    image, masks, boxes = native.load(1)
    weak, weak_masks, weak_boxes = native.augment.weak_view(image, masks, boxes_from_masks(masks), 9)
    strong = native.augment.strong_view(weak, 9)
    assert np.array_equal(sample["image"].permute(1, 2, 0).numpy()[:, :38], resize_image(weak, 64))
    assert np.array_equal(sample["image_strong"].permute(1, 2, 0).numpy()[:, :38], resize_image(strong, 64))
    np.testing.assert_allclose(sample["prompts"]["boxes"].numpy(), weak_boxes * np.array([38 / 60, 64 / 100] * 2),
                               rtol=1e-6)
    assert not np.array_equal(sample["image_strong"],
                              RectDataset(height=100, width=60, train=True)[(1, 9)]["image_strong"])


@pytest.mark.parametrize("views_at", ["input", "native"])
def test_strong_view_of_the_unflipped_image_keeps_the_weak_views_geometry_elsewhere(views_at):
    # the authors' first release made the strong view from the image before the flips
    kwargs = dict(height=100, width=60, train=True, views_at=views_at)
    fixed, release = RectDataset(**kwargs), RectDataset(strong_from="unflipped", **kwargs)
    unflipped = RectDataset(flip=False, **kwargs)
    flips = []
    for seed in range(6):
        ours, theirs = fixed[(1, seed)], release[(1, seed)]
        for key in ("image", "masks", "valid"):
            assert torch.equal(ours[key], theirs[key]), key
        torch.testing.assert_close(ours["prompts"], theirs["prompts"])
        image, masks, _ = release.load(1)
        if views_at == "input":
            image = resize_image(image, 64)
        strong = release.augment.strong_view(image, seed)
        expected = strong if views_at == "input" else resize_image(strong, 64)
        assert np.array_equal(theirs["image_strong"].permute(1, 2, 0).numpy()[:, :38], expected)
        # the two strong views differ exactly when the weak view is flipped
        flips.append(not torch.equal(ours["image"], unflipped[(1, seed)]["image"]))
        assert torch.equal(ours["image_strong"], theirs["image_strong"]) != flips[-1]
    assert any(flips) and not all(flips)
    with pytest.raises(ConfigError, match="strong_from"):  # the config checks the options' values
        load_config(user_config={}, overrides=["augment.strong_from=image"])


def test_view_order_makes_no_difference_when_no_resize_is_needed():
    # the shift benchmark's case: scenes at the model's input size
    for seed in range(4):
        assert_samples_equal(RectDataset(train=True, views_at="native")[(2, seed)], RectDataset(train=True)[(2, seed)])


@pytest.mark.parametrize("prompt, coarse_as, keys", [
    ("point", "box", {"points", "point_labels"}), ("coarse", "box", {"boxes"}), ("coarse", "mask", {"mask_inputs"}),
])
def test_sample_prompts_for_each_type(prompt, coarse_as, keys):
    sample = RectDataset(prompt=prompt, coarse_as=coarse_as, num_points=3)[0]
    assert set(sample["prompts"]) == keys
    if prompt == "point":
        points = sample["prompts"]["points"].long().numpy()
        assert points.shape == (6, 6, 2)
        masks = sample["masks"].numpy()
        for mask, pts in zip(masks, points):
            assert mask[pts[:3, 1], pts[:3, 0]].all() and not mask[pts[3:, 1], pts[3:, 0]].any()
            assert (pts[3:, 0] < 40).all(), "negative point in the padding"
    elif coarse_as == "mask":
        # SAM's mask input is 4x its image embedding: 4 * 64 / 16.
        assert sample["prompts"]["mask_inputs"].shape == (6, 1, 16, 16)
    else:
        assert_boxes_match_masks(sample, atol=0)  # rectangles: the polygon's box is tight


# determinism and instance subsampling

def test_train_items_are_deterministic_per_seed():
    dataset = RectDataset(train=True, prompt="point", max_nums=3)
    assert_samples_equal(dataset[(1, 1234)], dataset[(1, 1234)])
    assert_samples_equal(dataset[(1, 1234)], RectDataset(train=True, prompt="point", max_nums=3)[(1, 1234)])
    other = dataset[(1, 4321)]
    assert not torch.equal(dataset[(1, 1234)]["prompts"]["points"], other["prompts"]["points"])


def test_eval_items_are_deterministic_and_follow_the_base_seed():
    dataset = RectDataset(prompt="point")
    assert_samples_equal(dataset[2], dataset[2])
    assert_samples_equal(dataset[2], RectDataset(prompt="point")[2])
    assert not torch.equal(dataset[2]["prompts"]["points"], RectDataset(prompt="point", seed=1)[2]["prompts"]["points"])
    # An eval item is the train item whose seed is derived from (base seed, index), minus the augmentation.
    as_pair = dataset[(2, sample_seed(dataset.options.seed, 2))]
    assert_samples_equal(dataset[2], as_pair)


def test_max_nums_caps_training_instances_only():
    train = RectDataset(train=True, max_nums=3, flip=False, strong=False)
    _, full_masks, _ = train.load(0)
    subsets = set()
    for seed in range(8):
        sample = train[(0, seed)]
        masks = sample["masks"].numpy()[:, :, :40]
        assert masks.shape[0] == 3
        chosen = tuple(next(i for i, m in enumerate(full_masks) if np.array_equal(m, mask)) for mask in masks)
        assert list(chosen) == sorted(set(chosen)), "kept instances must be distinct and in their original order"
        assert_boxes_match_masks(sample, atol=0)
        subsets.add(chosen)
    assert len(subsets) > 1, "the subset should depend on the seed"
    assert RectDataset(train=False, max_nums=3)[0]["masks"].shape[0] == len(RECTS)


# collate

def test_collate_stacks_images_and_keeps_lists():
    dataset = RectDataset(train=True, prompt="point", rects=RECTS[:2] + RECTS[3:4])
    samples = [dataset[(0, 1)], RectDataset(train=True, prompt="point")[(3, 2)]]
    batch = collate(samples)
    assert set(batch) == {"images", "images_strong", "valid", "masks", "prompts", "index", "skipped"}
    assert batch["images"].shape == (2, 3, 64, 64) and batch["images"].dtype == torch.uint8
    assert batch["images_strong"].shape == (2, 3, 64, 64)
    assert batch["valid"].shape == (2, 4) and batch["valid"].dtype == torch.int64
    assert [m.shape[0] for m in batch["masks"]] == [3, 6]
    assert batch["index"] == [0, 3]
    for i, sample in enumerate(samples):
        assert torch.equal(batch["images"][i], sample["image"])
        assert torch.equal(batch["images_strong"][i], sample["image_strong"])
        assert batch["masks"][i] is sample["masks"] and batch["prompts"][i] is sample["prompts"]


def test_collate_of_eval_samples_has_no_strong_images():
    dataset = RectDataset()
    batch = collate([dataset[0], dataset[1], dataset[2]])
    assert "images_strong" not in batch
    assert batch["images"].shape == (3, 3, 64, 64)
    assert batch["valid"].tolist() == [[0, 0, 64, 40]] * 3


def test_dataloader_with_step_sampler_yields_batches():
    dataset = RectDataset(train=True, num_images=6)
    sampler = StepSampler(len(dataset), batch_size=2, world_size=1, rank=0, seed=3)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, sampler=sampler, collate_fn=collate)
    items = list(islice(iter(sampler), 4))
    batches = list(islice(iter(loader), 2))
    assert [b["index"] for b in batches] == [[items[0][0], items[1][0]], [items[2][0], items[3][0]]]
    assert torch.equal(batches[1]["images"][0], dataset[items[2]]["image"])


# StepSampler

def take(sampler: StepSampler, steps: int) -> list[list[tuple[int, int]]]:
    """The items of the next `steps` steps, one list of batch_size items per step."""
    items = list(islice(iter(sampler), steps * sampler.batch_size))
    return [items[i:i + sampler.batch_size] for i in range(0, len(items), sampler.batch_size)]


def test_step_sampler_items_are_index_seed_pairs():
    steps = take(StepSampler(10, batch_size=2, world_size=1, rank=0, seed=0), 5)
    for step in steps:
        for index, seed in step:
            assert isinstance(index, int) and isinstance(seed, int)
            assert 0 <= index < 10 and 0 <= seed < 2 ** 32
    assert sorted(i for step in steps for i, _ in step) == list(range(10))


@pytest.mark.parametrize("start", [1, 4, 5, 13])
def test_step_sampler_resume_replays_the_same_items(start):
    # 11 items, batch 2: 5 steps per epoch, so resumes land inside and across epoch boundaries.
    uninterrupted = take(StepSampler(11, batch_size=2, world_size=1, rank=0, seed=5), start + 6)
    resumed = take(StepSampler(11, batch_size=2, world_size=1, rank=0, seed=5, start_step=start), 6)
    assert resumed == uninterrupted[start:]


def test_step_sampler_ranks_are_disjoint_and_cover_each_epoch():
    ranks = [StepSampler(12, batch_size=3, world_size=2, rank=r, seed=9) for r in range(2)]
    assert ranks[0].steps_per_epoch == 2
    for epoch in range(3):
        per_rank = [take(StepSampler(12, 3, 2, r, 9, start_step=2 * epoch), 2) for r in range(2)]
        indices = [[i for step in steps for i, _ in step] for steps in per_rank]
        assert not set(indices[0]) & set(indices[1])
        assert sorted(indices[0] + indices[1]) == list(range(12))
        seeds = [s for steps in per_rank for step in steps for _, s in step]
        assert len(set(seeds)) == 12, "every slot of an epoch gets its own seed"
    assert take(ranks[0], 2) != take(ranks[1], 2)


def test_step_sampler_epochs_use_different_orders():
    sampler = StepSampler(8, batch_size=4, world_size=1, rank=0, seed=0)
    steps = take(sampler, 4)
    epochs = [[i for step in steps[e * 2:(e + 1) * 2] for i, _ in step] for e in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(8))
    assert epochs[0] != epochs[1]


def test_step_sampler_uneven_split_drops_the_remainder():
    sampler = StepSampler(7, batch_size=2, world_size=1, rank=0, seed=0)
    assert sampler.steps_per_epoch == 3
    indices = [i for step in take(sampler, 3) for i, _ in step]
    assert len(set(indices)) == 6


def test_step_sampler_depends_on_seed():
    first = take(StepSampler(20, 4, 1, 0, seed=1), 3)
    assert first == take(StepSampler(20, 4, 1, 0, seed=1), 3)
    assert first != take(StepSampler(20, 4, 1, 0, seed=2), 3)


def test_step_sampler_too_small_dataset_raises():
    with pytest.raises(ValueError, match="fewer than devices x batch_size = 6"):
        StepSampler(5, batch_size=3, world_size=2, rank=0, seed=0)
