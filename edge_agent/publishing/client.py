"""Publishing to an MQTT broker: every result delivered, through outages and crashes.

Results go through the :class:`~edge_agent.publishing.outbox.Outbox` first (:meth:`MqttPublisher.enqueue`,
never waiting for the network or the disk). One supervised network thread owns the connection:
it sends the outbox's messages in order (at most ``window`` awaiting acknowledgement), hands
each acknowledged one back to the outbox, reconnects with exponential backoff (capped, with
jitter) and logs one line per state change. When the connection is free, the thread enqueuing a
result sends it at once itself (:meth:`OutboxSender.send_now`): one lock serialises all I/O.
Topics: :class:`release_contract.topics.Topics`.

Errors: a bad URL raises ConfigError; a refused login or a TLS failure at start-up raises
PublishError; a broker that is unreachable or silent is not an error (results queue up).
"""

from __future__ import annotations

import collections
import json
import logging
import socket
import ssl
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

from edge_agent.config import MqttConfig
from edge_agent.errors import ConfigError, PublishError
from edge_agent.publishing.broker import (
    AUTH_CODES,
    KEEPALIVE_TIMEOUT,
    Backoff,
    MessageHandler,
    SessionWatch,
    close_abandoned_sockets,
    close_sockets,
    describe_error,
    dispatch,
    make_paho_client,
    pump,
    refusal,
    tls_refusal,
    warn_if_clashing,
)
from edge_agent.publishing.outbox import Outbox
from edge_agent.publishing.sender import OutboxSender
from edge_agent.publishing.supervise import STOP_JOIN_TIMEOUT, Fatal, join_bounded, supervised
from release_contract.topics import BrokerUrlError, Topics, parse_broker_url

log = logging.getLogger(__name__)


