"""The documentation pack verifies the audit chain incrementally (bench/console.py: a full walk
from seq 1 was ~90 % of a build): from the newest verified prefix (seq and link, signed) at or
below its cut. An edit after the prefix is caught by the build; an edit before it by
``verify`` (``manage.py verify_audit``), which walks every event and then drops the prefixes
after the break, so the next build catches it too. The pack's bytes do not depend on the cache
(tests/console/test_documentation.py)."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from governance import audit
from tests.console.incident_helpers import no_broker  # noqa: F401
from tests.console.test_documentation import no_verified_prefixes  # noqa: F401
from tests.governance.audit_helpers import event, set_columns, tamper, verify_command, write

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_broker", "no_verified_prefixes")]


def _edit(seq: int) -> None:
    tamper("UPDATE governance_auditevent SET reason = 'edited' WHERE seq = %s", [seq])


def test_a_second_verification_walks_only_the_events_after_the_prefix(
    django_assert_num_queries,
):
    write(10)
    first = audit.verify_through(10)
    assert first.valid and first.events == 10 and first.verified_before is None
    assert [p.seq for p in audit.verified_prefixes()] == [10]
    write(5)
    with django_assert_num_queries(1):  # the prefix's event and the five after it
        second = audit.verify_through(15)
    assert second.valid and second.events == 15 and second.head_link == event(15).hash
    assert second.verified_before.seq == 10 and second.verified_before.link == event(10).hash
    assert [p.seq for p in audit.verified_prefixes()] == [10, 15]
    # as of an earlier seq: the newest prefix at or below it
    assert audit.verify_through(12).verified_before.seq == 10
    earliest = audit.verify_through(5)
    assert earliest.valid and earliest.verified_before is None and earliest.events == 5
    again = audit.verify_through(15)
    assert again.valid and again.events == 15 and again.verified_before.seq == 15


def test_an_edit_after_the_prefix_is_caught_by_the_build():
    write(10)
    audit.verify_through(10)
    write(5)
    _edit(12)
    check = audit.verify_through(15)
    assert not check.valid and check.first_bad_seq == 12 and "edited" in check.problem
    assert check.verified_before.seq == 10
    assert [p.seq for p in audit.verified_prefixes()] == [10]  # a broken walk records nothing


def test_an_edit_before_the_prefix_is_caught_by_the_full_verification_then_by_the_build():
    write(10)
    audit.verify_through(10)
    _edit(4)
    unseen = audit.verify_through(10)  # what the prefix vouches for is not walked again
    assert unseen.valid and unseen.verified_before.seq == 10
    full = audit.verify()
    assert not full.valid and full.first_bad_seq == 4
    assert audit.verified_prefixes() == []  # those at or after the break are dropped
    assert verify_command().code != 0
    check = audit.verify_through(10)
    assert not check.valid and check.first_bad_seq == 4 and check.verified_before is None


def test_a_full_verification_records_the_head_it_verified():
    write(7)
    assert audit.verify().valid
    (prefix,) = audit.verified_prefixes()
    assert (prefix.seq, prefix.link) == (7, event(7).hash)
    assert audit.verify_through(7).verified_before == prefix


def test_a_relinked_prefix_event_is_not_trusted():
    write(10)
    audit.verify_through(10)
    set_columns(event(10).id, hash="f" * 64)
    check = audit.verify_through(10)
    assert not check.valid and check.first_bad_seq == 10 and check.verified_before is None


def test_a_prefix_not_signed_with_the_audit_key_is_ignored():
    write(10)
    _edit(3)
    forged = {"seq": 10, "link": event(10).hash, "at": "2026-01-01T00:00:00+00:00", "sig": "0" * 64}
    cache.set(audit._prefix_cache_key(), [forged], timeout=None)
    assert audit.verified_prefixes() == []
    check = audit.verify_through(10)
    assert not check.valid and check.first_bad_seq == 3 and check.verified_before is None


def test_only_the_newest_prefixes_are_kept_and_the_highest_always():
    write(audit.VERIFIED_KEEP + 5)
    audit.verify_through(audit.VERIFIED_KEEP + 5)
    for seq in range(1, audit.VERIFIED_KEEP + 3):
        audit.verify_through(seq)
    kept = [p.seq for p in audit.verified_prefixes()]
    assert len(kept) == audit.VERIFIED_KEEP and kept[-1] == audit.VERIFIED_KEEP + 5
    assert kept[0] == 4  # the oldest recorded went first, the highest stayed
