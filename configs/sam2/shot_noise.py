"""shot_noise with SAM 2 (sam2_small): LoRA on q/v and on the stride-4 path (where the feature swap says
SAM 2 loses this shift; results/sam2/reachability.md), lr 2e-3 without flips: the best tried on the
validation split (4e-3: +3.2, 2e-3: +8.1 over three seeds)."""

from configs.sam2 import sam2_shift_config

config = sam2_shift_config("shot_noise", flip=False, targets=("qv", "stride4"), learning_rate=2e-3)
