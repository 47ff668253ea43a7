"""The device refuses every bad release or command, says why, and keeps its working model."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from helpers.commands import make_command, signed
from helpers.fleet import ROOT, make_release_dir, push_version, run_model, sample_inputs

from edge_agent.updating.state import ActiveRelease
from edge_agent.updating.updater import Updater
from registry.store import open_store
from registry.store.local import LocalStore
from release_contract.manifest import FileEntry, Manifest, format_time
from release_contract.signing import TrustedKeys, generate_keypair, load_private_key, sign_manifest, sign_payload


class Device:
    """An updater with a recording status sink and a real-interpreter health check."""

    def __init__(self, state: Path, pub: Path, **kwargs: Any) -> None:
        self.statuses: List[Dict[str, Any]] = []
        self.inputs = sample_inputs(1)
        self.updater = Updater(
            state, TrustedKeys.from_paths([pub]), "dev-1", 14, self.statuses.append, self.activate, **kwargs
        )
        self.updater.start()

    def activate(self, release: Optional[ActiveRelease]) -> bool:
        assert release is not None
        run_model(release.cpu_model, self.inputs)
        return True

    def active(self) -> Optional[Dict[str, str]]:
        release = self.updater.active_release()
        return release.pointer if release else None

    def runs(self) -> bool:
        release = self.updater.active_release()
        assert release is not None
        return len(run_model(release.cpu_model, self.inputs)) == 1


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Tuple[Ed25519PrivateKey, LocalStore, Device]]:
    """A store with digits:2 and a device already running it."""
    priv, pub = generate_keypair(tmp_path / "keys")
    key = load_private_key(priv)
    store = open_store(str(tmp_path / "store"))
    assert isinstance(store, LocalStore)
    push_version(store, key, make_release_dir(tmp_path / "build"), "2")
    device = Device(tmp_path / "state", pub)
    final = device.updater.process(command(key, "2", store.url))
    assert final is not None and final["state"] == "active"
    yield key, store, device
    device.updater.close()


def command(key: Ed25519PrivateKey, version: str, store: str, rollout: str = "", **kwargs: Any) -> bytes:
    return signed(
        key, rollout or f"r-{version}-{time.monotonic_ns()}", "install", version, store, device="dev-1", **kwargs
    )


def refused(device: Device, payload: bytes, state: str, reason: str) -> None:
    final = device.updater.process(payload)
    assert final is not None
    assert final["state"] == state, final
    assert reason in final["reason"], final["reason"]
    assert device.active() == {"name": "digits", "version": "2"}
    assert device.runs()
    assert not (device.updater.state.root / "trial").exists()


def write_release(store: LocalStore, manifest: Manifest, envelope: bytes, files: Dict[str, bytes]) -> None:
    folder = store.root / manifest.name / manifest.version
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "release.json").write_bytes(envelope)


def crafted(version: str, files: Dict[str, bytes], **changes: Any) -> Tuple[Manifest, Dict[str, bytes]]:
    roles = {"model.tflite": "cpu_model", "labels.txt": "labels"}
    entries = {roles.get(n, n): FileEntry(n, len(d), hashlib.sha256(d).hexdigest()) for n, d in files.items()}
    now = time.time()
    base: Dict[str, Any] = dict(
        name="digits",
        version=version,
        files=entries,
        input={"shape": [1, 32, 32, 3]},
        created_at=format_time_from(now),
        expires_at=format_time_from(now + 86400),
    )
    base.update(changes)
    return Manifest(**base), files


def format_time_from(epoch: float) -> str:
    from datetime import datetime, timezone

    return format_time(datetime.fromtimestamp(epoch, timezone.utc))


MODEL = (ROOT / "models" / "digits_int8.tflite").read_bytes()
LABELS = (ROOT / "labels" / "digits.txt").read_bytes()


def test_unsigned_manifest_is_refused(setup: Tuple[Ed25519PrivateKey, LocalStore, Device]) -> None:
    key, store, device = setup
    manifest, files = crafted("3", {"model.tflite": MODEL, "labels.txt": LABELS})
    envelope = json.dumps({"signed": manifest.to_dict(), "signatures": []}).encode()
    write_release(store, manifest, envelope, files)
    refused(device, command(key, "3", store.url), "rejected", "not signed")


def test_release_signed_by_an_unpinned_key_is_refused(
    tmp_path: Path, setup: Tuple[Ed25519PrivateKey, LocalStore, Device]
) -> None:
    key, store, device = setup
    stranger = load_private_key(generate_keypair(tmp_path / "stranger")[0])
    push_version(store, stranger, make_release_dir(tmp_path / "b3"), "3")
    refused(device, command(key, "3", store.url), "rejected", "untrusted key")


def test_older_version_is_refused_as_a_replay(
    tmp_path: Path, setup: Tuple[Ed25519PrivateKey, LocalStore, Device]
) -> None:
    key, store, device = setup
    push_version(store, key, make_release_dir(tmp_path / "b1"), "1")
    refused(device, command(key, "1", store.url), "rejected", "not newer")
    refused(device, command(key, "1.9.9", store.url), "rejected", "not newer")


def test_expired_manifest_is_refused(tmp_path: Path, setup: Tuple[Ed25519PrivateKey, LocalStore, Device]) -> None:
    key, store, device = setup
    push_version(store, key, make_release_dir(tmp_path / "b3"), "3", expires_days=-1)
    refused(device, command(key, "3", store.url), "rejected", "expired")


def test_runtime_older_than_the_release_needs_is_refused(
    tmp_path: Path, setup: Tuple[Ed25519PrivateKey, LocalStore, Device]
) -> None:
    key, store, device = setup
    push_version(store, key, make_release_dir(tmp_path / "b3"), "3", min_runtime=15)
    refused(device, command(key, "3", store.url), "rejected", "needs Edge TPU runtime 15")


def test_file_whose_hash_differs_is_refused(
    tmp_path: Path, setup: Tuple[Ed25519PrivateKey, LocalStore, Device]
) -> None:
    key, store, device = setup
    push_version(store, key, make_release_dir(tmp_path / "b3"), "3")
    model = store.root / "digits" / "3" / "model.tflite"
    data = bytearray(model.read_bytes())
    data[-10] ^= 1
    model.write_bytes(bytes(data))
    refused(device, command(key, "3", store.url), "rejected", "sha256 differs")


def test_file_shorter_than_signed_is_refused(
    tmp_path: Path, setup: Tuple[Ed25519PrivateKey, LocalStore, Device]
) -> None:
    key, store, device = setup
    push_version(store, key, make_release_dir(tmp_path / "b3"), "3")
    model = store.root / "digits" / "3" / "model.tflite"
    model.write_bytes(model.read_bytes()[:-100])
    refused(device, command(key, "3", store.url), "failed", "stream ended")


def test_file_longer_than_signed_is_cut_off(
    tmp_path: Path, setup: Tuple[Ed25519PrivateKey, LocalStore, Device]
) -> None:
    key, store, device = setup
    push_version(store, key, make_release_dir(tmp_path / "b3"), "3")
    model = store.root / "digits" / "3" / "model.tflite"
    model.write_bytes(model.read_bytes() + b"\0" * 1000)
    refused(device, command(key, "3", store.url), "failed", "more than the signed size")


def test_labels_file_from_another_release_is_refused(
    tmp_path: Path, setup: Tuple[Ed25519PrivateKey, LocalStore, Device]
) -> None:
    key, store, device = setup
    other_labels = tmp_path / "other.txt"
    other_labels.write_bytes(LABELS.upper())  # same size, other content
    push_version(store, key, make_release_dir(tmp_path / "b3", labels=other_labels), "3")
    push_version(store, key, make_release_dir(tmp_path / "b4"), "4")
    # mix and match: 4's manifest served with 3's labels
    labels_3 = (store.root / "digits" / "3" / "labels.txt").read_bytes()
    (store.root / "digits" / "4" / "labels.txt").write_bytes(labels_3)
    refused(device, command(key, "4", store.url), "rejected", "labels.txt: sha256 differs")


@pytest.mark.parametrize("bad_name", ["../evil.tflite", "/etc/evil", "sub/model.tflite", ".."])
def test_manifest_naming_a_path_outside_the_release_is_refused(
    tmp_path: Path, setup: Tuple[Ed25519PrivateKey, LocalStore, Device], bad_name: str
) -> None:
    key, store, device = setup
    manifest, _ = crafted("3", {"model.tflite": MODEL, "labels.txt": LABELS})
    files = dict(manifest.files)
    files["cpu_model"] = FileEntry(bad_name, len(MODEL), hashlib.sha256(MODEL).hexdigest())
    evil = Manifest(**{**manifest.__dict__, "files": files})
    write_release(store, evil, sign_manifest(evil, key), {"labels.txt": LABELS})
    refused(device, command(key, "3", store.url), "rejected", "unsafe file name")
    assert not (tmp_path / "evil.tflite").exists()
    assert not (device.updater.state.root / "releases" / "evil.tflite").exists()


def test_commands_that_are_unsigned_or_malformed_are_refused(
    tmp_path: Path, setup: Tuple[Ed25519PrivateKey, LocalStore, Device]
) -> None:
    key, store, device = setup
    push_version(store, key, make_release_dir(tmp_path / "b3"), "3")
    body = make_command("r9", "install", "3", store.url, device="dev-1").to_dict()
    refused(device, json.dumps({**body, "signatures": []}).encode(), "rejected", "not signed")
    stranger = load_private_key(generate_keypair(tmp_path / "stranger")[0])
    refused(device, command(stranger, "3", store.url), "rejected", "untrusted key")
    from release_contract.manifest import canonical_json

    escape = {**body, "name": "../../etc"}
    signed = canonical_json({**escape, "signatures": [sign_payload(canonical_json(escape), key)]})
    refused(device, signed, "rejected", "invalid release name")
    refused(device, b"{" * 100, "rejected", "not valid JSON")
    refused(device, b" " * 20000, "rejected", "exceeds")
    refused(device, json.dumps({**body, "extra": 1, "signatures": []}).encode(), "rejected", "unknown fields")


def test_crafted_model_fails_validation_without_harming_the_agent(
    tmp_path: Path, setup: Tuple[Ed25519PrivateKey, LocalStore, Device]
) -> None:
    key, store, device = setup
    folder = make_release_dir(tmp_path / "b3")
    (folder / "digits.tflite").write_bytes(b"TFL3" + b"\xff" * 5000)
    push_version(store, key, folder, "3")
    refused(device, command(key, "3", store.url), "rejected", "validation failed")
    assert not (device.updater.state.root / "releases" / "digits" / "3").exists()


def test_validation_enforces_its_memory_limit(
    tmp_path: Path, setup: Tuple[Ed25519PrivateKey, LocalStore, Device]
) -> None:
    key, store, device = setup
    push_version(store, key, make_release_dir(tmp_path / "b3"), "3")
    device.updater.validation_memory_mb = 40
    refused(device, command(key, "3", store.url), "rejected", "validation failed")


def test_validation_enforces_its_time_limit(
    tmp_path: Path, setup: Tuple[Ed25519PrivateKey, LocalStore, Device]
) -> None:
    key, store, device = setup
    push_version(store, key, make_release_dir(tmp_path / "b3"), "3")
    device.updater.validation_timeout = 0.01
    refused(device, command(key, "3", store.url), "rejected", "timed out")


def test_golden_input_must_give_the_signed_answer(
    tmp_path: Path, setup: Tuple[Ed25519PrivateKey, LocalStore, Device]
) -> None:
    key, store, device = setup
    golden = sample_inputs(1)[0].tobytes()
    top1 = run_model(ROOT / "models" / "digits_int8.tflite", sample_inputs(1))[0]
    push_version(store, key, make_release_dir(tmp_path / "b3", golden=golden), "3", golden_top1=(top1 + 1) % 10)
    refused(device, command(key, "3", store.url), "rejected", "golden input classified")
    push_version(store, key, make_release_dir(tmp_path / "b4", golden=golden), "4", golden_top1=top1)
    final = device.updater.process(command(key, "4", store.url))
    assert final is not None and final["state"] == "active"
    assert device.active() == {"name": "digits", "version": "4"}


class EndlessBlobs(BaseHTTPRequestHandler):
    """An OCI registry stand-in that serves a real signed manifest, then far more bytes than it declares."""

    envelope = b""
    sent = 0

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        digest = "sha256:" + hashlib.sha256(self.envelope).hexdigest()
        if "/manifests/" in self.path:
            body = json.dumps(
                {
                    "schemaVersion": 2,
                    "layers": [
                        {
                            "digest": digest,
                            "size": len(self.envelope),
                            "annotations": {"org.opencontainers.image.title": "release.json"},
                        }
                    ],
                }
            ).encode()
        elif self.path.endswith(digest):
            body = self.envelope
        else:
            self.send_response(200)
            self.end_headers()
            chunk = b"\0" * 65536
            try:
                for _ in range(1024):  # at most 64 MiB, then stop by itself
                    self.wfile.write(chunk)
                    type(self).sent += len(chunk)
            except OSError:
                pass
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_server_streaming_far_more_than_declared_is_cut_off(
    tmp_path: Path, setup: Tuple[Ed25519PrivateKey, LocalStore, Device]
) -> None:
    key, store, device = setup
    push_version(store, key, make_release_dir(tmp_path / "b3"), "3")
    EndlessBlobs.envelope = store.envelope("digits", "3")
    server = ThreadingHTTPServer(("127.0.0.1", 0), EndlessBlobs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"oci://127.0.0.1:{server.server_address[1]}/models"
        refused(device, command(key, "3", url), "failed", "more than the signed size")
    finally:
        server.shutdown()
        server.server_close()
    parts = list((device.updater.state.root / "downloads").glob("*"))
    assert all(p.stat().st_size <= len(MODEL) for p in parts)


class DrippingBlobs(EndlessBlobs):
    """Serves the signed manifest, then the model one byte at a time, slowly."""

    def do_GET(self) -> None:  # noqa: N802
        digest = "sha256:" + hashlib.sha256(self.envelope).hexdigest()
        if "/manifests/" in self.path or self.path.endswith(digest):
            super().do_GET()
            return
        self.send_response(200)
        self.end_headers()
        try:
            for _ in range(400):  # at most 400 bytes over ~20 s, then stop by itself
                self.wfile.write(b"\0")
                self.wfile.flush()
                time.sleep(0.05)
        except OSError:
            pass


def test_server_dripping_bytes_is_cut_off_by_the_time_budget(
    tmp_path: Path, setup: Tuple[Ed25519PrivateKey, LocalStore, Device], monkeypatch: pytest.MonkeyPatch
) -> None:
    import release_contract.fetch

    key, store, device = setup
    monkeypatch.setattr(release_contract.fetch, "MIN_SECONDS", 0.5)
    push_version(store, key, make_release_dir(tmp_path / "b3"), "3")
    DrippingBlobs.envelope = store.envelope("digits", "3")
    server = ThreadingHTTPServer(("127.0.0.1", 0), DrippingBlobs)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"oci://127.0.0.1:{server.server_address[1]}/models"
        refused(device, command(key, "3", url), "failed", "too slow")
    finally:
        server.shutdown()
        server.server_close()
