"""The composition root: the one place a pipeline is wired together, for ``classify`` and ``run``.

:func:`open_classifier` and :func:`open_input` build the classifier and the source a
:class:`~edge_agent.config.Config` describes (model updates build their classifiers here too);
:func:`run_pipeline` runs them through the frame loop into the sinks and MQTT.

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
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Dict, List, Optional, Sequence

from edge_agent.bundled import demo_images, demo_model
from edge_agent.config import Config
from edge_agent.errors import ConfigError, PublishError
from edge_agent.inference.classifier import Classifier, build_classifier
from edge_agent.inference.loop import FrameLoop, LoopStats
from edge_agent.inference.preprocess import Normalization
from edge_agent.inference.sources import Source, open_source
from edge_agent.publishing.session import PublishingSession, Sink, model_announcement
from edge_agent.publishing.stats import Stats
from edge_agent.updating.state import ActiveRelease

log = logging.getLogger(__name__)

#: runs until its source is exhausted or ``stop`` is set, calling every sink once per result
FrameLoopFn = Callable[[Sequence[Sink], threading.Event], None]


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


def open_classifier(
    config: Config,
    model: Optional[Path] = None,
    labels: Optional[Path] = None,
    *,
    name: Optional[str] = None,
    version: str = "local",
    norm: Optional[Normalization] = None,
) -> Classifier:
    """The classifier ``config`` describes (model, labels, device, runtime, threads, normalization,
    top-k, threshold); ``model``/``labels``/``norm`` replace the configured ones (a release's).

    The one place a classifier is built: ``classify``, ``run`` and model updates all come here.
    Raises ModelError, DelegateError or ConfigError.
    """
    return build_classifier(
        model or config.model or demo_model(),
        labels if model else config.labels,
        device=config.device,
        runtime=config.runtime,
        threads=config.threads,
        norm=norm or Normalization(config.mean, config.std),
        keep_aspect=config.keep_aspect,
        k=config.top_k,
        threshold=config.threshold,
        device_id=config.device_id,
        name=name,
        version=version,
    )


def release_opener(config: Config) -> Callable[[ActiveRelease], Classifier]:
    """What model updates use to build a release's classifier: :func:`open_classifier` with ``config``,
    the release's files and the normalization its signed manifest declares."""

    def open_release(release: ActiveRelease) -> Classifier:
        mean, std = release.manifest.normalization
        return open_classifier(
            config,
            release.edgetpu_model or release.cpu_model,
            release.labels,
            name=release.name,
            version=release.version,
            norm=Normalization(mean, std),
        )

    return open_release


def open_input(config: Config) -> Source:
    """The source ``config.input`` names (the bundled sample images when unset). Raises InputError."""
    return open_source(config.input or str(demo_images()), max_pixels=config.max_pixels)


def _start_updates(config: Config, session: Optional[PublishingSession], classifier: Optional[Classifier]) -> Any:
    """The started updater when updates are enabled (see edge_agent.updating.agent), else None."""
    if not config.updates.enabled:
        return None
    if classifier is None or session is None:
        raise ConfigError("updates.enabled needs a classifier to update and mqtt.url to hear rollouts on")
    from edge_agent.updating.agent import AgentUpdates  # only when updates are on: it loads the contract

    return AgentUpdates(config, session, classifier, release_opener(config)).start()


def run_service(
    config: Config,
    frame_loop: FrameLoopFn,
    *,
    model_info: Optional[Dict[str, Any]] = None,
    extra_sinks: Sequence[Sink] = (),
    flush_timeout: float = 10.0,
    stop: Optional[threading.Event] = None,
    classifier: Optional[Classifier] = None,
) -> None:
    """Run ``frame_loop`` publishing to MQTT (when ``config.mqtt.url`` is set) until it ends or
    SIGTERM/SIGINT arrives, then stop cleanly. With ``config.updates.enabled``, model updates over
    MQTT (edge_agent.updating) start once publishing is up and swap models in ``classifier`` (the
    frame loop's classifier); they are closed first on stop.

    Raises:
        ConfigError: an unusable state directory or broker URL.
        PublishError: the broker refused the login or the TLS handshake failed at start-up, or a
            publishing thread kept failing (see edge_agent.publishing.supervise).
        Whatever ``frame_loop`` raises (after the clean stop).
    """
    stop = stop or threading.Event()
    with StopSignals(stop):
        session: Optional[PublishingSession] = None
        sinks: List[Sink] = list(extra_sinks)
        failures: List[str] = []

        def publishing_failed(message: str) -> None:  # a worker that keeps failing stops the agent
            failures.append(message)
            stop.set()

        if config.mqtt.url:
            session = PublishingSession(config, model_info, on_fatal=publishing_failed).start()
            sinks = session.sinks + sinks
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
    if failures:
        raise PublishError(f"publishing failed: {failures[0]}")
    log.info("stopped")


def run_pipeline(
    config: Config,
    *,
    sinks: Sequence[Sink] = (),
    count: Optional[int] = None,
    stop: Optional[threading.Event] = None,
    flush_timeout: float = 10.0,
) -> LoopStats:
    """Classify ``config.input`` with ``config.model`` and hand every result to ``sinks`` and, when
    ``config.mqtt.url`` is set, to MQTT; until the input ends, ``count`` results, or SIGTERM/SIGINT.

    ``edge-agent classify`` (with its printing sinks) and ``edge-agent run`` both come here.
    Raises ModelError, DelegateError, InputError, ConfigError or PublishError.
    """
    classifier = open_classifier(config)
    source = open_input(config)
    announcement = model_announcement(classifier.model, classifier.runtime.backend)
    holder: List[LoopStats] = []

    def frame_loop(all_sinks: Sequence[Sink], stop_event: threading.Event) -> None:
        loop = FrameLoop(
            classifier, source, [*all_sinks, *sinks], count=count, fps=config.max_fps or None, stop=stop_event
        )
        for sink in all_sinks:
            if isinstance(sink, Stats):  # live sources drop frames when inference falls behind
                sink.count_dropped_frames_with(lambda: loop.stats.dropped)
        holder.append(loop.run())

    try:
        run_service(
            config, frame_loop, model_info=announcement, stop=stop, classifier=classifier, flush_timeout=flush_timeout
        )
    finally:
        if not holder:
            source.close()
    stats = holder[0]
    log.info("%d frames, %.1f frames/s, %d dropped, %d skipped", stats.frames, stats.fps, stats.dropped, stats.skipped)
    return stats


def run_agent(config: Config, *, stop: Optional[threading.Event] = None) -> None:
    """``edge-agent run``: :func:`run_pipeline` with no sinks of its own, until the input ends or a signal."""
    if not config.mqtt.url:
        log.warning("no MQTT broker configured (mqtt.url): results are not published")
    run_pipeline(config, stop=stop)
