"""The gateway's background work, per process: periodic flushes and fire-and-forget calls.

One daemon thread flushes the prediction log, the shared stale cache and the shadow counts every
``SERVING_LOG_FLUSH_SECONDS`` (or sooner when woken by a full batch) and once more at exit.
``call_soon`` runs a function on a one-thread executor (outage hooks), so the response never
waits for them. The ``Background`` belongs to the process's ``gateway.Gateway``: a forked worker
gets a fresh one (nothing inherited), and ``Gateway.reset`` stops it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from django.db import connection

from .conf import setting

logger = logging.getLogger(__name__)


def _interval() -> float:
    return float(setting("SERVING_LOG_FLUSH_SECONDS") or 0)


class Background:
    """The flusher thread and the hook executor of one gateway."""

    def __init__(self, flushers: Sequence[Callable[..., object]]):
        self.flushers = tuple(flushers)
        self.lock = threading.Lock()
        self.wake_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.executor: ThreadPoolExecutor | None = None
        self.stopped = False
        self.used = False  # something was buffered: flush once more at exit

    def ensure_started(self) -> None:
        """Start the flusher thread (once; not while flushing is off)."""
        self.used = True
        thread = self.thread
        if (thread is not None and thread.is_alive()) or _interval() <= 0 or self.stopped:
            return
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(
                    target=self._run, name="serving-flusher", daemon=True
                )
                self.thread.start()

    def _run(self) -> None:
        while _interval() > 0 and not self.stopped:
            self.wake_event.wait(_interval())
            self.wake_event.clear()
            if self.stopped:
                return
            try:
                self.flush_all()
            except Exception:  # never let the thread die
                logger.exception("serving background flush failed")
            finally:
                connection.close()  # a few ms per flush; an idle thread holds no database session

    def flush_all(self, *, final: bool = False) -> None:
        for flush in self.flushers:
            try:
                flush(final=final)
            except Exception:
                logger.exception("flush %s failed", getattr(flush, "__qualname__", flush))
        if final:
            connection.close()

    def call_soon(self, fn: Callable[..., object], /, *args, **kwargs) -> Future | None:
        self.ensure_started()
        with self.lock:
            if self.executor is None:
                self.executor = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="serving-hooks"
                )
            executor = self.executor

        def run():
            try:
                return fn(*args, **kwargs)
            except Exception:
                logger.exception("background call %s failed", getattr(fn, "__qualname__", fn))
            finally:
                connection.close()

        return executor.submit(run)

    def drain(self, timeout: float = 10.0) -> None:
        executor = self.executor
        if executor is not None:
            executor.submit(lambda: None).result(timeout=timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the submitted calls and end the threads (``Gateway.reset``)."""
        self.drain(timeout)
        self.stopped = True
        self.wake_event.set()
        if self.executor is not None:
            self.executor.shutdown(wait=False)


def _current() -> Background:
    from .process import current

    return current().background


def ensure_started() -> None:
    """Start this process's flusher thread (once; again in a forked worker's fresh gateway)."""
    _current().ensure_started()


def wake() -> None:
    _current().wake_event.set()


def flush_all(*, final: bool = False) -> None:
    _current().flush_all(final=final)


def call_soon(fn: Callable[..., object], /, *args, **kwargs) -> Future | None:
    """Run ``fn`` on the background executor; errors are logged, never raised."""
    return _current().call_soon(fn, *args, **kwargs)


def drain(timeout: float = 10.0) -> None:
    """Wait for the calls submitted so far (tests, shutdown)."""
    _current().drain(timeout)
