"""Sending an outbox's messages through a paho client, in order, and deleting them once acknowledged.

:class:`OutboxSender` is the publishing half of :class:`~edge_agent.publishing.client.MqttPublisher`: the
frame loop hands it each committed message (:meth:`OutboxSender.add`) and sends it at once
itself when the connection is free (:meth:`OutboxSender.send_now`); otherwise the MQTT network
thread does, calling :meth:`OutboxSender.step` between two waits on the socket.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Callable, Deque, Dict, List, Optional, Tuple

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

from edge_agent.publishing.outbox import Message, Outbox

IDLE_WAIT = 1.0  # s: the longest the network thread sleeps with nothing to do (the socket wakes it sooner)
FRESH_MAX = 10_000  # messages handed over in memory; past this the sender reads the outbox
# s: between polls, the network thread does not wake for acknowledgements until this long after
# the oldest was sent; those that arrive sooner are read in the wake-up that sends the next result.
# Short: under load a longer delay pushed many past the outbox's commit window (written to disk
# and deleted again, which costs more than the wake-ups it saved).
ACK_DELAY = 0.001
# s: while messages come faster than one per COALESCE, the network thread polls for them every
# COALESCE instead of being woken for each (a burst costs one wake-up per COALESCE); slower ones
# each wake it at once. send_now() sends at most DIRECT_PER_COALESCE messages per COALESCE itself:
# the frame loop often hands on two results at once (one sent directly costs less than waking
# the network thread for it), while thousands a second are cheaper sent in the network thread's
# batches.
COALESCE = 0.002
DIRECT_PER_COALESCE = 2
# s: for this long after send_now() sent, the network thread leaves the broker's packets to the
# next send_now() and to the outbox's committer, which reads them just before a commit is due
# (Outbox.before_commit), instead of waking for each PUBACK; then it listens again.
DIRECT_QUIET = 0.2
_SENT = (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN)  # QoS>0: paho keeps it either way


class OutboxSender:
    """Hands the outbox's messages to ``client`` oldest first, at most ``window`` awaiting
    acknowledgement, and deletes each row when the broker acknowledges it (QoS 1/2) or when it
    was written to the socket (QoS 0).

    Thread use: :meth:`add` and :meth:`send_now` from any thread; every other method with
    :attr:`io` held (the network thread holds it for all its I/O on the client, too).
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
        self._inflight: Dict[int, Tuple[int, float]] = {}  # paho mid -> (outbox seq, monotonic time sent)
        self._done: List[int] = []  # acknowledged seqs, deleted in batches
        self._last_seq = 0  # highest seq handed to paho
        self._oldest_sent = 0.0  # monotonic time the oldest message awaiting acknowledgement was sent
        self._fresh_at = 0.0  # monotonic time a step last found fresh messages
        self._step_at = 0.0  # monotonic time the last step began (about when the thread woke)
        self.polling = False  # the network thread polls every COALESCE rather than waiting to be woken
        self.io = threading.Lock()  # one thread at a time uses the client's socket and this sender
        self.io_thread = 0  # the thread in send_now() (paho's write requests from it need no wake-up)
        # monotonic times of send_now()'s last DIRECT_PER_COALESCE sends, oldest first
        self._direct_times: Deque[float] = collections.deque([0.0] * DIRECT_PER_COALESCE, DIRECT_PER_COALESCE)

    @property
    def direct_at(self) -> float:
        """Monotonic time send_now() last sent (0.0 before the first)."""
        return self._direct_times[-1]

    def send_now(self) -> Optional[MQTTErrorCode]:
        """On the thread that has just added a message, when no other thread is using the client:
        read what the broker sent (acknowledgements, mostly), send what is fresh and write it out,
        all now, sparing the network thread two or three wake-ups a result. Returns paho's result
        code (an error means the connection is lost: the network thread reconnects), or None when
        it left the sending to the network thread: another thread holds :attr:`io`, the network
        thread is polling, or send_now() sent DIRECT_PER_COALESCE times in the last COALESCE
        (messages that come that fast are cheaper sent in batches: the caller wakes the network
        thread as before)."""
        if self.polling or time.monotonic() - self._direct_times[0] < COALESCE:
            return None
        return self._with_io(self._send)

    def _send(self) -> MQTTErrorCode:
        client = self._client
        rc = client.loop_read()  # non-blocking socket: reads what has arrived, if anything
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.step(sending=True)
            if client.want_write():
                rc = client.loop_write()
        self._direct_times.append(time.monotonic())  # drops the oldest
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and client.want_write():
            return MQTTErrorCode.MQTT_ERR_AGAIN  # the socket took only part: the network thread goes on
        return rc

    def read_now(self) -> Optional[MQTTErrorCode]:
        """Read what the broker sent and hand the acknowledged rows to the outbox, now, when no other
        thread is using the client (else None). The outbox's committer calls it (through
        :attr:`Outbox.before_commit`) before writing results that are due: on a busy machine their
        PUBACKs are often in the socket already, the network thread not yet scheduled to read them."""
        return self._with_io(self._read)

    def _read(self) -> MQTTErrorCode:
        rc = self._client.loop_read()
        self.step(sending=False)
        return rc

    def _with_io(self, work: Callable[[], MQTTErrorCode]) -> Optional[MQTTErrorCode]:
        """``work()`` on this thread with :attr:`io` held, or None when another thread holds it."""
        if not self.io.acquire(blocking=False):
            return None
        self.io_thread = threading.get_ident()
        try:
            return work()
        finally:
            self.io_thread = 0
            self.io.release()

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

    @property
    def fresh(self) -> int:
        """How many messages added with :meth:`add` wait to be sent."""
        return len(self._fresh)

    def plan_wait(self, now: float, sent: int, timeout: float) -> Tuple[float, bool]:
        """How the network thread waits after a step that found ``sent`` fresh messages and
        returned ``timeout``: (the longest wait in s, whether the broker's packets end it).

        Polling (:attr:`polling`) starts when two steps less than COALESCE apart find fresh
        messages and goes on while each poll finds more than one (with fewer, a wake-up per message
        costs no more, and sends sooner). With fewer than half the window awaiting acknowledgement,
        their PUBACKs are read in the next wake-up, the thread waking for them only ``ACK_DELAY``
        (polling: COALESCE) after the oldest was sent; incoming messages wait as long. (A broker
        with Nagle's algorithm on, Mosquitto's default, holds all but the first PUBACK of a burst
        until our next packet carries the TCP acknowledgement: a poll's PUBACKs mostly come just
        after the next poll sent its results.) Unless polling, for DIRECT_QUIET after send_now()
        sent the thread does not listen at all: the next send_now() reads the broker's packets, or
        the outbox's committer just before a commit (:meth:`read_now`)."""
        start = self._step_at
        self.polling = sent > 1 if self.polling else sent > 0 and start - self._fresh_at < COALESCE
        if sent:
            self._fresh_at = start
        quiet = self.direct_at + DIRECT_QUIET - now
        if quiet > 0 and not self.polling:  # the next send_now() or a commit reads them
            return min(timeout, quiet), False
        inflight = len(self._inflight)
        due = self._oldest_sent + (COALESCE if self.polling else ACK_DELAY)
        listen = not inflight or inflight * 2 >= self.window or now >= due
        if not listen:
            timeout = min(timeout, due - now)
        # polls COALESCE apart from wake-up to wake-up, however long each took
        return (min(timeout, max(0.0, start + COALESCE - now)) if self.polling else timeout), listen

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
            sent = inflight.pop(mid, None)
            if sent is not None:
                done.append(sent[0])
                self.refused += refused
        room = self.window - len(inflight)
        now = self._step_at = time.monotonic()
        for msg in self._next_batch(room) if sending and room > 0 else []:
            info = self._client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)
            if msg.qos == 0 and info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                done.append(msg.seq)  # at most once: handed to the network
            elif msg.qos > 0 and info.rc in _SENT:
                inflight[info.mid] = (msg.seq, now)  # paho resends it after a reconnect
            else:
                self._backlog = True  # not sent: read it (and what follows) from the outbox again
                break
            self._last_seq = msg.seq
        if inflight:  # the oldest in flight (dicts keep insertion order) sets when to read acknowledgements
            self._oldest_sent = next(iter(inflight.values()))[1]
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
