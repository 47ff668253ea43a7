"""Item 10: inputs that used to give a traceback give one line and a non-zero exit, and nothing is lost."""

from __future__ import annotations

import json
import os
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, List

import pytest
from click.testing import CliRunner, Result
from helpers.commands import make_command
from helpers.hostile_release import LABELS, MODEL, Device, Signer

from edge_agent.cli import main as agent_main
from edge_agent.config import load_config
from edge_agent.errors import ConfigError
from registry.cli import main as registry_main
from release_contract.errors import ManifestError, ProtocolError, RegistryError, VerificationError
from release_contract.manifest import check_filename, check_name, check_version, version_key
from release_contract.protocol import MAX_COMMAND_BYTES, parse_command
from release_contract.signing import TrustedKeys
from release_contract.stores import OciSource

ROOT = Path(__file__).resolve().parents[2]


def one_line_error(result: Result, code: int = 0) -> str:
    """The single stderr line of a failed command (``code``: the exit code it must have, 0 = any non-zero)."""
    assert result.exit_code != 0 and (code == 0 or result.exit_code == code), (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if line.strip() and "XNNPACK" not in line]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def command_body(**changes: object) -> dict:
    """A well-formed, unsigned rollout command (the current schema) with ``changes`` applied."""
    body = make_command("r1", "install", "3", "/srv/store", device="dev-1").to_dict()
    body["signatures"] = []
    body.update(changes)
    return body


# -- rollout commands (public behaviour of parse_command and the updater) --------------------------------


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return Signer(tmp_path / "keys")


def test_deeply_nested_command_of_16_kb_is_refused_as_malformed(signer: Signer) -> None:
    depth = MAX_COMMAND_BYTES // 2
    payload = b"[" * depth + b"]" * depth
    assert len(payload) == MAX_COMMAND_BYTES
    with pytest.raises(ProtocolError, match="not valid JSON"):
        parse_command(payload, TrustedKeys.from_paths([signer.pub]))


def test_command_with_non_object_signatures_is_refused(signer: Signer) -> None:
    cases: List[List[object]] = [[1], ["x"], [[]], [None]]
    for sigs in cases:
        with pytest.raises(RegistryError, match="signatures must be objects|malformed signatures"):
            parse_command(json.dumps(command_body(signatures=sigs)).encode(), TrustedKeys.from_paths([signer.pub]))


def test_unsigned_command_is_not_called_a_manifest(signer: Signer) -> None:
    with pytest.raises(VerificationError) as info:
        parse_command(json.dumps(command_body()).encode(), TrustedKeys.from_paths([signer.pub]))
    assert "not signed" in str(info.value) and "manifest" not in str(info.value)


def test_updater_rejects_hostile_commands_with_a_status_and_keeps_working(tmp_path: Path, signer: Signer) -> None:
    device = Device(tmp_path / "state", signer)
    for payload in (b"{" * 8000, json.dumps(command_body(signatures=[1])).encode()):
        final = device.install(payload)
        assert final["state"] == "rejected" and "\n" not in final["reason"]
    store = tmp_path / "store"
    signer.release(
        store, "3", {"model.tflite": MODEL, "labels.txt": LABELS}, {"cpu_model": "model.tflite", "labels": "labels.txt"}
    )
    assert device.install(signer.command("3", str(store)))["state"] == "active"


# -- hostile OCI registries -----------------------------------------------------------------------------

HOSTILE_MANIFESTS: List[bytes] = [
    b'{"layers":' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"layers":[1]}',
    b'{"layers":5}',
    b'{"layers":[{"annotations":[1],"digest":"sha256:00"}]}',
    b'{"layers":[{"annotations":{"org.opencontainers.image.title":"release.json"},"digest":"sha256:../../x"}]}',
    b"[1, 2]",
    b"\xff\xfe",
]


@pytest.fixture
def hostile_registry() -> Iterator[List[bytes]]:
    served: List[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = served[0]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    served.append(f"oci://127.0.0.1:{server.server_address[1]}/models".encode())
    yield served
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "manifest",
    HOSTILE_MANIFESTS,
    ids=["deep", "int-layer", "int-layers", "list-annotations", "path-digest", "array", "not-utf8"],
)
def test_hostile_oci_manifest_is_one_registry_error(hostile_registry: List[bytes], manifest: bytes) -> None:
    url = hostile_registry[0].decode()
    hostile_registry[0] = manifest
    with pytest.raises(RegistryError) as info:
        OciSource(url, timeout=5).fetch_envelope("digits", "3")
    assert "\n" not in str(info.value)


