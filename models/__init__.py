"""The WeSAM network on a SAM family (models/backbones.py FAMILIES), built from a config."""

import warnings

import torch

from configs.base_config import base_config
from models.backbones import BACKBONE_OPTIONS, build_network, family_of, model_types
from models.family import Family
from models.sam1 import build_sam
from models.weight_files import CheckpointError
from models.wesam import WeSAM
from utils.config import ConfigError, did_you_mean, flatten

DEFAULTS = flatten(base_config)


def check_model_config(cfg) -> Family:
    """The family of cfg.model.type, after the checks that the config's schema (utils/config.py, below
    the models) cannot make: model.type is a registered one, lora.targets are its targets, the options
    that its backbone does not take are at their defaults, paper.code only on a family that runs the
    authors' code, prompt_source=auto only on one with an automatic mask generator. ConfigError naming
    the key. build_wesam calls it first; a script that works before building the model calls it before
    (engine/checks.py check_training_config, validate.py)."""
    model_type = cfg.model.type
    family = family_of(model_type)
    targets, allowed = cfg.lora.targets, family.lora_targets
    if not targets:
        raise ConfigError(f"Config key 'lora.targets' is an empty list; name at least one of: {', '.join(allowed)}.")
    if foreign := [target for target in targets if target not in allowed]:
        raise ConfigError(f"lora.targets={targets} names {', '.join(foreign)}, which {family.title} "
                          f"(model.type={model_type}) does not have; its targets: {', '.join(allowed)}."
                          + did_you_mean(foreign[0], allowed))
    if cfg.paper.code and not family.authors_code:
        raise ConfigError(f"paper.code={cfg.paper.code} is the authors' code, which runs SAM 1 (RGB / 255 into its "
                          f"encoder); model.type={model_type} is {family.title}. Leave paper.code empty and set the "
                          "options of README, \"Differences from the authors' code\", one by one.")
    flat = flatten(cfg)
    for key in BACKBONE_OPTIONS:
        if key not in family.options and flat[key] != DEFAULTS[key]:
            raise ConfigError(f"{key}={flat[key]} is not an option of {family.title} (model.type={model_type}), "
                              f"which has no such setting: leave {key} at {DEFAULTS[key]}.")
    if cfg.prompt_source == "auto" and family.mask_generator is None:
        raise ConfigError(f"prompt_source=auto finds instances with an automatic mask generator, which {family.title} "
                          f"(model.type={model_type}) does not have; use prompt_source=labels.")
    return family


def build_wesam(cfg) -> WeSAM:
    """The WeSAM network described by a config (model, lora and teacher sections), checked first
    (check_model_config).

    Randomly initialised weights (LoRA A, and SAM itself without a checkpoint) are drawn from
    cfg.seed, so adaptation.py and validate.py build the same network from the same config.
    """
    family = check_model_config(cfg)
    model_type = cfg.model.type
    if not cfg.model.checkpoint and model_type in family.official_checkpoints:
        warnings.warn(f"model.checkpoint is empty: {family.title} {model_type} starts from random weights. "
                      "Set model.checkpoint to the official file (PREPARE.md) for meaningful results.", stacklevel=2)
    flat = flatten(cfg)
    options = {BACKBONE_OPTIONS[key]: flat[key] for key in family.options}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        sam = build_network(model_type, cfg.model.checkpoint or None, cfg.model.attention)
        return WeSAM.on(sam, cfg.lora.rank, cfg.teacher.mode, cfg.batch_views, cfg.lora.targets, **options)


__all__ = ["CheckpointError", "WeSAM", "build_sam", "build_wesam", "check_model_config", "model_types"]
