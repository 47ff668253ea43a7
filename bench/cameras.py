"""Benchmark: four 15 fps cameras on one Edge TPU. Does the agent keep up with all of them?

Four simulated cameras (live sources delivering 640x480 frames at 15 fps each, stamped when
delivered, as a camera's frames are) feed the agent's scheduler (edge_agent.inference.scheduler),
which classifies them on one interpreter:
  1. on the simulated Edge TPU: the libedgetpu stand-in (tests/stand_ins/libedgetpu) loaded by
     the real LiteRT interpreter as the delegate, sleeping 2.5 ms per invoke like MobileNet v2
     on a Coral, running a model shaped like the compiler's output (224x224x3 in, 1001 classes);
  2. on the CPU: the bundled digits model.
For each it prints per-source frames/s classified, the frames each source delivered and dropped
(replaced by a newer frame before classification), and whether every source kept up (classified
at least 95 % of what it delivered). The last line is ``BENCH {json}``.

Usage: .venv/bin/python bench/cameras.py [--seconds 10] [--cameras 4] [--fps 15]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
CACHE = ROOT / ".cache" / "bench" / "cameras"
CHILD_FLAG = "EDGE_BENCH_CAMERAS_CHILD"

from edge_agent.inference.classifier import build_classifier  # noqa: E402
from edge_agent.inference.scheduler import NamedSource, SourceScheduler  # noqa: E402
from edge_agent.inference.sources import Frame, Source  # noqa: E402


class SimulatedCamera(Source):
    """A live source: ``fps`` frames a second of 640x480 noise until ``stop`` is set."""

    live = True

    def __init__(self, name: str, fps: float, stop: threading.Event, seed: int) -> None:
        self.name, self.fps, self.stop = name, fps, stop
        rng = np.random.default_rng(seed)
        self.images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(8)]
        self.delivered = 0

    def frames(self) -> Iterator[Frame]:
        start = time.monotonic()
        index = 0
        while not self.stop.is_set():
            delay = start + index / self.fps - time.monotonic()
            if delay > 0 and self.stop.wait(delay):
                return
            self.delivered += 1
            yield Frame(self.images[index % len(self.images)], self.name, index, time.time())
            index += 1


def measure(model: Path, device: str, cameras: int, fps: float, seconds: float) -> Dict[str, Any]:
    """Run ``cameras`` simulated cameras through one classifier for ``seconds``; per-source figures."""
    classifier = build_classifier(model, None, device=device)
    stop = threading.Event()
    sims = [SimulatedCamera(f"cam{i + 1}", fps, stop, seed=i) for i in range(cameras)]
    scheduler = SourceScheduler(classifier, [NamedSource(s.name, s) for s in sims], [], stop=stop)
    timer = threading.Timer(seconds, stop.set)
    started = time.monotonic()
    timer.start()
    scheduler.run()
    elapsed = time.monotonic() - started
    sources = {}
    for sim, slot in zip(sims, scheduler.slots):
        sources[sim.name] = {
            "fps": round(slot.frames / elapsed, 2),
            "delivered": sim.delivered,
            "classified": slot.frames,
            "dropped": slot.dropped,
        }
    kept_up = all(s["classified"] >= 0.95 * s["delivered"] for s in sources.values())
    return {"backend": classifier.runtime.backend, "sources": sources, "kept_up": kept_up, "seconds": round(elapsed, 2)}


def child(args: argparse.Namespace) -> None:
    from helpers import edgetpu_model

    tpu_model = CACHE / "standin_edgetpu.tflite"
    if not tpu_model.exists():
        written = edgetpu_model.write(CACHE, height=224, width=224, classes=1001)
        written.rename(tpu_model)
    results = {
        "edgetpu_standin": measure(tpu_model, "usb", args.cameras, args.fps, args.seconds),
        "cpu_digits": measure(ROOT / "models" / "digits_int8.tflite", "cpu", args.cameras, args.fps, args.seconds),
    }
    print(json.dumps(results))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--fps", type=float, default=15.0)
    args = parser.parse_args()
    if os.environ.get(CHILD_FLAG):
        child(args)
        return 0
    from helpers import standin

    library = standin.build(CACHE)
    env = {**os.environ, CHILD_FLAG: "1", **standin.environment("ok", latency_us=2500)}
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(library.parent), env.get("LD_LIBRARY_PATH")]))
    proc = subprocess.run(
        [sys.executable, __file__, *sys.argv[1:]], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    if proc.returncode != 0:
        print(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "bench child failed", file=sys.stderr)
        return 1
    results: Dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    wanted = args.cameras * args.fps
    for label, run in results.items():
        total = sum(s["fps"] for s in run["sources"].values())
        print(
            f"{label} ({run['backend']}): {total:.1f} frames/s classified of {wanted:.0f} delivered;"
            f" kept up: {run['kept_up']}"
        )
        for name, s in run["sources"].items():
            print(f"  {name}: {s['fps']:.2f} fps, {s['classified']}/{s['delivered']} frames, {s['dropped']} dropped")
    summary = {
        "bench": "cameras",
        "cameras": args.cameras,
        "camera_fps": args.fps,
        "simulated_invoke_ms": 2.5,
        **results,
    }
    print("BENCH " + json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
