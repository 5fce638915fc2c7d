"""SAM builders, LoRA and the WeSAM network."""

from models.registry import SAM_CONFIGS, CheckpointError, build_sam
from models.wesam import WeSAM


def build_wesam(cfg) -> WeSAM:
    """The WeSAM network described by a config (model, lora and teacher sections)."""
    sam = build_sam(cfg.model.type, cfg.model.checkpoint or None)
    return WeSAM(sam, cfg.lora.rank, cfg.teacher.mode, cfg.model.pixel_normalize)


__all__ = ["SAM_CONFIGS", "CheckpointError", "WeSAM", "build_sam", "build_wesam"]
