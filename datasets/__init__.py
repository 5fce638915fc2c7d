"""Datasets. Each yields the sample structure documented in datasets/instances.py, so the engine
never needs to know which dataset it reads."""

from __future__ import annotations

from typing import Callable

from datasets import camouflaged, coco, folder, medical, robotic, voc
from datasets.files import DatasetLayoutError
from datasets.instances import InstanceDataset, StepSampler, UnusableDatasetError, collate
from datasets.synthetic import SyntheticDataset


def _synthetic(cfg, split: str, **common) -> InstanceDataset:
    synthetic = cfg.dataset.synthetic
    sizes = {"train": synthetic.num_train, "val": synthetic.num_val, "test": synthetic.num_test}
    return SyntheticDataset(split, sizes[split], scene_size=synthetic.image_size, max_objects=synthetic.max_objects,
                            shift=synthetic.shift, **common)


# name -> builder(cfg, split, **common sample options) for split in "train", "val", "test"
DATASETS: dict[str, Callable[..., InstanceDataset]] = {
    "synthetic": _synthetic,
    # the paper's datasets (PREPARE.md gives each layout)
    "coco2017": coco.build_coco2017,
    "coco_c": coco.build_coco_c,
    "voc2012": voc.build_voc2012,
    "kvasir": medical.build_kvasir,
    "isic2016": medical.build_isic2016,
    "camo": camouflaged.build_camo,
    "cod10k": camouflaged.build_cod10k,
    "chameleon": camouflaged.build_chameleon,
    "ocid": robotic.build_ocid,
    "osd": robotic.build_osd,
    # custom data
    "coco": coco.build_coco,
    "folder": folder.build_folder,
}


def build_dataset(cfg, split: str, image_size: int, embedding_size: int) -> InstanceDataset:
    """The `split` ("train", "val" or "test") of the configured dataset; train gets augmentation.
    `image_size` S and `embedding_size` h: the model's input side and image-embedding side
    (models.registry.input_sizes)."""
    train = split == "train"
    return DATASETS[cfg.dataset.name](
        cfg, split, image_size=image_size, prompt=cfg.prompt, train=train, seed=cfg.seed,
        num_points=cfg.num_points, coarse_as=cfg.coarse_as, max_nums=cfg.max_nums, pad=cfg.model.pad,
        flip=cfg.augment.flip, strong=cfg.augment.strong, views_at=cfg.augment.views_at,
        embedding_size=embedding_size, keep_vanished=cfg.dataset.keep_vanished,
        point_negatives=cfg.point_negatives, coarse_polygon=cfg.coarse_polygon,
    )


__all__ = ["DATASETS", "DatasetLayoutError", "InstanceDataset", "StepSampler", "UnusableDatasetError", "build_dataset",
           "collate"]
