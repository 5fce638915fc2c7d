"""The embedded default's data: synthetic scenes (datasets/scenes.py), generated on the fly and
identical on every machine, in a source domain or one of the target domains of datasets/shifts.py.

Splits draw from disjoint seed streams, so pretraining, train, val and test never share a scene.
"""

from __future__ import annotations

import numpy as np

from datasets.instances import InstanceDataset
from datasets.scenes import render_scene
from datasets.shifts import apply_shift, scene_style
from datasets.spec import DatasetSpec, SampleOptions

SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2, "pretrain": 3}


class SyntheticDataset(InstanceDataset):
    """`num_images` synthetic scenes of one split ("train", "val", "test", "pretrain") of side
    `scene_size` with at most `max_objects` objects, in the target domain `shift` (see
    datasets/shifts.py; "none" is the source domain); the training split is augmented."""

    def __init__(self, split: str, num_images: int, options: SampleOptions, scene_size: int, max_objects: int,
                 shift: str, scene_seed: int = 0) -> None:
        super().__init__(options, train=split == "train")
        self.stream = SPLIT_STREAMS[split]
        self.scene_size = scene_size
        self.max_objects = max_objects
        self.shift = shift
        self.style = scene_style(shift)
        self.scene_seed = scene_seed
        self.records = list(range(num_images))

    def image_identity(self, index: int) -> str:
        return (f"synthetic:{self.shift}:{self.scene_seed}:{self.stream}:{self.scene_size}:{self.max_objects}:"
                f"{index}")

    def scene(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Scene `index` of this split before the shift: image S x S x 3 uint8, masks N x S x S bool."""
        rng = np.random.default_rng([self.scene_seed, self.stream, index])
        return render_scene(rng, self.scene_size, self.max_objects, self.style)

    def shifted(self, image: np.ndarray, index: int) -> np.ndarray:
        """Scene `index`'s image in the target domain."""
        return apply_shift(image, self.shift, np.random.default_rng([self.scene_seed, self.stream, index, 1]))

    def load_image(self, index: int) -> np.ndarray:
        return self.shifted(self.scene(index)[0], index)  # the masks are drawn with the scene, and dropped

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, None]:
        image, masks = self.scene(index)
        return self.shifted(image, index), masks, None


def build_synthetic(spec: DatasetSpec, split: str) -> SyntheticDataset:
    """The `split` of the configured scenes (dataset.synthetic)."""
    scenes = spec.synthetic
    return SyntheticDataset(split, scenes.num_images(split), spec.sample, scene_size=scenes.image_size,
                            max_objects=scenes.max_objects, shift=scenes.shift)
