"""Images a dataset cannot use are skipped with a warning and counted, never crash a run
(InstanceDataset.__getitem__, collate); an evaluation split of which no image can be scored stops,
naming why, rather than scoring mIoU 0."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import validate
from datasets.instances import SampleError, SkippedImageWarning, UnusableDatasetError, collate
from tests.conftest import TINY, cli
from tests.ondisk import write_image, write_mask
from tests.test_instances import RectDataset, assert_samples_equal


class FlakyDataset(RectDataset):
    """RectDataset whose `failing` images cannot be read and whose `empty` images have no instance."""

    def __init__(self, failing=(), empty=(), **kwargs) -> None:
        super().__init__(**kwargs)
        self.failing, self.empty = set(failing), set(empty)

    def load(self, index: int):
        if index in self.failing:
            raise SampleError(f"cannot read image 'img{index}.png' (broken)")
        image, masks, boxes = super().load(index)
        return (image, masks[:0], boxes) if index in self.empty else (image, masks, boxes)


def without_skipped(sample: dict) -> dict:
    return {k: v for k, v in sample.items() if k != "skipped"}


def test_evaluation_gets_a_sample_without_instances_in_place_of_a_skipped_image():
    dataset = FlakyDataset(failing={1})
    reason = r"FlakyDataset \(evaluation\): skipping image 1: cannot read image 'img1.png'"
    with pytest.warns(SkippedImageWarning, match=reason):
        sample = dataset[1]
    assert sample["skipped"] == [1] and sample["index"] == 1
    assert sample["masks"].shape == (0, 64, 64) and sample["prompts"] == {}
    assert sample["image"].shape == (3, 64, 64) and "image_strong" not in sample
    assert dataset[0]["skipped"] == []


@pytest.mark.parametrize("failing, index, used", [({1}, 1, 2), ({1, 2}, 1, 3), ({3}, 3, 0)])
def test_training_substitutes_the_next_image_with_the_same_seed(failing, index, used):
    dataset = FlakyDataset(failing=failing, train=True)
    with pytest.warns(SkippedImageWarning, match=r"\(training\): skipping image"):
        sample = dataset[(index, 77)]
    assert sample["skipped"] == sorted(failing, key=lambda i: (i - index) % 4)
    assert sample["index"] == used
    assert_samples_equal(without_skipped(sample), without_skipped(FlakyDataset(train=True)[(used, 77)]))


def test_training_skips_images_without_instances():
    dataset = FlakyDataset(empty={0}, train=True)
    with pytest.warns(SkippedImageWarning, match="no instance to train on"):
        sample = dataset[(0, 5)]
    assert sample["skipped"] == [0] and sample["index"] == 1
    assert len(FlakyDataset(empty={0})[0]["masks"]) == 0, "evaluation keeps it: it is simply not scored"


@pytest.mark.parametrize("seed", range(8))
def test_training_skips_images_without_instances_whatever_the_flips(seed):
    # Flipping zero masks used to crash albumentations ("need at least one array to stack").
    dataset = FlakyDataset(empty={2}, train=True)
    with pytest.warns(SkippedImageWarning, match="no instance to train on"):
        sample = dataset[(2, seed)]
    assert sample["skipped"] == [2] and sample["index"] == 3


def test_training_skips_an_image_whose_masks_are_all_empty():
    class BlankMasks(RectDataset):
        def load(self, index):
            image, masks, boxes = super().load(index)
            return image, np.zeros_like(masks), boxes

    with pytest.warns(SkippedImageWarning, match="no instance to train on"), \
            pytest.raises(UnusableDatasetError):
        BlankMasks(train=True)[(0, 1)]


def test_a_dataset_of_unusable_images_raises_instead_of_looping():
    with pytest.warns(SkippedImageWarning), pytest.raises(UnusableDatasetError, match="None of the 4 images"):
        FlakyDataset(failing=range(4), train=True)[(2, 0)]


def test_collate_joins_the_skipped_positions():
    dataset = FlakyDataset(failing={1, 2}, train=True)
    with pytest.warns(SkippedImageWarning):
        batch = collate([dataset[(0, 1)], dataset[(1, 2)], dataset[(2, 3)]])
    assert batch["skipped"] == [1, 2, 2]
    assert batch["index"] == [0, 3, 3]


def test_skipped_positions_cross_worker_processes():
    dataset = FlakyDataset(failing={2})
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=collate, num_workers=1)
    batches = list(loader)
    assert [b["skipped"] for b in batches] == [[], [2]]
    assert [len(m) for b in batches for m in b["masks"]] == [6, 6, 0, 6]
    assert np.array_equal(batches[1]["valid"][0].numpy(), [0, 0, 64, 64])


def test_evaluation_split_with_no_scored_image(tmp_path, capsys):
    """A folder dataset whose masks are all background: each image skipped, naming its mask; nothing
    to score, not mIoU 0."""
    for i in range(3):
        write_image(tmp_path / "data/images" / f"{i}.png", seed=i)
        write_mask(tmp_path / "data/masks" / f"{i}.png", np.zeros((40, 60), np.uint8))
    overrides = ["dataset.name=folder", f"dataset.root={tmp_path / 'data'}", "dataset.interleave=1", *TINY,
                 "dataset.eval_split=val"]
    with pytest.warns(SkippedImageWarning, match=r"mask '.*1.png' has no instance: every pixel is background"):
        code, message = cli(validate.main, overrides, capsys)
    assert code == 1 and "None of the 1 evaluation images could be used" in message
