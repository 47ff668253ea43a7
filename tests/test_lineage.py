"""Lineage: quantize writes the calibration set's digest and the fidelity beside the int8 model,
push signs it into the manifest, and `show --lineage` prints the chain down to the devices."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Iterator

import paho.mqtt.client as paho
import pytest
from click.testing import CliRunner
from helpers.fleet import ROOT
from helpers.mosquitto import Mosquitto
from helpers.registry_server import RegistryServer
from paho.mqtt.enums import CallbackAPIVersion

from compiler.cli import main as compile_main
from registry.cli import main as registry_main
from release_contract.errors import ManifestError
from release_contract.lineage import Lineage, dataset_digest
from release_contract.manifest import Manifest
from release_contract.protocol import model_message
from release_contract.topics import model_topic


def _dataset(folder: Path) -> Path:
    """The bundled sample digits in a dataset layout: one folder per label."""
    for image in sorted((ROOT / "images").glob("digit_*.png")):
        label = image.name.split("_")[1]
        (folder / label).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image, folder / label / image.name)
    return folder


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A release folder: the bundled float model quantized on a dataset layout, with labels."""
    work = tmp_path_factory.mktemp("lineage")
    calib = _dataset(work / "calib")
    evals = _dataset(work / "eval")
    out = work / "build" / "digits_int8.tflite"
    result = CliRunner().invoke(
        compile_main,
        [
            "quantize",
            str(ROOT / "models" / "digits_float.tflite"),
            "--calib",
            str(calib),
            "--eval",
            str(evals),
            "--range",
            "[0,1]",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "lineage" in result.output
    shutil.copyfile(ROOT / "labels" / "digits.txt", out.parent / "labels.txt")
    return out.parent


def test_quantize_writes_the_calibration_digest_and_fidelity_beside_the_int8_model(quantized: Path) -> None:
    record = json.loads((quantized / "digits_int8.lineage.json").read_text())
    lineage = Lineage.from_dict(record)
    calib = quantized.parent / "calib"
    assert lineage.calibration_digest == dataset_digest(calib, [p for p in calib.rglob("*.png")])
    assert lineage.calibration_images == 20 and not lineage.calibration_random
    assert lineage.fidelity is not None and lineage.fidelity.images == 20
    assert 0.0 <= lineage.fidelity.top1_agreement <= 1.0
    assert lineage.int8_size == (quantized / "digits_int8.tflite").stat().st_size


def test_moving_a_file_to_another_label_folder_changes_the_dataset_digest(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "d")
    before = dataset_digest(data, list(data.rglob("*.png")))
    shutil.move(str(data / "3" / "digit_3_0.png"), str(data / "8" / "digit_3_0.png"))
    assert dataset_digest(data, list(data.rglob("*.png"))) != before


def test_the_manifest_refuses_a_malformed_lineage(quantized: Path) -> None:
    record = json.loads((quantized / "digits_int8.lineage.json").read_text())
    for bad in (
        {**record, "extra": 1},
        {**record, "fidelity": {**record["fidelity"], "top1_agreement": 1.5}},
        {**record, "calibration": {**record["calibration"], "digest": "xyz"}},
        {**record, "schema": "edgetpu.lineage/9"},
    ):
        with pytest.raises(ManifestError):
            Lineage.from_dict(bad)


@pytest.fixture
def registry_server(tmp_path: Path) -> Iterator[RegistryServer]:
    with RegistryServer(tmp_path / "oci") as server:
        yield server


def _announce(broker: Mosquitto, device: str, name: str, version: str) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{device}")
    client.connect(broker.host, broker.port, 30)
    client.loop_start()
    payload = json.dumps(model_message(device, "farm", {"name": name, "version": version}, digest="")).encode()
    info = client.publish(model_topic("edgetpu", device), payload, qos=1, retain=True)
    info.wait_for_publish(10)
    assert info.is_published()
    client.disconnect()
    client.loop_stop()


@pytest.mark.parametrize("kind", ["local", "oci"])
def test_show_lineage_prints_the_chain_from_data_to_the_devices_running_it(
    kind: str, quantized: Path, tmp_path: Path, mosquitto: Mosquitto, request: pytest.FixtureRequest
) -> None:
    store = str(tmp_path / "store") if kind == "local" else request.getfixturevalue("registry_server").store_url()
    runner = CliRunner()
    assert runner.invoke(registry_main, ["keygen", "--out", str(tmp_path / "keys")]).exit_code == 0
    key, pub = tmp_path / "keys" / "signing.key", tmp_path / "keys" / "signing.pub"
    pushed = runner.invoke(
        registry_main,
        ["push", str(quantized), "--name", "digits", "--version", "4", "--key", str(key), "--store", store],
    )
    assert pushed.exit_code == 0, pushed.output
    shown = runner.invoke(registry_main, ["show", "digits:4", "--store", store])
    manifest = Manifest.from_dict(json.loads(shown.stdout)["signed"])
    assert manifest.lineage == Lineage.read(quantized / "digits_int8.lineage.json")
    _announce(mosquitto, "cam-1", "digits", "4")
    _announce(mosquitto, "cam-2", "digits", "3")
    result = runner.invoke(
        registry_main,
        ["show", "--lineage", "digits:4", "--store", store, "--trust", str(pub), "--broker", mosquitto.url],
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "digits:4 lineage"
    assert manifest.lineage is not None
    assert f"sha256:{manifest.lineage.calibration_digest[:16]}" in lines[1] and "(20 images)" in lines[1]
    assert "digits_float.tflite" in lines[2]
    assert "top-1 agreement" in lines[3] and "on 20 images" in lines[3]
    assert "compiled model  : none" in lines[4]
    assert "signature verified" in lines[5]
    assert lines[6] == "  running on      : cam-1"


def test_push_refuses_a_lineage_of_another_int8_model(quantized: Path, tmp_path: Path) -> None:
    folder = tmp_path / "build"
    shutil.copytree(quantized, folder)
    shutil.copyfile(ROOT / "models" / "digits_int8.tflite", folder / "digits_int8.tflite")
    runner = CliRunner()
    runner.invoke(registry_main, ["keygen", "--out", str(tmp_path / "keys")])
    result = runner.invoke(
        registry_main,
        ["push", str(folder), "--name", "digits", "--version", "1", "--key", str(tmp_path / "keys" / "signing.key")]
        + ["--store", str(tmp_path / "store")],
    )
    assert result.exit_code == 1
    assert "describe(s) another int8 model" in result.output and "Traceback" not in result.output
