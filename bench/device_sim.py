"""Benchmark helper: the agent on a simulated Edge TPU (2.5 ms per inference), in this process.

Run by bench/classify.py in a child process whose ``LD_LIBRARY_PATH`` points at the
libedgetpu stand-in (tests/stand_ins/libedgetpu, built by tests/helpers/standin.py), so the
agent loads it by name through the real LiteRT interpreter, as it loads Coral's library. The
model is a compiled-model look-alike with a 224x224x3 input and 1,000 outputs whose one
``edgetpu-custom-op`` node the stand-in claims and "runs" by sleeping the latency.

Prints one JSON line: frames/s per run of the agent's frame loop on a 640x480 MJPG video with
QoS 1 publishing to a local Mosquitto, and where the time per frame goes (each stage timed
alone over the same frames).
Usage: LD_LIBRARY_PATH=DIR python bench/device_sim.py VIDEO MODEL [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from helpers.mosquitto import Mosquitto  # noqa: E402

from edge_agent.config import Config, MqttConfig  # noqa: E402
from edge_agent.inference.classifier import Classifier, build_classifier  # noqa: E402
from edge_agent.inference.postprocess import dequantize, top_k  # noqa: E402
from edge_agent.inference.scheduler import NamedSource, SourceScheduler  # noqa: E402
from edge_agent.inference.sources import open_source  # noqa: E402
from edge_agent.publishing.session import PublishingSession  # noqa: E402


def per_frame_ms(fn: Callable[[], int]) -> float:
    """Milliseconds per item of ``fn()``, which processes the items and returns how many."""
    t0 = time.perf_counter()
    n = fn()
    return (time.perf_counter() - t0) * 1000 / max(1, n)


def breakdown(classifier: Classifier, video: Path, session: PublishingSession) -> Dict[str, float]:
    """Each stage of a frame timed alone, in ms per frame."""
    images = [f.image for f, _ in zip(open_source(str(video)).frames(), range(100))]
    decode = per_frame_ms(lambda: sum(1 for _ in open_source(str(video)).frames()))
    tensors: List[Any] = []

    def prepare_all() -> int:
        for image in images:
            tensors.append(classifier.prepare(image)[0])
        return len(images)

    preprocess = per_frame_ms(prepare_all)
    runtime = classifier.runtime
    raws = [runtime.invoke(t) for t in tensors[:50]]
    t0 = time.perf_counter()
    for t in tensors[:200]:
        runtime.invoke(t)
    invoke_ms = (time.perf_counter() - t0) * 1000 / min(200, len(tensors))
    raw = raws[0]
    postprocess = per_frame_ms(
        lambda: len(
            [top_k(dequantize(raw, runtime.output_quant), classifier.k, 0.0, classifier.labels) for _ in images]
        )
    )
    frames = [f for f, _ in zip(open_source(str(video)).frames(), range(200))]
    results = [classifier.classify(f) for f in frames]
    sink = session.sinks[1]
    publish = per_frame_ms(lambda: len([sink(r) for r in results]))
    return {
        "decode_ms": round(decode, 3),
        "preprocess_ms": round(preprocess, 3),
        "invoke_ms": round(invoke_ms, 3),
        "interpreter_overhead_ms": round(invoke_ms - 2.5, 3),
        "postprocess_ms": round(postprocess, 3),
        "publish_ms": round(publish, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("video", type=Path)
    parser.add_argument("model", type=Path)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    classifier = build_classifier(args.model, None, device="auto", device_id="devsim")
    if classifier.runtime.backend != "edgetpu":
        print(json.dumps({"error": "the stand-in delegate did not load"}))
        return 1
    work = Path(tempfile.mkdtemp(prefix="bench-devsim-"))
    broker = Mosquitto(work / "broker").start()
    fps: List[float] = []
    try:
        for run in range(args.runs + 1):  # the first run warms up
            config = Config(
                device_id=f"devsim{run}",
                state_dir=work / f"state{run}",
                mqtt=MqttConfig(url=broker.url, topic_prefix="bench", qos=1, stats_interval=0),
            )
            session = PublishingSession(config).start()
            try:
                t0 = time.perf_counter()
                stats = SourceScheduler(
                    classifier, [NamedSource("input", open_source(str(args.video)))], session.sinks
                ).run()
                elapsed = time.perf_counter() - t0
            finally:
                session.stop()
            if run:
                fps.append(stats.frames / elapsed)
        config = Config(
            device_id="devsim-parts",
            state_dir=work / "parts",
            mqtt=MqttConfig(url=broker.url, topic_prefix="bench", qos=1, stats_interval=0),
        )
        with PublishingSession(config) as session:
            parts = breakdown(classifier, args.video, session)
    finally:
        broker.stop()
    print(json.dumps({"fps": fps, "median": statistics.median(fps), **parts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
