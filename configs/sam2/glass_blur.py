"""glass_blur with SAM 2 (sam2_small): configs/config.py's schedule, without flips (the better of the two on
its validation split; see configs/sam2/__init__.py)."""

from configs.sam2 import sam2_shift_config

config = sam2_shift_config("glass_blur", flip=False)
