"""Sending an outbox's messages through a paho client, in order, and deleting them once acknowledged.

:class:`OutboxSender` is the publishing half of :class:`~edge_agent.publishing.client.MqttPublisher`: the
frame loop hands it each committed message (:meth:`OutboxSender.add`), and the MQTT network
thread calls :meth:`OutboxSender.step` between two waits on the socket.
"""

from __future__ import annotations

import collections
from typing import Deque, Dict, List, Tuple

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

from edge_agent.publishing.outbox import Message, Outbox

IDLE_WAIT = 1.0  # s: the longest the network thread sleeps with nothing to do (the socket wakes it sooner)
FRESH_MAX = 10_000  # messages handed over in memory; past this the sender reads the outbox
_SENT = (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN)  # QoS>0: paho keeps it either way


class OutboxSender:
    """Hands the outbox's messages to ``client`` oldest first, at most ``window`` awaiting
    acknowledgement, and deletes each row when the broker acknowledges it (QoS 1/2) or when it
    was written to the socket (QoS 0).

    Thread use: :meth:`add` from any thread; every other method on the network thread only.
    """

    def __init__(self, outbox: Outbox, client: paho.Client, window: int = 100) -> None:
        self.outbox = outbox
        self.window = window
        self.refused = 0  # messages the broker refused with an MQTT 5 reason code (then deleted)
        self._client = client
        self._fresh: Deque[Message] = collections.deque()  # committed, not yet handed to paho
        self._fresh_overflow = False
        self._backlog = True  # start by sending what an earlier run left in the outbox
        self._acked: Deque[Tuple[int, bool]] = collections.deque()  # (mid, refused)
        self._inflight: Dict[int, int] = {}  # paho mid -> outbox seq
        self._done: List[int] = []  # acknowledged seqs, deleted in batches
        self._last_seq = 0  # highest seq handed to paho

    def add(self, message: Message) -> None:
        """Take a message just committed to the outbox, so it need not be read back."""
        if len(self._fresh) < FRESH_MAX:
            self._fresh.append(message)
        else:
            self._fresh_overflow = True  # read the outbox instead

    @property
    def has_fresh(self) -> bool:
        """Whether messages added with :meth:`add` wait to be sent."""
        return bool(self._fresh)

    def acknowledged(self, mid: int, refused: bool = False) -> None:
        """Record paho's ``on_publish`` for message ``mid``."""
        self._acked.append((mid, refused))

    def step(self, sending: bool, stopping: bool = False) -> float:
        """Collect acknowledgements, hand the next messages to paho when ``sending``, pass
        acknowledged rows to the outbox's group commit (which also checkpoints the outbox).
        Returns how long the caller may wait before the next step (s); ``stopping`` is kept for
        callers and changes nothing now that acknowledgements are handed over at every step."""
        inflight, done = self._inflight, self._done
        while self._acked:
            mid, refused = self._acked.popleft()
            seq = inflight.pop(mid, None)
            if seq is not None:
                done.append(seq)
                self.refused += refused
        room = self.window - len(inflight)
        for msg in self._next_batch(room) if sending and room > 0 else []:
            info = self._client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)
            if msg.qos == 0 and info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                done.append(msg.seq)  # at most once: handed to the network
            elif msg.qos > 0 and info.rc in _SENT:
                inflight[info.mid] = msg.seq  # paho resends it after a reconnect
            else:
                self._backlog = True  # not sent: read it (and what follows) from the outbox again
                break
            self._last_seq = msg.seq
        if done:  # in memory: the outbox's group commit deletes them (or never writes them)
            self.flush()
        if sending and len(inflight) < self.window and (self._fresh or self._backlog or self._fresh_overflow):
            return 0.0  # more to send
        return IDLE_WAIT

    def flush(self) -> None:
        """Hand the acknowledged rows to the outbox's next group commit."""
        if self._done:
            self.outbox.discard(self._done)
            self._done.clear()

    def _next_batch(self, room: int) -> List[Message]:
        """Up to ``room`` messages after the last one sent: from memory when caught up, else the outbox.

        Every committed message is either in ``_fresh`` or was committed before the last outbox
        read that came back short, so reading the outbox until it comes back short, then
        switching to ``_fresh`` (skipping what was already read) misses nothing.
        """
        if self._backlog or self._fresh_overflow:
            self._fresh_overflow = False
            rows = self.outbox.peek(self._last_seq, room)
            self._backlog = len(rows) == room
            return rows
        batch: List[Message] = []
        while self._fresh and len(batch) < room:
            msg = self._fresh.popleft()
            if msg.seq > self._last_seq:
                batch.append(msg)
        return batch
