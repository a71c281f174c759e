"""Strict MAJOR.MINOR.PATCH versions, compared numerically (1.10.0 > 1.9.0)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

_SEMVER = re.compile(r"^(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})$")


class Bump(StrEnum):
    MAJOR = "major"
    MINOR = "minor"
    PATCH = "patch"


@dataclass(frozen=True, order=True)
class SemVer:
    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> SemVer:
        match = _SEMVER.match(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise ValueError(
                f"{text!r} is not a semantic version: use MAJOR.MINOR.PATCH with non-negative "
                "integers and no leading zeros, e.g. 1.2.0"
            )
        return cls(*(int(part) for part in match.groups()))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    def bump_from(self, previous: SemVer | None) -> Bump:
        """The change this version declares relative to ``previous`` (none: MAJOR)."""
        if previous is None or self.major != previous.major:
            return Bump.MAJOR
        if self.minor != previous.minor:
            return Bump.MINOR
        return Bump.PATCH
