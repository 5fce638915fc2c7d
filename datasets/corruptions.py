"""The paper's 15 image corruptions (COCO-C), from the `imagecorruptions` package.

This is the only module that imports `imagecorruptions`. The package (1.1.2, last released in 2020)
needs three fixes on today's stack, applied here before and right after it is imported:

- it imports `pkg_resources`, which setuptools >= 81 no longer ships: a stand-in providing the one
  function it uses, `resource_filename`, is put in `sys.modules` for the import only, so that no other
  library later mistakes it for the real `pkg_resources`;
- `fog` uses `np.float_`, removed in numpy 2: aliased to `np.float64`;
- `glass_blur` and `gaussian_blur` call `skimage.filters.gaussian(..., multichannel=True)`, removed in
  scikit-image 0.19: the module's `gaussian` is replaced by one mapping it to `channel_axis=-1`.

Two more changes leave what each corruption computes as it is. `glass_blur` is replaced by an
exact, vectorised equivalent (`_glass_blur`): the package shuffles pixels in a Python loop, about
4 s per 640 x 480 image against 0.06 s. And seeding is kept meaningful: since scikit-image 0.19
`random_noise` (used by `impulse_noise`) draws from a fresh, OS-seeded generator instead of numpy's
global RNG, so the module's `random_noise` is routed through the global RNG again, as before 0.19.

The package draws all its randomness from numpy's global RNG; `corrupt` seeds it for one call and
restores it afterwards. That is not thread-safe: run parallel corruption in processes, not threads.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
import warnings

import cv2
import numpy as np
import skimage.color
import skimage.filters
import skimage.util

# The order of the paper's COCO-C table.
CORRUPTIONS: tuple[str, ...] = (
    "brightness", "contrast", "defocus_blur", "elastic_transform", "fog", "frost", "gaussian_noise", "glass_blur",
    "impulse_noise", "jpeg_compression", "motion_blur", "pixelate", "shot_noise", "snow", "zoom_blur",
)
# The package's four further corruptions (ImageNet-C's held-out set), not part of COCO-C.
EXTRA_CORRUPTIONS: tuple[str, ...] = ("gaussian_blur", "saturate", "spatter", "speckle_noise")
ALL_CORRUPTIONS = CORRUPTIONS + EXTRA_CORRUPTIONS
MIN_SIDE = 32  # imagecorruptions refuses smaller images


def _resource_filename(package_or_requirement: str, resource_name: str) -> str:
    """`pkg_resources.resource_filename` for an imported module: the path beside its file."""
    module_dir = os.path.dirname(sys.modules[package_or_requirement].__file__)
    return os.path.normpath(os.path.join(module_dir, resource_name))


def _gaussian(image: np.ndarray, *args, multichannel: bool | None = None, **kwargs) -> np.ndarray:
    """`skimage.filters.gaussian` accepting the pre-0.19 `multichannel` flag."""
    if multichannel is not None:
        kwargs.setdefault("channel_axis", -1 if multichannel else None)
    return skimage.filters.gaussian(image, *args, **kwargs)


def _random_noise(image: np.ndarray, mode: str = "gaussian", rng=None, **kwargs) -> np.ndarray:
    """`skimage.util.random_noise` whose default generator is seeded from numpy's global RNG."""
    if rng is None:
        rng = np.random.default_rng(np.random.randint(0, 2**32, dtype=np.uint64))
    return skimage.util.random_noise(image, mode=mode, rng=rng, **kwargs)


# imagecorruptions' glass_blur parameters per severity: (sigma, max_delta, iterations)
_GLASS_BLUR = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))


def _glass_shuffle(x: np.ndarray, max_delta: int, iterations: int) -> np.ndarray:
    """imagecorruptions' local pixel shuffle of the H x W x C uint8 `x`, in place, without its loop.

    The package visits (h, w) for h from H - d down to d + 1 and, within each row, w from W - d down
    to d + 1 (d = max_delta), draws (dx, dy) = np.random.randint(-d, d, size=2) and "swaps"
    x[h, w] with x[h + dy, w + dx]. On numpy views that tuple swap is really a copy,
    x[h, w] = x[h + dy, w + dx], so each visited pixel is written once per iteration: with the
    value its source had when visited, i.e. the source's new value if the source was visited
    earlier, else its old one. Following those links to a source not yet visited (pointer jumping)
    gives every pixel's value at once. The same random numbers are drawn in the same order, so the
    result and the global RNG state afterwards are identical to the package's.
    """
    height, width = x.shape[:2]
    rows = np.arange(height - max_delta, max_delta, -1)
    cols = np.arange(width - max_delta, max_delta, -1)
    hh, ww = np.repeat(rows, len(cols)), np.tile(cols, len(rows))
    steps = np.arange(len(hh))
    visit = np.full((height, width), len(hh), dtype=np.int64)  # pixels never visited count as last
    visit[hh, ww] = steps
    flat = x.reshape(height * width, -1)
    for _ in range(iterations):
        dx, dy = np.random.randint(-max_delta, max_delta, size=(len(hh), 2)).T
        src_h, src_w = hh + dy, ww + dx
        src_visit = visit[src_h, src_w]
        # link each step to the step whose value it copies; a step whose source is not yet visited
        # links to itself and copies the source's old value
        link = np.where(src_visit < steps, src_visit, steps)
        while True:
            jumped = link[link]
            if np.array_equal(jumped, link):
                break
            link = jumped
        flat[hh * width + ww] = flat[(src_h * width + src_w)[link]]
    return x


