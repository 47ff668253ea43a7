"""Bounded waits for reads that could otherwise hang: a FIFO, a hung network mount, a server that drips bytes.

* :func:`call_with_deadline` runs a blocking call (an ``open`` on a mount that stopped
  answering) on a daemon thread and gives up after a deadline. A call stuck in the kernel
  cannot be interrupted, so its thread is abandoned; it ends with the process.
* :class:`DeadlineReader` wraps a stream so that each read waits at most ``timeout`` seconds.
* :func:`read_capped` reads a small document whole: at most ``cap`` bytes within ``seconds``.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import IO, Callable, List, Protocol, TypeVar, Union

T = TypeVar("T")
CHUNK = 64 * 1024


class Readable(Protocol):
    """A stream of bytes: a file, an HTTP response, a :class:`DeadlineReader`."""

    def read(self, n: int = -1, /) -> bytes: ...


def call_with_deadline(fn: Callable[[], T], seconds: float, what: str) -> T:
    """Return ``fn()``, or raise :class:`TimeoutError` naming ``what`` when it takes longer than ``seconds``.

    Exceptions of ``fn`` are raised in the caller.
    """
    box: List[Union[T, BaseException]] = []
    done = threading.Event()

    def run() -> None:
        try:
            box.append(fn())
        except BaseException as exc:  # handed to the caller
            box.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name="deadline", daemon=True).start()
    if not done.wait(seconds):
        raise TimeoutError(f"{what} did not answer within {seconds:g} s (a hung mount?)")
    result = box[0]
    if isinstance(result, BaseException):
        raise result
    return result


class DeadlineReader:
    """A read-only stream whose reads wait at most ``timeout`` seconds for data (then TimeoutError).

    A daemon thread reads ``raw`` ahead, a few chunks at most; it closes ``raw`` when it ends.
    """

    def __init__(self, raw: IO[bytes], timeout: float, what: str) -> None:
        self._raw = raw
        self._timeout = timeout
        self._what = what
        self._queue: queue.Queue[Union[bytes, BaseException]] = queue.Queue(maxsize=4)
        self._buf = b""
        self._eof = False
        self._closed = threading.Event()
        threading.Thread(target=self._pump, name="deadline-reader", daemon=True).start()

    def _pump(self) -> None:
        try:
            while not self._closed.is_set():
                data = self._raw.read(CHUNK)
                self._put(data)
                if not data:
                    return
        except Exception as exc:  # handed to the reader
            self._put(exc)
        finally:
            self._raw.close()

    def _put(self, item: Union[bytes, BaseException]) -> None:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def read1(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all that is buffered for -1); b"" at the end of the stream."""
        if not self._buf and not self._eof:
            try:
                item = self._queue.get(timeout=self._timeout)
            except queue.Empty:
                raise TimeoutError(f"{self._what}: no data for {self._timeout:g} s (a hung mount?)") from None
            if isinstance(item, BaseException):
                raise item
            self._eof = not item
            self._buf = item
        size = len(self._buf) if n < 0 else n
        out, self._buf = self._buf[:size], self._buf[size:]
        return out

    def read(self, n: int = -1) -> bytes:
        """``n`` bytes (everything for -1), fewer only at the end of the stream."""
        parts: List[bytes] = []
        have = 0
        while n < 0 or have < n:
            chunk = self.read1(-1 if n < 0 else n - have)
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
        return b"".join(parts)

    def close(self) -> None:
        """Stop reading ahead; the thread closes the underlying stream when its read returns."""
        self._closed.set()

    def __enter__(self) -> DeadlineReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_capped(fh: Readable, cap: int, seconds: float, what: str) -> bytes:
    """Read all of ``fh``: at most ``cap`` bytes, within ``seconds`` in total.

    A server that sends one byte every few seconds never trips a read timeout; this
    deadline stops it. Raises ValueError past ``cap`` and TimeoutError past ``seconds``
    (checked after each read, so a read blocked in the socket adds its own read timeout).
    """
    deadline = time.monotonic() + seconds
    read = getattr(fh, "read1", fh.read)
    parts: List[bytes] = []
    have = 0
    while True:
        chunk = read(CHUNK)
        if not chunk:
            return b"".join(parts)
        have += len(chunk)
        if have > cap:
            raise ValueError(f"{what} is larger than {cap} bytes: refusing it")
        parts.append(chunk)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: {have} bytes after {seconds:g} s, too slow: giving up")
