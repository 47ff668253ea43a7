"""Benchmark: a ~4 MB release reaching 200 simulated devices, local store vs OCI registry, in one run.

Starts a Mosquitto and the CNCF distribution registry on free loopback ports, pushes one
signed release (the real CPU model and labels plus a 4 MB compiled-model blob) to a local
store and to the registry, then prints side by side for each store:
  - wall time for all devices to download and verify the release (concurrent devices),
  - bytes served per device (the files plus the signed manifest),
  - verify time per device (signature + size + sha256 of every file), p50 / p95.
It also times the MQTT side: 200 connected devices each receiving its signed command.

Usage: .venv/bin/python bench/rollout.py [--devices 200] [--concurrency 32] [--size-mb 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import paho.mqtt.client as paho  # noqa: E402
from helpers.fleet import make_release_dir  # noqa: E402
from helpers.mosquitto import Mosquitto  # noqa: E402
from helpers.registry_server import RegistryServer  # noqa: E402

from edge_agent.updating.state import ReleaseState  # noqa: E402
from registry.release import build_manifest, find_release_files, push_release  # noqa: E402
from registry.store import open_store  # noqa: E402
from release_contract.fetch import pull_release  # noqa: E402
from release_contract.protocol import Command, device_target  # noqa: E402
from release_contract.signing import TrustedKeys, generate_keypair, load_private_key  # noqa: E402
from release_contract.stores import open_source  # noqa: E402
from release_contract.topics import device_topic  # noqa: E402


def pct(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def distribute(url: str, devices: int, concurrency: int, trusted: TrustedKeys, work: Path) -> Dict[str, Any]:
    """Every device pulls and verifies ``digits:1`` from ``url`` into its own state directory."""
    verify: List[float] = []
    sent: List[int] = []
    lock = threading.Lock()

    states = [ReleaseState(work / f"dev-{i:03d}", trusted) for i in range(devices)]

    def one(state: ReleaseState) -> None:
        target = state.release_dir("digits", "1")
        result = pull_release(open_source(url), "digits", "1", trusted, target, state.downloads_dir)
        with lock:
            sent.append(result.bytes_downloaded + (target / "release.json").stat().st_size)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, states))
    wall = time.perf_counter() - start
    for state in states:  # verification as a device does it at start-up, one device at a time
        begin = time.perf_counter()
        state.load({"name": "digits", "version": "1"})
        verify.append(time.perf_counter() - begin)
    shutil.rmtree(work, ignore_errors=True)
    return {
        "wall": wall,
        "bytes": statistics.mean(sent),
        "verify_p50": pct(verify, 0.5),
        "verify_p95": pct(verify, 0.95),
    }


def command_fanout(broker: Mosquitto, devices: int, key: Any) -> Tuple[float, float]:
    """Seconds to connect ``devices`` MQTT clients, and for all of them to get their signed command."""
    got = threading.Semaphore(0)
    clients = []
    start = time.perf_counter()
    subscribed = threading.Semaphore(0)
    for i in range(devices):
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"bench-dev-{i}")
        client.on_subscribe = lambda *a: subscribed.release()
        client.on_message = lambda *a: got.release()
        client.on_connect = lambda c, u, f, rc, p, i=i: c.subscribe(device_topic("bench", f"dev-{i}"), 1)
        client.connect(broker.host, broker.port, 60)
        client.loop_start()
        clients.append(client)
    for _ in range(devices):
        subscribed.acquire(timeout=60)
    connected = time.perf_counter() - start
    ctl = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-ctl")
    ctl.connect(broker.host, broker.port, 60)
    ctl.loop_start()
    start = time.perf_counter()
    for i in range(devices):
        now = int(time.time())
        payload = Command(
            "bench", "install", "digits", "1", "oci://x/y", device_target(f"dev-{i}"), now, now + 3600, i + 1
        ).sign(key)
        ctl.publish(device_topic("bench", f"dev-{i}"), payload, qos=1, retain=True)
    for _ in range(devices):
        got.acquire(timeout=60)
    fanout = time.perf_counter() - start
    for client in clients + [ctl]:
        client.disconnect()
        client.loop_stop()
    return connected, fanout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--size-mb", type=float, default=4.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp_name:
        tmp = Path(tmp_name)
        priv, pub = generate_keypair(tmp / "keys")
        key, trusted = load_private_key(priv), TrustedKeys.from_paths([pub])
        folder = make_release_dir(tmp / "build")
        (folder / "digits_edgetpu.tflite").write_bytes(os.urandom(int(args.size_mb * 1024 * 1024)))
        source = find_release_files(folder)
        manifest = build_manifest("digits", "1", source, input_shape=[1, 32, 32, 3])
        registry = RegistryServer(tmp / "oci").start()
        broker = Mosquitto(tmp / "mqtt").start()
        try:
            stores = {"local": open_store(str(tmp / "store")), "oci": open_store(registry.store_url("models"))}
            for store in stores.values():
                push_release(store, manifest, source, key)
            results = {
                name: distribute(store.url, args.devices, args.concurrency, trusted, tmp / f"w-{name}")
                for name, store in stores.items()
            }
            connected, fanout = command_fanout(broker, args.devices, key)
        finally:
            broker.stop()
            registry.stop()
    mb = manifest.total_size / 1e6
    print(
        f"release: {mb:.2f} MB in {len(manifest.files)} files; {args.devices} devices, "
        f"{args.concurrency} downloading at once; loopback, {os.cpu_count()} cores"
    )
    print(
        f"{'store':<7}{'all devices (s)':>17}{'per device (ms)':>17}{'MB/s served':>13}"
        f"{'bytes/device':>14}{'verify p50 (ms)':>17}{'verify p95 (ms)':>17}"
    )
    for name, r in results.items():
        served = r["bytes"] * args.devices / r["wall"] / 1e6
        print(
            f"{name:<7}{r['wall']:>17.2f}{r['wall'] / args.devices * 1000:>17.1f}{served:>13.1f}"
            f"{r['bytes']:>14.0f}{r['verify_p50'] * 1000:>17.1f}{r['verify_p95'] * 1000:>17.1f}"
        )
    ratio = results["oci"]["wall"] / results["local"]["wall"]
    print(f"oci / local wall time: {ratio:.2f}x")
    print(
        f"mqtt: {args.devices} device clients connected+subscribed in {connected:.2f} s; "
        f"{args.devices} signed commands delivered in {fanout:.2f} s "
        f"({args.devices / fanout:.0f} commands/s)"
    )


if __name__ == "__main__":
    main()
