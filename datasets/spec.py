"""What a dataset is built from: one frozen spec made once from the config and the model's sizes,
so that the loaders read no config and never import the model.

`from_config` below is the one place that maps config keys to fields; the config has checked every
value (CHOICES and RANGES of configs/base_config.py, utils/config.py), so nothing here checks them
again. The loaders get the spec; the datasets they build get its `sample` options, one object.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CocoOptions:
    """COCO-format datasets (config dataset.coco): where the custom `coco` loader finds its files,
    and which annotations count (datasets/coco.py, listed and kept)."""

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
class SampleOptions:
    """How every dataset reads its files and makes a sample of them (datasets/instances.py): the
    model's input, the prompts and the augmentation. `image_size` (the input side S),
    `embedding_size` (the side of the image embedding) and `resize` (the input path: "longest_side"
    for SAM, "square" for SAM 2) are the model's (models/backbones.py input_sizes); every other field
    is the config key whose last part is its name (from_config), whose meaning and default
    configs/base_config.py gives. The training split augments (flip, strong) and subsamples
    (max_nums); evaluation splits keep vanished instances if keep_vanished."""

    image_size: int
    embedding_size: int
    resize: str
    pad: str
    exif: str
    keep_vanished: bool
    prompt: str
    seed: int
    num_points: int
    coarse_as: str
    coarse_polygon: str
    point_negatives: str
    max_nums: int
    flip: bool
    strong: bool
    views_at: str
    strong_from: str

    @classmethod
    def from_config(cls, cfg, image_size: int, embedding_size: int, resize: str) -> SampleOptions:
        """The options of a checked config (utils/config.py load_config) for a model of input side
        `image_size`, embedding side `embedding_size` and input path `resize`."""
        return cls(
            image_size=image_size, embedding_size=embedding_size, resize=resize, pad=cfg.model.pad,
            exif=cfg.dataset.exif, keep_vanished=cfg.dataset.keep_vanished, prompt=cfg.prompt, seed=cfg.seed,
            num_points=cfg.num_points, coarse_as=cfg.coarse_as, coarse_polygon=cfg.coarse_polygon,
            point_negatives=cfg.point_negatives, max_nums=cfg.max_nums, flip=cfg.augment.flip,
            strong=cfg.augment.strong, views_at=cfg.augment.views_at, strong_from=cfg.augment.strong_from,
        )


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the datasets need: which dataset and where (name, root, its options), where the
    training prompts come from (prompt_source), and how samples are made (`sample`). See
    configs/base_config.py for each field's meaning and default (from_config copies them: no
    default is kept here)."""

    name: str
    root: str
    corruption: str
    interleave: int
    prompt_source: str
    coco: CocoOptions
    synthetic: SyntheticOptions
    sample: SampleOptions

    @classmethod
    def from_config(cls, cfg, image_size: int, embedding_size: int, resize: str) -> DatasetSpec:
        """The spec of the configured dataset for a model of input side `image_size`, embedding side
        `embedding_size` and input path `resize` (models/backbones.py input_sizes)."""
        data = cfg.dataset
        return cls(
            name=data.name, root=data.root, corruption=data.corruption, interleave=data.interleave,
            prompt_source=cfg.prompt_source, coco=CocoOptions(**dict(data.coco)),
            synthetic=SyntheticOptions(**dict(data.synthetic)),
            sample=SampleOptions.from_config(cfg, image_size, embedding_size, resize),
        )

    def labels_optional(self, split: str) -> bool:
        """Whether `split` may come without labels: the training split when its prompts come from the
        automatic instances (prompt_source=auto)."""
        return split == "train" and self.prompt_source == "auto"
