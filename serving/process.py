"""This process's gateway, for the modules the gateway is made of.

``gateway.Gateway`` composes serving's parts (access, cache, loader, log, router, shadow ...), so
they cannot import it back without a cycle (``tests/test_import_graph.py``). They ask this
module instead, and ``serving.gateway`` registers its class here when it is imported (which
``ServingConfig.ready`` makes sure of, docs/architecture.md §3).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

_factory: Callable[..., Any] | None = None
_gateway: Any = None
_lock = threading.Lock()


def register(factory: Callable[..., Any]) -> None:
    global _factory
    _factory = factory


def _make(**collaborators: Any) -> Any:
    if _factory is None:
        raise RuntimeError(
            "serving.gateway is not loaded: call django.setup() first (ServingConfig.ready "
            "imports it)"
        )
    return _factory(**collaborators)


def current() -> Any:
    """This process's gateway (made on first use; a fresh one in a forked worker)."""
    gateway = _gateway
    if gateway is not None and gateway.pid == os.getpid():
        return gateway
    return _make_current()


def _make_current() -> Any:
    global _gateway, _lock
    if _gateway is not None and _gateway.pid != os.getpid():
        _lock = threading.Lock()  # the parent's may have been held at the fork
    with _lock:
        if _gateway is None:
            _gateway = _make()
        elif _gateway.pid != os.getpid():
            _gateway = _gateway.forked()
        return _gateway


def flush_at_exit() -> None:
    """What a gateway that served still holds goes to the spool (a console process: nothing)."""
    gateway = _gateway
    if gateway is not None and gateway.pid == os.getpid() and gateway.background.used:
        gateway.background.flush_all(final=True)


def reset(**collaborators: Any) -> Any:
    """Stop this process's gateway and start a cold one, given ``collaborators`` (tests)."""
    global _gateway
    old = _gateway
    if old is not None and old.pid == os.getpid():
        old.stop()  # what it still scores or flushes goes to it, not to the new one
    with _lock:
        _gateway = _make(**collaborators)
    return _gateway
