"""The 15 COCO-C corruptions: every one runs on small, grey and odd-sized images, is seeded without
touching numpy's global RNG, and the vectorised glass_blur matches the package's own."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from datasets import corruptions
from datasets.corruptions import ALL_CORRUPTIONS, CORRUPTIONS, corrupt


def textured(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A photo-like H x W x 3 uint8 RGB image: smooth colour blobs with edges, mid-range values."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(40, 216, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def test_paper_order() -> None:
    assert CORRUPTIONS[:3] == ("brightness", "contrast", "defocus_blur")
    assert CORRUPTIONS[-1] == "zoom_blur" and len(set(CORRUPTIONS)) == 15


@pytest.mark.parametrize("name", ALL_CORRUPTIONS)
def test_corruption_changes_image_and_is_seeded(name: str) -> None:
    image = textured(64, 64)
    np.random.seed(123)
    before = np.random.get_state()
    out = corrupt(image, name, severity=5, seed=7)
    after = np.random.get_state()
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - image.astype(int)).mean() > 5.0  # every one moves pixels by 11+ on average
    assert np.array_equal(corrupt(image, name, severity=5, seed=7), out)
    assert before[0] == after[0] and np.array_equal(before[1], after[1]) and before[2:] == after[2:]


@pytest.mark.parametrize("name", ALL_CORRUPTIONS)
def test_grey_images_keep_their_shape(name: str) -> None:
    grey = textured(48, 40)[..., 1]
    for image in (grey, grey[..., None]):
        out = corrupt(image, name, seed=0)
        assert out.shape == image.shape and out.dtype == np.uint8


@pytest.mark.parametrize("name", ["frost", "zoom_blur", "snow", "fog", "glass_blur"])
@pytest.mark.parametrize("size", [(32, 32), (64, 64), (128, 128), (37, 101), (131, 64)])
def test_small_and_odd_sizes(name: str, size: tuple[int, int]) -> None:
    image = textured(*size)
    out = corrupt(image, name, seed=1)
    assert out.shape == image.shape and out.dtype == np.uint8


def test_seed_changes_random_corruptions() -> None:
    image = textured(64, 64)
    for name in ("gaussian_noise", "impulse_noise", "frost", "snow", "glass_blur"):
        assert not np.array_equal(corrupt(image, name, seed=1), corrupt(image, name, seed=2)), name


def test_unseeded_calls_use_the_global_rng() -> None:
    image = textured(64, 64)
    np.random.seed(5)
    first = corrupt(image, "impulse_noise")
    np.random.seed(5)
    assert np.array_equal(corrupt(image, "impulse_noise"), first)
    assert not np.array_equal(corrupt(image, "impulse_noise"), first)


@pytest.mark.parametrize("severity", [1, 3, 5])
@pytest.mark.parametrize("size", [(64, 64), (45, 70)])
def test_glass_blur_matches_the_package(severity: int, size: tuple[int, int]) -> None:
    """The vectorised shuffle gives the package's pixels and leaves the RNG where the package does."""
    image = textured(*size, seed=3)
    package_glass_blur = corruptions._imagecorruptions.corruptions.glass_blur
    np.random.seed(11)
    expected = np.uint8(package_glass_blur(Image.fromarray(image), severity))
    expected_state = np.random.get_state()[1].copy()
    np.random.seed(11)
    got = corrupt(image, "glass_blur", severity)
    assert np.array_equal(got, expected)
    assert np.array_equal(np.random.get_state()[1], expected_state)


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown corruption 'rain'.*brightness.*zoom_blur"):
        corrupt(textured(64, 64), "rain")


@pytest.mark.parametrize("image, severity, message", [
    (np.zeros((64, 64, 3), np.float32), 5, "uint8"),
    (np.zeros((64, 64, 4), np.uint8), 5, "shape"),
    (np.zeros((31, 64, 3), np.uint8), 5, "at least 32"),
    (np.zeros((64, 64, 3), np.uint8), 0, "severity"),
    (np.zeros((64, 64, 3), np.uint8), 6, "severity"),
])
def test_bad_input_is_a_value_error(image: np.ndarray, severity: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        corrupt(image, "fog", severity)


def test_float_or_resized_package_output_is_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    """A corruption returning float, grey or another size still yields uint8 of the input's shape."""
    monkeypatch.setattr(corruptions._imagecorruptions, "corrupt",
                        lambda image, severity, corruption_name: np.full((50, 60), 300.0))
    out = corrupt(textured(64, 80), "fog")
    assert out.shape == (64, 80, 3) and out.dtype == np.uint8 and (out == 255).all()


def test_no_pkg_resources_stand_in_is_left_behind() -> None:
    module = sys.modules.get("pkg_resources")
    assert module is None or hasattr(module, "working_set")
