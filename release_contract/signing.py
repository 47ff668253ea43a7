"""ed25519 signing of manifests and rollout commands, and the keys a device trusts.

``edge-registry keygen`` writes ``signing.key`` (PKCS#8 PEM, mode 0600) and
``signing.pub`` (SubjectPublicKeyInfo PEM). Devices pin the public keys they trust
(:class:`TrustedKeys`); a signature by any other key is refused. A key id is the
hex sha256 of the raw 32-byte public key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Tuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from release_contract.errors import RegistryError, VerificationError
from release_contract.files import open_regular
from release_contract.manifest import Manifest, canonical_json, parse_envelope

PRIVATE_NAME = "signing.key"
PUBLIC_NAME = "signing.pub"


def key_id(public_key: Ed25519PublicKey) -> str:
    """Hex sha256 of the raw public key bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def generate_keypair(out_dir: Path, overwrite: bool = False) -> Tuple[Path, Path]:
    """Write a new ``signing.key``/``signing.pub`` pair into ``out_dir``; return both paths.

    Raises :class:`RegistryError` if a key already exists there and ``overwrite`` is false.
    """
    out_dir = Path(out_dir)
    priv_path, pub_path = out_dir / PRIVATE_NAME, out_dir / PUBLIC_NAME
    if not overwrite and (priv_path.exists() or pub_path.exists()):
        raise RegistryError(f"{priv_path} already exists: refusing to overwrite a signing key")
    key = Ed25519PrivateKey.generate()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
        pub_path.write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
    except OSError as exc:
        raise RegistryError(f"cannot write keys to {out_dir}: {exc.strerror or exc}") from exc
    return priv_path, pub_path


def _read_key_file(path: Path) -> bytes:
    # a key file is a few hundred bytes; a FIFO or a device in its place must not hang the reader
    with open_regular(path) as fh:
        return fh.read(1 << 16)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read an ed25519 private key (PEM); raise :class:`RegistryError` if missing or not ed25519."""
    try:
        key = serialization.load_pem_private_key(_read_key_file(Path(path)), password=None)
    except FileNotFoundError as exc:
        raise RegistryError(f"signing key not found: {path}") from exc
    except (OSError, ValueError, TypeError) as exc:
        raise RegistryError(f"cannot read signing key {path}: not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise RegistryError(f"{path} is not an ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read an ed25519 public key (PEM); raise :class:`RegistryError` if missing or not ed25519."""
    try:
        key = serialization.load_pem_public_key(_read_key_file(Path(path)))
    except FileNotFoundError as exc:
        raise RegistryError(f"public key not found: {path}") from exc
    except (OSError, ValueError, TypeError) as exc:
        raise RegistryError(f"cannot read public key {path}: not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise RegistryError(f"{path} is not an ed25519 public key")
    return key


class TrustedKeys:
    """The public keys a device (or ``pull``) accepts signatures from.

    Thread-safe after construction (read-only).
    """

    def __init__(self, keys: Iterable[Ed25519PublicKey]) -> None:
        self._keys: Dict[str, Ed25519PublicKey] = {key_id(k): k for k in keys}
        if not self._keys:
            raise RegistryError("no trusted public key given: pass the signing.pub of the release signer")

    @classmethod
    def from_paths(cls, paths: Iterable[Path]) -> TrustedKeys:
        """Load keys from PEM files, or from every ``*.pub`` in a directory."""
        keys: List[Ed25519PublicKey] = []
        for path in paths:
            path = Path(path)
            files = sorted(path.glob("*.pub")) if path.is_dir() else [path]
            keys.extend(load_public_key(p) for p in files)
        return cls(keys)

    @property
    def ids(self) -> List[str]:
        """Key ids of the trusted keys."""
        return sorted(self._keys)

    def verify(self, payload: bytes, signatures: Iterable[Mapping[str, Any]]) -> str:
        """Return the key id of the first trusted key with a valid signature over ``payload``.

        Raises :class:`VerificationError` if there is no signature, none is by a trusted
        key, or a trusted key's signature does not match.
        """
        sigs = list(signatures)
        if not sigs:
            raise VerificationError("not signed: it carries no signature")
        if not all(isinstance(sig, Mapping) for sig in sigs):
            raise VerificationError("malformed signatures: each must be an object {keyid, sig}")
        for sig in sigs:
            key = self._keys.get(str(sig.get("keyid", "")))
            if key is None:
                continue
            try:
                key.verify(base64.b64decode(str(sig.get("sig", "")), validate=True), payload)
            except (InvalidSignature, binascii.Error, ValueError) as exc:
                raise VerificationError(
                    "bad signature: the signed content was altered or the signature is corrupt"
                ) from exc
            return key_id(key)
        raise VerificationError("signed by an untrusted key: none of the signatures is by a pinned key")


def sign_payload(payload: bytes, key: Ed25519PrivateKey) -> Dict[str, str]:
    """One signature entry ``{"keyid", "sig"}`` over ``payload``."""
    return {"keyid": key_id(key.public_key()), "sig": base64.b64encode(key.sign(payload)).decode("ascii")}


def sign_manifest(manifest: Manifest, key: Ed25519PrivateKey) -> bytes:
    """The signed ``release.json`` envelope for ``manifest``, as bytes."""
    signed = manifest.to_dict()
    envelope = {"signed": signed, "signatures": [sign_payload(canonical_json(signed), key)]}
    return canonical_json(envelope) + b"\n"


def verify_envelope(raw: bytes, trusted: TrustedKeys) -> Manifest:
    """Check the signature of a ``release.json`` and return its parsed manifest.

    The signature is checked before the manifest's fields are interpreted; raises
    :class:`VerificationError` or :class:`~release_contract.errors.ManifestError`.
    """
    signed, sigs = parse_envelope(raw)
    trusted.verify(canonical_json(signed), sigs)
    return Manifest.from_dict(signed)
