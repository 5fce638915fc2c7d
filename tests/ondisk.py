"""Writing tiny datasets to disk (real image and mask files) and building them from a config."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from datasets import DatasetSpec, build_dataset
from datasets.instances import InstanceDataset
from datasets.spec import SampleOptions
from models.backbones import input_sizes
from utils.config import load_config

HEIGHT, WIDTH = 40, 60


def dataset_spec(cfg) -> DatasetSpec:
    """The spec of the configured dataset for the configured model, as the scripts make it."""
    return DatasetSpec.from_config(cfg, **input_sizes(cfg.model.type))


def sample_options(image_size: int = 64, **fields) -> SampleOptions:
    """The default config's sample options (configs/base_config.py) for a SAM of input side
    `image_size` (embedding side image_size / 16), with `fields` set: what a test's dataset takes."""
    options = SampleOptions.from_config(load_config(user_config={}), image_size, image_size // 16, "longest_side")
    return replace(options, **fields)


def build(name: str, root: Path | str, split: str, *overrides: str) -> InstanceDataset:
    """The `split` of dataset `name` at `root`, built from a config as adaptation.py does."""
    cfg = load_config(overrides=[f"dataset.name={name}", f"dataset.root={root}", "accelerator=cpu",
                                 "model.type=vit_tiny", "model.checkpoint=", *overrides])
    return build_dataset(dataset_spec(cfg), split)


def split_sizes(name: str, root: Path | str, *overrides: str) -> dict[str, int]:
    """Number of images of each split of dataset `name` at `root`."""
    return {split: len(build(name, root, split, *overrides)) for split in ("train", "val", "test")}


def write_image(path: Path, seed: int = 0, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """A random RGB image saved at `path` (format from the suffix); returns its pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def write_corrupt(path: Path) -> None:
    """A file with an image name that no decoder can read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not an image at all")


def labels(rects: dict[int, tuple[int, int, int, int]], height: int = HEIGHT, width: int = WIDTH,
           dtype=np.uint8) -> np.ndarray:
    """H x W label map: each value painted over its XYXY rectangle (exclusive ends), in order."""
    label_map = np.zeros((height, width), dtype)
    for value, (x1, y1, x2, y2) in rects.items():
        label_map[y1:y2, x1:x2] = value
    return label_map


def write_mask(path: Path, label_map: np.ndarray, palette: bool = False) -> None:
    """Save a label map: uint8 as grey (or as palette indices), uint16 as a 16-bit PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if palette:
        image = Image.frombytes("P", label_map.shape[::-1], label_map.astype(np.uint8).tobytes())
        image.putpalette(list(np.random.default_rng(0).integers(0, 256, 768)))
    else:
        image = Image.fromarray(label_map)
    image.save(path)


def rect_polygon(x1: int, y1: int, x2: int, y2: int) -> list[list[float]]:
    return [[x1, y1, x2, y1, x2, y2, x1, y2]]


def compressed_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def decode_rle(segmentation: dict) -> np.ndarray:
    """H x W bool of a compressed RLE whose counts are text, as predict.py and COCO jsons write it."""
    return mask_utils.decode({"size": segmentation["size"], "counts": segmentation["counts"].encode()}).astype(bool)


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, starting with zeros."""
    flat = mask.flatten(order="F").astype(np.uint8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], changes, [len(flat)]]))
    counts = ([0] if flat[0] else []) + runs.tolist()
    return {"size": list(mask.shape), "counts": counts}


def write_coco_json(path: Path, images: Sequence[dict], annotations: Sequence[dict]) -> None:
    """A COCO instances json; annotation ids are numbered in order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    annotations = [{"id": i + 1, "iscrowd": 0, "category_id": 1, **a} for i, a in enumerate(annotations)]
    path.write_text(json.dumps({"images": list(images), "annotations": annotations,
                                "categories": [{"id": 1, "name": "thing"}]}))


def coco_image(image_id: int, file_name: str, height: int = HEIGHT, width: int = WIDTH) -> dict:
    return {"id": image_id, "file_name": file_name, "height": height, "width": width}


def box_annotation(image_id: int, x1: int, y1: int, x2: int, y2: int) -> dict:
    """A polygon annotation of an XYXY rectangle with its bbox."""
    return {"image_id": image_id, "bbox": [x1, y1, x2 - x1, y2 - y1], "segmentation": rect_polygon(x1, y1, x2, y2),
            "area": (x2 - x1) * (y2 - y1)}
