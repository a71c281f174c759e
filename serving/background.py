"""The gateway's background work, per process: periodic flushes and fire-and-forget calls.

One daemon thread flushes the prediction log and the shared stale cache every
``SERVING_LOG_FLUSH_SECONDS`` (or sooner when woken by a full batch) and once more at exit.
``call_soon`` runs a function on a one-thread executor (outage hooks), so the response never
waits for them. Everything restarts after a fork (gunicorn workers).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from django.db import connection

from .conf import setting

logger = logging.getLogger(__name__)

_flushers: list[Callable[..., object]] = []
_state_lock = threading.Lock()
_pid: int | None = None
_wake = threading.Event()
_thread: threading.Thread | None = None
_executor: ThreadPoolExecutor | None = None
_atexit_registered = False


def register_flusher(flush: Callable[..., object]) -> None:
    if flush not in _flushers:
        _flushers.append(flush)


def _interval() -> float:
    return float(setting("SERVING_LOG_FLUSH_SECONDS") or 0)


def ensure_started() -> None:
    """Start the flusher thread in this process (once; again after a fork)."""
    global _pid, _thread, _executor, _atexit_registered
    if _pid == os.getpid() and ((_thread is not None and _thread.is_alive()) or _interval() <= 0):
        return
    with _state_lock:
        if _pid != os.getpid():  # a fresh process (or a forked worker): nothing is inherited
            _pid = os.getpid()
            _executor = None
            _thread = None
        if not _atexit_registered:
            atexit.register(flush_all, final=True)
            _atexit_registered = True
        if _interval() > 0 and (_thread is None or not _thread.is_alive()):
            _thread = threading.Thread(target=_run, name="serving-flusher", daemon=True)
            _thread.start()


def wake() -> None:
    _wake.set()


def _run() -> None:
    while _interval() > 0:
        _wake.wait(_interval())
        _wake.clear()
        try:
            flush_all()
        except Exception:  # never let the thread die
            logger.exception("serving background flush failed")
        finally:
            connection.close()  # a few ms per flush; an idle thread holds no database session


def flush_all(*, final: bool = False) -> None:
    for flush in list(_flushers):
        try:
            flush(final=final)
        except Exception:
            logger.exception("flush %s failed", getattr(flush, "__qualname__", flush))
    if final:
        connection.close()


def call_soon(fn: Callable[..., object], /, *args, **kwargs) -> Future | None:
    """Run ``fn`` on the background executor; errors are logged, never raised."""
    global _executor
    ensure_started()
    with _state_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="serving-hooks")
        executor = _executor

    def run():
        try:
            return fn(*args, **kwargs)
        except Exception:
            logger.exception("background call %s failed", getattr(fn, "__qualname__", fn))
        finally:
            connection.close()

    return executor.submit(run)


def drain(timeout: float = 10.0) -> None:
    """Wait for the calls submitted so far (tests, shutdown)."""
    executor = _executor
    if executor is not None:
        executor.submit(lambda: None).result(timeout=timeout)
