"""A real paho subscriber for tests: records every message it receives, survives broker restarts."""

from __future__ import annotations

import json
import ssl
import threading
import time
import uuid
from typing import Any, Callable, List, Optional, Tuple

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


class Subscriber:
    """Subscribes to ``topic`` at QoS 1 with a persistent session (clean_session=False), so
    messages published while it reconnects after a broker restart are kept for it."""

    def __init__(
        self,
        host: str,
        port: int,
        topic: str = "#",
        *,
        ca_file: Optional[str] = None,
        username: Optional[str] = None,
        password: Optional[str] = None,
    ) -> None:
        self.messages: List[Tuple[str, bytes, bool]] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"test-sub-{uuid.uuid4().hex[:8]}", clean_session=False
        )
        self.client.reconnect_delay_set(1, 2)
        if username:
            self.client.username_pw_set(username, password)
        if ca_file:
            self.client.tls_set(ca_certs=ca_file, cert_reqs=ssl.CERT_REQUIRED)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, 1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port, 30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("test subscriber could not subscribe")

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
            self._cond.notify_all()

    def on(self, suffix: str) -> List[bytes]:
        """Payloads received on topics ending with ``suffix``, in arrival order."""
        with self._cond:
            return [p for t, p, _r in self.messages if t.endswith(suffix)]

    def json_on(self, suffix: str) -> List[Any]:
        return [json.loads(p) for p in self.on(suffix)]

    def wait_until(self, predicate: Callable[[Subscriber], bool], timeout: float = 60.0) -> bool:
        """Wait (bounded, for liveness only) until ``predicate(self)`` holds; return whether it did."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
            return True

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def classification_ids(sub: Subscriber) -> List[str]:
    """The message ids of every classification payload received (duplicates included)."""
    return [p["id"] for p in sub.json_on("/classification")]
