"""SAM builders, LoRA and the WeSAM network."""

import warnings

import torch

from models.registry import OFFICIAL_CHECKPOINTS, SAM_CONFIGS, CheckpointError, build_sam
from models.wesam import WeSAM


def build_wesam(cfg) -> WeSAM:
    """The WeSAM network described by a config (model, lora and teacher sections).

    Randomly initialised weights (LoRA A, and SAM itself without a checkpoint) are drawn from
    cfg.seed, so adaptation.py and validate.py build the same network from the same config.
    """
    if not cfg.model.checkpoint and cfg.model.type in OFFICIAL_CHECKPOINTS:
        warnings.warn(f"model.checkpoint is empty: SAM {cfg.model.type} starts from random weights. "
                      "Set model.checkpoint to the official file (PREPARE.md) for meaningful results.", stacklevel=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        sam = build_sam(cfg.model.type, cfg.model.checkpoint or None, cfg.model.attention)
        return WeSAM(sam, cfg.lora.rank, cfg.teacher.mode, cfg.model.pixel_normalize, cfg.memory_saving,
                     cfg.batch_views, cfg.model.compile)


__all__ = ["SAM_CONFIGS", "CheckpointError", "WeSAM", "build_sam", "build_wesam"]
