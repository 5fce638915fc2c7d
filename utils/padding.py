"""Where an image lies in SAM's square input canvas (config model.pad): shared by the datasets,
which pad the images, and the models' predictor, which pads them as the datasets do."""

from __future__ import annotations


def pad_offsets(height: int, width: int, size: int, mode: str) -> tuple[int, int]:
    """(top, left) offset of an image of height x width inside the size x size canvas."""
    if mode == "bottom_right":
        return 0, 0
    if mode == "center":
        return (size - height) // 2, (size - width) // 2
    raise ValueError(f"Unknown padding mode '{mode}'; choose 'bottom_right' or 'center'.")
