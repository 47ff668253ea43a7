"""Pre- and post-processing as users of Coral models expect them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.errors import ConfigError, ModelError
from edge_agent.inference.labels import load_labels
from edge_agent.inference.postprocess import dequantize, top_k
from edge_agent.inference.preprocess import Normalization, preprocess, quantize_input, resize


def test_labels_with_ids_and_plain_lines(tmp_path: Path):
    a = tmp_path / "a.txt"
    a.write_text("0  background\n1: tench, Tinca tinca\n3 goldfish\n")
    assert load_labels(a) == {0: "background", 1: "tench, Tinca tinca", 3: "goldfish"}
    b = tmp_path / "b.txt"
    b.write_text("\ufeffcat\n\ndog\n")
    assert load_labels(b) == {0: "cat", 2: "dog"}  # the blank line keeps its row, as pycoral counts
    with pytest.raises(ModelError, match="labels file not found"):
        load_labels(tmp_path / "none.txt")


def test_uint8_input_matching_quantization_is_copied_unchanged():
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)
    out = quantize_input(pixels, np.uint8, (1 / 255, 0), Normalization(0.0, 255.0))
    assert np.array_equal(out, pixels)
    assert np.array_equal(quantize_input(pixels, np.uint8, (1 / 255, 0), Normalization()), pixels)


def test_int8_input_is_shifted_by_128_by_default():
    pixels = np.array([[[0], [128], [255]]], dtype=np.uint8)
    out = quantize_input(pixels, np.int8, (1 / 255, -128), Normalization())
    assert out.dtype == np.int8 and out.ravel().tolist() == [-128, 0, 127]


def test_explicit_mean_std_requantizes_and_clips():
    pixels = np.array([[[0], [127], [255]]], dtype=np.uint8)
    # model wants (p - 127.5) / 127.5 in [-1, 1], quantized with scale 1/128, zero point 128
    out = quantize_input(pixels, np.uint8, (1 / 128, 128), Normalization(127.5, 127.5))
    assert out.ravel().tolist() == [0, 127, 255]  # 255 maps to 256 and is clipped


def test_float_input_defaults_to_zero_one():
    out = quantize_input(np.array([[[0], [255]]], np.uint8), np.float32, (0.0, 0), Normalization())
    assert out.dtype == np.float32 and out.ravel().tolist() == [0.0, 1.0]


def test_normalization_needs_both_values_and_nonzero_std():
    with pytest.raises(ConfigError):
        Normalization(mean=1.0)
    with pytest.raises(ConfigError):
        Normalization(0.0, 0.0)


def test_resize_keeping_aspect_pads_right_and_bottom():
    image = np.full((50, 100, 3), 200, np.uint8)
    out = resize(image, (32, 32), keep_aspect=True)
    assert out.shape == (32, 32, 3)
    assert out[:16].min() == 200 and out[16:].max() == 0


def test_preprocess_shapes_for_rgb_and_gray_models():
    image = np.zeros((40, 60, 3), np.uint8)
    assert preprocess(image, (32, 24), 3, np.uint8, (1 / 255, 0), Normalization()).shape == (1, 24, 32, 3)
    assert preprocess(image, (24, 24), 1, np.int8, (1 / 255, -128), Normalization()).shape == (1, 24, 24, 1)


def test_dequantize_and_top_k_with_threshold_and_labels():
    raw = np.array([0, 200, 10, 250, 50], dtype=np.uint8)
    scores = dequantize(raw, (1 / 256, 0))
    assert scores[3] == pytest.approx(250 / 256)
    best = top_k(scores, 3, 0.5, {3: "three", 1: "one"})
    assert [(c.id, c.label) for c in best] == [(3, "three"), (1, "one")]
    assert top_k(scores, 10, 0.0, {})[0].label == "3"
    signed = dequantize(np.array([-128, 127], dtype=np.int8), (1 / 256, -128))
    assert signed.tolist() == pytest.approx([0.0, 255 / 256])
