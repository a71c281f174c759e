"""How deep the suite's exhaustive proofs go: CI's depth by default, the deep one on demand.

``TEST_DEPTH=deep`` (e.g. ``TEST_DEPTH=deep ./bin/test tests/security``) runs the proofs as they
were written before the CI budget trimmed them: every example count at its deep value and the
access matrix's HTTP requests for every actor on every admin page. CI (``TEST_DEPTH`` unset or
``ci``) runs the same tests with fewer generated examples and a sample of actors per admin page,
whose every decision is still checked without HTTP (``tests/security/test_access_matrix.py``).
Each test that reads this names both figures where it uses them.
"""

from __future__ import annotations

import os

DEPTHS = ("ci", "deep")
DEPTH = os.environ.get("TEST_DEPTH", "ci").strip().lower() or "ci"
if DEPTH not in DEPTHS:
    raise RuntimeError(f"TEST_DEPTH must be one of {', '.join(DEPTHS)}, not {DEPTH!r}")
DEEP = DEPTH == "deep"


def examples(ci: int, deep: int) -> int:
    """The number of generated examples (or steps) for this run's depth."""
    return deep if DEEP else ci
