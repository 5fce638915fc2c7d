"""Reading images (datasets/images.py): every file becomes the H x W x 3 uint8 RGB of its picture, whatever
its mode (1-bit, grey, grey + alpha, palette, RGBA, 16-bit grey or colour, 32-bit integer, float in [0, 1]
or [0, 255]); a file that cannot be read (an image or a mask: broken, missing, cut), or not read right (a
float image of another range, a multi-channel float TIFF), is refused naming it. Masks:
tests/test_mask_reading.py; EXIF orientation: tests/test_exif.py."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from datasets.images import read_image
from datasets.instances import SampleError
from datasets.masks import read_label_map
from tests.ondisk import write_corrupt, write_image


def test_read_image_returns_rgb_uint8(tmp_path):
    pixels = write_image(tmp_path / "a.png", seed=3)
    image = read_image(tmp_path / "a.png")
    assert image.dtype == np.uint8 and image.shape == (40, 60, 3)
    np.testing.assert_array_equal(image, pixels)
    Image.fromarray(pixels[..., 0]).save(tmp_path / "grey.png")
    grey = read_image(tmp_path / "grey.png")
    assert grey.shape == (40, 60, 3) and (grey == pixels[..., :1]).all()
    write_image(tmp_path / "b.jpg")
    assert read_image(tmp_path / "b.jpg").shape == (40, 60, 3)


@pytest.mark.parametrize("reader", [read_image, read_label_map])
def test_unreadable_or_missing_files_raise_sample_error_naming_the_file(tmp_path, reader):
    write_corrupt(tmp_path / "broken.png")
    with pytest.raises(SampleError, match="broken.png"):
        reader(tmp_path / "broken.png")
    with pytest.raises(SampleError, match="missing.png"):
        reader(tmp_path / "missing.png")
    # a truncated file (valid header, missing data)
    write_image(tmp_path / "whole.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "whole.png").read_bytes()[:200])
    with pytest.raises(SampleError, match="cut.png"):
        reader(tmp_path / "cut.png")


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_grey_images_keep_their_range(tmp_path, suffix):
    grey = np.random.default_rng(0).integers(0, 256, (20, 30)).astype(np.uint8)
    path = tmp_path / f"microscopy{suffix}"
    Image.fromarray(grey.astype(np.uint16) * 257).save(path)  # the same picture over 0-65535
    assert Image.open(path).mode.startswith("I")
    pixels = read_image(path)
    assert pixels.dtype == np.uint8 and pixels.shape == (20, 30, 3)
    np.testing.assert_array_equal(pixels, np.repeat(grey[..., None], 3, axis=2))


def pil_image(mode: str, grey: np.ndarray) -> tuple[Image.Image, np.ndarray]:
    """An image of PIL `mode` holding the uint8 `grey` picture (H x W), and the RGB pixels it must read as."""
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if mode == "1":
        return Image.fromarray(grey > 127), np.where(rgb > 127, 255, 0).astype(np.uint8)
    if mode in ("L", "LA", "RGBA", "P"):
        return Image.fromarray(grey).convert(mode), rgb
    if mode == "I;16":
        return Image.fromarray(grey.astype(np.uint16) * 257), rgb
    if mode == "I":
        return Image.fromarray(grey.astype(np.int32) * 257, "I"), rgb
    if mode == "F 0-1":
        return Image.fromarray(grey.astype(np.float32) / 255), rgb
    if mode == "F 0-255":
        return Image.fromarray(grey.astype(np.float32)), rgb
    raise ValueError(mode)


@pytest.mark.parametrize("mode, suffix", [("1", ".png"), ("L", ".png"), ("LA", ".png"), ("P", ".png"),
                                          ("RGBA", ".png"), ("I;16", ".png"), ("I", ".tif"), ("F 0-1", ".tif"),
                                          ("F 0-255", ".tif")])
def test_every_image_mode_reads_as_its_picture(tmp_path, mode, suffix):
    grey = np.random.default_rng(0).integers(0, 256, (12, 20)).astype(np.uint8)
    image, expected = pil_image(mode, grey)
    path = tmp_path / f"picture{suffix}"
    image.save(path)
    with Image.open(path) as saved:
        assert saved.mode == mode.split()[0]
    np.testing.assert_array_equal(read_image(path), expected)


def test_16_bit_colour_images_keep_their_range(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (10, 14, 3)).astype(np.uint16)
    for suffix in (".png", ".tif"):
        path = tmp_path / f"wide{suffix}"
        cv2.imwrite(str(path), (rgb * 257)[..., ::-1])  # cv2 writes BGR
        np.testing.assert_array_equal(read_image(path), rgb)


def test_unreadable_image_modes_are_refused_by_name(tmp_path):
    hdr = tmp_path / "hdr.tif"
    Image.fromarray(np.full((4, 4), 1000.0, np.float32)).save(hdr)
    with pytest.raises(SampleError, match=r"image '.*hdr.tif' is a float image with values in \[1000, 1000\]"):
        read_image(hdr)
    colour_float = tmp_path / "colour_float.tif"
    cv2.imwrite(str(colour_float), np.random.default_rng(0).random((4, 4, 3)).astype(np.float32))
    with pytest.raises(SampleError, match=r"cannot read image '.*colour_float.tif' .*multi-channel float TIFF"):
        read_image(colour_float)
