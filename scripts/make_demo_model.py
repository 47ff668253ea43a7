"""Build the bundled demo model from data a package ships: scikit-learn's digits.

Writes, relative to the repository root:
  models/digits_int8.tflite   full-integer (uint8 in/out) classifier, input 1x32x32x3
  models/digits_float.tflite  the float model it was quantized from (for comparisons)
  labels/digits.txt           "id label" per line
  images/digit_<label>_<n>.png sample inputs held out from training

Needs the `compiler` extra (TensorFlow) and scikit-learn; no download. Deterministic
seeds, so a rebuild gives an equivalent model (bit-identical is not promised by TF).
Usage: .venv/bin/python scripts/make_demo_model.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_agent.inference.preprocess import resize  # noqa: E402

SIZE = 32
SAMPLE_SIZE = 64  # sample images are larger than the model input, so the demo exercises resizing
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def digits_as_rgb(size: int) -> tuple[np.ndarray, np.ndarray]:
    """sklearn digits (8x8, values 0..16) as uint8 RGB images of size x size, white digit on black."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = []
    for img in data.images:
        gray = Image.fromarray((img * (255.0 / 16.0)).astype(np.uint8), mode="L")
        images.append(np.asarray(gray.resize((size, size), Image.Resampling.BILINEAR).convert("RGB")))
    return np.stack(images), data.target.astype(np.int64)


def int8_predictions(model: bytes, x: np.ndarray) -> np.ndarray:
    """Top-1 class of a uint8-input tflite model for each image of x (N, SIZE, SIZE, 3) uint8."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    preds = []
    for img in x:
        interp.set_tensor(inp["index"], img[None])
        interp.invoke()
        preds.append(int(np.argmax(interp.get_tensor(out["index"])[0])))
    return np.array(preds)


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.keras.utils.set_random_seed(7)
    # Train on both what the agent sees for the large sample images (resized to the input
    # size) and the digits scaled straight to the input size, so neither path is a surprise.
    big, y = digits_as_rgb(SAMPLE_SIZE)
    x = np.stack([resize(b, (SIZE, SIZE)) for b in big])  # exactly the agent's pre-processing
    direct, _ = digits_as_rgb(SIZE)
    rng = np.random.default_rng(7)
    order = rng.permutation(len(x))
    x, y, big, direct = x[order], y[order], big[order], direct[order]
    n_test = 200
    x_train = np.concatenate([x[n_test:], direct[n_test:]])
    y_train = np.concatenate([y[n_test:], y[n_test:]])
    x_test, y_test = x[:n_test], y[:n_test]

    inputs = tf.keras.Input(shape=(SIZE, SIZE, 3), batch_size=1, name="image")
    h = tf.keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inputs)
    h = tf.keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(h)
    h = tf.keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(h)
    h = tf.keras.layers.Conv2D(32, 1, activation="relu")(h)
    h = tf.keras.layers.AveragePooling2D(8)(h)
    h = tf.keras.layers.Reshape((32,))(h)
    outputs = tf.keras.layers.Dense(10, activation="softmax", name="scores")(h)
    model = tf.keras.Model(inputs, outputs)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    xf_train = x_train.astype(np.float32) / 255.0
    model.fit(xf_train, y_train, epochs=40, batch_size=32, verbose=0)
    _, acc = model.evaluate(x_test.astype(np.float32) / 255.0, y_test, verbose=0)
    print(f"float model accuracy on {n_test} held-out digits: {acc:.3f}")

    def representative():
        for i in range(0, len(xf_train), 8):
            yield [xf_train[i : i + 1]]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    (ROOT / "models").mkdir(exist_ok=True)
    (ROOT / "models" / "digits_float.tflite").write_bytes(conv.convert())
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8
    conv.inference_output_type = tf.uint8
    int8 = conv.convert()
    (ROOT / "models" / "digits_int8.tflite").write_bytes(int8)
    accuracy = float(np.mean(int8_predictions(int8, x_test) == y_test))
    print(f"int8 model accuracy on {n_test} held-out digits: {accuracy:.3f}")

    (ROOT / "labels").mkdir(exist_ok=True)
    (ROOT / "labels" / "digits.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(NAMES)))

    # Sample images: held-out digits (never trained on), two per class, taken in order among
    # those the int8 model gets right, so the demo shows correct results. The honest
    # figure for the model is the held-out accuracy printed above (about 98%).
    predictions = int8_predictions(int8, x_test)
    images = ROOT / "images"
    images.mkdir(exist_ok=True)
    for old in images.glob("digit_*.png"):
        old.unlink()
    seen: dict[int, int] = {}
    for img, label, pred in zip(big[:n_test], y_test, predictions):
        n = seen.get(int(label), 0)
        if n >= 2 or pred != label:
            continue
        seen[int(label)] = n + 1
        Image.fromarray(img).save(images / f"digit_{label}_{n}.png")
    print(f"wrote {sum(seen.values())} sample images to {images}")


if __name__ == "__main__":
    main()
