"""Datasets. Each yields the sample structure documented in datasets/instances.py, so the engine
never needs to know which dataset it reads."""

from __future__ import annotations

from typing import Callable

from datasets import camouflaged, coco, folder, medical, robotic, synthetic, voc
from datasets.instances import InstanceDataset, InstanceSource, StepSampler, UnusableDatasetError, collate
from datasets.inventory import files_report
from datasets.layout import DatasetLayoutError
from datasets.spec import DatasetSpec

# name -> builder(spec, split) for split in "train", "val", "test" (docs/extending.md, "Adding a dataset")
DATASETS: dict[str, Callable[[DatasetSpec, str], InstanceDataset]] = {
    "synthetic": synthetic.build_synthetic,
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


def build_dataset(spec: DatasetSpec, split: str, auto_instances: InstanceSource | None = None) -> InstanceDataset:
    """The `split` ("train", "val" or "test") of the dataset of `spec`; train gets augmentation.
    With `auto_instances` (prompt_source=auto) its samples take those instances instead of labels."""
    dataset = DATASETS[spec.name](spec, split)
    dataset.auto_instances = auto_instances
    return dataset


__all__ = ["DATASETS", "DatasetLayoutError", "DatasetSpec", "InstanceDataset", "StepSampler", "UnusableDatasetError",
           "build_dataset", "collate", "files_report"]
