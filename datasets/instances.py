"""The one sample structure every dataset yields, the base dataset that builds it, batching, and
the step-indexed sampler that makes training resumable.

A sample (one image, N instances, input size S, K points):
    image         3 x S x S          weak view: uint8, zero padded (SAM), or float32 in [0, 1]
                                     resized to the square (SAM 2; see datasets/transforms.py)
    image_strong  3 x S x S          strong view of the same geometry and type (training only; with
                                     strong_from "unflipped", of the image before the flips)
    valid         4 int64            top, left, height, width of the image inside the padding
                                     (SAM 2: the whole input)
    masks         N x S x S bool     ground-truth instance masks (for metrics; never a training target)
    prompts       dict               see models/sam1.py (boxes N x 4, points N x K x 2, ...); empty when N = 0
    index         int                position in the dataset
    skipped       list[int]          positions skipped while building this sample (see InstanceDataset)
"""

from __future__ import annotations

import warnings
from typing import Any, Iterator, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from datasets.inventory import Inventory
from datasets.prompts import authors_coarse_boxes, boxes_from_masks, make_prompts
from datasets.spec import SampleOptions
from datasets.transforms import (Augment, pad_to_square, resize_image, resize_longest_side, resize_square,
                                 resize_square_image, to_bytes)
from utils.padding import pad_offsets


class SampleError(Exception):
    """One image of a dataset cannot be used (unreadable file, mask size differs from the image...);
    `load` raises it and the image is skipped. The message names the file and the reason."""


class SkippedImageWarning(UserWarning):
    """An image was skipped; see SampleError."""


class UnusableDatasetError(RuntimeError):
    """Every image of a dataset split was skipped."""


class InstanceSource(Protocol):
    """Instances that replace an image's labels (prompt_source=auto: the automatic instances)."""

    def masks(self, index: int, height: int, width: int) -> np.ndarray:
        """N x height x width bool instances of image `index`."""


