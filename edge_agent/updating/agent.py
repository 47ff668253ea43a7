"""Model updates inside ``edge-agent run``: the glue between the updater and the running agent.

:class:`AgentUpdates` connects an :class:`~edge_agent.updating.updater.Updater` to a running agent:
it subscribes to the rollout topics through the publishing session, reports progress on
``<prefix>/<device>/rollout/status``, announces the active release (with the device's
fleet) on the retained model topic, and switches the frame loop's classifier to a new
release between two frames once the release passed its health check: the first
``health_inferences`` inferences of the new runtime (with the Edge TPU delegate when one
is present) must succeed.

Its settings are the ``[updates]`` section of the configuration
(:class:`edge_agent.config.UpdatesConfig`).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Protocol

import numpy as np

from edge_agent.config import Config
from edge_agent.errors import ConfigError
from edge_agent.inference.classifier import Classifier
from edge_agent.inference.runtime import TpuSettings, probe_compiled_model
from edge_agent.inference.sources import Frame
from edge_agent.publishing.session import model_announcement
from edge_agent.updating.state import ActiveRelease
from edge_agent.updating.updater import Updater
from release_contract.errors import RegistryError
from release_contract.protocol import MAX_COMMAND_BYTES
from release_contract.signing import TrustedKeys
from release_contract.topics import device_topic, fleet_topic, status_topic

log = logging.getLogger(__name__)


#: Builds the classifier of a release. The service passes one that applies the agent's
#: configuration (device, runtime, top-k) and the release's own normalization.
OpenRelease = Callable[[ActiveRelease], Classifier]


class CommandChannel(Protocol):
    """What the updater needs of the MQTT client: publish a retained message, subscribe."""

    def publish_direct(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool: ...

    def subscribe(
        self, topic: str, handler: Callable[[str, bytes], None], *, max_bytes: Optional[int] = None, qos: int = 1
    ) -> None: ...


class ModelAnnouncer(Protocol):
    """What the updater needs of the publishing session: its client, and the retained model topic."""

    @property
    def publisher(self) -> Optional[CommandChannel]: ...

    def set_model(self, model_info: Dict[str, Any]) -> None: ...


class AgentUpdates:
    """The updater of one running agent. Build it, ``start()`` it before the frame loop, ``close()`` it.

    ``config`` is the agent's configuration, ``session`` the started publishing session,
    ``classifier`` the frame loop's classifier, whose model is swapped between two frames, and
    ``open_release`` builds a release's classifier as the agent's configuration says.
    """

    def __init__(
        self,
        config: Config,
        session: ModelAnnouncer,
        classifier: Classifier,
        open_release: OpenRelease,
        tpu: Optional[TpuSettings] = None,
    ) -> None:
        self._open_release = open_release
        self._tpu = tpu or TpuSettings()
        updates = config.updates
        self.config = config
        self.updates = updates
        self.session = session
        self.classifier = classifier
        # what the agent ran before any release: the target of a rollback to "the built-in model"
        self._builtin = (classifier.runtime, classifier.labels, classifier.model)
        self.updater: Optional[Updater] = None

    def start(self) -> AgentUpdates:
        """Recover, switch to the active release, subscribe to the rollout topics.

        Raises ConfigError when the trusted keys cannot be read.
        """
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
            self.config.state_path / "updates",
            trusted,
            device,
            self.updates.runtime_version,
            publish_status,
            self._activate,
            publish_model=self._announce,
            fleet=self.updates.fleet,
            validation_timeout=self.updates.validation_timeout,
            validation_memory_mb=self.updates.validation_memory_mb,
            download_timeout=self.updates.download_timeout,
            login=self.updates.registry_login(),
            max_model_memory_mb=self.config.max_model_memory_mb,
            probe=self._probe,
            require_tpu=self.config.device not in ("auto", "cpu"),
        )
        release = self.updater.start()
        if release is not None and not self._activate(release):
            log.error(
                "cannot run the installed release %s:%s; running the built-in model", release.name, release.version
            )
        self.updater.announce()
        if publisher is not None:
            topics = [device_topic(prefix, device)]
            if self.updates.fleet:
                topics.append(fleet_topic(prefix, self.updates.fleet))
            updater = self.updater
            for topic in topics:
                publisher.subscribe(
                    topic, lambda _t, payload: updater.handle_command(payload), max_bytes=MAX_COMMAND_BYTES, qos=1
                )
        return self

    def close(self) -> None:
        """Stop the updater's worker (after the command in progress)."""
        if self.updater is not None:
            self.updater.close()

    def _probe(self, compiled: Path) -> Optional[str]:
        """The Edge TPU probe of a release's compiled model: None when it ran, else why not."""
        if self.config.device == "cpu":
            return None
        return probe_compiled_model(compiled, self.config.device, self.config.runtime, self._tpu)

    def _announce(self, msg: Dict[str, Any]) -> None:
        model = self.classifier.model
        self.session.set_model(model_announcement(model, self.classifier.runtime.backend, fleet=self.updates.fleet))

    def _activate(self, release: Optional[ActiveRelease]) -> bool:
        """Health-check the release's runtime, then swap it into the frame loop (None: built-in)."""
        if release is None:
            self.classifier.swap(*self._builtin)
            return True
        try:
            candidate = self._open_release(release)
            width, height = candidate.runtime.input_size  # (width, height), as every size in the agent
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
