"""Supervised worker threads: a worker that fails unexpectedly is logged and restarted, and one
that keeps failing is reported, so the agent never runs on without it.

Each restart waits a little longer (0.5 s doubling to 30 s). More than ``max_failures`` failures
within ``window`` seconds call ``on_fatal(message)`` once and end the thread: the service then
stops the agent with a non-zero exit.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from typing import Callable, List, Optional

from edge_agent.publishing.broker import Backoff

log = logging.getLogger(__name__)

Fatal = Callable[[str], None]


def supervised(
    name: str,
    work: Callable[[], None],
    stop: threading.Event,
    on_fatal: Optional[Fatal] = None,
    *,
    max_failures: int = 5,
    window: float = 60.0,
    backoff: Optional[Backoff] = None,
) -> Callable[[], None]:
    """A thread target that runs ``work()`` until it returns or ``stop`` is set, restarting it
    after an unexpected exception (logged in one line, the traceback at debug level)."""
    delays = backoff or Backoff()

    def run() -> None:
        failures: List[float] = []
        while not stop.is_set():
            try:
                work()
                return
            except Exception as exc:  # the point of a supervisor: nothing ends the worker silently
                now = time.monotonic()
                failures = [t for t in failures if now - t < window] + [now]
                log.debug("%s failed", name, exc_info=True)
                if len(failures) > max_failures:
                    message = f"the {name} thread failed {len(failures)} times in {window:.0f} s, last: {exc!r}"
                    log.error("%s; stopping", message)
                    if on_fatal is not None:
                        on_fatal(message)
                    return
                log.error("the %s thread failed (%r); restarting it", name, exc)
                stop.wait(delays.next())

    return run


STOP_JOIN_TIMEOUT = 10.0  # s a stopping worker thread gets after it was told to stop


def join_bounded(thread: threading.Thread, timeout: float, what: str) -> bool:
    """Join ``thread`` for at most ``timeout`` s; True when it ended. A thread still running is
    logged once with where it is (its innermost frames), and left behind: the workers are daemon
    threads, so stopping the agent never hangs on one (systemd would have to kill it)."""
    thread.join(timeout)
    if not thread.is_alive():
        return True
    frame = sys._current_frames().get(thread.ident or -1)
    where = (
        " <- ".join(reversed([f"{f.name} ({f.filename}:{f.lineno})" for f in traceback.extract_stack(frame)[-4:]]))
        if frame
        else "?"
    )
    log.warning("%s did not stop within %.0f s; stopping without it (it was at %s)", what, timeout, where)
    return False
