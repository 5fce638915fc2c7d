"""medical with SAM 2 (sam2_small): lr 1e-3 without flips, the best tried on its validation split (lr 4e-3
collapsed to masks of the whole image; see configs/sam2/__init__.py)."""

from configs.sam2 import sam2_shift_config

config = sam2_shift_config("medical", flip=False, learning_rate=1e-3)
