"""Issue item 2: a symbolic link planted in a local store must not leak the file it points at.

The attack: ``model.tflite -> <secret>`` in the store copied the secret's bytes into a
world-readable ``.part`` beside the pull target, and that stale ``.part`` was then
trusted as a resume prefix, so the next legitimate release was refused.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Tuple

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from helpers.fleet import make_release_dir, push_version

from registry.cli import main
from registry.store import open_store
from release_contract.errors import DownloadError, StoreError
from release_contract.fetch import pull_release
from release_contract.signing import TrustedKeys, generate_keypair, load_private_key
from release_contract.stores import LocalSource

SECRET = b"root:$6$very-secret-hash:19000:0:99999:7:::\n" * 40


@pytest.fixture
def store(tmp_path: Path) -> Tuple[Ed25519PrivateKey, Path, Path]:
    """A key, its public key and a local store holding digits:1."""
    priv, pub = generate_keypair(tmp_path / "keys")
    key = load_private_key(priv)
    push_version(open_store(str(tmp_path / "store")), key, make_release_dir(tmp_path / "build"), "1")
    return key, pub, tmp_path / "store"


def plant_link(store: Path, tmp_path: Path, name: str = "model.tflite") -> Path:
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    target = store / "digits" / "1" / name
    target.unlink()
    target.symlink_to(secret)
    return secret


def files_under(folder: Path) -> list:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_link_to_a_secret_in_the_store_is_refused_and_nothing_is_left_beside_the_target(
    tmp_path: Path, store: Tuple[Ed25519PrivateKey, Path, Path]
) -> None:
    key, pub, root = store
    plant_link(root, tmp_path)
    res = CliRunner().invoke(
        main, ["pull", "digits:1", "--to", str(tmp_path / "got"), "--trust", str(pub), "--store", str(root)]
    )
    assert res.exit_code != 0
    assert "symbolic link" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    leaked = [p for p in files_under(tmp_path / ".got.download") if SECRET[:20] in p.read_bytes()]
    assert leaked == [] and not (tmp_path / "got").exists()


def test_next_legitimate_release_pulls_after_the_planted_link_is_removed(
    tmp_path: Path, store: Tuple[Ed25519PrivateKey, Path, Path]
) -> None:
    key, pub, root = store
    plant_link(root, tmp_path)
    work = tmp_path / "work"
    with pytest.raises(StoreError, match="symbolic link"):
        pull_release(LocalSource(root), "digits", "1", TrustedKeys.from_paths([pub]), tmp_path / "out", work)
    assert files_under(work) == []
    push_version(open_store(str(root)), key, make_release_dir(tmp_path / "build"), "2")
    result = pull_release(LocalSource(root), "digits", "2", TrustedKeys.from_paths([pub]), tmp_path / "out2", work)
    assert result.manifest.version == "2"


def test_linked_version_directory_is_refused(tmp_path: Path, store: Tuple[Ed25519PrivateKey, Path, Path]) -> None:
    key, pub, root = store
    outside = tmp_path / "outside"
    (root / "digits" / "1").rename(outside)
    (root / "digits" / "1").symlink_to(outside)
    with pytest.raises(StoreError, match="symbolic link"):
        pull_release(LocalSource(root), "digits", "1", TrustedKeys.from_paths([pub]), tmp_path / "out", tmp_path / "w")


def test_fifo_in_the_store_is_refused_without_blocking(
    tmp_path: Path, store: Tuple[Ed25519PrivateKey, Path, Path]
) -> None:
    key, pub, root = store
    model = root / "digits" / "1" / "model.tflite"
    model.unlink()
    os.mkfifo(model)
    with pytest.raises(StoreError, match="not a regular file"):
        pull_release(LocalSource(root), "digits", "1", TrustedKeys.from_paths([pub]), tmp_path / "out", tmp_path / "w")


def test_stale_part_planted_as_a_resume_prefix_is_discarded_and_fetched_from_zero(
    tmp_path: Path, store: Tuple[Ed25519PrivateKey, Path, Path]
) -> None:
    key, pub, root = store
    model = (root / "digits" / "1" / "model.tflite").read_bytes()
    work = tmp_path / "work"
    work.mkdir()
    part = work / f"{hashlib.sha256(model).hexdigest()}.part"
    part.write_bytes(SECRET[: len(model) // 2])
    result = pull_release(LocalSource(root), "digits", "1", TrustedKeys.from_paths([pub]), tmp_path / "out", work)
    assert (tmp_path / "out" / "model.tflite").read_bytes() == model
    assert result.bytes_downloaded >= result.manifest.total_size


def test_interrupted_download_keeps_a_part_only_its_owner_can_read(
    tmp_path: Path, store: Tuple[Ed25519PrivateKey, Path, Path]
) -> None:
    key, pub, root = store
    model = root / "digits" / "1" / "model.tflite"
    model.write_bytes(model.read_bytes()[:1000])  # the store's copy ends early: an interrupted transfer
    work = tmp_path / "work"
    with pytest.raises(DownloadError, match="stream ended"):
        pull_release(LocalSource(root), "digits", "1", TrustedKeys.from_paths([pub]), tmp_path / "out", work)
    parts = files_under(work)
    assert parts, "an interrupted transfer keeps its .part to resume from"
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in parts)
    assert stat.S_IMODE(work.stat().st_mode) == 0o700
