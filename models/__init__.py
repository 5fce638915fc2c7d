"""SAM and SAM 2 builders, LoRA and the WeSAM network."""

import warnings

import torch

from models.backbones import MODEL_TYPES, build_network, is_sam2, lora_targets
from models.registry import OFFICIAL_CHECKPOINTS, CheckpointError, build_sam
from models.sam2 import OFFICIAL_SAM2
from models.wesam import WeSAM
from utils.config import ConfigError


def build_wesam(cfg) -> WeSAM:
    """The WeSAM network described by a config (model, lora and teacher sections).

    Randomly initialised weights (LoRA A, and SAM itself without a checkpoint) are drawn from
    cfg.seed, so adaptation.py and validate.py build the same network from the same config.
    """
    model_type = cfg.model.type
    allowed = lora_targets(model_type)
    if foreign := [target for target in cfg.lora.targets if target not in allowed]:
        raise ConfigError(f"lora.targets={cfg.lora.targets} names {', '.join(foreign)}, which SAM "
                          f"{'2 ' if is_sam2(model_type) else ''}(model.type={model_type}) does not have; its targets: "
                          f"{', '.join(allowed)}.")
    if not cfg.model.checkpoint and (model_type in OFFICIAL_CHECKPOINTS or model_type in OFFICIAL_SAM2):
        warnings.warn(f"model.checkpoint is empty: SAM {model_type} starts from random weights. "
                      "Set model.checkpoint to the official file (PREPARE.md) for meaningful results.", stacklevel=2)
    if is_sam2(model_type):
        options = {"compiler": cfg.model.compile}
        for key, value, default in (("memory_saving", cfg.memory_saving, False),
                                    ("model.pixel_normalize", cfg.model.pixel_normalize, True)):
            if value != default:
                raise ConfigError(f"{key}={value} is a SAM 1 option; SAM 2 (model.type={model_type}) has no such "
                                  f"setting: leave {key} at {default}.")
    else:
        options = {"pixel_normalize": cfg.model.pixel_normalize, "memory_saving": cfg.memory_saving,
                   "compiler": cfg.model.compile}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        sam = build_network(model_type, cfg.model.checkpoint or None, cfg.model.attention)
        return WeSAM.on(sam, cfg.lora.rank, cfg.teacher.mode, cfg.batch_views, cfg.lora.targets, **options)


__all__ = ["MODEL_TYPES", "CheckpointError", "WeSAM", "build_sam", "build_wesam"]
