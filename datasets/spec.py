"""What a dataset is built from: one frozen spec made once from the config and the model's sizes,
so that the loaders read no config and never import the model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CocoOptions:
    """COCO-format datasets (config dataset.coco): where the custom `coco` loader finds its files,
    and which annotations count (datasets/coco.py, CocoRules)."""

    images: str
    annotations: str
    train: str
    val: str
    test: str
    crowd: bool
    max_masks: int
    zero_size: str

    def split_json(self, split: str) -> str:
        """The json of `split` ("train", "val", "test") given on its own, or ""."""
        return {"train": self.train, "val": self.val, "test": self.test}[split]


@dataclass(frozen=True)
class SyntheticOptions:
    """The synthetic scenes of the embedded default (config dataset.synthetic)."""

    shift: str
    image_size: int
    num_train: int
    num_val: int
    num_test: int
    max_objects: int

    def num_images(self, split: str) -> int:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the datasets need: which dataset and where (name, root, its options) and how
    samples are made (input size S = image_size, prompts, augmentation). See configs/base_config.py
    for each field's meaning and default (from_config copies them: no default is kept here);
    `embedding_size` is the side of the model's image embedding, `resize` its input path
    (datasets/transforms.py RESIZES)."""

    name: str
    image_size: int
    embedding_size: int
    resize: str
    root: str
    corruption: str
    interleave: int
    exif: str
    keep_vanished: bool
    coco: CocoOptions
    synthetic: SyntheticOptions
    prompt: str
    prompt_source: str
    seed: int
    num_points: int
    coarse_as: str
    coarse_polygon: str
    point_negatives: str
    max_nums: int
    pad: str
    flip: bool
    strong: bool
    views_at: str
    strong_from: str

    @classmethod
    def from_config(cls, cfg, image_size: int, embedding_size: int, resize: str) -> DatasetSpec:
        """The spec of the configured dataset for a model of input side `image_size`, embedding side
        `embedding_size` and input path `resize` (models/backbones.py input_sizes)."""
        data = cfg.dataset
        return cls(
            name=data.name, image_size=image_size, embedding_size=embedding_size, resize=resize, root=data.root,
            corruption=data.corruption, interleave=data.interleave, exif=data.exif, keep_vanished=data.keep_vanished,
            coco=CocoOptions(**dict(data.coco)), synthetic=SyntheticOptions(**dict(data.synthetic)),
            prompt=cfg.prompt, prompt_source=cfg.prompt_source, seed=cfg.seed, num_points=cfg.num_points,
            coarse_as=cfg.coarse_as, coarse_polygon=cfg.coarse_polygon, point_negatives=cfg.point_negatives,
            max_nums=cfg.max_nums, pad=cfg.model.pad, flip=cfg.augment.flip, strong=cfg.augment.strong,
            views_at=cfg.augment.views_at, strong_from=cfg.augment.strong_from,
        )

    def sample_options(self, split: str) -> dict[str, Any]:
        """The keyword arguments of InstanceDataset for `split`: the training split is augmented."""
        return {"image_size": self.image_size, "embedding_size": self.embedding_size, "resize": self.resize,
                "prompt": self.prompt, "train": split == "train", "seed": self.seed, "num_points": self.num_points,
                "coarse_as": self.coarse_as, "max_nums": self.max_nums, "pad": self.pad, "flip": self.flip,
                "strong": self.strong, "views_at": self.views_at, "strong_from": self.strong_from,
                "keep_vanished": self.keep_vanished,
                "point_negatives": self.point_negatives, "coarse_polygon": self.coarse_polygon}

    def labels_optional(self, split: str) -> bool:
        """Whether `split` may come without labels: the training split when its prompts come from the
        automatic instances (prompt_source=auto)."""
        return split == "train" and self.prompt_source == "auto"
