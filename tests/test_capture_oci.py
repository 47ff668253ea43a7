"""Collect into an OCI store: devices push one artifact per batch to a real docker-registry (behind
htpasswd where a login is needed), and `edge-registry captures pull` turns them into a dataset."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence

import pytest
from click.testing import CliRunner
from helpers.cutting_proxy import CuttingProxy
from helpers.fleet import ROOT
from helpers.mosquitto import Mosquitto
from helpers.registry_server import RegistryServer, htpasswd_auth
from helpers.subscriber import Subscriber
from test_capture_collect import _capture_all

from compiler.calibration import list_images
from edge_agent.capture import archive
from edge_agent.capture.collect import CollectWorker
from edge_agent.capture.settings import CaptureConfig
from edge_agent.config import load_config
from edge_agent.errors import ConfigError
from edge_agent.inference.classifier import build_classifier
from edge_agent.inference.sources import open_source
from edge_agent.service import run_service
from registry.captures import collect_command
from registry.cli import main as registry_main
from release_contract.capture_artifact import ARTIFACT_TYPE, captures_repository, device_component
from release_contract.credentials import Login
from release_contract.signing import TrustedKeys, generate_keypair, load_private_key

USERS = {"uploader": "push-secret"}


@pytest.fixture
def basic_registry(tmp_path: Path) -> Iterator[RegistryServer]:
    server = RegistryServer(tmp_path / "oci", auth=htpasswd_auth(tmp_path / "auth", USERS)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def open_registry(tmp_path: Path) -> Iterator[RegistryServer]:
    server = RegistryServer(tmp_path / "oci-open").start()
    try:
        yield server
    finally:
        server.stop()


def _manifest(host: str, repo: str, tag: str, auth: str = "") -> Any:
    req = urllib.request.Request(
        f"http://{host}/v2/{repo}/manifests/{tag}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json", **({"Authorization": auth} if auth else {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 (loopback)
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def _worker(tmp_path: Path, pub: Path, publish: Any, login: Login | None, delays: Sequence[float]) -> CollectWorker:
    trusted = TrustedKeys.from_paths([pub])
    return CollectWorker(
        tmp_path / "captures", tmp_path / "state", trusted, "cam-1", "farm", publish, delays, login=login
    )


def test_a_signed_collect_uploads_to_an_oci_store_behind_a_login_and_pull_makes_a_dataset(
    tmp_path: Path, mosquitto: Mosquitto, basic_registry: RegistryServer
) -> None:
    priv, pub = generate_keypair(tmp_path / "keys")
    captures = tmp_path / "captures"
    _capture_all(captures)
    (tmp_path / "registry.pass").write_text("push-secret\n")
    store = basic_registry.store_url("models")
    config = load_config(
        environ={},
        overrides={
            "mqtt": {"url": mosquitto.url},
            "device_id": "cam-1",
            "state_dir": str(tmp_path / "state"),
            "updates": {"fleet": "farm"},
            "capture": {
                "dir": str(captures),
                "trust": str(pub),
                "below": 0.0,
                "registry_username": "uploader",
                "registry_password_file": str(tmp_path / "registry.pass"),
            },
        },
    )
    classifier = build_classifier(ROOT / "models" / "digits_int8.tflite", None, device="cpu", device_id="cam-1")
    frames = list(open_source(str(ROOT / "images")).frames())
    classified: List[int] = []

    def frame_loop(sinks: Sequence[Any], stop_event: threading.Event) -> None:
        while not stop_event.is_set():
            result = classifier.classify(frames[len(classified) % len(frames)])
            classified.append(1)
            for sink in sinks:
                sink(result)
            stop_event.wait(0.02)

    stop = threading.Event()
    agent = threading.Thread(target=run_service, args=(config, frame_loop), kwargs={"stop": stop})
    watch = Subscriber(mosquitto.host, mosquitto.port, "edgetpu/cam-1/collect/status")
    agent.start()
    try:
        assert watch.wait_until(lambda s: len(classified) > 3, 60)
        sent = CliRunner().invoke(
            registry_main,
            ["captures", "collect", "--fleet", "farm", "--key", str(priv), "--broker", mosquitto.url]
            + ["--store", store],
        )
        assert sent.exit_code == 0, sent.output
        assert f"{store}/captures/<device>:collect-" in sent.output
        assert watch.wait_until(lambda s: any(m["state"] in ("uploaded", "failed") for m in s.json_on("status")), 60)
    finally:
        stop.set()
        agent.join(30)
        watch.close()
    assert not agent.is_alive()
    (done,) = [m for m in watch.json_on("status") if m["state"] == "uploaded"]
    assert done["captures"] == 20 and done["device"] == "cam-1"
    assert list(archive.iter_captures(captures)) == []  # deleted once the registry had the manifest
    auth = "Basic " + base64.b64encode(b"uploader:push-secret").decode()
    manifest = _manifest(basic_registry.host, "models/captures/cam-1", done["id"], auth)
    assert manifest["artifactType"] == ARTIFACT_TYPE and len(manifest["layers"]) == 41  # batch.json + 20 pairs
    assert manifest["annotations"]["io.edgetpu-fleet.fleet"] == "farm"

    dataset = tmp_path / "ds"
    login = ["--username", "uploader", "--password-stdin"]
    pulled = CliRunner().invoke(
        registry_main,
        ["captures", "pull", "--fleet", "farm", "--to", str(dataset), "--store", store] + login,
        input="push-secret\n",
    )
    assert pulled.exit_code == 0, pulled.output
    assert "20 new captures from 1 batches" in pulled.stdout
    for image in dataset.rglob("*.png"):
        record = json.loads(image.with_suffix(".json").read_text())
        assert record["result"]["top_k"][0]["label"] == image.parent.name
    assert len(list_images(dataset)) == 20
    again = CliRunner().invoke(
        registry_main,
        ["captures", "pull", "--fleet", "farm", "--device", "cam-1", "--to", str(dataset), "--store", store] + login,
        input="push-secret\n",
    )
    assert again.exit_code == 0, again.output
    assert "0 new captures from 1 batches" in again.stdout and "20 already there" in again.stdout
    other = CliRunner().invoke(
        registry_main,
        ["captures", "pull", "--fleet", "barn", "--to", str(tmp_path / "barn"), "--store", store] + login,
        input="push-secret\n",
    )
    assert other.exit_code == 0 and "0 new captures from 0 batches" in other.stdout


def test_an_oci_upload_cut_off_halfway_keeps_the_captures_and_resumes_without_sending_blobs_twice(
    tmp_path: Path, open_registry: RegistryServer
) -> None:
    priv, pub = generate_keypair(tmp_path / "keys")
    _capture_all(tmp_path / "captures")
    proxy = CuttingProxy(("127.0.0.1", open_registry.port), allow=40).start()  # about a third of the blobs
    command = collect_command(f"oci://{proxy.host}/models", device="cam-1")
    statuses: List[Dict[str, Any]] = []
    at_retry: Dict[str, Any] = {}
    done = threading.Event()

    def publish(msg: Dict[str, Any]) -> None:
        statuses.append(msg)
        if msg["state"] == "retrying":
            at_retry["captures"] = len(list(archive.iter_captures(tmp_path / "captures")))
            at_retry["manifest"] = _manifest(open_registry.host, "models/captures/cam-1", command.id)
            at_retry["exchanges"] = len(proxy.exchanges)
            proxy.allow = None  # the network is back before the next attempt
        if msg["state"] in ("uploaded", "failed"):
            done.set()

    worker = _worker(tmp_path, pub, publish, None, [0.1])
    try:
        worker.handle(command.sign(load_private_key(priv)))
        assert done.wait(60)
    finally:
        worker.close()
        proxy.stop()
    assert [m["state"] for m in statuses] == ["received", "uploading", "retrying", "uploading", "uploaded"]
    assert "cannot reach the registry" in statuses[2]["reason"]
    assert at_retry["captures"] == 20 and at_retry["manifest"] is None  # nothing deleted, no tag yet
    assert list(archive.iter_captures(tmp_path / "captures")) == []
    stored = [
        line.split("digest=")[1].split(" ")[0]
        for line, status in proxy.exchanges
        if "digest=" in line and " 201" in status
    ]
    assert len(stored) >= 42  # every file, batch.json and the empty config
    assert len(stored) == len(set(stored))  # no blob was uploaded twice
    second = proxy.exchanges[at_retry["exchanges"] :]
    reused = [line for line, status in second if line.startswith("HEAD") and " 200" in status]
    assert len(reused) >= 10  # the blobs of the first attempt were found, not sent again
    assert _manifest(open_registry.host, "models/captures/cam-1", command.id)["artifactType"] == ARTIFACT_TYPE


def test_wrong_registry_credentials_fail_the_collect_in_one_line_and_keep_the_captures(
    tmp_path: Path, basic_registry: RegistryServer, caplog: pytest.LogCaptureFixture
) -> None:
    priv, pub = generate_keypair(tmp_path / "keys")
    _capture_all(tmp_path / "captures")
    command = collect_command(basic_registry.store_url("models"), fleet="farm")
    statuses: List[Dict[str, Any]] = []
    done = threading.Event()

    def publish(msg: Dict[str, Any]) -> None:
        statuses.append(msg)
        if msg["state"] in ("uploaded", "failed"):
            done.set()

    login = Login(username="uploader", password="not-the-password")  # noqa: S106 (a wrong test password)
    worker = _worker(tmp_path, pub, publish, login, [0.1, 0.1])
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        try:
            worker.handle(command.sign(load_private_key(priv)))
            assert done.wait(60)
        finally:
            worker.close()
    assert time.monotonic() - started < 30
    assert [m["state"] for m in statuses] == ["received", "uploading", "failed"]  # no retries: it would be refused
    reason = statuses[-1]["reason"]
    assert "refused" in reason and "'uploader'" in reason and "\n" not in reason
    assert "not-the-password" not in caplog.text and "Traceback" not in caplog.text
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    assert len(list(archive.iter_captures(tmp_path / "captures"))) == 20


def test_a_capture_registry_username_without_its_password_file_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="capture.registry_username and capture.registry_password_file"):
        CaptureConfig(registry_username="uploader").validate()


def test_device_ids_that_are_not_repository_names_get_distinct_repositories() -> None:
    assert captures_repository("models", "cam-1") == "models/captures/cam-1"
    assert device_component("Cam-1") != device_component("cam-1")
    assert device_component("Cam-1").startswith("cam-1-") and device_component("_x.").startswith("x-")