class MqttPublisher:
    """One connection to the broker for one device, fed from a durable outbox.

    Build it, :meth:`start` it, :meth:`enqueue` messages from any thread (the frame loop's
    sink does this), :meth:`stop` it. Thread safety: every public method may be called
    from any thread. Handlers given to :meth:`subscribe` and connect hooks run on the
    network thread (also for messages that another thread read) and must return quickly.

    Args:
        config: the ``[mqtt]`` section (URL, credentials, TLS files, protocol, QoS).
        device_id: the device's topic level.
        outbox: where results wait for acknowledgement.
        window: how many messages may await acknowledgement at once.
        backoff: reconnect delays (default 0.5 s doubling up to 30 s).
        on_fatal: called with a message when the network thread keeps failing (see
            :mod:`edge_agent.publishing.supervise`); the service then stops the agent.
    """

    def __init__(
        self,
        config: MqttConfig,
        device_id: str,
        outbox: Outbox,
        *,
        window: int = 100,
        backoff: Optional[Backoff] = None,
        on_fatal: Optional[Fatal] = None,
    ) -> None:
        if config.url is None:
            raise ConfigError("mqtt.url is not set (example: mqtt://localhost:1883)")
        self.config = config
        try:
            self.address = parse_broker_url(config.url)
        except BrokerUrlError as exc:
            raise ConfigError(f"mqtt.url {exc}") from None
        self.topics = Topics(config.topic_prefix, device_id)
        self.outbox = outbox
        self._window = window
        self._backoff = backoff or Backoff()
        self._on_fatal = on_fatal
        self._watch = SessionWatch(self._backoff)
        self._disconnect_reason: Optional[int] = None
        self._need_connect = False
        self._model_payload: Optional[bytes] = None
        self._subscriptions: Dict[str, Tuple[MessageHandler, int, int]] = {}
        self._connect_hooks: List[Callable[[MqttPublisher], None]] = []
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._connack: Optional[Any] = None
        self._state = "new"
        self._closing = False
        self._starting = False
        self._sleeping = False  # the network thread waits on its sockets: enqueue() must wake it
        self._net_ident = 0
        self._publishing_done = threading.Event()
        self._stop_publishing = threading.Event()
        self._stop_network = threading.Event()
        self._threads: List[threading.Thread] = []
        self._incoming: Deque[paho.MQTTMessage] = collections.deque()  # read by send_now(), not yet handled
        client = self._client = make_paho_client(config, self.address, device_id, self.topics.status, window)
        client.on_connect, client.on_disconnect = self._on_connect, self._on_disconnect
        client.on_publish, client.on_message = self._on_publish, self._on_message
        client.on_socket_register_write = self._request_write
        self._sender = OutboxSender(outbox, client, window)
        outbox.before_commit = self._read_before_commit
        self._wake_pair = socket.socketpair()  # wakes the network thread when paho has packets to send
        for sock in self._wake_pair:
            sock.setblocking(False)

    def set_model(self, info: Dict[str, Any]) -> None:
        """Announce the active model (retained on ``<prefix>/<device>/model``), now and on every connect."""
        self._model_payload = json.dumps(info, separators=(",", ":"), sort_keys=True).encode()
        self.publish_direct(self.topics.model, self._model_payload, qos=1, retain=True)

    def add_connect_hook(self, hook: Callable[[MqttPublisher], None]) -> None:
        """Call ``hook(publisher)`` after every successful (re)connection, on the network thread."""
        self._connect_hooks.append(hook)

    def subscribe(self, topic: str, handler: MessageHandler, *, max_bytes: Optional[int] = None, qos: int = 1) -> None:
        """Deliver messages on ``topic`` (wildcards allowed) to ``handler(topic, payload)``.

        Messages larger than ``max_bytes`` (default ``mqtt.max_payload_bytes``) are dropped with
        a warning; an exception raised by the handler is logged, never propagated. The
        subscription is renewed after every reconnection.
        """
        limit = max_bytes if max_bytes is not None else self.config.max_payload_bytes
        with self._lock:
            self._subscriptions[topic] = (handler, limit, qos)
        if self._connected.is_set():
            self._client.subscribe(topic, qos)

    def start(self, connect_timeout: float = 10.0) -> None:
        """Connect once (synchronously) and start the network thread.

        Raises:
            PublishError: the broker refused the login or the TLS handshake failed.
        An unreachable broker is logged and retried in the background; results queue meanwhile.
        """
        addr = self.address
        self._starting = True  # no "lost the broker" warning for a refusal reported as an error
        try:
            up, closed = self._first_connect(connect_timeout)
            code = self._connack
            error = refusal(addr, code, closed)
            if error is not None:
                raise error
        except PublishError:
            close_sockets(self._client, self._wake_pair)
            raise
        finally:
            self._starting = False
        self._need_connect = not up
        if not up and code is None:
            self._set_state("disconnected", f"broker {addr.host}:{addr.port} did not answer; retrying")
        work = supervised("MQTT network", self._run_network, self._stop_network, self._on_fatal)
        thread = threading.Thread(target=work, name="mqtt", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _request_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # paho queued a packet: wake the network thread to write it, unless the I/O's thread queued it
        if threading.get_ident() not in (self._net_ident, self._sender.io_thread):
            self._kick()

    def _pump(self, timeout: float, listen: bool = True) -> MQTTErrorCode:
        """One round of network I/O, on the network thread."""
        return pump(self._client, self._wake_pair[0], timeout, self._sender.io, listen)

    def _first_connect(self, timeout: float) -> Tuple[bool, bool]:
        """Connect and wait up to ``timeout`` s for CONNACK; return (connected, closed before CONNACK)."""
        addr = self.address
        try:
            self._client.connect(addr.host, addr.port, self.config.keepalive)
            deadline = time.monotonic() + timeout
            while self._connack is None and time.monotonic() < deadline:
                if self._pump(0.1) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    # paho gave up waiting (keepalive shorter than the timeout): silent, not closed
                    silent = self._disconnect_reason == KEEPALIVE_TIMEOUT
                    return self._connected.is_set(), self._connack is None and not silent
            return self._connected.is_set(), False
        except ssl.SSLError as exc:
            close_abandoned_sockets(exc)
            raise PublishError(
                f"TLS connection to {addr.host}:{addr.port} failed: {describe_error(exc)}; "
                f"check --mqtt-ca and the broker's certificate"
            ) from exc
        except OSError as exc:
            close_abandoned_sockets(exc)
            error = tls_refusal(addr, exc)
            if error is not None:
                raise error from exc
            self._set_state(
                "disconnected",
                f"broker {addr.host}:{addr.port} unreachable ({describe_error(exc)}); results are queued in the outbox",
            )
            return False, False

    def stop(self, flush_timeout: float = 5.0) -> None:
        """Flush what can be sent within ``flush_timeout`` s, publish ``offline``, disconnect.

        Messages still unacknowledged stay in the outbox for the next run. Idempotent.
        """
        if self._closing or not self._threads:
            return
        deadline = time.monotonic() + flush_timeout
        while self._connected.is_set() and len(self.outbox) and time.monotonic() < deadline:
            self._kick()
            time.sleep(0.02)
        self._stop_publishing.set()
        self._kick()
        if self._connected.is_set():
            self._publishing_done.wait(max(0.5, deadline - time.monotonic()))
            info = self._client.publish(self.topics.status, b"offline", qos=1, retain=True)
            info.wait_for_publish(max(0.5, deadline - time.monotonic()))
            if not info.is_published():
                log.warning("could not publish 'offline' before stopping; the broker will send the last will")
        self._closing = True
        self.outbox.before_commit = None
        self._client.disconnect()
        self._threads[0].join(timeout=5)
        self._stop_network.set()
        if join_bounded(self._threads[0], STOP_JOIN_TIMEOUT, "the MQTT network thread"):
            with self._sender.io:  # the network thread has ended: its acknowledgements are ours now
                self._sender.flush()
        close_sockets(self._client, self._wake_pair, self._sender.io)
        left = len(self.outbox)
        if left:
            log.warning("%s results are still in the outbox %s; the next run sends them", left, self.outbox.path)
        self._set_state("stopped", f"publisher stopped; {left} messages left in the outbox")

    @property
    def connected(self) -> bool:
        """True while a CONNACK-accepted session is up."""
        return self._connected.is_set()

    def enqueue(self, topic: str, payload: bytes, qos: Optional[int] = None) -> int:
        """Store a message in the outbox and wake the network thread; the outbox commits it within
        a few milliseconds (its group commit), after which it survives a crash.

        Never waits for the network or the disk. Returns the outbox sequence number.
        """
        message = self.outbox.stage(topic, payload, self.config.qos if qos is None else qos)
        self._sender.add(message)
        sending = self._connected.is_set() and not self._stop_publishing.is_set()
        rc = self._sender.send_now() if sending else None  # sent on this thread when the connection is free
        if rc is None and self._sleeping:  # one wake-up per wait: later results find the thread awake
            self._sleeping = False
            self._kick()
        elif rc is not None and rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._kick()  # more to write, or the connection is lost: the network thread sees to it
        return message.seq

    def _read_before_commit(self) -> None:  # the outbox is about to write results: read PUBACKs first
        rc = self._sender.read_now() if self._connected.is_set() and not self._closing else None
        if rc is not None and rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._kick()  # the connection is lost: the network thread reconnects

    def _kick(self) -> None:
        """Wake the network thread from its wait on the sockets."""
        try:
            self._wake_pair[1].send(b"w")
        except OSError:  # BlockingIOError: a wake-up is already pending; else we are closing
            pass

    def publish_direct(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool:
        """Publish now, bypassing the outbox (status, stats, discovery); False when not connected."""
        if not self._connected.is_set():
            return False
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def _run_network(self) -> None:
        """The network thread's loop (run under :func:`supervised`, so it may start again)."""
        addr = self.address
        self._net_ident = threading.get_ident()
        need_connect = self._need_connect or self._client.socket() is None
        while not self._stop_network.is_set():
            self._need_connect = need_connect
            if need_connect:
                if self._closing:
                    return
                self._connack = None
                try:
                    with self._sender.io:
                        self._client.connect(addr.host, addr.port, self.config.keepalive)
                    need_connect = False
                except OSError as exc:  # includes ssl.SSLError and name resolution
                    close_abandoned_sockets(exc)
                    self._set_state(
                        "disconnected",
                        f"cannot reach broker {addr.host}:{addr.port}: {describe_error(exc)}; retrying with backoff",
                    )
                    with self._sender.io:
                        self._sender.flush()  # deletes what was acknowledged before the outage
                    self._stop_network.wait(self._backoff.next())
                    continue
            stopping = self._stop_publishing.is_set()
            sending = self._connected.is_set() and not stopping
            with self._sender.io:
                fresh = self._sender.fresh if sending else 0
                timeout = self._sender.step(sending=sending, stopping=stopping)
                if stopping:
                    self._publishing_done.set()  # acknowledged rows are deleted: stop() may go on
                rc = self._client.loop_write() if self._client.want_write() else MQTTErrorCode.MQTT_ERR_SUCCESS
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                rc = self._wait(timeout, fresh)
            while self._incoming:  # read by send_now() on another thread: handled here
                self._on_message(self._client, None, self._incoming.popleft())
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                if self._closing:
                    return
                need_connect = True
                self._stop_network.wait(self._backoff.next())

    def _wait(self, timeout: float, sent: int) -> MQTTErrorCode:
        """Wait as the sender plans (see OutboxSender.plan_wait), then do the network I/O; unless
        polling, enqueue() wakes us. ``sent``: how many fresh results the last step found."""
        timeout, listen = self._sender.plan_wait(time.monotonic(), sent, timeout)
        if not self._sender.polling:
            self._sleeping = True
            if self._sender.has_fresh and self._connected.is_set():  # enqueued before _sleeping was seen
                timeout = 0.0
        rc = self._pump(timeout, listen)
        self._sleeping = False
        return rc

    def _set_state(self, state: str, message: str) -> None:
        with self._lock:
            if state == self._state:
                log.debug("%s", message)
                return
            self._state = state
        (log.warning if state == "disconnected" else log.info)("%s", message)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._connack = reason_code
        addr = self.address
        if reason_code.is_failure:
            if not self._starting:  # at start-up, start() reports the refusal as an error instead
                what = "login" if getattr(reason_code, "value", None) in AUTH_CODES else "connection"
                self._set_state(
                    "disconnected",
                    f"broker {addr.host}:{addr.port} refused the {what}: {reason_code}; trying again later",
                )
            return
        self._watch.connected(time.monotonic())  # resets the reconnect delays unless clashing
        client.publish(self.topics.status, b"online", qos=1, retain=True)
        if self._model_payload is not None:
            client.publish(self.topics.model, self._model_payload, qos=1, retain=True)
        with self._lock:
            subs = list(self._subscriptions.items())
        for topic, (_handler, _limit, qos) in subs:
            client.subscribe(topic, qos)
        self._connected.set()
        for hook in list(self._connect_hooks):
            try:
                hook(self)
            except Exception:  # a hook must never take the connection down
                log.exception("connect hook %r failed", hook)
        self._set_state("connected", f"connected to broker {addr.host}:{addr.port} as {self.topics.base}")

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._connected.clear()
        self._disconnect_reason = getattr(reason_code, "value", None)
        warn_if_clashing(self._watch, self.address, self.topics.device, time.monotonic())
        if not (self._closing or self._starting):
            self._set_state(
                "disconnected",
                f"lost the broker {self.address.host}:{self.address.port} "
                f"({reason_code}); results are queued, reconnecting",
            )

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        refused = bool(getattr(reason_code, "is_failure", False))
        if refused:
            log.warning("broker refused message %s: %s", mid, reason_code)
        self._sender.acknowledged(mid, refused)  # the next step collects it

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if threading.get_ident() != self._net_ident:  # read by send_now(): handlers run on the network thread
            self._incoming.append(message)
            self._kick()
            return
        with self._lock:
            subs = dict(self._subscriptions)
        dispatch(subs, message)
