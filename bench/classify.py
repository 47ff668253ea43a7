"""Benchmark: end-to-end `edge-agent classify` against raw invoke(), side by side in one run.

Prints, for one int8 MobileNetV2 (224x224, random weights: speed does not depend on
them) on this machine with 2 interpreter threads:
  1. raw invoke() frames/s on a fixed input tensor,
  2. the agent's frame loop on a video file (decode + preprocess + invoke + postprocess),
  3. their ratio (target: at least 0.9), and the same loop on frames decoded beforehand,
     which shows how much of the gap is video decoding,
  4. the loop of Coral's classic example: Pillow open + resize + tflite-runtime invoke,
     sequential, on the same frames as JPEG files (in a separate virtualenv, since
     tflite-runtime 2.14 needs numpy<2; skipped with a note when it cannot be installed).

Needs the `compiler` extra to build the model once (cached in .cache/bench).
Usage: .venv/bin/python bench/classify.py [--frames 300] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CACHE = ROOT / ".cache" / "bench"

CLASSIC = r"""
import sys, time, glob
import numpy as np
from PIL import Image
from tflite_runtime.interpreter import Interpreter
model, folder, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
it = Interpreter(model, num_threads=threads); it.allocate_tensors()
inp = it.get_input_details()[0]; out = it.get_output_details()[0]
_, h, w, _ = inp["shape"]
files = sorted(glob.glob(folder + "/*.jpg"))
t0 = time.perf_counter()
for f in files:
    image = Image.open(f).convert("RGB").resize((w, h), Image.LANCZOS)
    it.set_tensor(inp["index"], np.asarray(image)[None]); it.invoke()
    scores = it.get_tensor(out["index"])[0]; top = np.argsort(-scores)[:3]
print(len(files) / (time.perf_counter() - t0))
"""


def build_model() -> Path:
    """int8 (uint8 in/out) MobileNetV2 1.0 at 224x224, built once with TensorFlow."""
    path = CACHE / "mobilenet_v2_224_int8.tflite"
    if path.exists():
        return path
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    print("building int8 MobileNetV2-224 (once; cached in .cache/bench)...", flush=True)
    model = tf.keras.applications.MobileNetV2(input_shape=(224, 224, 3), weights=None, classes=1000)
    rng = np.random.default_rng(0)

    def rep():
        for _ in range(8):
            yield [rng.uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8
    conv.inference_output_type = tf.uint8
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_bytes(conv.convert())
    return path


def write_video(folder: Path, frames: int) -> Path:
    """A 640x480 MJPG video of a moving scene (gradients and a disc; noise would make JPEG
    decoding unrealistically slow), and the same frames as JPEG files."""
    import cv2

    video = folder / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 30, (640, 480))
    yy, xx = np.mgrid[0:480, 0:640]
    jpgs = folder / "frames"
    jpgs.mkdir()
    for i in range(frames):
        frame = np.stack([(xx * 255 / 640 + i) % 256, yy * 255 / 480, ((xx + yy + 2 * i) % 97) * 2.6], -1)
        frame = frame.astype(np.uint8)
        cv2.circle(frame, (100 + (i * 5) % 440, 240), 80, (40, 40, 255), -1)
        writer.write(frame)
        cv2.imwrite(str(jpgs / f"{i:05d}.jpg"), frame)
    writer.release()
    return video


def raw_invoke_fps(model: Path, threads: int, frames: int) -> float:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(str(model), num_threads=threads)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    tensor = np.random.default_rng(2).integers(0, 256, inp["shape"], dtype=np.uint8)
    for _ in range(10):
        interp.set_tensor(inp["index"], tensor)
        interp.invoke()
    t0 = time.perf_counter()
    for _ in range(frames):
        interp.set_tensor(inp["index"], tensor)
        interp.invoke()
    return frames / (time.perf_counter() - t0)


def agent_fps(model: Path, video: Path, threads: int) -> float:
    from edge_agent.inference.classifier import build_classifier
    from edge_agent.inference.loop import FrameLoop
    from edge_agent.inference.sources import open_source

    classifier = build_classifier(model, None, threads=threads)
    stats = FrameLoop(classifier, open_source(str(video)), []).run()
    return stats.fps


def predecoded_fps(model: Path, video: Path, threads: int) -> float:
    """The same frame loop on frames decoded beforehand: what the loop costs without video decoding."""
    from edge_agent.inference.classifier import build_classifier
    from edge_agent.inference.loop import FrameLoop
    from edge_agent.inference.sources import Frame, Source, open_source

    frames = [f.image for f in open_source(str(video)).frames()]

    class Decoded(Source):
        name = "decoded"

        def frames(self):
            for i, image in enumerate(frames):
                yield Frame(image, self.name, i, 0.0)

    return FrameLoop(build_classifier(model, None, threads=threads), Decoded(), []).run().fps


def classic_fps(model: Path, frames_dir: Path, threads: int) -> str:
    venv = CACHE / "venv-tflite-runtime"
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        proc = subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "tflite-runtime==2.14.0", "numpy<2", "pillow"],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            return "not measured (tflite-runtime could not be installed: " + proc.stderr.strip()[-200:] + ")"
    proc = subprocess.run(
        [str(py), "-c", CLASSIC, str(model), str(frames_dir), str(threads)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        return "not measured (" + proc.stderr.strip().splitlines()[-1] + ")"
    return f"{float(proc.stdout.strip().splitlines()[-1]):8.1f} frames/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    model = build_model()
    with tempfile.TemporaryDirectory() as tmp:
        video = write_video(Path(tmp), args.frames)
        agent_fps(model, video, args.threads)  # warm-up: page cache, interpreter
        raw = raw_invoke_fps(model, args.threads, args.frames)
        e2e = agent_fps(model, video, args.threads)
        decoded = predecoded_fps(model, video, args.threads)
        raw2 = raw_invoke_fps(model, args.threads, args.frames)
        classic = classic_fps(model, Path(tmp) / "frames", args.threads)
    raw_mean = (raw + raw2) / 2
    print(f"model: {model.name}, {args.frames} frames 640x480, {args.threads} threads, {os.cpu_count()} cores")
    print(f"raw invoke()                          {raw_mean:8.1f} frames/s  (runs: {raw:.1f}, {raw2:.1f})")
    print(f"edge-agent classify on a video file   {e2e:8.1f} frames/s")
    print(f"ratio end-to-end / raw                {e2e / raw_mean:8.2f}   (target >= 0.90)")
    print(
        f"same loop on pre-decoded frames       {decoded:8.1f} frames/s, ratio {decoded / raw_mean:.2f} "
        "(the rest of the gap is video decoding)"
    )
    print(f"classic example (Pillow + tflite-runtime, sequential) {classic}")


if __name__ == "__main__":
    main()
