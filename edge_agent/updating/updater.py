"""The device side of a rollout: download, verify, validate, activate, health-check, roll back.

The agent owns the MQTT client; it hands the updater the raw payloads of the rollout
topics and two callbacks, and never needs to know the protocol::

    updater = Updater(state_dir, TrustedKeys.from_paths([pub]), "cam-1", runtime_version=14,
                      publish_status=lambda msg: mqtt.publish(status_topic, msg, retain=True),
                      publish_model=lambda msg: mqtt.publish(model_topic, msg, retain=True),
                      activate=swap_interpreter_and_health_check, fleet="farm")
    release = updater.start()          # recovers from a crash; None = run the built-in model
    ...
    updater.handle_command(payload)    # from the MQTT thread; returns at once
    ...
    updater.close()

Each command runs on the updater's own worker thread, one at a time: received ->
downloading -> verifying -> validating (child process) -> activating -> health_check
-> active, or rejected / failed / rolled_back with the reason. ``activate(release)``
is called on the worker thread with the release to switch to (None: the built-in
model); it must swap the interpreter, wait for the health check (the first N
inferences) and return True when it passed.
"""

from __future__ import annotations

import logging
import queue
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from edge_agent.errors import UpdateError
from edge_agent.inference.model_memory import DEFAULT_MAX_MODEL_MEMORY_MB
from edge_agent.updating.admission import CommandGate
from edge_agent.updating.state import ActiveRelease, Pointer, ReleaseState
from edge_agent.updating.validate import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S, validate_model
from release_contract.credentials import Login
from release_contract.errors import ManifestError, RegistryError, VerificationError
from release_contract.fetch import pull_release
from release_contract.protocol import Command, model_message, status_message
from release_contract.ratelimit import RateLimitedWarning
from release_contract.signing import TrustedKeys
from release_contract.stores import open_source

log = logging.getLogger(__name__)

#: Well inside the systemd unit's TimeoutStopSec (20 s), which also covers closing the outbox.
CLOSE_TIMEOUT_S = 5.0
StatusSink = Callable[[Dict[str, Any]], None]
Activate = Callable[[Optional[ActiveRelease]], bool]
#: Probes a compiled model with the Edge TPU delegate in a child process: None when it ran,
#: else the one-line reason (see edge_agent.inference.probe).
ProbeCompiled = Callable[[Path], Optional[str]]


