"""medical with its schedule, the best of those tried on its validation split (results/embedded_default.md)."""

from configs.shift import shift_config

config = shift_config("medical", learning_rate=2e-3, decay_steps=[150, 225], decay_factor=0.1)
