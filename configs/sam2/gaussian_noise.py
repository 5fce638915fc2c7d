"""gaussian_noise with SAM 2 (sam2_small): LoRA on q/v and on the stride-4 path (where the feature swap says SAM 2
loses this shift; results/sam2/reachability.md), glass_blur's schedule (lr 4e-3) without flips, chosen on
the validation split."""

from configs.sam2 import sam2_shift_config

config = sam2_shift_config("gaussian_noise", flip=False, targets=("qv", "stride4"))
