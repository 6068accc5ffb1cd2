"""runtime.inputs.image: decoding, preprocessing, and that training sees the deployment pixels."""

import collections
import io

import numpy as np
import pytest
from PIL import Image

from runtime.errors import CamError
from runtime.inputs.image import Preprocess, image_size, load_image, preprocess

SPEC = Preprocess(height=20, width=30, color="RGB", mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))


def test_preprocess_shape_and_normalization():
    pixels = np.full((20, 30, 3), 102, np.uint8)  # 0.4 on the [0, 1] scale
    batch = preprocess([pixels, pixels], SPEC)
    assert batch.shape == (2, 3, 20, 30) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[0, :, 0, 0], [(0.4 - m) / s for m, s in zip(SPEC.mean, SPEC.std, strict=True)], atol=1e-6)


def test_grayscale_rgba_and_16_bit_inputs(tmp_path):
    gray = Preprocess(height=8, width=8, color="L", mean=(0.5,), std=(0.5,))
    assert preprocess(np.zeros((16, 16, 3), np.uint8), gray).shape == (1, 1, 8, 8)
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255  # red but fully transparent: composited on black
    assert np.allclose(preprocess(rgba, SPEC)[0, 0], (0 - 0.4) / 0.2)
    wide = Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    assert wide.mode.startswith("I;16")
    path = tmp_path / "xray16.png"
    wide.save(path)
    x = preprocess(path, gray)
    assert x.min() == pytest.approx(-1.0) and x.max() == pytest.approx(1.0, abs=1e-2)


def test_paths_pil_and_arrays_give_the_same_tensor(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    from_path = preprocess(tmp_path / "a.png", SPEC)
    np.testing.assert_array_equal(from_path, preprocess(Image.fromarray(pixels), SPEC))
    np.testing.assert_array_equal(from_path, preprocess(pixels, SPEC))


@pytest.mark.slow  # train.data imports torch
def test_training_eval_transform_is_the_runtime_preprocess(tmp_path):
    """One image through train.data (the training loop's evaluation input) and through CamSession's preprocess."""
    from train.data import ImageSet
    from train.recipes import SHAPES

    pixels = np.random.default_rng(3).integers(0, 256, (90, 70, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "b.jpg")
    trained = ImageSet([tmp_path / "b.jpg"], np.array([0]), SHAPES.preprocess)[0].x.numpy()
    deployed = preprocess(tmp_path / "b.jpg", SHAPES.preprocess)
    np.testing.assert_array_equal(trained, deployed)


def test_bad_images_give_one_line_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(CamError, match="notes.txt: not a readable image"):
        load_image(tmp_path / "notes.txt")
    with pytest.raises(CamError, match="missing.png: no such image file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(CamError, match="dtype uint8"):
        load_image(np.zeros((4, 4), np.float32))
    with pytest.raises(CamError, match="shape"):
        load_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(CamError, match="color"):
        Preprocess(height=4, width=4, color="CMYK")


def test_any_sequence_is_many_images_and_bytes_are_one():
    pixels = np.full((20, 30, 3), 102, np.uint8)
    assert preprocess(collections.deque([pixels, pixels]), SPEC).shape == (2, 3, 20, 30)  # a Sequence, not a list
    png = io.BytesIO()
    Image.fromarray(np.zeros((7, 11, 3), np.uint8)).save(png, format="PNG")
    assert preprocess(png.getvalue(), SPEC).shape == (1, 3, 20, 30)
    assert image_size(png.getvalue()) == (11, 7)  # read as load_image reads them, not taken for a path
    with pytest.raises(CamError, match="image bytes"):
        image_size(b"not an image")
