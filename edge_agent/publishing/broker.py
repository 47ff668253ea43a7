"""The paho client's set-up, reconnect delays and connection-error wording.

Broker URLs and topic names are part of the release contract (:mod:`release_contract.topics`)."""

from __future__ import annotations

import logging
import random
import select
import socket
import ssl
import threading
from typing import Any, Callable, Dict, Optional, Tuple

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edge_agent.config import MqttConfig
from edge_agent.errors import ConfigError, PublishError
from release_contract.topics import BrokerAddress


class Backoff:
    """Exponential reconnect delays: ``initial * 2**n`` capped at ``cap``, each drawn
    uniformly from [delay/2, delay] so a fleet does not reconnect in lockstep."""

    def __init__(self, initial: float = 0.5, cap: float = 30.0, rng: Optional[random.Random] = None) -> None:
        self.initial, self.cap = initial, cap
        self._attempt = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    def next(self) -> float:
        """The delay in seconds before the next attempt."""
        delay = min(self.cap, self.initial * (2 ** min(self._attempt, 30)))
        self._attempt += 1
        return self._rng.uniform(delay / 2, delay)

    def reset(self) -> None:
        self._attempt = 0


def describe_error(exc: BaseException) -> str:
    """A short reason for a connection failure, for one-line messages."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failure ({exc.reason or exc})"
    if isinstance(exc, socket.gaierror):
        return f"host name not resolved ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def make_paho_client(cfg: MqttConfig, addr: BrokerAddress, device_id: str, will_topic: str, window: int) -> paho.Client:
    """A paho client for ``cfg``: protocol, client id, credentials (``cfg`` over the URL's), TLS files,
    the ``offline`` last will on ``will_topic`` and ``window`` messages in flight. Callbacks are the
    caller's to set. Raises ConfigError for unusable TLS files or TLS files without ``mqtts://``."""
    v5 = cfg.protocol == "5"
    client_id = cfg.client_id or f"edge-agent-{device_id}"
    if v5:  # clean_session is a 3.1.1 notion; MQTT 5 sets clean_start when connecting
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    else:
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311, clean_session=True
        )
    user = cfg.username if cfg.username is not None else addr.username
    password = cfg.password if cfg.password is not None else addr.password
    if user is not None:
        client.username_pw_set(user, password)
    if addr.tls:
        try:
            client.tls_set(
                ca_certs=str(cfg.ca_file) if cfg.ca_file else None,
                certfile=str(cfg.cert_file) if cfg.cert_file else None,
                keyfile=str(cfg.key_file) if cfg.key_file else None,
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"mqtt TLS files cannot be loaded: {describe_error(exc)}") from exc
    elif cfg.ca_file or cfg.cert_file:
        raise ConfigError(f"mqtt.ca_file/cert_file are set but {cfg.url!r} is not mqtts://")
    client.will_set(will_topic, b"offline", qos=1, retain=True)
    client.max_inflight_messages_set(window)
    return client


def pump(
    client: paho.Client, wake: socket.socket, timeout: float, io: threading.Lock, listen: bool = True
) -> MQTTErrorCode:
    """One round of paho's external-loop I/O: wait up to ``timeout`` s for the ``wake`` socket
    (written to when another thread queued a packet) or, when ``listen``, the broker's socket; then,
    holding ``io``, read what the broker sent, write and run paho's housekeeping. Without
    ``listen`` the broker's packets are read only after the wait, whatever ended it. Returns paho's
    result code (``MQTT_ERR_NO_CONN`` without a socket)."""
    sock = client.socket()
    if sock is None:
        return MQTTErrorCode.MQTT_ERR_NO_CONN
    pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0  # already decrypted bytes
    try:
        readable, _, _ = select.select(
            [sock, wake] if listen else [wake], [sock] if client.want_write() else [], [], 0 if pending else timeout
        )
    except (OSError, ValueError):  # the socket was closed under us
        return MQTTErrorCode.MQTT_ERR_CONN_LOST
    if wake in readable:
        try:
            wake.recv(4096)
        except BlockingIOError:
            pass
    with io:
        if pending or not listen or sock in readable:
            rc = client.loop_read()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return rc
        if client.want_write():
            rc = client.loop_write()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return rc
        return client.loop_misc()


log = logging.getLogger(__name__)

#: handler for an incoming control message: (topic, payload bytes) -> None
MessageHandler = Callable[[str, bytes], None]


def dispatch(subscriptions: Dict[str, Tuple[MessageHandler, int, int]], message: paho.MQTTMessage) -> None:
    """Hand an incoming message to the handler of every matching subscription (pattern -> (handler,
    byte limit, qos)). Oversized messages are dropped with a warning; a handler's exception is logged,
    never raised: malformed input must never stop the agent."""
    try:
        topic = message.topic
    except UnicodeDecodeError:
        log.warning("dropped a message whose topic is not UTF-8")
        return
    for pattern, (handler, limit, _qos) in subscriptions.items():
        if not paho.topic_matches_sub(pattern, topic):
            continue
        if len(message.payload) > limit:
            log.warning(
                "dropped a %s-byte message on %s: larger than the %s-byte limit", len(message.payload), topic, limit
            )
            continue
        try:
            handler(topic, bytes(message.payload))
        except Exception:
            log.exception("handler for %s failed on a message; message ignored", topic)


