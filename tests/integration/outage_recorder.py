"""The gateway's outage hook in the integration tests: what would open a playbook-3 incident."""

from __future__ import annotations

OUTAGES: list[dict] = []


def record_outage(**report) -> None:
    OUTAGES.append(report)