# -- agent configuration ---------------------------------------------------------------------------------


def test_non_utf8_toml_config_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_bytes(b'device_id = "caf\xe9"\n')
    line = one_line_error(CliRunner().invoke(agent_main, ["run", "--config", str(config)]), 2)
    assert "not UTF-8" in line


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_non_finite_numbers_in_config_are_refused(tmp_path: Path, value: str) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f"[mqtt]\nstats_interval = {value}\n")
    with pytest.raises(ConfigError, match="stats_interval.*finite"):
        load_config(config)
    with pytest.raises(ConfigError, match="download_timeout.*finite"):
        load_config(environ={"EDGE_AGENT_UPDATES_DOWNLOAD_TIMEOUT": value})


def test_threads_beyond_the_cap_are_refused_from_config_and_environment(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("threads = 100000\n")
    with pytest.raises(ConfigError, match="threads must be 1..64"):
        load_config(config)
    with pytest.raises(ConfigError, match="threads must be 1..64"):
        load_config(environ={"EDGE_AGENT_THREADS": "100000"})


def test_non_finite_mean_is_refused() -> None:
    with pytest.raises(ConfigError, match="finite"):
        load_config(environ={"EDGE_AGENT_MEAN": "nan", "EDGE_AGENT_STD": "1"})
    line = one_line_error(CliRunner().invoke(agent_main, ["classify", "--mean", "nan", "--std", "1"]), 2)
    assert "mean" in line


# -- the registry's CLI ----------------------------------------------------------------------------------


def push(folder: Path, key: Path, store: Path, version: str, *extra: str) -> Result:
    return CliRunner().invoke(
        registry_main,
        [
            "push",
            str(folder),
            "--name",
            "digits",
            "--version",
            version,
            "--key",
            str(key),
            "--store",
            str(store),
            *extra,
        ],
    )


@pytest.fixture
def release_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "build"
    folder.mkdir()
    (folder / "digits.tflite").write_bytes(MODEL)
    (folder / "labels.txt").write_bytes(LABELS)
    return folder


@pytest.fixture
def key(tmp_path: Path) -> Path:
    assert CliRunner().invoke(registry_main, ["keygen", "--out", str(tmp_path / "k")]).exit_code == 0
    return tmp_path / "k" / "signing.key"


@pytest.mark.parametrize("days", ["nan", "1e10", "-1", "0", "inf"])
def test_push_refuses_expiry_that_is_not_a_sane_number_of_days(
    tmp_path: Path, release_folder: Path, key: Path, days: str
) -> None:
    line = one_line_error(push(release_folder, key, tmp_path / "store", "3", "--expires-days", days), 2)
    assert "--expires-days" in line
    assert not (tmp_path / "store" / "digits").exists()


def test_push_refuses_a_nan_mean(tmp_path: Path, release_folder: Path, key: Path) -> None:
    line = one_line_error(push(release_folder, key, tmp_path / "store", "3", "--mean", "nan", "--std", "1"))
    assert "mean" in line


def test_show_of_a_corrupt_release_json_is_one_line(tmp_path: Path, release_folder: Path, key: Path) -> None:
    store = tmp_path / "store"
    assert push(release_folder, key, store, "3").exit_code == 0
    (store / "digits" / "3" / "release.json").write_bytes(b'{"signed": {"name": ')
    line = one_line_error(CliRunner().invoke(registry_main, ["show", "digits:3", "--store", str(store)]))
    assert "release.json of digits:3" in line


def test_pull_to_an_existing_file_is_a_usage_error_and_the_file_is_kept(
    tmp_path: Path, release_folder: Path, key: Path
) -> None:
    store = tmp_path / "store"
    assert push(release_folder, key, store, "3").exit_code == 0
    existing = tmp_path / "notes.txt"
    existing.write_text("mine")
    args = ["pull", "digits:3", "--to", str(existing), "--trust", str(key.with_suffix(".pub")), "--store", str(store)]
    line = one_line_error(CliRunner().invoke(registry_main, args), 2)
    assert "is not a folder" in line and existing.read_text() == "mine"


def test_failed_pull_leaves_no_download_folder_and_keeps_the_empty_target(
    tmp_path: Path, release_folder: Path, key: Path
) -> None:
    store = tmp_path / "store"
    assert push(release_folder, key, store, "3").exit_code == 0
    (store / "digits" / "3" / "labels.txt").write_bytes(b"x" * len(LABELS))  # same size, other bytes
    target = tmp_path / "out" / "digits"
    target.mkdir(parents=True)
    args = ["pull", "digits:3", "--to", str(target), "--trust", str(key.with_suffix(".pub")), "--store", str(store)]
    one_line_error(CliRunner().invoke(registry_main, args), 4)
    assert sorted(p.name for p in target.parent.iterdir()) == ["digits"]
    assert target.is_dir() and not any(target.iterdir())


def test_release_with_two_identical_files_can_be_pulled(tmp_path: Path, signer: Signer) -> None:
    store = tmp_path / "store"
    signer.release(
        store,
        "3",
        {"model.tflite": MODEL, "labels.txt": LABELS, "golden.bin": LABELS},
        {"cpu_model": "model.tflite", "labels": "labels.txt", "golden": "golden.bin"},
    )
    target = tmp_path / "pulled"
    args = ["pull", "digits:3", "--to", str(target), "--trust", str(signer.pub), "--store", str(store)]
    result = CliRunner().invoke(registry_main, args)
    assert result.exit_code == 0, result.output
    assert (target / "labels.txt").read_bytes() == LABELS == (target / "golden.bin").read_bytes()


def test_versions_3_and_3_0_are_one_version(tmp_path: Path, release_folder: Path, key: Path) -> None:
    assert check_version("3.0") == check_version("03") == check_version("3.0.0") == "3"
    assert check_version("1.2.0") == "1.2" and check_version("1.10") == "1.10"
    assert version_key("3.0") == version_key("3")
    store = tmp_path / "store"
    result = push(release_folder, key, store, "3.0")
    assert result.exit_code == 0 and "pushed digits:3 " in result.output
    line = one_line_error(push(release_folder, key, store, "3"))
    assert "already exists" in line
    assert sorted(p.name for p in (store / "digits").iterdir()) == ["3"]


def test_command_for_3_0_when_3_is_active_is_already_active(tmp_path: Path, signer: Signer) -> None:
    store = tmp_path / "store"
    signer.release(
        store, "3", {"model.tflite": MODEL, "labels.txt": LABELS}, {"cpu_model": "model.tflite", "labels": "labels.txt"}
    )
    device = Device(tmp_path / "state", signer)
    assert device.install(signer.command("3", str(store)))["state"] == "active"
    final = device.install(signer.command("3.0", str(store)))
    assert final["state"] == "active" and "already active" in final["reason"]


@pytest.mark.parametrize(
    "check, value",
    [(check_name, "digits\n"), (check_version, "3\n"), (check_filename, "labels.txt\n")],
)
def test_validation_refuses_a_trailing_newline(check: object, value: str) -> None:
    with pytest.raises(ManifestError):
        check(value)  # type: ignore[operator]


def test_command_id_and_fleet_refuse_a_trailing_newline(signer: Signer) -> None:
    with pytest.raises(ProtocolError, match="invalid rollout id"):
        parse_command(json.dumps(command_body(id="r1\n")).encode(), None)
    with pytest.raises(ConfigError, match="updates.fleet"):
        load_config(environ={"EDGE_AGENT_UPDATES_FLEET": "farm\n"})


def test_store_and_pulled_release_are_readable_by_other_users(tmp_path: Path, release_folder: Path, key: Path) -> None:
    old = os.umask(0o022)
    try:
        store = tmp_path / "store"
        assert push(release_folder, key, store, "3").exit_code == 0
        assert (
            CliRunner()
            .invoke(registry_main, ["promote", "digits:3", "--channel", "stable", "--store", str(store)])
            .exit_code
            == 0
        )
        target = tmp_path / "pulled"
        args = ["pull", "digits:3", "--to", str(target), "--trust", str(key.with_suffix(".pub")), "--store", str(store)]
        assert CliRunner().invoke(registry_main, args).exit_code == 0
    finally:
        os.umask(old)
    for folder in (store / "digits" / "3", target):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755
        for file in folder.iterdir():
            assert stat.S_IMODE(file.stat().st_mode) == 0o644, file
    assert stat.S_IMODE((store / "digits" / "channels.json").stat().st_mode) == 0o644
