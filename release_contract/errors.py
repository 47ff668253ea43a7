"""The registry's errors.

Every error meant for a user derives from :class:`RegistryError`; the CLI turns it
into one line on stderr and a non-zero exit. Third-party errors (OSError, HTTP
errors, oras/requests exceptions, cryptography's InvalidSignature) are translated
where they enter with ``raise ... from exc``::

    RegistryError
    ├── ManifestError        malformed manifest, bad name or version, unsafe path
    ├── VerificationError    bad or missing signature, untrusted key, hash/size mismatch,
    │                        expired manifest, replayed (older) version, runtime too old
    ├── StoreError           the store cannot be read or written (missing dir, unreachable host)
    │   ├── NotFound         no such release, version or file
    │   ├── AlreadyExists    a release with this name and version is already in the store
    │   └── AuthError        the registry refused the login (or asked for one none was given)
    ├── CredentialsError     the login settings are broken: a config.json that is not JSON,
    │                        a credential helper that fails, a username without a password
    ├── DownloadError        a download failed, timed out or sent more than declared
    ├── ProtocolError        a rollout command or status message is malformed
    └── RolloutError         the rollout controller cannot start or resume
"""

from __future__ import annotations


class RegistryError(Exception):
    """Root of the registry's errors: a message a user can act on."""

    exit_code = 1


class ManifestError(RegistryError):
    """A manifest is malformed, or names an unsafe path, a bad name or version."""


class VerificationError(RegistryError):
    """A release or command failed verification; nothing was written or activated."""

    exit_code = 4  # release_contract.exits.VERIFICATION


class StoreError(RegistryError):
    """A store cannot be read or written."""


class NotFound(StoreError):
    """The requested release, version or file does not exist in the store."""


class AlreadyExists(StoreError):
    """A release with this name and version already exists; versions are immutable."""


class AuthError(StoreError):
    """The registry refused the credentials or the token, or needs a login that was not given."""


class CredentialsError(RegistryError):
    """The registry login settings cannot be used (bad Docker config, failing helper, half a login)."""

    exit_code = 2  # release_contract.exits.USAGE


class DownloadError(RegistryError):
    """A download failed, timed out, or the server sent more than the declared size."""


class ProtocolError(RegistryError):
    """A rollout command or status message is malformed or too large."""


class RolloutError(RegistryError):
    """The rollout controller cannot start, resume or reach the broker."""
