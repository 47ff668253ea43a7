"""Supervised worker threads: a worker that fails unexpectedly is logged and restarted, and one
that keeps failing is reported, so the agent never runs on without it.

Each restart waits a little longer (0.5 s doubling to 30 s). More than ``max_failures`` failures
within ``window`` seconds call ``on_fatal(message)`` once and end the thread: the service then
stops the agent with a non-zero exit.
"""

from __future__ import annotations

import logging
import threading
import time
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
