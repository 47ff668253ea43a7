"""Benchmark: a ~4 MB release reaching 200 simulated devices, local store vs OCI registry, in one run.

Starts a Mosquitto and the CNCF distribution registry on free loopback ports, pushes one
signed release (the real CPU model and labels plus a 4 MB compiled-model blob) to a local
store and to the registry, then prints side by side for each store:
  - wall time for all devices to download and verify the release (concurrent devices),
  - bytes served per device (the files plus the signed manifest),
  - verify time per device (signature + size + sha256 of every file), p50 / p95.
It also times the MQTT side: 200 connected devices each receiving its signed command.

Local and OCI runs alternate in ``--pairs`` interleaved pairs (at least 5; median and spread);
then one pair with ``--large`` devices (1,000; 0 skips it). Every failed download or
verification is counted. Ends with one line ``BENCH {json}``.

Usage: .venv/bin/python bench/rollout.py [--devices 200] [--concurrency 32] [--size-mb 4] [--pairs 5]
       [--large 1000]
"""

from __future__ import annotations

import argparse
import json
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
    failed: List[str] = []
    lock = threading.Lock()

    states = [ReleaseState(work / f"dev-{i:03d}", trusted) for i in range(devices)]

    def one(state: ReleaseState) -> None:
        target = state.release_dir("digits", "1")
        try:
            result = pull_release(open_source(url), "digits", "1", trusted, target, state.downloads_dir)
        except Exception as exc:  # counted: the figure the rollout target is about
            with lock:
                failed.append(f"download: {exc}")
            return
        with lock:
            sent.append(result.bytes_downloaded + (target / "release.json").stat().st_size)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, states))
    wall = time.perf_counter() - start
    for state in states:  # verification as a device does it at start-up, one device at a time
        begin = time.perf_counter()
        try:
            state.load({"name": "digits", "version": "1"})
        except Exception as exc:
            failed.append(f"verify: {exc}")
            continue
        verify.append(time.perf_counter() - begin)
    shutil.rmtree(work, ignore_errors=True)
    if failed:
        print(f"  {len(failed)} failed, first: {failed[0]}")
    return {
        "wall": wall,
        "failed": len(failed),
        "bytes": statistics.mean(sent) if sent else 0.0,
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
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--large", type=int, default=1000, help="devices in one extra pair (0: skip)")
    args = parser.parse_args()
    pairs = max(5, args.pairs)
    runs: Dict[str, List[Dict[str, Any]]] = {"local": [], "oci": []}
    large: Dict[str, Dict[str, Any]] = {}
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
            for _ in range(pairs):  # interleaved: local, oci, local, oci, ...
                for name, store in stores.items():
                    runs[name].append(distribute(store.url, args.devices, args.concurrency, trusted, tmp / f"w-{name}"))
            if args.large:
                for name, store in stores.items():
                    large[name] = distribute(store.url, args.large, args.concurrency, trusted, tmp / f"w-{name}")
            connected, fanout = command_fanout(broker, args.devices, key)
        finally:
            broker.stop()
            registry.stop()
    mb = manifest.total_size / 1e6
    print(
        f"release: {mb:.2f} MB in {len(manifest.files)} files; {args.devices} devices, "
        f"{args.concurrency} downloading at once; loopback, {os.cpu_count()} cores; {pairs} interleaved pairs"
    )
    print(
        f"{'store':<7}{'all devices (s)':>17}{'spread (s)':>14}{'MB/s served':>13}"
        f"{'bytes/device':>14}{'verify p50 (ms)':>17}{'verify p95 (ms)':>17}{'failed':>8}"
    )
    median: Dict[str, float] = {}
    for name, rs in runs.items():
        walls = [r["wall"] for r in rs]
        median[name] = statistics.median(walls)
        r = rs[walls.index(max(w for w in walls if w <= median[name]))]
        served = r["bytes"] * args.devices / r["wall"] / 1e6
        print(
            f"{name:<7}{median[name]:>17.2f}{f'{min(walls):.2f}-{max(walls):.2f}':>14}{served:>13.1f}"
            f"{r['bytes']:>14.0f}{r['verify_p50'] * 1000:>17.1f}{r['verify_p95'] * 1000:>17.1f}"
            f"{sum(x['failed'] for x in rs):>8}"
        )
    print(f"oci / local wall time: {median['oci'] / median['local']:.2f}x (target: each <= 30 s, 0 failed)")
    for name, r in large.items():
        print(f"{args.large} devices from {name}: {r['wall']:.2f} s, {r['failed']} failed")
    print(
        f"mqtt: {args.devices} device clients connected+subscribed in {connected:.2f} s; "
        f"{args.devices} signed commands delivered in {fanout:.2f} s "
        f"({args.devices / fanout:.0f} commands/s)"
    )
    bench = {
        "bench": "rollout",
        "pairs": pairs,
        "devices": args.devices,
        "local_s": round(median["local"], 2),
        "oci_s": round(median["oci"], 2),
        "local_spread_s": [
            round(min(r["wall"] for r in runs["local"]), 2),
            round(max(r["wall"] for r in runs["local"]), 2),
        ],
        "oci_spread_s": [round(min(r["wall"] for r in runs["oci"]), 2), round(max(r["wall"] for r in runs["oci"]), 2)],
        "failed": sum(r["failed"] for rs in runs.values() for r in rs),
        "large": {
            "devices": args.large,
            **{f"{k}_s": round(v["wall"], 2) for k, v in large.items()},
            "failed": sum(v["failed"] for v in large.values()),
        }
        if large
        else None,
        "commands_s": round(fanout, 2),
    }
    print("BENCH " + json.dumps(bench))


if __name__ == "__main__":
    main()
