"""glass_blur, the shift of the default run: configs/config.py's schedule, chosen on its validation split."""

from configs.shift import shift_config

config = shift_config("glass_blur")
