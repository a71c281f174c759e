"""Refuses guessable secret keys: the key signs sessions, CSRF tokens and password resets."""

from __future__ import annotations

import math
from collections import Counter

MIN_LENGTH = 50
# Estimated from the key's own character frequencies: 50 random characters of Django's
# alphabet carry ~240 bits, 64 hex digits ~240; "a" * 50 carries 0 and "abcde" * 10 ~116.
MIN_ENTROPY_BITS = 160
INSECURE_PREFIX = "django-insecure-"


def entropy_bits(key: str) -> float:
    """Shannon entropy of the key's character distribution times its length (an upper bound)."""
    if not key:
        return 0.0
    counts = Counter(key)
    per_char = -sum(n / len(key) * math.log2(n / len(key)) for n in counts.values())
    return max(0.0, per_char * len(key))


def weak_key_reason(key: str) -> str | None:
    """Why ``key`` is unfit for production, or None. The same rules as Django's
    ``security.W009`` (length, distinct characters, the ``django-insecure-`` prefix), stricter
    on randomness."""
    if key.startswith(INSECURE_PREFIX):
        return f"it starts with '{INSECURE_PREFIX}' (a development key)"
    if len(key) < MIN_LENGTH:
        return f"it has {len(key)} characters, fewer than {MIN_LENGTH}"
    bits = entropy_bits(key)
    if bits < MIN_ENTROPY_BITS:
        return (
            f"it is not random enough ({len(set(key))} distinct characters, about {bits:.0f} "
            f"bits; at least {MIN_ENTROPY_BITS} needed)"
        )
    return None
