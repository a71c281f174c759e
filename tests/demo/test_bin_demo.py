"""What ``./bin/demo`` tells a new user once the platform runs: the console's address first."""

from __future__ import annotations

import re
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bin" / "demo"


def test_the_first_address_printed_is_the_consoles():
    banner = SCRIPT.read_text().split("cat <<MSG", 1)[1].split("\nMSG", 1)[0]
    addresses = re.findall(r"http://127\.0\.0\.1:\$PORT(/\S*)", banner)
    assert addresses[0] == "/console/"
    assert "/console/models/hotspot-classifier/" in addresses
    assert "/console/incidents/" in addresses
