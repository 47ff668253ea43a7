"""Which rollout commands a device admits: signature, target, validity window, sequence, anti-rollback.

A command is admitted when, in this order:

1. it parses (size, JSON, schema ``edgetpu.rollout/2``, fields) and a trusted key signed it;
2. its ``target`` is this device (``device:<id>``) or its fleet (``fleet:<fleet>``);
3. the device clock is inside ``issued_at`` .. ``expires_at``, widened by
   :data:`~release_contract.protocol.CLOCK_TOLERANCE_S` on both sides;
4. its ``seq`` is above the highest one accepted from the same key, or it is that very
   command again (redelivered after a restart before it finished).

A command already finished (same signed bytes), or an older one of a rollout step the
device has already handled, is a harmless redelivery of a retained message: it is
ignored without a status. Everything else that fails is refused with the reason.

Installs are further held to anti-rollback (:meth:`CommandGate.check_install`): no
other model name than the one running unless the command says ``allow_model_change``,
and no version below the highest installed of that name unless it says
``allow_downgrade``.

The record lives in the device's state directory (:meth:`ReleaseState.admission`),
written atomically, so a restart does not reopen a replay window.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

from edge_agent.updating.state import Pointer, ReleaseState
from release_contract.errors import RegistryError, VerificationError
from release_contract.manifest import version_key
from release_contract.protocol import Command, check_admission, parse_signed_command
from release_contract.signing import TrustedKeys


@dataclass(frozen=True)
class Admitted:
    """A command that passed the checks. ``redelivery``: nothing to do, ignore it quietly."""

    command: Command
    key_id: str
    digest: str
    redelivery: bool = False


class CommandGate:
    """The admission rules of one device. Thread-safe: the MQTT thread checks, the worker accepts."""

    def __init__(
        self,
        state: ReleaseState,
        trusted: TrustedKeys,
        device_id: str,
        fleet: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.trusted = trusted
        self.device_id = device_id
        self.fleet = fleet
        self._clock = clock
        self._lock = threading.Lock()
        self._record: Dict[str, Any] = state.admission()

    def check(self, payload: bytes, handled: Optional[Dict[str, Any]] = None) -> Admitted:
        """Check ``payload`` against every rule; ``handled``: the device's handled command keys.

        Cheap enough for the MQTT network thread (one JSON parse, one ed25519 verify).
        Raises :class:`~release_contract.errors.ProtocolError` or
        :class:`~release_contract.errors.VerificationError` with the reason.
        """
        signed = parse_signed_command(payload, self.trusted)
        command = signed.command
        check_admission(command, self.device_id, self.fleet, self._clock())
        digest = hashlib.sha256(payload).hexdigest()
        with self._lock:
            if digest in self._record["finished"]:
                return Admitted(command, signed.key_id, digest, redelivery=True)
            last = self._record["keys"].get(signed.key_id)
            if not isinstance(last, dict):
                last = {"seq": 0, "digest": ""}
        if command.seq > int(last.get("seq", 0)) or digest == last.get("digest"):
            return Admitted(command, signed.key_id, digest)
        if handled is not None and f"{command.id}:{command.action}" in handled:
            return Admitted(command, signed.key_id, digest, redelivery=True)
        raise VerificationError(
            f"replayed or stale command: sequence {command.seq} of key {signed.key_id[:12]} is not above "
            f"{last.get('seq')}, already accepted"
        )

    def accept(self, admitted: Admitted) -> None:
        """Durably raise the key's sequence to the command's before the device acts on it."""
        with self._lock:
            keys = dict(self._record["keys"])
            keys[admitted.key_id] = {"seq": admitted.command.seq, "digest": admitted.digest}
            self._record = {**self._record, "keys": keys}
            self.state.save_admission(self._record)

    def finish(self, admitted: Admitted) -> None:
        """Remember that this exact command is done: a redelivery of it is then ignored."""
        with self._lock:
            finished = [d for d in self._record["finished"] if d != admitted.digest] + [admitted.digest]
            self._record = {**self._record, "finished": finished}
            self.state.save_admission(self._record)

    def check_install(self, command: Command, current: Optional[Pointer]) -> None:
        """Anti-rollback for an install; raise :class:`VerificationError` with the reason."""
        if current and current["name"] != command.name and not command.allow_model_change:
            raise VerificationError(
                f"{command.name}:{command.version} would replace the running model {current['name']}: "
                "the signed command must say allow_model_change"
            )
        with self._lock:
            highest = self._record["versions"].get(command.name)
        floor = [v for v in (highest, current["version"] if current and current["name"] == command.name else None) if v]
        if floor and not command.allow_downgrade:
            top = max(floor, key=_version_or_zero)
            if version_key(command.version) < _version_or_zero(top):
                raise VerificationError(
                    f"{command.name}:{command.version} is not newer than version {top} already installed "
                    "(replayed or older release; the signed command must say allow_downgrade)"
                )

    def installed(self, name: str, version: str) -> None:
        """Record that ``name:version`` became active (raises the anti-rollback floor)."""
        with self._lock:
            versions = dict(self._record["versions"])
            old = versions.get(name)
            if old is None or _version_or_zero(old) < version_key(version):
                versions[name] = version
                self._record = {**self._record, "versions": versions}
                self.state.save_admission(self._record)


def _version_or_zero(version: Any) -> Tuple[int, ...]:
    try:
        return version_key(str(version))
    except RegistryError:  # a damaged record must not block every install
        return (0,)