def sample_seed(*keys: int) -> int:
    """A 32-bit seed determined by integer keys (base seed, epoch, position...)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


class InstanceDataset(Dataset):
    """Base class: subclasses set `self.records` and implement `load`. `options` say how samples are
    made (one object for every split of a run: DatasetSpec.sample); `train` marks the training split,
    which augments and subsamples.

    Items are an index (evaluation: prompts drawn from a seed fixed per index) or an
    (index, seed) pair (training: flips, strong view, instance subsampling and points all follow
    `seed`, so a run replays exactly after a resume).
    """

    records: list[Any]
    has_labels = True  # False: images only (prompt_source=auto), `load` is not available
    inventory: Inventory | None = None  # what became of the files the split is read from (datasets read from files)
    # prompt_source=auto: the automatic instances (datasets/auto_prompts.py) that replace the labels (build_dataset)
    auto_instances: InstanceSource | None = None

    def __init__(self, options: SampleOptions, train: bool) -> None:
        self.options = options
        self.train = train
        self.augment = Augment(flip=options.flip and train, strong=options.strong and train)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Image H x W x 3 uint8 RGB, masks N x H x W bool, boxes N x 4 XYXY (None: from masks)."""
        raise NotImplementedError

    def load_image(self, index: int) -> np.ndarray:
        """Image H x W x 3 uint8 RGB alone; datasets that can read it without its labels override this."""
        return self.load(index)[0]

    def image_identity(self, index: int) -> str:
        """What identifies image `index` for the cache of automatic instances (its source, not its labels)."""
        return f"{type(self).__name__}:{self.records[index]!r}"

    def image_identities(self) -> list[str]:
        """image_identity of every image, in order."""
        return [self.image_identity(index) for index in range(len(self))]

    def load_sample(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """What make_sample takes: `load`, or with automatic instances set the image and its
        instances N x H x W (the labels are not read)."""
        if self.auto_instances is None:
            return self.load(index)
        image = self.load_image(index)
        return image, self.auto_instances.masks(index, *image.shape[:2]), None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        """The sample of `item`. An image that cannot be used (`load` raises SampleError; in training
        also an image left without instances) is skipped with a SkippedImageWarning: evaluation gets
        a sample without instances in its place, training the next image with the same seed (so a
        run stays reproducible). The sample's `skipped` lists the positions skipped for it."""
        index, seed = item if isinstance(item, tuple) else (item, sample_seed(self.options.seed, item))
        skipped: list[int] = []
        for _ in range(len(self)):
            try:
                return {**self.make_sample(*self.load_sample(index), index, seed), "skipped": skipped}
            except SampleError as error:
                stage = "training" if self.train else "evaluation"
                warnings.warn(f"{type(self).__name__} ({stage}): skipping image {index}: {error}", SkippedImageWarning)
                skipped.append(index)
                if not self.train:
                    return {**self.empty_sample(index, seed), "skipped": skipped}
                index = (index + 1) % len(self)
        what = f"the {self.inventory.split} split of '{self.inventory.dataset}'" if self.inventory else \
            type(self).__name__
        raise UnusableDatasetError(f"None of the {len(self)} images of {what} could be used for training; the warnings "
                                   "above name each file and the reason.")

    def make_sample(self, image: np.ndarray, masks: np.ndarray, boxes: np.ndarray | None, index: int,
                    seed: int) -> dict[str, Any]:
        """The sample (without `skipped`) of an image H x W x 3, its masks N x H x W and boxes N x 4."""
        options, size = self.options, self.options.image_size
        rng = np.random.default_rng(seed)
        # the authors' coarse box is made at native size and then moves with the image like a box prompt
        native_coarse_boxes = options.prompt == "coarse" and options.coarse_as == "box" and \
            options.coarse_polygon == "authors"
        if native_coarse_boxes:
            boxes = authors_coarse_boxes(masks)
        elif boxes is None:
            boxes = boxes_from_masks(masks)
        boxes = boxes.astype(np.float32)
        if self.train and options.max_nums and len(masks) > options.max_nums:
            keep = np.sort(rng.choice(len(masks), options.max_nums, replace=False))
            masks, boxes = masks[keep], boxes[keep]
        if self.train and len(masks) == 0:
            raise SampleError("no instance to train on (the image has no annotation, or every mask is empty)")
        square, native = options.resize == "square", options.views_at == "native"
        strong = None
        if native:  # the authors' order: both views at the image's own size, then the resize
            unflipped = image
            image, masks, boxes = self.augment.weak_view(image, masks, boxes, seed)
            strong = self.strong_view(unflipped, image, seed)
            if strong is not None:
                strong = (resize_square_image if square else resize_image)(strong, size)
        image, masks, boxes = (resize_square if square else resize_longest_side)(image, masks, boxes, size)
        if not native:
            unflipped = image
            image, masks, boxes = self.augment.weak_view(image, masks, boxes, seed)
            strong = self.strong_view(unflipped, image, seed)
        if self.train or not options.keep_vanished:
            keep = masks.any(axis=(1, 2))  # instances too thin to survive the resize
            masks, boxes = masks[keep], boxes[keep]
        if self.train and len(masks) == 0:
            raise SampleError("no instance to train on (every instance was lost in the resize)")
        height, width = image.shape[:2]
        top, left = pad_offsets(height, width, size, options.pad)
        valid = (top, left, height, width)
        boxes = boxes + np.array([left, top, left, top], np.float32)
        masks = pad_to_square(masks, top, left, size, first_axis=1)
        # without instances there is nothing to prompt (evaluation passes such images by)
        prompts = make_prompts("box" if native_coarse_boxes else options.prompt, masks, boxes, valid, rng,
                               options.num_points, options.coarse_as,
                               mask_input_size=4 * options.embedding_size,
                               point_negatives=options.point_negatives) if len(masks) else {}
        sample = {
            "image": _to_chw(pad_to_square(image, top, left, size, first_axis=0)),
            "valid": torch.tensor(valid, dtype=torch.int64),
            "masks": torch.from_numpy(masks),
            "prompts": prompts,
            "index": index,
        }
        if strong is not None:
            sample["image_strong"] = _to_chw(pad_to_square(strong, top, left, size, first_axis=0))
        return sample

    def strong_view(self, unflipped: np.ndarray, weak: np.ndarray, seed: int) -> np.ndarray | None:
        """The strong view (training only) of the weak view H x W x 3, or of the image before its
        flips with strong_from "unflipped" (the authors' first release)."""
        if not self.train:
            return None
        return self.augment.strong_view(unflipped if self.options.strong_from == "unflipped" else weak, seed)

    def empty_sample(self, index: int, seed: int) -> dict[str, Any]:
        """A blank image without instances, standing in for a skipped evaluation image."""
        size = self.options.image_size
        return self.make_sample(np.zeros((size, size, 3), np.uint8), np.zeros((0, size, size), bool),
                                np.zeros((0, 4), np.float32), index, seed)


def display_pixels(image: torch.Tensor) -> np.ndarray:
    """A sample's 3 x H x W image (uint8, or SAM 2's floats in [0, 1]) -> H x W x 3 uint8, for pictures."""
    pixels = image.permute(1, 2, 0).numpy()
    return pixels if pixels.dtype == np.uint8 else to_bytes(pixels)


def _to_chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images (B x 3 x S x S) and valid regions (B x 4); keep per-image lists of masks and
    prompts; `skipped` joins the positions every sample skipped."""
    batch = {
        "images": torch.stack([s["image"] for s in samples]),
        "valid": torch.stack([s["valid"] for s in samples]),
        "masks": [s["masks"] for s in samples],
        "prompts": [s["prompts"] for s in samples],
        "index": [s["index"] for s in samples],
        "skipped": [index for s in samples for index in s["skipped"]],
    }
    if "image_strong" in samples[0]:
        batch["images_strong"] = torch.stack([s["image_strong"] for s in samples])
    return batch


class StepSampler(Sampler):
    """Endless training items (index, seed) for one rank, determined by the global step.

    Epoch e is a permutation drawn from (seed, e); step t of a world of W ranks with batch B takes
    positions (t mod steps_per_epoch) * W * B + rank * B + [0, B). Starting at `start_step` gives
    exactly the items a run that never stopped would have seen.
    """

    def __init__(self, num_items: int, batch_size: int, world_size: int, rank: int, seed: int,
                 start_step: int = 0) -> None:
        self.num_items = num_items
        self.batch_size = batch_size
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.start_step = start_step
        self.steps_per_epoch = num_items // (batch_size * world_size)
        if self.steps_per_epoch == 0:
            raise ValueError(f"The training split has {num_items} images, fewer than devices x batch_size "
                             f"= {world_size * batch_size}.")

    def __iter__(self) -> Iterator[tuple[int, int]]:
        step = self.start_step
        while True:
            epoch, position = divmod(step, self.steps_per_epoch)
            order = np.random.default_rng([self.seed, epoch]).permutation(self.num_items)
            first = (position * self.world_size + self.rank) * self.batch_size
            for slot in range(first, first + self.batch_size):
                yield int(order[slot]), sample_seed(self.seed, epoch, slot)
            step += 1

    def __len__(self) -> int:  # endless; DataLoader needs a length only for its progress hints
        return 2 ** 62