AUTH_CODES = {4, 5, 134, 135}  # 3.1.1 bad credentials / not authorized, and their MQTT 5 codes
KEEPALIVE_TIMEOUT = 141  # paho's reason code when it gave up waiting for the broker


def refusal(addr: BrokerAddress, connack: Any, closed: bool) -> Optional[PublishError]:
    """The error for a first connection the broker refused (``connack`` a failure reason code) or
    closed before answering CONNECT (``closed``); None when neither happened."""
    where = f"broker {addr.host}:{addr.port}"
    if connack is not None and getattr(connack, "is_failure", False):
        if getattr(connack, "value", None) in AUTH_CODES:
            return PublishError(f"{where} refused the login: {connack}; check --mqtt-user and the password")
        return PublishError(f"{where} refused the connection: {connack}")
    if closed:
        hint = (
            "it may require a client certificate (--mqtt-cert/--mqtt-key) or refuse this one"
            if addr.tls
            else "if it is a TLS port, use mqtts://"
        )
        return PublishError(f"{where} closed the connection without answering the MQTT CONNECT: {hint}")
    return None


def close_abandoned_sockets(exc: BaseException) -> None:
    """Close the sockets a failed ``connect()`` left open in its frames: paho does not close a TLS
    socket whose handshake failed, and it would otherwise linger until garbage collection."""
    tb = exc.__traceback__
    while tb is not None:
        for value in list(tb.tb_frame.f_locals.values()):
            if isinstance(value, socket.socket) and value.fileno() != -1:
                value.close()
        tb = tb.tb_next


def tls_refusal(addr: BrokerAddress, exc: OSError) -> Optional[PublishError]:
    """The error for an ``mqtts://`` connection the server reset during the TLS handshake (a plain
    MQTT port does that), else None."""
    if addr.tls and isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return PublishError(
            f"TLS connection to {addr.host}:{addr.port} failed: the server closed it during the handshake "
            f"({describe_error(exc)}); is it a plain MQTT port? use mqtt:// or the broker's TLS port"
        )
    return None


class SessionWatch:
    """Notices a broker that keeps closing the connection soon after accepting it: the sign of a
    second client with the same client id (each connection takes the session over from the
    other, so both flap between online and offline), and sets the reconnect delays for it.

    :meth:`lost` returns True once per streak, when ``limit`` connections in a row lasted less
    than ``short`` seconds; from then on ``backoff`` grows to ``clash_cap`` seconds. Short-lived
    connections do not reset ``backoff``; a connection that lasts ``short`` seconds restores it."""

    def __init__(self, backoff: Backoff, short: float = 5.0, limit: int = 3, clash_cap: float = 300.0) -> None:
        self.backoff, self.short, self.limit, self.clash_cap = backoff, short, limit, clash_cap
        self.normal_cap = backoff.cap
        self.short_lived = 0
        self._since: Optional[float] = None

    def connected(self, now: float) -> None:
        """A CONNACK accepted the connection at ``now`` (monotonic seconds)."""
        self._since = now
        if self.short_lived == 0:
            self.backoff.reset()

    def lost(self, now: float) -> bool:
        """The connection ended at ``now``; True when this makes a clash likely (first time only)."""
        if self._since is None:
            return False
        lived, self._since = now - self._since, None
        if lived >= self.short:
            self.short_lived = 0
            self.backoff.cap = self.normal_cap
            return False
        self.short_lived += 1
        if self.short_lived >= self.limit:
            self.backoff.cap = max(self.normal_cap, self.clash_cap)
        return self.short_lived == self.limit


def warn_if_clashing(watch: SessionWatch, address: BrokerAddress, device: str, now: float) -> None:
    """Tell :meth:`SessionWatch.lost` that the connection ended at ``now``; say so once when it
    looks like another client uses this device's client id (the delays now grow to 5 minutes)."""
    if watch.lost(now):
        log.warning(
            "broker %s:%s closed the connection %s times within %.0f s of accepting it: another client "
            "probably uses the same client id (two agents with --device-id %s?); give each a unique "
            "device id. Waiting up to 5 minutes between attempts",
            address.host,
            address.port,
            watch.limit,
            watch.short,
            device,
        )


def close_sockets(
    client: paho.Client, wake_pair: Tuple[socket.socket, socket.socket], io: Optional[threading.Lock] = None
) -> None:
    """Close paho's socket (paho closes it only when garbage collected) and the wake-up pair, now;
    with ``io``, once no other thread is using the socket (waiting at most a second for it)."""
    locked = io is not None and io.acquire(timeout=1.0)
    try:
        reset = getattr(client, "_reset_sockets", None)
        if reset is not None:
            reset()
        for sock in wake_pair:
            sock.close()
    finally:
        if locked and io is not None:
            io.release()
