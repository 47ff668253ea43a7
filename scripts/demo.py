"""`make demo`: the main job on the bundled demo model, from image to result.

Classifies the bundled sample images (images/digit_<label>_<n>.png) with the bundled
int8 model through the same code path as `edge-agent classify`, prints each result,
and checks it against the digit in the file name. Exits non-zero when a sample is
misclassified or the agent fails.
"""

from __future__ import annotations

import logging
import re
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_agent.errors import EdgeAgentError  # noqa: E402
from edge_agent.inference.classifier import build_classifier  # noqa: E402
from edge_agent.inference.result import Classification  # noqa: E402
from edge_agent.inference.scheduler import NamedSource, SourceScheduler  # noqa: E402
from edge_agent.inference.sources import open_source  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from demo_mqtt import local_broker, mqtt_port, publishing  # noqa: E402

MODEL = ROOT / "models" / "digits_int8.tflite"
LABELS = ROOT / "labels" / "digits.txt"
IMAGES = ROOT / "images"


def expected_digit(source: str) -> int:
    """The digit a sample image shows, from its name ``digit_<label>_<n>.png``."""
    match = re.search(r"digit_(\d)_\d+\.png$", source)
    if not match:
        raise ValueError(f"not a sample image name: {source}")
    return int(match.group(1))


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="demo: %(levelname)s: %(message)s")
    try:
        classifier = build_classifier(MODEL, LABELS, device="auto", device_id=socket.gethostname())
    except EdgeAgentError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    results: list[Classification] = []

    def show(result: Classification) -> None:
        best = result.top_k[0]
        mark = "ok " if best.id == expected_digit(result.source) else "BAD"
        print(
            f"{mark} {Path(result.source).name:<16} -> {best.label:<6} score {best.score:.3f}  "
            f"({result.backend}, inference {result.inference_ms:.2f} ms)"
        )
        results.append(result)

    print(f"model  {MODEL.relative_to(ROOT)} ({classifier.runtime.backend}, {classifier.runtime.interpreter_name})")
    print(f"input  {IMAGES.relative_to(ROOT)}/ ({len(list(IMAGES.glob('*.png')))} sample images)\n")
    port = mqtt_port(sys.argv[1:])
    try:
        with local_broker(port) as note, publishing(port, classifier.device_id, classifier) as (session, _):
            print(f"mqtt   {note}\n")
            SourceScheduler(classifier, [NamedSource("input", open_source(str(IMAGES)))], [show, *session.sinks]).run()
    except EdgeAgentError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    right = sum(1 for r in results if r.top_k and r.top_k[0].id == expected_digit(r.source))
    print(f"\n{right} of {len(results)} sample images classified correctly")
    return 0 if results and right == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
