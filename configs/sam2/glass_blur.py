"""glass_blur with SAM 2 (sam2_small): see configs/sam2/__init__.py."""

from configs.sam2 import sam2_shift_config

config = sam2_shift_config("glass_blur")
