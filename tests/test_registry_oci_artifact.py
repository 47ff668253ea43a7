"""A release in a registry is a proper OCI 1.1 artifact that standard tools (skopeo) read and copy."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from helpers.fleet import make_release_dir, push_version
from helpers.registry_server import RegistryServer, htpasswd_auth

from registry.store import open_store
from registry.store.oci_artifact import ARTIFACT_TYPE, WITHDRAWN_TYPE
from release_contract.credentials import Login
from release_contract.errors import StoreError
from release_contract.fetch import pull_release
from release_contract.signing import TrustedKeys, generate_keypair, load_private_key
from release_contract.stores import OciSource

LOGIN = Login(username="ci", password="push-secret")
CREDS = "ci:push-secret"


@pytest.fixture
def keys(tmp_path: Path) -> Tuple[Ed25519PrivateKey, Path]:
    priv, pub = generate_keypair(tmp_path / "keys")
    return load_private_key(priv), pub


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RegistryServer]:
    if shutil.which("skopeo") is None:
        pytest.fail("skopeo is not installed: run `make test` as root or `apt-get install skopeo`")
    registry = RegistryServer(tmp_path / "oci", auth=htpasswd_auth(tmp_path / "auth", {"ci": "push-secret"}))
    registry.start()
    try:
        yield registry
    finally:
        registry.stop()


def skopeo(*args: str) -> str:
    done = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def raw_manifest(server: RegistryServer, ref: str) -> Dict[str, Any]:
    out = skopeo("inspect", "--raw", "--tls-verify=false", "--creds", CREDS, f"docker://{server.host}/{ref}")
    manifest: Dict[str, Any] = json.loads(out)
    return manifest


def test_a_release_is_an_oci_artifact_with_a_type_per_file_and_standard_annotations(
    tmp_path: Path, server: RegistryServer, keys: Tuple[Ed25519PrivateKey, Path]
) -> None:
    store = open_store(server.store_url("models"), LOGIN)
    manifest = push_version(store, keys[0], make_release_dir(tmp_path / "b"), "1")
    raw = raw_manifest(server, "models/digits:1")
    assert raw["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert raw["artifactType"] == ARTIFACT_TYPE
    assert raw["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    layers = {layer["annotations"]["org.opencontainers.image.title"]: layer for layer in raw["layers"]}
    assert {name: layer["mediaType"] for name, layer in layers.items()} == {
        "release.json": "application/vnd.edgetpu-fleet.release.envelope.v1+json",
        "model.tflite": "application/vnd.edgetpu-fleet.model.cpu.v1.tflite",
        "labels.txt": "application/vnd.edgetpu-fleet.labels.v1.txt",
    }
    assert layers["model.tflite"]["digest"] == "sha256:" + manifest.files["cpu_model"].sha256
    annotations = raw["annotations"]
    assert annotations["org.opencontainers.image.title"] == "digits"
    assert annotations["org.opencontainers.image.version"] == "1"
    assert annotations["org.opencontainers.image.created"] == manifest.created_at
    assert annotations["io.edgetpu-fleet.source.digest"] == "sha256:" + manifest.source_sha256


def test_skopeo_copies_a_release_to_another_repository_and_devices_pull_the_copy(
    tmp_path: Path, server: RegistryServer, keys: Tuple[Ed25519PrivateKey, Path]
) -> None:
    push_version(open_store(server.store_url("models"), LOGIN), keys[0], make_release_dir(tmp_path / "b"), "1")
    skopeo(
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--src-creds",
        CREDS,
        "--dest-creds",
        CREDS,
        f"docker://{server.host}/models/digits:1",
        f"docker://{server.host}/mirror/digits:1",
    )
    source = OciSource(server.store_url("mirror"), timeout=10, login=LOGIN)
    result = pull_release(source, "digits", "1", TrustedKeys.from_paths([keys[1]]), tmp_path / "out", tmp_path / "w")
    assert result.manifest.ref == "digits:1"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["labels.txt", "model.tflite", "release.json"]


def test_yank_moves_the_channel_tags_so_standard_clients_never_get_the_yanked_release(
    tmp_path: Path, server: RegistryServer, keys: Tuple[Ed25519PrivateKey, Path]
) -> None:
    store = open_store(server.store_url("models"), LOGIN)
    folder = make_release_dir(tmp_path / "b")
    push_version(store, keys[0], folder, "1")
    push_version(store, keys[0], folder, "2")
    store.set_channel("digits", "2", "canary")
    store.set_channel("digits", "1", "stable")
    store.yank("digits", "2")
    canary = raw_manifest(server, "models/digits:canary")
    assert canary["artifactType"] == WITHDRAWN_TYPE
    assert all(layer.get("annotations", {}).get("org.opencontainers.image.title") is None for layer in canary["layers"])
    assert raw_manifest(server, "models/digits:stable")["annotations"]["org.opencontainers.image.version"] == "1"
    assert store.channels("digits") == {"stable": "1"}
    with pytest.raises(StoreError, match="yanked"):
        store.set_channel("digits", "2", "canary")


def test_pulls_of_a_channel_while_promote_and_yank_move_it_get_whole_releases(
    tmp_path: Path, server: RegistryServer, keys: Tuple[Ed25519PrivateKey, Path]
) -> None:
    store = open_store(server.store_url("models"), LOGIN)
    folder = make_release_dir(tmp_path / "b")
    for version in ("1", "2", "3"):
        push_version(store, keys[0], folder, version)
    store.set_channel("digits", "1", "canary")
    copies: List[Path] = []

    def pull_canary() -> None:
        for i in range(4):
            target = tmp_path / f"copy{i}"
            skopeo(
                "copy",
                "--src-tls-verify=false",
                "--src-creds",
                CREDS,
                f"docker://{server.host}/models/digits:canary",
                f"dir:{target}",
            )
            copies.append(target)

    puller = threading.Thread(target=pull_canary)
    puller.start()
    writer = open_store(server.store_url("models"), LOGIN)  # its own client: one per thread
    for version in ("2", "1", "3", "2", "1"):
        writer.set_channel("digits", version, "canary")
    writer.yank("digits", "3")
    puller.join(timeout=300)
    assert not puller.is_alive() and len(copies) == 4
    for copy in copies:
        manifest = json.loads((copy / "manifest.json").read_text())
        blobs = [manifest["config"], *manifest["layers"]]
        assert all((copy / blob["digest"].split(":", 1)[1]).stat().st_size == blob["size"] for blob in blobs)
        assert manifest["annotations"]["org.opencontainers.image.version"] in ("1", "2", "3")
    assert raw_manifest(server, "models/digits:canary")["annotations"]["org.opencontainers.image.version"] == "1"