def _glass_blur(x, severity: int = 1) -> np.ndarray:
    """imagecorruptions' glass_blur (PIL image in, float H x W x 3 in [0, 255] out), vectorised."""
    sigma, max_delta, iterations = _GLASS_BLUR[severity - 1]
    blurred = np.uint8(skimage.filters.gaussian(np.array(x) / 255., sigma=sigma, channel_axis=-1) * 255)
    shuffled = _glass_shuffle(blurred, max_delta, iterations)
    return np.clip(skimage.filters.gaussian(shuffled / 255., sigma=sigma, channel_axis=-1), 0, 1) * 255


def _import_imagecorruptions() -> types.ModuleType:
    """Import imagecorruptions with the compatibility fixes described in the module docstring."""
    if not hasattr(np, "float_"):
        np.float_ = np.float64
    stub = None
    if importlib.util.find_spec("pkg_resources") is None:  # setuptools < 81 still ships the real one
        stub = types.ModuleType("pkg_resources")
        stub.resource_filename = _resource_filename
        sys.modules["pkg_resources"] = stub
    try:
        with warnings.catch_warnings():
            # it imports map_coordinates from scipy.ndimage.interpolation, a deprecated alias
            warnings.simplefilter("ignore", DeprecationWarning)
            import imagecorruptions
            import imagecorruptions.corruptions as module
    finally:
        if stub is not None and sys.modules.get("pkg_resources") is stub:
            del sys.modules["pkg_resources"]
    module.gaussian = _gaussian
    # A stand-in for the module's `sk` holding only what it uses, so that skimage itself stays untouched.
    module.sk = types.SimpleNamespace(util=types.SimpleNamespace(random_noise=_random_noise), color=skimage.color)
    imagecorruptions.corruption_dict["glass_blur"] = _glass_blur  # what imagecorruptions.corrupt dispatches on
    return imagecorruptions


_imagecorruptions = _import_imagecorruptions()


def corrupt(image: np.ndarray, name: str, severity: int = 5, seed: int | None = None) -> np.ndarray:
    """`image` corrupted by `name` at `severity` (1..5), as uint8 of the input's shape.

    `image` is uint8, H x W x 3 RGB, H x W x 1 or H x W grey, with both sides at least 32 pixels. A
    grey image is corrupted as RGB and converted back (luminance), since several corruptions only
    handle three channels. With a `seed` (0 .. 2**32 - 1) the result depends only on the inputs,
    and numpy's global RNG is left as it was; without one the global RNG is used and advanced.
    """
    if name not in ALL_CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; valid: {', '.join(ALL_CORRUPTIONS)}")
    if not isinstance(severity, (int, np.integer)) or not 1 <= severity <= 5:
        raise ValueError(f"severity must be an integer in 1..5, got {severity!r}")
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))):
        raise ValueError(f"expected an H x W, H x W x 1 or H x W x 3 image, got shape {image.shape}")
    height, width = image.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ValueError(f"both image sides must be at least {MIN_SIDE} pixels, got {height} x {width}")

    rgb = image if image.ndim == 3 and image.shape[2] == 3 else np.repeat(image.reshape(height, width, 1), 3, axis=2)
    rgb = np.ascontiguousarray(rgb)
    if seed is None:
        out = _imagecorruptions.corrupt(rgb, severity=int(severity), corruption_name=name)
    else:
        state = np.random.get_state()
        try:
            np.random.seed(seed)
            out = _imagecorruptions.corrupt(rgb, severity=int(severity), corruption_name=name)
        finally:
            np.random.set_state(state)

    # imagecorruptions.corrupt casts its float results with np.uint8 (truncating, as when COCO-C was
    # made) and its corruptions keep the size at every size measured (32..1000 px); the lines below
    # still guarantee the promised dtype and shape should a corruption return float or another size.
    out = np.asarray(out)
    if out.dtype != np.uint8:
        out = np.clip(out, 0, 255).astype(np.uint8)
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=2)
    if out.shape[:2] != (height, width):
        out = cv2.resize(out, (width, height), interpolation=cv2.INTER_LINEAR)
    if image.ndim == 3 and image.shape[2] == 3:
        return out
    grey = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
    return grey.reshape(image.shape)
