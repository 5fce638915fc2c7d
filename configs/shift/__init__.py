"""One config per target domain of the embedded shift benchmark: the embedded default
(configs/config.py) with the domain's own optimisation schedule, chosen on that domain's validation
split (README, "The embedded default and the shift benchmark"). tools/benchmark_shift.py reads
configs/shift/<domain>.py for each domain.

    python adaptation.py --config configs/shift/defocus_blur.py
"""

from __future__ import annotations

import copy
from typing import Any

from configs.config import config as default_config


def shift_config(shift: str, learning_rate: float, decay_steps: list[int], decay_factor: float) -> dict[str, Any]:
    """configs/config.py adapted to `shift`, with Adam at `learning_rate` times `decay_factor` at each of
    `decay_steps`."""
    config = copy.deepcopy(default_config)
    config["out_dir"] = f"runs/shift/{shift}"
    config["dataset"]["synthetic"]["shift"] = shift
    config["opt"].update(learning_rate=learning_rate, decay_steps=decay_steps, decay_factor=decay_factor)
    return config
