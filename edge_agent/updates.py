"""Model updates inside ``edge-agent run``: the ``[updates]`` settings and the glue to the service.

:class:`AgentUpdates` connects an :class:`~edge_agent.updater.Updater` to a running agent:
it subscribes to the rollout topics through the publishing session, reports progress on
``<prefix>/<device>/rollout/status``, announces the active release (with the device's
fleet) on the retained model topic, and switches the frame loop's classifier to a new
release between two frames once the release passed its health check: the first
``health_inferences`` inferences of the new runtime (with the Edge TPU delegate when one
is present) must succeed.

Settings (TOML section ``[updates]``, environment ``EDGE_AGENT_UPDATES_<FIELD>``)::

    [updates]
    enabled = true
    trust = "/etc/edge-agent/signing.pub"   # or a folder of *.pub
    fleet = "farm"
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from .errors import ConfigError

log = logging.getLogger(__name__)

_FLEET_RE = re.compile(r"^[A-Za-z0-9_.-]*$")


@dataclass
class UpdatesConfig:
    """Over-the-air model updates (off by default)."""

    enabled: bool = False
    trust: Optional[Path] = None  # signing.pub of the release signer, or a folder of *.pub
    fleet: str = ""  # the fleet this device belongs to (rollouts with --fleet)
    runtime_version: Optional[int] = None  # Edge TPU runtime version; None = do not check
    health_inferences: int = 3  # inferences the new runtime must pass before it serves frames
    validation_timeout: float = 60.0  # seconds for the sandboxed validation of a new model
    validation_memory_mb: int = 1024  # address-space limit of the validation process
    download_timeout: float = 30.0  # read timeout of release downloads, seconds

    def validate(self) -> None:
        """Raise ConfigError naming the first invalid field."""
        if self.enabled and self.trust is None:
            raise ConfigError("updates.trust is required when updates are enabled: the signing.pub "
                              "whose releases this device accepts")
        if self.enabled and self.trust is not None and not self.trust.exists():
            raise ConfigError(f"updates.trust: {self.trust} does not exist")
        if not _FLEET_RE.match(self.fleet):
            raise ConfigError(f"updates.fleet must be letters, digits, '_', '.' or '-', got {self.fleet!r}")
        if self.health_inferences < 1:
            raise ConfigError(f"updates.health_inferences must be at least 1, got {self.health_inferences}")
        if self.validation_timeout <= 0 or self.download_timeout <= 0:
            raise ConfigError("updates.validation_timeout and updates.download_timeout must be positive")
        if self.validation_memory_mb < 64:
            raise ConfigError(f"updates.validation_memory_mb must be at least 64, got "
                              f"{self.validation_memory_mb}")


class AgentUpdates:
    """The updater of one running agent. Build it, ``start()`` it before the frame loop, ``close()`` it.

    ``config`` is the agent's :class:`~edge_agent.config.Config`, ``updates`` its
    :class:`UpdatesConfig`, ``session`` the started publishing session and ``classifier``
    the frame loop's :class:`~edge_agent.loop.Classifier`.
    """

    def __init__(self, config: Any, updates: UpdatesConfig, session: Any, classifier: Any) -> None:
        self.config = config
        self.updates = updates
        self.session = session
        self.classifier = classifier
        # what the agent ran before any release: the target of a rollback to "the built-in model"
        self._builtin = (classifier.runtime, classifier.labels, classifier.model)
        self.updater: Any = None

    def start(self) -> AgentUpdates:
        """Recover, switch to the active release, subscribe to the rollout topics.

        Raises ConfigError when the trusted keys cannot be read.
        """
        from registry.errors import RegistryError
        from registry.protocol import MAX_COMMAND_BYTES, device_topic, fleet_topic, status_topic
        from registry.signing import TrustedKeys

        from .updater import Updater

        assert self.updates.trust is not None, "UpdatesConfig.validate() requires trust"
        try:
            trusted = TrustedKeys.from_paths([self.updates.trust])
        except RegistryError as exc:
            raise ConfigError(f"updates.trust: {exc}") from exc
        prefix, device = self.config.mqtt.topic_prefix, self.config.device_id
        publisher = self.session.publisher
        status = status_topic(prefix, device)

        def publish_status(msg: Dict[str, Any]) -> None:
            if publisher is not None:
                publisher.publish_direct(status, json.dumps(msg).encode(), qos=1, retain=True)

        self.updater = Updater(
            Path(self.config.state_dir) / "updates", trusted, device, self.updates.runtime_version,
            publish_status, self._activate, publish_model=self._announce, fleet=self.updates.fleet,
            validation_timeout=self.updates.validation_timeout,
            validation_memory_mb=self.updates.validation_memory_mb,
            download_timeout=self.updates.download_timeout)
        release = self.updater.start()
        if release is not None and not self._activate(release):
            log.error("cannot run the installed release %s:%s; running the built-in model",
                      release.name, release.version)
        self.updater.announce()
        if publisher is not None:
            topics = [device_topic(prefix, device)]
            if self.updates.fleet:
                topics.append(fleet_topic(prefix, self.updates.fleet))
            for topic in topics:
                publisher.subscribe(topic, lambda _t, payload: self.updater.handle_command(payload),
                                    max_bytes=MAX_COMMAND_BYTES, qos=1)
        return self

    def close(self) -> None:
        """Stop the updater's worker (after the command in progress)."""
        if self.updater is not None:
            self.updater.close()

    def _announce(self, msg: Dict[str, Any]) -> None:
        from .publish import model_announcement

        model = self.classifier.model
        self.session.set_model(model_announcement(model, self.classifier.runtime.backend,
                                                  fleet=self.updates.fleet))

    def _activate(self, release: Any) -> bool:
        """Health-check the release's runtime, then swap it into the frame loop (None: built-in)."""
        if release is None:
            self.classifier.swap(*self._builtin)
            return True
        import numpy as np

        from .loop import build_classifier
        from .sources import Frame

        cfg = self.config
        try:
            candidate = build_classifier(
                release.edgetpu_model or release.cpu_model, release.labels, device=cfg.device,
                runtime=cfg.runtime, threads=cfg.threads, k=cfg.top_k, threshold=cfg.threshold,
                device_id=cfg.device_id, name=release.name, version=release.version)
            (height, width), _channels = candidate.runtime.input_size, candidate.runtime.channels
            image = np.full((height, width, 3), 128, dtype=np.uint8)
            for index in range(self.updates.health_inferences):
                result = candidate.classify(Frame(image, "health-check", index, time.time()))
                if not all(np.isfinite(c.score) for c in result.top_k):
                    raise ValueError("the model returned scores that are not finite")
        except Exception as exc:  # any failure of the new runtime is a failed health check
            log.error("health check of %s:%s failed: %s", release.name, release.version, exc)
            return False
        self.classifier.swap(candidate.runtime, candidate.labels, candidate.model)
        return True
