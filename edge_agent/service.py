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
from edge_agent.capture.collect import start_collect
from edge_agent.capture.sink import CaptureSink
from edge_agent.config import Config
from edge_agent.errors import ConfigError, PublishError
from edge_agent.inference.classifier import Classifier, build_classifier
from edge_agent.inference.preprocess import Normalization
from edge_agent.inference.runtime import TpuSettings
from edge_agent.inference.scheduler import NamedSource, SchedulerStats, SourceScheduler
from edge_agent.inference.sources import Source, open_source
from edge_agent.inference.streams import StreamOptions, open_live
from edge_agent.input_config import InputConfig
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
        max_memory_mb=config.max_model_memory_mb,
        resize=config.resize,
        tpu=tpu_settings(config),
    )


def tpu_settings(config: Config) -> TpuSettings:
    """Which libedgetpu to load and how to probe it, as ``config`` says."""
    return TpuSettings(config.edgetpu_library, config.probe_timeout, config.probe_cache_path)


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


def _input_items(config: Config) -> List[InputConfig]:
    """``config``'s inputs, or the bundled sample images when it names none."""
    return config.input_list() or [InputConfig(name=str(demo_images()), url=str(demo_images()))]


def open_input(config: Config, item: Optional[InputConfig] = None, *, keep_retrying: bool = False) -> Source:
    """The source ``item`` (default: the first of ``config``'s inputs, or the bundled sample images)
    names. Cameras and streams reconnect when they drop; with ``keep_retrying`` (``run``) one that
    does not open at first is retried too, else that is an InputError. Raises InputError."""
    item = item or _input_items(config)[0]
    options = StreamOptions(
        transport=item.transport or config.rtsp_transport,
        connect_timeout=item.connect_timeout or config.connect_timeout,
        stall_timeout=item.stall_timeout or config.stall_timeout,
        retry_first_open=keep_retrying,
        width=item.width,
        height=item.height,
        fps=item.fps,
    )
    return open_live(item.url, options, item.name) or open_source(item.url, max_pixels=config.max_pixels)


def open_inputs(config: Config, *, keep_retrying: bool = False) -> List[NamedSource]:
    """Every source ``config`` names (:func:`open_input` each) with its name, fps cap and crop.
    Raises InputError (after closing those already opened)."""
    opened: List[NamedSource] = []
    try:
        for item in _input_items(config):
            source = open_input(config, item, keep_retrying=keep_retrying)
            opened.append(NamedSource(item.name, source, item.max_fps or config.max_fps, item.crop_box))
    except BaseException:
        for named in opened:
            named.source.close()
        raise
    return opened


def _start_updates(config: Config, session: Optional[PublishingSession], classifier: Optional[Classifier]) -> Any:
    """The started updater when updates are enabled (see edge_agent.updating.agent), else None."""
    if not config.updates.enabled:
        return None
    if classifier is None or session is None:
        raise ConfigError("updates.enabled needs a classifier to update and mqtt.url to hear rollouts on")
    from edge_agent.updating.agent import AgentUpdates  # only when updates are on: it loads the contract

    return AgentUpdates(config, session, classifier, release_opener(config), tpu_settings(config)).start()


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
    frame loop's classifier); they are closed first on stop. With ``config.capture.dir`` and a trusted
    key, signed collect commands upload the captures (edge_agent.capture.collect).

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
            collect = start_collect(config, session.publisher if session is not None else None)
            try:
                frame_loop(sinks, stop)
            finally:
                if collect is not None:
                    collect.close()
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
    keep_retrying: bool = False,
) -> SchedulerStats:
    """Classify ``config``'s inputs with ``config.model`` (one classifier for all of them, scheduled
    fairly) and hand every result to ``sinks`` and, when ``config.mqtt.url`` is set, to MQTT; until
    the inputs end, ``count`` results in all, or SIGTERM/SIGINT. Streams and cameras that drop are
    reopened; with ``keep_retrying`` (``run``) so are those that do not open at first.
    With ``config.capture.dir``, uncertain frames are captured (edge_agent.capture.sink).

    ``edge-agent classify`` (with its printing sinks) and ``edge-agent run`` both come here.
    Raises ModelError, DelegateError, InputError, ConfigError or PublishError.
    """
    classifier = open_classifier(config)
    sources = open_inputs(config, keep_retrying=keep_retrying)
    capture = CaptureSink(config.capture).start() if config.capture.dir is not None else None
    if capture is not None:
        sinks = [*sinks, capture]
    announcement = model_announcement(classifier.model, classifier.runtime.backend)
    holder: List[SchedulerStats] = []

    def frame_loop(all_sinks: Sequence[Sink], stop_event: threading.Event) -> None:
        loop = SourceScheduler(
            classifier,
            sources,
            [*all_sinks, *sinks],
            count=count,
            stop=stop_event,
            reduced_decode=config.capture.dir is None,  # captured frames stay full size
        )
        for sink in all_sinks:
            if isinstance(sink, Stats):  # live sources drop frames when inference falls behind
                sink.count_dropped_frames_with(lambda: loop.dropped)
                sink.report_inputs_with(loop.reports)
        holder.append(loop.run())

    try:
        run_service(
            config, frame_loop, model_info=announcement, stop=stop, classifier=classifier, flush_timeout=flush_timeout
        )
    finally:
        if not holder:
            for named in sources:
                named.source.close()
        if capture is not None:
            capture.close()
    stats = holder[0]
    log.info("%d frames, %.1f frames/s, %d dropped, %d skipped", stats.frames, stats.fps, stats.dropped, stats.skipped)
    return stats


def run_agent(config: Config, *, stop: Optional[threading.Event] = None) -> None:
    """``edge-agent run``: :func:`run_pipeline` with no sinks of its own, until the input ends or a signal."""
    if not config.mqtt.url:
        log.warning("no MQTT broker configured (mqtt.url): results are not published")
    run_pipeline(config, stop=stop, keep_retrying=True)
