"""One config per target domain of the embedded shift benchmark: the embedded default
(configs/config.py) with the domain's own optimisation schedule, chosen on that domain's validation
split (results/embedded_default.md). tools/benchmark_shift.py reads
configs/shift/<domain>.py for each domain.

    python adaptation.py --config configs/shift/defocus_blur.py
"""

from __future__ import annotations

import copy
from typing import Any

from configs.config import config as default_config


def shift_config(shift: str, **schedule: Any) -> dict[str, Any]:
    """configs/config.py adapted to `shift`, with the `opt` keys in `schedule` (learning_rate,
    decay_steps, decay_factor) replacing the default's."""
    config = copy.deepcopy(default_config)
    config["out_dir"] = f"runs/shift/{shift}"
    config["dataset"]["synthetic"]["shift"] = shift
    config["opt"].update(schedule)
    return config
