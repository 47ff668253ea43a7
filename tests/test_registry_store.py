"""Releases in the local and OCI stores, and the edge-registry CLI contract."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Iterator, Tuple

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from helpers.fleet import make_release_dir, push_version
from helpers.mosquitto import free_port
from helpers.registry_server import RegistryServer

from registry.cli import main
from registry.store import open_store
from release_contract.errors import AlreadyExists, VerificationError
from release_contract.exits import VERIFICATION
from release_contract.fetch import pull_release
from release_contract.files import sha256_file
from release_contract.manifest import canonical_json
from release_contract.report import CompileReport
from release_contract.signing import TrustedKeys, generate_keypair, load_private_key, verify_envelope
from release_contract.stores import LocalSource, OciSource


@pytest.fixture
def keys(tmp_path: Path) -> Tuple[Ed25519PrivateKey, Path]:
    priv, pub = generate_keypair(tmp_path / "keys")
    return load_private_key(priv), pub


@pytest.fixture
def registry_server(tmp_path: Path) -> Iterator[RegistryServer]:
    server = RegistryServer(tmp_path / "oci").start()
    try:
        yield server
    finally:
        server.stop()


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_cli_push_list_show_promote_yank_on_a_local_store(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    assert cli("keygen", "--out", str(tmp_path / "k")).exit_code == 0
    folder = make_release_dir(tmp_path / "build")
    for version in ("1", "2"):
        res = cli(
            "push",
            str(folder),
            "--name",
            "digits",
            "--version",
            version,
            "--key",
            str(tmp_path / "k" / "signing.key"),
            "--store",
            store,
        )
        assert res.exit_code == 0, res.output
    assert cli("promote", "digits:2", "--channel", "stable", "--store", store).exit_code == 0
    assert cli("promote", "digits:1", "--channel", "canary", "--store", store).exit_code == 0
    assert cli("yank", "digits:1", "--store", store).exit_code == 0
    listing = cli("list", "--store", store).output.splitlines()
    assert listing == ["digits:1  [yanked]", "digits:2  [stable]"]
    shown = json.loads(cli("show", "digits", "--store", store).output)
    assert shown["signed"]["version"] == "2"
    assert shown["signed"]["files"]["cpu_model"]["path"] == "model.tflite"
    assert shown["signed"]["input"]["shape"] == [1, 32, 32, 3]


def test_a_version_cannot_be_pushed_twice(tmp_path: Path) -> None:
    assert cli("keygen", "--out", str(tmp_path / "k")).exit_code == 0
    folder = make_release_dir(tmp_path / "build")
    args = [
        "push",
        str(folder),
        "--name",
        "digits",
        "--version",
        "1",
        "--key",
        str(tmp_path / "k" / "signing.key"),
        "--store",
        str(tmp_path / "store"),
    ]
    assert cli(*args).exit_code == 0
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1
    assert "already exists" in again.output and "Traceback" not in again.output


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    assert cli("keygen", "--out", str(tmp_path / "k")).exit_code == 0
    key = str(tmp_path / "k" / "signing.key")
    missing = CliRunner().invoke(
        main,
        ["push", str(tmp_path / "nope"), "--name", "d", "--version", "1", "--key", key, "--store", str(tmp_path / "s")],
    )
    assert missing.exit_code == 1 and missing.output.strip().count("\n") == 0
    assert "model folder not found" in missing.output
    port = free_port()
    unreachable = CliRunner().invoke(main, ["list", "--store", f"oci://127.0.0.1:{port}/models"])
    assert unreachable.exit_code == 1 and "cannot reach the registry" in unreachable.output
    assert unreachable.output.strip().count("\n") == 0
    exists = CliRunner().invoke(main, ["keygen", "--out", str(tmp_path / "k")])
    assert exists.exit_code == 1 and "refusing to overwrite" in exists.output


def test_pull_refuses_a_wrong_key_and_writes_nothing(tmp_path: Path, keys: Tuple[Ed25519PrivateKey, Path]) -> None:
    key, _pub = keys
    other_pub = generate_keypair(tmp_path / "other")[1]
    store = open_store(str(tmp_path / "store"))
    push_version(store, key, make_release_dir(tmp_path / "build"), "1")
    target = tmp_path / "out"
    res = CliRunner().invoke(
        main, ["pull", "digits:1", "--to", str(target), "--trust", str(other_pub), "--store", store.url]
    )
    assert res.exit_code == VERIFICATION  # the exit code table: 4 = refused by verification
    assert "untrusted key" in res.output
    assert not target.exists()


def test_pull_verifies_every_file_before_writing_the_target(
    tmp_path: Path, keys: Tuple[Ed25519PrivateKey, Path]
) -> None:
    key, pub = keys
    store = open_store(str(tmp_path / "store"))
    push_version(store, key, make_release_dir(tmp_path / "build"), "1")
    model = tmp_path / "store" / "digits" / "1" / "model.tflite"
    data = bytearray(model.read_bytes())
    data[100] ^= 0xFF
    model.write_bytes(bytes(data))
    target = tmp_path / "out"
    with pytest.raises(VerificationError, match="sha256"):
        pull_release(
            LocalSource(tmp_path / "store"), "digits", "1", TrustedKeys.from_paths([pub]), target, tmp_path / "work"
        )
    assert not target.exists()


def test_every_signed_field_is_covered_by_the_signature(tmp_path: Path, keys: Tuple[Ed25519PrivateKey, Path]) -> None:
    key, pub = keys
    store = open_store(str(tmp_path / "store"))
    push_version(store, key, make_release_dir(tmp_path / "build"), "1")
    raw = store.envelope("digits", "1")
    trusted = TrustedKeys.from_paths([pub])
    assert verify_envelope(raw, trusted).version == "1"
    doc = json.loads(raw)
    for field, value in [
        ("version", "9"),
        ("expires_at", "2099-01-01T00:00:00Z"),
        ("min_runtime", 0 + 1),
        ("name", "other"),
    ]:
        tampered = json.loads(raw)
        tampered["signed"][field] = value
        with pytest.raises(VerificationError, match="bad signature"):
            verify_envelope(canonical_json(tampered), trusted)
    # key order and whitespace do not matter: the signature covers canonical JSON
    assert verify_envelope(json.dumps(doc, indent=3).encode(), trusted).name == "digits"


def test_local_pull_resumes_an_interrupted_download(tmp_path: Path, keys: Tuple[Ed25519PrivateKey, Path]) -> None:
    key, pub = keys
    store = open_store(str(tmp_path / "store"))
    manifest = push_version(store, key, make_release_dir(tmp_path / "build"), "1")
    entry = manifest.files["cpu_model"]
    work = tmp_path / "work"
    work.mkdir()
    half = entry.size // 2
    (work / f"{entry.sha256}.part").write_bytes((tmp_path / "build" / "digits.tflite").read_bytes()[:half])
    result = pull_release(
        LocalSource(tmp_path / "store"), "digits", "1", TrustedKeys.from_paths([pub]), tmp_path / "out", work
    )
    assert result.bytes_downloaded == manifest.total_size - half
    assert (tmp_path / "out" / "model.tflite").read_bytes() == (tmp_path / "build" / "digits.tflite").read_bytes()


def test_oci_store_round_trip_with_channels_and_yank(
    tmp_path: Path, registry_server: RegistryServer, keys: Tuple[Ed25519PrivateKey, Path]
) -> None:
    key, pub = keys
    store = open_store(registry_server.store_url("models"))
    folder = make_release_dir(tmp_path / "build")
    push_version(store, key, folder, "1")
    push_version(store, key, folder, "1.1")
    with pytest.raises(AlreadyExists):
        push_version(store, key, folder, "1")
    store.set_channel("digits", "1.1", "stable")
    store.set_channel("digits", "1", "canary")
    store.yank("digits", "1")
    assert store.names() == ["digits"]
    assert [(r.version, r.yanked, r.channels) for r in store.list()] == [("1", True, []), ("1.1", False, ["stable"])]
    assert store.resolve("digits", None) == "1.1"
    result = pull_release(
        OciSource(store.url), "digits", "1.1", TrustedKeys.from_paths([pub]), tmp_path / "out", tmp_path / "work"
    )
    assert result.bytes_downloaded == result.manifest.total_size
    assert (tmp_path / "out" / "labels.txt").read_bytes() == (folder / "labels.txt").read_bytes()


def test_oci_pull_resumes_with_a_range_request(
    tmp_path: Path, registry_server: RegistryServer, keys: Tuple[Ed25519PrivateKey, Path]
) -> None:
    key, pub = keys
    store = open_store(registry_server.store_url("models"))
    folder = make_release_dir(tmp_path / "build")
    manifest = push_version(store, key, folder, "1")
    entry = manifest.files["cpu_model"]
    work = tmp_path / "work"
    work.mkdir()
    third = entry.size // 3
    (work / f"{entry.sha256}.part").write_bytes((folder / "digits.tflite").read_bytes()[:third])
    result = pull_release(OciSource(store.url), "digits", "1", TrustedKeys.from_paths([pub]), tmp_path / "out", work)
    assert result.bytes_downloaded == manifest.total_size - third
    assert (tmp_path / "out" / "model.tflite").read_bytes() == (folder / "digits.tflite").read_bytes()


def test_cli_pull_from_the_oci_store(
    tmp_path: Path, registry_server: RegistryServer, keys: Tuple[Ed25519PrivateKey, Path]
) -> None:
    key, pub = keys
    url = registry_server.store_url("fleet/models")
    push_version(open_store(url), key, make_release_dir(tmp_path / "build"), "3")
    res = cli("pull", "digits:3", "--to", str(tmp_path / "got"), "--trust", str(pub), "--store", url)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "got").iterdir()) == ["labels.txt", "model.tflite", "release.json"]
    assert not (tmp_path / ".got.download").exists()
    shutil.rmtree(tmp_path / "got")


def test_push_takes_the_compiler_output_folder_and_its_report(
    tmp_path: Path, keys: Tuple[Ed25519PrivateKey, Path]
) -> None:
    import hashlib

    from helpers.fleet import BUILTIN_MODEL

    key, pub = keys
    build = tmp_path / "build"
    build.mkdir()
    source = tmp_path / "models" / "digits_int8.tflite"
    source.parent.mkdir()
    shutil.copyfile(BUILTIN_MODEL, source)
    shutil.copyfile(BUILTIN_MODEL, build / "digits_int8_edgetpu.tflite")  # stands in for the compiled model
    (build / "digits_int8_edgetpu.log").write_text("Operator  Count  Status\n")
    (build / "labels.txt").write_text("".join(f"{i}\n" for i in range(10)))
    compiled = build / "digits_int8_edgetpu.tflite"
    report = CompileReport(  # what edge-compile writes beside the compiled model
        compiler_version="16.0.384591198",
        output_sha256=sha256_file(compiled),
        output_size=compiled.stat().st_size,
        output_path=str(compiled),
        inputs=[{"path": str(source), "sha256": sha256_file(source)}],
        model={"input_model": str(source), "output_model": str(compiled)},
        compile_ms=120,
    )
    (build / "digits_int8_edgetpu.json").write_text(json.dumps(report.to_dict()))
    store = str(tmp_path / "store")
    res = cli(
        "push",
        str(build),
        "--name",
        "digits",
        "--version",
        "5",
        "--key",
        str(tmp_path / "keys" / "signing.key"),
        "--store",
        store,
    )
    assert res.exit_code == 0, res.output
    signed = json.loads(cli("show", "digits:5", "--store", store).output)["signed"]
    assert set(signed["files"]) == {"edgetpu_model", "cpu_model", "labels"}
    assert signed["compiler_version"] == "16.0.384591198"
    assert signed["min_runtime"] == 14
    assert signed["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert signed["compile_report"]["compile_ms"] == 120
    old_runtime = CliRunner().invoke(
        main,
        ["pull", "digits:5", "--to", str(tmp_path / "got"), "--trust", str(pub), "--runtime", "13", "--store", store],
    )
    assert old_runtime.exit_code == VERIFICATION and "needs Edge TPU runtime 14" in old_runtime.output
