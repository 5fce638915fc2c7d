"""The embedded demo and shift benchmark with SAM 2: configs/shift/'s domains (the same scenes,
prompts and steps) with the shipped `sam2_small` in place of `vit_small`, and each domain's
learning rate, weak view and LoRA placement for it, the best of those tried on that domain's
validation split (results/sam2/validation.md for the benchmark's three domains, which keep q/v;
results/sam2/reachability.md for gaussian_noise and shot_noise, which add the stride-4 path).

    python adaptation.py --config configs/sam2/shot_noise.py
    python tools/benchmark_shift.py --config "configs/sam2/{domain}.py" --methods wesam --out results/sam2
    python tools/benchmark_shift.py --config "configs/sam2/{domain}.py" --domains gaussian_noise,shot_noise \
        --methods wesam,supervised --out results/sam2/placement
"""

from __future__ import annotations

from typing import Any

from configs.shift import shift_config


def sam2_shift_config(shift: str, flip: bool = True, targets: tuple[str, ...] = ("qv",),
                      **schedule: Any) -> dict[str, Any]:
    """configs/shift's config of `shift` with sam2_small, the weak view's flips on or off, LoRA at
    `targets` (lora.targets) and the `opt` keys in `schedule` replacing configs/config.py's."""
    config = shift_config(shift, **schedule)
    config["out_dir"] = f"runs/sam2/{shift}"
    config["model"] = {"type": "sam2_small", "checkpoint": "models/weights/sam2_small_source.safetensors"}
    config["augment"] = {"flip": flip}
    config["lora"] = {"targets": list(targets)}
    return config
