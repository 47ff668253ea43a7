"""Simulated devices for fleet tests and the rollout benchmark.

A :class:`SimDevice` is the device side of a rollout without the camera: a real
:class:`~edge_agent.updating.updater.Updater` with its own state directory and its own paho
client (its own id) on a real broker. Its ``activate`` swaps a real LiteRT interpreter
to the release and runs the health check: the first inferences on the bundled sample
images must succeed. ``fail_health_for`` injects a field fault (a release whose health
check fails on this device), the one thing a test cannot get from a real camera.

Run as a script it is one device process for crash tests::

    python tests/helpers/fleet.py STATE PUBKEY COMMAND_FILE [--kill-at STEP] [--boot]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set

import numpy as np

from edge_agent.updating.state import ActiveRelease
from edge_agent.updating.updater import Updater
from release_contract.signing import TrustedKeys
from release_contract.topics import device_topic, fleet_topic, model_topic, status_topic

ROOT = Path(__file__).resolve().parents[2]
BUILTIN_MODEL = ROOT / "models" / "digits_int8.tflite"
IMAGES = sorted((ROOT / "images").glob("*.png"))


def sample_inputs(count: int = 3) -> List[np.ndarray]:
    """The first ``count`` sample images as 1x32x32x3 uint8 tensors."""
    from PIL import Image

    out = []
    for path in IMAGES[:count]:
        img = Image.open(path).convert("RGB").resize((32, 32))
        out.append(np.asarray(img, dtype=np.uint8)[None, ...])
    return out


def run_model(model: Path, inputs: List[np.ndarray]) -> List[int]:
    """Top-1 class of each input with a real LiteRT interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model), num_threads=1)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    tops = []
    for tensor in inputs:
        interpreter.set_tensor(inp["index"], tensor)
        interpreter.invoke()
        tops.append(int(np.argmax(interpreter.get_tensor(out["index"]))))
    return tops


class SimDevice:
    """One simulated device; ``start()`` connects it, ``stop()`` disconnects it."""

    def __init__(
        self,
        device_id: str,
        state_dir: Path,
        host: str,
        port: int,
        trusted: TrustedKeys,
        fleet: str = "fleet",
        prefix: str = "edgetpu",
        fail_health_for: Optional[Set[str]] = None,
        inputs: Optional[List[np.ndarray]] = None,
        health_inferences: int = 2,
    ) -> None:
        self.device_id = device_id
        self.host, self.port, self.prefix, self.fleet = host, port, prefix, fleet
        self.fail_health_for = set(fail_health_for or ())
        self.inputs = inputs if inputs is not None else sample_inputs(health_inferences)
        self.running: Optional[ActiveRelease] = None
        self.statuses: List[Dict[str, Any]] = []
        self.commands = 0
        self._lock = threading.Lock()
        self.updater = Updater(
            state_dir,
            trusted,
            device_id,
            runtime_version=14,
            publish_status=self._publish_status,
            publish_model=self._publish_model,
            activate=self._activate,
            fleet=fleet,
        )
        self.client: Any = None

    def _activate(self, release: Optional[ActiveRelease]) -> bool:
        model = release.cpu_model if release else BUILTIN_MODEL
        run_model(model, self.inputs)  # raises if the interpreter cannot run it
        self.running = release
        return not (release and release.version in self.fail_health_for)

    def _publish(self, topic: str, msg: Dict[str, Any]) -> None:
        if self.client is not None:
            self.client.publish(topic, json.dumps(msg), qos=1, retain=True)

    def _publish_status(self, msg: Dict[str, Any]) -> None:
        with self._lock:
            self.statuses.append(msg)
        self._publish(status_topic(self.prefix, self.device_id), msg)

    def _publish_model(self, msg: Dict[str, Any]) -> None:
        self._publish(model_topic(self.prefix, self.device_id), msg)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        client.subscribe([(device_topic(self.prefix, self.device_id), 1), (fleet_topic(self.prefix, self.fleet), 1)])

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        self.commands += 1
        self.updater.handle_command(msg.payload)

    def start(self) -> SimDevice:
        import paho.mqtt.client as mqtt

        self.running = self.updater.start()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.device_id)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        self.client = client
        client.connect(self.host, self.port, keepalive=30)
        self.updater.announce()
        client.loop_start()
        return self

    def stop(self) -> None:
        self.updater.close()
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None

    def active(self) -> Optional[Dict[str, str]]:
        """The release the updater says is active (None: the built-in model)."""
        release = self.updater.active_release()
        return release.pointer if release else None


def _main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("state")
    parser.add_argument("pubkey")
    parser.add_argument("command")
    parser.add_argument("--kill-at", default="")
    parser.add_argument("--boot", action="store_true", help="only start up and report the model it runs")
    args = parser.parse_args()
    inputs = sample_inputs(2)
    seen: Dict[str, int] = {}

    def on_step(step: str) -> None:
        seen[step] = seen.get(step, 0) + 1
        if step == args.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def activate(release: Optional[ActiveRelease]) -> bool:
        on_step("health_check_running")
        run_model(release.cpu_model if release else BUILTIN_MODEL, inputs)
        return True

    statuses: List[Dict[str, Any]] = []
    updater = Updater(
        Path(args.state),
        TrustedKeys.from_paths([Path(args.pubkey)]),
        "crash-dev",
        14,
        statuses.append,
        activate,
        on_step=on_step,
    )
    release = updater.start()
    if not args.boot:
        updater.process(Path(args.command).read_bytes())
        release = updater.active_release()
    model = release.cpu_model if release else BUILTIN_MODEL
    tops: Callable[[], List[int]] = lambda: run_model(model, inputs)  # noqa: E731
    print(
        json.dumps(
            {"active": release.pointer if release else None, "top1": tops(), "states": [s["state"] for s in statuses]}
        )
    )
    updater.close()
    return 0


if __name__ == "__main__":
    sys.exit(_main())


def make_release_dir(
    folder: Path, model: Path = BUILTIN_MODEL, labels: Optional[Path] = None, golden: Optional[bytes] = None
) -> Path:
    """A compiler-like output folder: the model, labels.txt and optionally golden.bin."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model, folder / "digits.tflite")
    shutil.copyfile(labels or ROOT / "labels" / "digits.txt", folder / "labels.txt")
    if golden is not None:
        (folder / "golden.bin").write_bytes(golden)
    return folder


def push_version(store: Any, key: Any, folder: Path, version: str, name: str = "digits", **kwargs: Any) -> Any:
    """Sign and push ``folder`` as ``name:version``; returns the manifest."""
    from registry.release import build_manifest, find_release_files, push_release

    source = find_release_files(folder)
    manifest = build_manifest(name, version, source, input_shape=[1, 32, 32, 3], **kwargs)
    push_release(store, manifest, source, key)
    return manifest
