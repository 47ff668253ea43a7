"""``edge-agent run``: the long-running service.

:func:`run_service` wires one run together: it installs SIGTERM/SIGINT handlers, opens the
publishing session (outbox, MQTT, stats, Home Assistant discovery), runs the frame loop
until the source ends or a signal arrives, then stops cleanly: the frame loop returns,
the publisher flushes what it can within ``flush_timeout``, publishes ``offline`` and the
outbox is closed (what was not acknowledged is sent by the next run).

The frame loop is passed in (``frame_loop(sinks, stop)``), so the service knows nothing of
models or cameras, and tests can drive it with results they make.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any, Callable, Dict, List, Optional, Sequence

from .config import Config
from .errors import ConfigError
from .publish import PublishingSession, Sink
from .stats import Stats

log = logging.getLogger(__name__)

#: runs until its source is exhausted or ``stop`` is set, calling every sink once per result
FrameLoop = Callable[[Sequence[Sink], threading.Event], None]


class StopSignals:
    """Sets ``stop`` on SIGTERM/SIGINT while active (main thread only); restores the old handlers."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self._previous: Dict[int, Any] = {}

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if not self.stop.is_set():
            log.info("received %s: stopping", signal.Signals(signum).name)
        self.stop.set()

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _start_updates(config: Config, session: Optional[PublishingSession], classifier: Optional[Any]) -> Any:
    """The started updater when updates are enabled (see edge_agent.updates), else None."""
    if not config.updates.enabled:
        return None
    if classifier is None or session is None:
        raise ConfigError("updates.enabled needs a classifier to update and mqtt.url to hear rollouts on")
    from .updates import AgentUpdates

    return AgentUpdates(config, config.updates, session, classifier).start()


def run_service(config: Config, frame_loop: FrameLoop, *, model_info: Optional[Dict[str, Any]] = None,
                extra_sinks: Sequence[Sink] = (), flush_timeout: float = 10.0,
                stop: Optional[threading.Event] = None, classifier: Optional[Any] = None) -> None:
    """Run ``frame_loop`` publishing to MQTT (when ``config.mqtt.url`` is set) until it ends or
    SIGTERM/SIGINT arrives, then stop cleanly. With ``config.updates.enabled``, model updates over
    MQTT (edge_agent.updates) start once publishing is up and swap models in ``classifier`` (the
    frame loop's :class:`~edge_agent.loop.Classifier`); they are closed first on stop.

    Raises:
        ConfigError: an unusable state directory or broker URL.
        PublishError: the broker refused the login or the TLS handshake failed at start-up.
        Whatever ``frame_loop`` raises (after the clean stop).
    """
    stop = stop or threading.Event()
    with StopSignals(stop):
        session: Optional[PublishingSession] = None
        sinks: List[Sink] = list(extra_sinks)
        if config.mqtt.url:
            session = PublishingSession(config, model_info).start()
            sinks = session.sinks + sinks
        else:
            log.warning("no MQTT broker configured (mqtt.url): results are not published")
        try:
            updates = _start_updates(config, session, classifier)
            try:
                frame_loop(sinks, stop)
            finally:
                if updates is not None:
                    updates.close()
        finally:
            if session is not None:
                session.stop(flush_timeout)
    log.info("stopped")


def run_agent(config: Config, *, stop: Optional[threading.Event] = None) -> None:
    """``edge-agent run``: classify ``config.input`` with ``config.model`` and publish until the
    input ends or SIGTERM/SIGINT.

    Raises ModelError, DelegateError, InputError, ConfigError or PublishError.
    """
    from .bundled import demo_images, demo_model
    from .loop import FrameLoop, build_classifier
    from .publish import model_announcement
    from .sources import open_source

    model = config.model or demo_model()
    classifier = build_classifier(model, config.labels, device=config.device, runtime=config.runtime,
                                  threads=config.threads, k=config.top_k, threshold=config.threshold,
                                  device_id=config.device_id)
    source = open_source(config.input or str(demo_images()))
    announcement = model_announcement(classifier.model, classifier.runtime.backend)

    def frame_loop(sinks: Sequence[Sink], stop_event: threading.Event) -> None:
        loop = FrameLoop(classifier, source, list(sinks), fps=config.max_fps or None, stop=stop_event)
        for sink in sinks:
            if isinstance(sink, Stats):  # live sources drop frames when inference falls behind
                sink.count_dropped_frames_with(lambda: loop.stats.dropped)
        stats = loop.run()
        log.info("%d frames, %.1f frames/s, %d dropped, %d skipped", stats.frames, stats.fps, stats.dropped,
                 stats.skipped)

    run_service(config, frame_loop, model_info=announcement, stop=stop, classifier=classifier)
