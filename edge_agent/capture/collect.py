"""The device side of ``collect``: upload captures to the release store when a signed command says so.

:class:`CollectWorker` is handed every payload that arrives on the collect topics (from the MQTT
thread; it returns at once). It checks the command (:func:`release_contract.collect.parse_collect`:
signed by a trusted key, not expired, for this device or its fleet), then on its own thread copies
the selected captures into ``<store>/.captures/<device>/.<id>.part/`` (0644 files, 0755 folders;
a file already there with the right size and sha256 is kept, so an interrupted upload resumes),
writes ``batch.json`` and renames the folder to ``<id>``. Only then are the captures deleted on
the device. A failed upload is retried later (``retry_delays``); a refused command is one warning.

An ``oci://`` store gets one OCI artifact per device and command instead
(:mod:`edge_agent.capture.oci_upload`: ``<repo>/captures/<device>:<id>``, pushed with the
``[capture]`` registry login); the same rule holds: nothing is deleted before the registry has the
manifest. A login the registry refuses fails the command at once (retrying would be refused too).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence

from edge_agent.capture import archive
from edge_agent.capture.oci_upload import LoginRefused, OciUploadError, upload_batch
from edge_agent.config import Config
from edge_agent.errors import ConfigError
from release_contract.capture_artifact import MAX_CAPTURES
from release_contract.collect import (
    BATCH_NAME,
    CAPTURES_DIR,
    MAX_COMMAND_BYTES,
    CollectCommand,
    batch_index,
    parse_collect,
    status_message,
)
from release_contract.credentials import Login
from release_contract.errors import RegistryError, VerificationError
from release_contract.files import atomic_write, fsync_dir, sha256_file
from release_contract.signing import TrustedKeys
from release_contract.stores import store_kind
from release_contract.topics import collect_device_topic, collect_fleet_topic, collect_status_topic

log = logging.getLogger(__name__)

Publish = Callable[[Dict[str, Any]], None]
MAX_PENDING = 8  # commands waiting for the worker; more are refused
MAX_HANDLED = 64  # command ids remembered (retained commands are redelivered on every reconnect)


class UploadError(Exception):
    """An upload that did not complete; it is retried."""


class CollectWorker:
    """Obeys collect commands for ``device`` (of ``fleet``) with the captures in ``capture_dir``.

    ``publish_status`` sends a status payload (retained, on ``<prefix>/<device>/collect/status``);
    ``state_dir`` keeps the ids of commands already handled. Call :meth:`close` at shutdown.
    """

    def __init__(
        self,
        capture_dir: Path,
        state_dir: Path,
        trusted: TrustedKeys,
        device: str,
        fleet: str,
        publish_status: Publish,
        retry_delays: Sequence[float] = (10.0, 60.0, 300.0, 900.0),
        login: Optional[Login] = None,
        upload_timeout: float = 30.0,
    ) -> None:
        self.capture_dir = Path(capture_dir)
        self.handled_path = Path(state_dir) / "collect-handled.json"
        self.trusted = trusted
        self.device = device
        self.fleet = fleet
        self.publish_status = publish_status
        self.retry_delays = list(retry_delays)
        self.login = login
        self.upload_timeout = upload_timeout
        self._queue: queue.Queue[CollectCommand] = queue.Queue(maxsize=MAX_PENDING)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="capture-collect", daemon=True)
        self._handled: List[str] = self._load_handled()
        self._thread.start()

    def handle(self, payload: bytes) -> None:
        """Check a command from the MQTT thread and queue it; a refused one is one warning."""
        try:
            command = parse_collect(payload, self.trusted, self.device, self.fleet)
        except VerificationError as exc:
            log.warning("collect command refused: %s", exc)
            self._status("", "rejected", str(exc))
            return
        except RegistryError as exc:
            log.warning("collect command ignored: %s", exc)
            return
        if command.id in self._handled:
            return
        try:
            self._queue.put_nowait(command)
        except queue.Full:
            log.warning("collect command %s refused: %d commands are already waiting", command.id, MAX_PENDING)
            return
        self._status(command.id, "received")

    def close(self, timeout: float = 10.0) -> None:
        """Stop after the upload in progress (waiting at most ``timeout`` seconds)."""
        self._stop.set()
        self._thread.join(timeout)

    # -- the worker thread --------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                command = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            self._obey(command)

    def _obey(self, command: CollectCommand) -> None:
        kind, location = store_kind(command.store)
        for attempt in range(len(self.retry_delays) + 1):
            try:
                if kind == "oci":
                    uploaded, size = self.upload_oci(command, location)
                else:
                    uploaded, size = self.upload(command, Path(location))
            except LoginRefused as exc:
                log.warning("collect %s failed: %s (the captures stay on the device)", command.id, exc)
                self._finish(command, "failed", str(exc))
                return
            except (UploadError, OciUploadError) as exc:
                if attempt == len(self.retry_delays):
                    log.warning("collect %s failed: %s (the captures stay on the device)", command.id, exc)
                    self._finish(command, "failed", str(exc))
                    return
                delay = self.retry_delays[attempt]
                log.warning(
                    "collect %s: %s; retrying in %g s (the captures stay on the device)", command.id, exc, delay
                )
                self._status(command.id, "retrying", str(exc), attempt=attempt + 1)
                if self._stop.wait(delay):
                    return
                continue
            self._finish(command, "uploaded", "", captures=uploaded, bytes=size)
            return

    def upload(self, command: CollectCommand, store: Path) -> tuple[int, int]:
        """Upload the captures ``command`` selects to the directory ``store``; return (captures, bytes).

        The device's captures are deleted only after the batch folder is in place. Raises UploadError.
        """
        captures = self._select(command)
        final = store / CAPTURES_DIR / self.device / command.id
        self._status(command.id, "uploading", captures=len(captures))
        try:
            if not store.is_dir():
                raise UploadError(f"store directory {store} does not exist")
            if not (final / BATCH_NAME).is_file():  # else: uploaded before a restart, not yet deleted here
                self._copy_batch(command, captures, final)
        except OSError as exc:
            raise UploadError(f"cannot write to the store {store}: {exc.strerror or exc}") from exc
        for capture in captures:
            archive.delete(capture)
        return len(captures), sum(c.size for c in captures)

    def upload_oci(self, command: CollectCommand, url: str) -> tuple[int, int]:
        """Upload the captures ``command`` selects to the OCI store ``url`` (at most MAX_CAPTURES, the
        oldest); return (captures, bytes). Only the captures the registry's manifest lists are deleted,
        after it is there. Raises LoginRefused or OciUploadError."""
        captures = self._select(command)[:MAX_CAPTURES]
        self._status(command.id, "uploading", captures=len(captures))
        stored = upload_batch(url, self.login, self.upload_timeout, self.device, self.fleet, command.id, captures)
        done = [c for c in captures if c.image_path.name in stored and c.record_path.name in stored]
        for capture in done:
            archive.delete(capture)
        return len(done), sum(c.size for c in done)

    def _select(self, command: CollectCommand) -> List[archive.Capture]:
        since = datetime.fromtimestamp(command.since, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        return archive.select(self.capture_dir, since if command.since else "", command.max_bytes)

    def _copy_batch(self, command: CollectCommand, captures: List[archive.Capture], final: Path) -> None:
        staging = final.with_name(f".{final.name}.part")
        staging.mkdir(mode=0o755, parents=True, exist_ok=True)
        files: List[Dict[str, Any]] = []
        for capture in captures:
            for source in (capture.image_path, capture.record_path):
                target = staging / source.name
                digest = sha256_file(source)
                present = target.is_file() and target.stat().st_size == source.stat().st_size
                if not (present and sha256_file(target) == digest):
                    tmp = staging / f".{source.name}.tmp"
                    shutil.copyfile(source, tmp)
                    os.chmod(tmp, 0o644)
                    os.replace(tmp, target)
                files.append({"path": source.name, "size": source.stat().st_size, "sha256": digest})
        listed = {f["path"] for f in files}
        for stale in staging.iterdir():  # left by an earlier attempt whose selection has changed since
            if stale.name not in listed:
                stale.unlink()
        atomic_write(staging / BATCH_NAME, batch_index(self.device, self.fleet, command.id, files))
        os.chmod(staging / BATCH_NAME, 0o644)
        os.chmod(staging, 0o755)  # noqa: S103 (the operator's pull reads the store: world-readable on purpose)
        os.rename(staging, final)
        fsync_dir(final.parent)

    # -- status and bookkeeping -----------------------------------------------------------------------------
    def _status(self, command_id: str, state: str, reason: str = "", **extra: Any) -> None:
        try:
            self.publish_status(status_message(self.device, command_id, state, reason, **extra))
        except Exception as exc:  # a status that cannot be sent must not stop the upload
            log.debug("cannot publish the collect status: %s", exc)

    def _finish(self, command: CollectCommand, state: str, reason: str, **extra: Any) -> None:
        self._status(command.id, state, reason, **extra)
        self._handled = (self._handled + [command.id])[-MAX_HANDLED:]
        try:
            self.handled_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.handled_path, json.dumps(self._handled).encode())
        except OSError as exc:
            log.warning("cannot record collect %s as handled (%s): it may run again", command.id, exc)

    def _load_handled(self) -> List[str]:
        try:
            data = json.loads(self.handled_path.read_text("utf-8"))
        except (OSError, ValueError):
            return []
        return [str(i) for i in data][-MAX_HANDLED:] if isinstance(data, list) else []


class CollectChannel(Protocol):
    """What collecting needs of the MQTT client: publish a retained status, subscribe to the commands."""

    def publish_direct(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool: ...

    def subscribe(
        self, topic: str, handler: Callable[[str, bytes], None], *, max_bytes: Optional[int] = None, qos: int = 1
    ) -> None: ...


def start_collect(config: Config, channel: Optional[CollectChannel]) -> Optional[CollectWorker]:
    """A started :class:`CollectWorker` subscribed to this device's collect topics, or None when
    collecting is off: no ``capture.dir``, ``capture.collect`` false, no broker, or no trusted key
    (``capture.trust``, else ``updates.trust``). Raises ConfigError when the keys cannot be read."""
    capture = config.capture
    trust = capture.trust or config.updates.trust
    if capture.dir is None or not capture.collect or channel is None:
        return None
    if trust is None:
        log.info("collect commands are not obeyed: no capture.trust (or updates.trust) key to check them with")
        return None
    try:
        trusted = TrustedKeys.from_paths([trust])
    except RegistryError as exc:
        raise ConfigError(f"capture.trust: {exc}") from exc
    prefix, device, fleet = config.mqtt.topic_prefix, config.device_id, config.updates.fleet
    status = collect_status_topic(prefix, device)

    def publish(msg: Dict[str, Any]) -> None:
        channel.publish_direct(status, json.dumps(msg).encode(), qos=1, retain=True)

    worker = CollectWorker(
        capture.dir,
        config.state_path,
        trusted,
        device,
        fleet,
        publish,
        login=capture.registry_login(),
        upload_timeout=capture.upload_timeout,
    )
    topics = [collect_device_topic(prefix, device)] + ([collect_fleet_topic(prefix, fleet)] if fleet else [])
    for topic in topics:
        channel.subscribe(topic, lambda _t, payload: worker.handle(payload), max_bytes=MAX_COMMAND_BYTES, qos=1)
    return worker
