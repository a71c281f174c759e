"""Races for the tests that pin "exactly once" under concurrency (PostgreSQL row locks).

``race(target, n)`` runs ``target(i)`` for ``i`` in ``range(n)``, one thread each, released
together by a barrier so the calls really overlap; each thread closes its own database
connection when done. It returns what the calls returned and what they raised, so a test
asserts on both (an exception is never lost in a thread).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from django.db import connections


class Outcomes(NamedTuple):
    results: list[Any]  # the return values of the calls that returned, in finishing order
    errors: list[BaseException]  # what the others raised


def race(target: Callable[[int], Any], n: int) -> Outcomes:
    barrier = threading.Barrier(n)
    results: list[Any] = []
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            results.append(target(i))
        except BaseException as exc:  # collected: the test names any failure
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Outcomes(results, errors)
