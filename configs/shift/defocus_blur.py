"""defocus_blur with its schedule, the best of those tried on its validation split (results/embedded_default.md)."""

from configs.shift import shift_config

config = shift_config("defocus_blur", learning_rate=3e-3, decay_steps=[100, 150], decay_factor=0.1)
