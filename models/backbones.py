"""The registry of SAM families (FAMILIES: SAM, models/sam1.py; SAM 2, models/sam2.py) and what the
rest of the program asks of a model.type through it: the one place that finds a family by name. A
family is one Family entry (models/family.py); docs/extending.md, "Adding a backbone"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn

from models.family import Family, InputSizes
from models.sam1 import SAM_FAMILY
from models.sam2 import SAM2_FAMILY
from utils.config import choice_error

FAMILIES: dict[str, Family] = {family.name: family for family in (SAM_FAMILY, SAM2_FAMILY)}

# The config keys a backbone may take, and the name of the Backbone's argument of each (Family.options)
BACKBONE_OPTIONS = {"model.pixel_normalize": "pixel_normalize", "memory_saving": "memory_saving",
                    "model.compile": "compiler"}


def model_types() -> list[str]:
    """Every model.type, family by family."""
    return [model_type for family in FAMILIES.values() for model_type in family.model_types]


def family_of(model_type: str) -> Family:
    """The family of `model_type`; ConfigError naming the allowed values (as utils/config.py names a
    choice's), since model.type is checked here and not in the config's schema."""
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    raise choice_error("model.type", model_type, model_types())


def family_of_network(network: nn.Module) -> Family:
    """The family whose builders make `network` (its class or the nearest base class registered)."""
    for cls in type(network).__mro__:
        for family in FAMILIES.values():
            if family.network is cls:
                return family
    raise TypeError(f"No registered family builds a {type(network).__name__} (models/backbones.py FAMILIES).")


def input_sizes(model_type: str) -> InputSizes:
    """What a dataset needs to know of the model (models/family.py InputSizes)."""
    return family_of(model_type).input_sizes(model_type)


def official_checkpoint(model_type: str) -> str | None:
    """The file name of `model_type`'s official weights (PREPARE.md); None for the types made here."""
    return family_of(model_type).official_checkpoints.get(model_type)


def backbone_metadata(model_type: str) -> dict[str, str]:
    """What an adapter file records of its model beside model.type: its family as "backbone" ("sam",
    "sam2") and what the family adds (SAM 2: the package's configuration the model is built from)."""
    family = family_of(model_type)
    return {"backbone": family.name, **family.metadata(model_type)}


def evaluation_decoding(model_type: str, setting: str) -> str:
    """How evaluation and predict.py decode `model_type`'s single mask for `model.decoding` = `setting`:
    "meta" (as the family's own predictor on its default build) or "raw" (the first mask token); "auto"
    is the family's choice for the type (SAM 2: meta for the official checkpoints; SAM: raw, the same)."""
    return setting if setting != "auto" else family_of(model_type).auto_decoding(model_type)


def exported_checkpoint(model_type: str, state: dict[str, Tensor], path: str | Path,
                        decoding: str = "raw") -> tuple[Any, str]:
    """A plain state dict of `model_type` (LoRA merged) as the family's own tools read it from a file, and
    the line of Python that loads it from `path` so that it decodes as predict.py with `decoding`."""
    return family_of(model_type).export(model_type, state, path, decoding)


def build_network(model_type: str, checkpoint: str | Path | None = None, attention: str = "sam",
                  image_size: int | None = None) -> nn.Module:
    """The network of `model_type` with random weights or those of `checkpoint`, its attention of kind
    `attention` where the family has a choice (SAM; models/attention.py); with `image_size`, of the type's
    shape at that input side, random weights (benchmarks; ValueError for a family without such sizes)."""
    family = family_of(model_type)
    if image_size is None:
        network = family.build(model_type, checkpoint)
    elif family.build_at_size is None:
        raise ValueError(f"{family.title} (model.type={model_type}) is built only at its own input size.")
    else:
        network = family.build_at_size(model_type, image_size)
    return family.attention(network, attention) if family.attention else network
