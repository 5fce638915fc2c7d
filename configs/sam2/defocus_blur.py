"""defocus_blur with SAM 2 (sam2_small): lr 1e-3 without flips, the best tried on its validation split
(see configs/sam2/__init__.py)."""

from configs.sam2 import sam2_shift_config

config = sam2_shift_config("defocus_blur", flip=False, learning_rate=1e-3)
