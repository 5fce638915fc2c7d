"""glass_blur, the shift of the default run: its schedule is the one in configs/config.py."""

from configs.shift import shift_config

config = shift_config("glass_blur", learning_rate=4e-3, decay_steps=[100, 150], decay_factor=0.25)