class Updater:
    """Applies signed rollout commands to one device's state directory.

    ``runtime_version`` is the device's Edge TPU runtime version (None: no Edge TPU,
    the runtime check is skipped). ``on_step(step)`` is called before each step
    (``download``, ``verify``, ``validate``, ``swap``, ``health_check``) and after
    each downloaded chunk (``download_chunk``); it exists for metrics and for crash
    tests. ``clock`` is the device's clock (Unix seconds) that command validity windows
    are checked against; ``warning_interval`` is how often one kind of refused command
    is logged and reported (the others are counted). Commands are admitted by a
    :class:`~edge_agent.updating.admission.CommandGate`. Public methods are thread-safe.
    ``probe`` runs a release's compiled model with the Edge TPU delegate in a child before it
    is activated: when it fails, the release is rejected if ``require_tpu`` (a TPU asked for
    by name), else it is activated on its CPU model.
    """

    def __init__(
        self,
        state_dir: Path,
        trusted_keys: TrustedKeys,
        device_id: str,
        runtime_version: Optional[int],
        publish_status: StatusSink,
        activate: Activate,
        *,
        publish_model: Optional[StatusSink] = None,
        fleet: str = "",
        validation_timeout: float = DEFAULT_TIMEOUT_S,
        validation_memory_mb: int = DEFAULT_MEMORY_MB,
        download_timeout: float = 30.0,
        login: Optional[Login] = None,
        max_model_memory_mb: int = DEFAULT_MAX_MODEL_MEMORY_MB,
        on_step: Optional[Callable[[str], None]] = None,
        clock: Callable[[], float] = time.time,
        warning_interval: float = 60.0,
        probe: Optional[ProbeCompiled] = None,
        require_tpu: bool = False,
    ) -> None:
        self.state = ReleaseState(Path(state_dir), trusted_keys)
        self.gate = CommandGate(self.state, trusted_keys, device_id, fleet, clock=clock)
        self._warn = RateLimitedWarning(log, warning_interval)
        self._probe = probe
        self.require_tpu = require_tpu
        self.trusted = trusted_keys
        self.device_id = device_id
        self.fleet = fleet
        self.runtime_version = runtime_version
        self.validation_timeout = validation_timeout
        self.validation_memory_mb = validation_memory_mb
        self.download_timeout = download_timeout
        self.login = login  # read-only registry credentials for oci:// stores
        self.max_model_memory_mb = max_model_memory_mb
        self._publish_status = publish_status
        self._publish_model = publish_model
        self._activate = activate
        self._on_step = on_step
        self._lock = threading.Lock()
        self._active: Optional[ActiveRelease] = None
        self._queue: queue.Queue[Optional[bytes]] = queue.Queue(maxsize=32)
        self._worker: Optional[threading.Thread] = None

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> Optional[ActiveRelease]:
        """Recover from an interrupted update, start the worker, return the release to load.

        A release still on trial when the agent stopped is rolled back (reported as
        ``rolled_back``). Returns None when the device should run its built-in model.
        """
        with self._lock:
            self.state.clean_staging()
            record = self.state.abort_trial()
            release = self.state.current_release()
            self._active = release
        if record is not None:
            new = record.get("new") or {}
            reason = "the agent stopped before the new release passed its health check"
            log.warning("rolled back %s:%s: %s", new.get("name"), new.get("version"), reason)
            msg = status_message(
                self.device_id,
                "rolled_back",
                None,
                self._pointer(),
                reason,
                name=str(new.get("name", "")),
                version=str(new.get("version", "")),
            )
            msg["rollout"], _, msg["action"] = str(record.get("command", "")).partition(":")
            self.state.record(str(record.get("command", "")), msg)
            self._emit(msg)
        self.announce()
        if self._worker is None:
            self._worker = threading.Thread(target=self._run, name=f"updater-{self.device_id}", daemon=True)
            self._worker.start()
        return release

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Stop the worker after the command in progress, waiting at most ``timeout`` seconds.

        A command still running then (a download from a mount that stopped answering) is
        abandoned: the worker is a daemon thread, and the state directory is crash-safe.
        """
        worker, self._worker = self._worker, None
        if worker is not None:
            self._queue.put(None)
            worker.join(timeout)

    def active_release(self) -> Optional[ActiveRelease]:
        """The release the agent should be running (None: its built-in model)."""
        with self._lock:
            return self._active

    def handle_command(self, payload: bytes) -> None:
        """Check a raw rollout command and queue it for the worker; never blocks, never raises.

        Called on the MQTT network thread: the cheap checks (size, JSON, schema, signature,
        target, validity window, sequence) run here, so a flood of bad commands never fills
        the queue. A refusal is one rate-limited warning and a rate-limited ``rejected`` status.
        """
        try:
            admitted = self.gate.check(bytes(payload), self.state.handled())
        except RegistryError as exc:
            self._refuse(exc)
            return
        except Exception:  # the network thread must survive any bug in one command
            log.exception("checking a rollout command failed unexpectedly")
            return
        if admitted.redelivery:
            return
        try:
            self._queue.put_nowait(bytes(payload))
        except queue.Full:
            self._warn("queue-full", "dropping a rollout command: %d commands are already waiting", self._queue.qsize())

    def _refuse(self, exc: RegistryError) -> None:
        """One rate-limited warning and ``rejected`` status per kind of refusal."""
        reason = re.sub(r"[0-9a-f]{6,}|\d+", "N", str(exc))[:60]
        if self._warn(reason, "rejected a rollout command: %s", exc):
            self._emit(status_message(self.device_id, "rejected", None, self._pointer(), str(exc)))

    def _run(self) -> None:
        while True:
            payload = self._queue.get()
            if payload is None:
                return
            try:
                self.process(payload)
            except Exception:  # the worker must survive any bug in one command
                log.exception("rollout command failed unexpectedly")

    # -- one command --------------------------------------------------------------------------------
    def process(self, payload: bytes) -> Optional[Dict[str, Any]]:
        """Handle one command synchronously and return its final status (None if already handled).

        The worker thread calls this for every queued command; call it directly only when
        the worker is not running (tests, one-shot tools).
        """
        handled = self.state.handled()
        try:
            admitted = self.gate.check(payload, handled)
        except RegistryError as exc:
            self._warn("refused", "rejected a rollout command: %s", exc)
            msg = status_message(self.device_id, "rejected", None, self._pointer(), str(exc))
            self._emit(msg)
            return msg
        if admitted.redelivery:
            return None
        self.gate.accept(admitted)  # durable before anything is done: a replay cannot repeat it
        command = admitted.command
        key = f"{command.id}:{command.action}"
        if key in handled:
            log.debug("rollout %s already handled", key)
            self.gate.finish(admitted)
            return None
        self._status("received", command)
        if command.action == "rollback":
            msg = self._rollback_order(command)
        else:
            msg = self._install(command)
        self.state.record(key, msg)
        self.gate.finish(admitted)
        return msg

    def _install(self, command: Command) -> Dict[str, Any]:
        current = self.state.read_pointer("current")
        target: Pointer = {"name": command.name, "version": command.version}
        if current == target:
            return self._status("active", command, f"{command.name}:{command.version} is already active")
        try:
            release = self._fetch(command, current)
        except (RegistryError, UpdateError) as exc:
            # a release that is not acceptable is rejected; one that could not be fetched failed
            state = "rejected" if isinstance(exc, (VerificationError, ManifestError)) else "failed"
            return self._status(state, command, str(exc))
        self._step("validate")
        self._status("validating", command)
        try:
            validate_model(
                release.cpu_model,
                release.labels,
                release.manifest.input["shape"],
                golden=release.golden,
                expect_top1=release.manifest.golden_top1,
                timeout=self.validation_timeout,
                memory_mb=self.validation_memory_mb,
                compiled=release.edgetpu_model,
                max_model_mb=self.max_model_memory_mb,
            )
        except UpdateError as exc:
            shutil.rmtree(release.directory, ignore_errors=True)
            return self._status("rejected", command, str(exc))
        if release.edgetpu_model is not None and self._probe is not None:
            reason = self._probe(release.edgetpu_model)
            if reason is not None and self.require_tpu:
                shutil.rmtree(release.directory, ignore_errors=True)
                return self._status("rejected", command, f"Edge TPU probe failed: {reason}")
            if reason is not None:
                log.warning("%s:%s will run on its CPU model: %s", command.name, command.version, reason)
        self._step("swap")
        self._status("activating", command)
        with self._lock:
            self.state.begin_trial(target, f"{command.id}:{command.action}")
        self._step("health_check")
        self._status("health_check", command)
        healthy = self._call_activate(release)
        if healthy:
            with self._lock:
                self.state.commit_trial()
                self._active = release
                self.state.prune()
            self.gate.installed(command.name, command.version)
            self.announce()
            return self._status("active", command)
        return self._return_to_previous(command, f"{command.name}:{command.version} failed its health check")

    def _fetch(self, command: Command, current: Optional[Pointer]) -> ActiveRelease:
        """Download (or reuse) and verify the release named by ``command``."""
        directory = self.state.release_dir(command.name, command.version)
        # the signed manifest must name this very version (checked in pull_release), so checking
        # the command refuses another model or an older release before anything is fetched
        self.gate.check_install(command, current)
        if directory.exists():
            self._step("verify")
            self._status("verifying", command)
            try:
                return self.state.load({"name": command.name, "version": command.version})
            except UpdateError as exc:
                log.warning("re-downloading %s:%s: %s", command.name, command.version, exc)
                shutil.rmtree(directory, ignore_errors=True)
        self._step("download")
        self._status("downloading", command)
        source = open_source(command.store, timeout=self.download_timeout, login=self.login)

        def on_chunk(_n: int) -> None:
            self._step("download_chunk")

        result = pull_release(
            source,
            command.name,
            command.version,
            self.trusted,
            directory,
            self.state.downloads_dir,
            runtime_version=self.runtime_version,
            progress=on_chunk,
        )
        self._step("verify")
        self._status("verifying", command, bytes=result.bytes_downloaded)
        return self.state.load({"name": command.name, "version": command.version})

    def _rollback_order(self, command: Command) -> Dict[str, Any]:
        current = self.state.read_pointer("current")
        if current != {"name": command.name, "version": command.version}:
            return self._status(
                "rolled_back", command, f"not running {command.name}:{command.version}; nothing to roll back"
            )
        return self._return_to_previous(command, "rollback ordered by the controller", committed=True)

    def _return_to_previous(self, command: Command, reason: str, committed: bool = False) -> Dict[str, Any]:
        """Leave the release ``command`` names for the one before it (or the built-in model)."""
        with self._lock:
            if committed:
                previous = self.state.read_pointer("previous")
                self.state.write_pointer("current", previous)
                self.state.write_pointer("previous", None)
            else:
                self.state.abort_trial()
            release = self.state.current_release()
            self._active = release
        if not self._call_activate(release):
            reason += "; the previous release also failed its health check"
        shutil.rmtree(self.state.release_dir(command.name, command.version), ignore_errors=True)
        self.announce()
        log.warning("rolled back from %s:%s: %s", command.name, command.version, reason)
        return self._status("rolled_back", command, reason)

    # -- helpers ------------------------------------------------------------------------------------
    def _call_activate(self, release: Optional[ActiveRelease]) -> bool:
        try:
            return bool(self._activate(release))
        except Exception as exc:  # the agent's swap failing is a failed health check
            log.error("activating %s failed: %s", release.pointer if release else "the built-in model", exc)
            return False

    def _step(self, step: str) -> None:
        if self._on_step is not None:
            self._on_step(step)

    def _pointer(self) -> Optional[Pointer]:
        with self._lock:
            return self._active.pointer if self._active else None

    def _status(self, state: str, command: Command, reason: str = "", **extra: Any) -> Dict[str, Any]:
        msg = status_message(self.device_id, state, command, self._pointer(), reason, **extra)
        self._emit(msg)
        return msg

    def _emit(self, msg: Dict[str, Any]) -> None:
        try:
            self._publish_status(msg)
        except Exception as exc:  # a lost progress message must not stop an update
            log.warning("cannot publish rollout status: %s", exc)

    def announce(self) -> None:
        """Publish the active release on the model topic (also after a reconnect)."""
        if self._publish_model is None:
            return
        active = self.active_release()
        extra = {"digest": active.digest} if active else {}
        try:
            self._publish_model(model_message(self.device_id, self.fleet, self._pointer(), **extra))
        except Exception as exc:
            log.warning("cannot publish the active model: %s", exc)
