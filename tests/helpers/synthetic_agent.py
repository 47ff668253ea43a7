"""An agent process whose frames are made up: the real service, outbox and publisher, with a
frame loop that produces Classification objects instead of reading a camera.

    python synthetic_agent.py --count 500 --interval 0.005 [--hold] [--flag key=value ...]

Configuration comes from EDGE_AGENT_* like the real agent. Each result's message id is
printed (``produced <id>``) after every sink has returned, so a test knows which results
the agent had accepted when it was killed. ``--hold`` keeps running after the last frame
until SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from typing import Sequence

from edge_agent.config import load_config
from edge_agent.inference.result import Class, Classification, ModelInfo
from edge_agent.publishing.session import Sink
from edge_agent.service import run_service

MODEL = ModelInfo("synthetic", "1.0.0", "sha256:" + "00" * 32)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.0)
    parser.add_argument("--hold", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    config = load_config(None, os.environ)

    def frame_loop(sinks: Sequence[Sink], stop: threading.Event) -> None:
        for frame in range(args.count):
            if stop.is_set():
                return
            result = Classification(
                device=config.device_id,
                model=MODEL,
                backend="cpu",
                source="synthetic",
                frame=frame,
                captured_at=time.time(),
                preprocess_ms=0.1,
                inference_ms=1.0,
                total_ms=1.2,
                top_k=[Class(frame % 10, 0.9, str(frame % 10))],
            )
            for sink in sinks:
                sink(result)
            print("produced", result.message_id, flush=True)
            if args.interval:
                stop.wait(args.interval)
        print("done", flush=True)
        if args.hold:
            stop.wait()

    run_service(config, frame_loop, model_info={"name": MODEL.name, "version": MODEL.version, "digest": MODEL.digest})
    return 0


if __name__ == "__main__":
    sys.exit(main())
