"""Pictures of masks: instance overlays on an image, and validate.py --visualize's side-by-side
comparison (image with prompts, Direct, adapted, ground truth)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

ALPHA = 0.5  # opacity of a mask over the image


def instance_colours(count: int) -> np.ndarray:
    """count x 3 uint8 distinct colours (matplotlib's tab20, repeated)."""
    cmap = plt.get_cmap("tab20")
    return (np.array([cmap(i % 20)[:3] for i in range(count)]) * 255).astype(np.uint8).reshape(-1, 3)


def overlay(image: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 image with N x H x W bool masks blended in, one colour per instance."""
    out = image.astype(np.float32)
    for mask, colour in zip(masks, instance_colours(len(masks))):
        out[mask] = (1 - ALPHA) * out[mask] + ALPHA * colour
    return out.astype(np.uint8)


def draw_prompts(axis: plt.Axes, prompts: dict[str, torch.Tensor], offset: tuple[int, int]) -> None:
    """Boxes as rectangles, points as dots (green positive, red negative); `offset` (top, left)
    moves the padded frame's coordinates onto the cropped image. Mask prompts are not drawn."""
    top, left = offset
    colours = instance_colours(len(next(iter(prompts.values())))) / 255 if prompts else []
    for box, colour in zip(prompts.get("boxes", []), colours):
        x1, y1, x2, y2 = box.tolist()
        axis.add_patch(plt.Rectangle((x1 - left, y1 - top), x2 - x1, y2 - y1, fill=False, edgecolor=colour, lw=1.5))
    if "points" in prompts:
        points = prompts["points"].reshape(-1, 2).numpy()
        positive = prompts["point_labels"].reshape(-1).numpy() == 1
        for keep, colour in ((positive, "lime"), (~positive, "red")):
            axis.scatter(points[keep, 0] - left, points[keep, 1] - top, s=12, c=colour, edgecolors="black",
                         linewidths=0.5)


def save_comparison(path: str | Path, title: str, image: np.ndarray, prompts: dict[str, torch.Tensor],
                    offset: tuple[int, int], panels: list[tuple[str, np.ndarray]]) -> None:
    """One row of pictures: the image (h x w x 3 uint8) with its prompts, then each (label, masks
    N x h x w bool) of `panels` overlaid on it."""
    figure, axes = plt.subplots(1, 1 + len(panels), figsize=(3.2 * (1 + len(panels)), 3.6))
    axes[0].imshow(image)
    draw_prompts(axes[0], prompts, offset)
    axes[0].set_title("image and prompts", fontsize=9)
    for axis, (label, masks) in zip(axes[1:], panels):
        axis.imshow(overlay(image, masks))
        axis.set_title(label, fontsize=9)
    for axis in axes:
        axis.set_xlim(0, image.shape[1])
        axis.set_ylim(image.shape[0], 0)
        axis.axis("off")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
