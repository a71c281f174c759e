"""Issue 12's admin defects: the History button shows the audit log, the approvals inbox is
linked and offers only the roles one holds, per-model grant holders get a scoped admin, and the
admin pages load the layout fixes (drawn and measured in tests/browser/test_admin_layout.py)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from governance import services
from governance.approvals import approval_record
from governance.models import EvidenceKind
from platform_core.errors import Forbidden
from tests.factories import RegisteredModelFactory
from tests.governance.lifecycle_helpers import (
    SYSTEM,
    evidence,
    new_version,
    person,
    to_staging,
)

pytestmark = pytest.mark.django_db
INBOX = "/admin/governance/lifecycle/inbox/"


def login(client, username: str):
    client.force_login(get_user_model().objects.get(username=username))
    return client


def lifecycle_url(version, suffix="change/") -> str:
    return f"/admin/governance/lifecycle/{version.lifecycle.pk}/{suffix}"


def test_history_shows_the_audit_events_of_the_version(client):
    version = new_version("1.0.0")
    to_staging(version)
    person("auditor", "ada")

    html = login(client, "ada").get(lifecycle_url(version, "history/")).content.decode()

    assert "no history" not in html.lower()
    assert "moved version 1.0.0 from development to validation" in html
    assert "the-lead approved approve for staging of version 1.0.0 as ml_lead" in html
    assert "stage</b>: validation → staging" in html


def test_history_of_an_evaluation_is_its_own_events(client):
    version = new_version("1.0.0")
    evaluation = evidence(version, EvidenceKind.UNIT_TESTS)
    person("auditor", "ada")
    url = f"/admin/governance/evaluation/{evaluation.pk}/history/"
    html = login(client, "ada").get(url).content.decode()
    assert "The audit log has no event for this object." in html  # helper writes no event
    assert login(client, "ada").get(lifecycle_url(version, "history/")).status_code == 200


def test_approvals_inbox_is_linked_from_the_admin_index(client):
    person("ml_lead", "lee")
    html = login(client, "lee").get("/admin/").content.decode()
    assert f'href="{INBOX}"' in html


def test_an_ml_lead_is_offered_only_ml_lead_sign_offs(client):
    development = new_version("1.0.0", model=RegisteredModelFactory(name="dev-model"))
    evidence(development, EvidenceKind.UNIT_TESTS)
    person("ml_lead", "lee")

    inbox = login(client, "lee").get(INBOX).content.decode()
    change = client.get(lifecycle_url(development)).content.decode()

    assert "Your roles: ml_lead." in inbox
    assert "ml_engineer" not in inbox and "Nothing waits for you." in inbox
    assert "as <b>ml_engineer</b>" not in change
    with pytest.raises(Forbidden, match="ml_engineer"):  # and the service agrees
        approval_record(
            version=development,
            transition="submit_for_validation",
            role="ml_engineer",
            decision="approve",
            actor=person("ml_lead", "lee"),
        )


def test_per_model_grant_holders_use_the_admin_scoped_to_their_models(client):
    mine = new_version("1.0.0", model=RegisteredModelFactory(name="mine-model"))
    theirs = new_version("1.0.0", model=RegisteredModelFactory(name="their-model"))
    services.role_grant(username="scoped", roles=["ml_lead"], model_name="mine-model", actor=SYSTEM)
    login(client, "scoped")

    index = client.get("/admin/")
    changelist = client.get("/admin/governance/lifecycle/").content.decode()
    inbox = client.get(INBOX).content.decode()

    assert index.status_code == 200 and "/admin/governance/lifecycle/" in index.content.decode()
    assert "mine-model" in changelist and "their-model" not in changelist
    assert client.get(lifecycle_url(mine)).status_code == 200
    assert client.get(lifecycle_url(theirs)).status_code in {302, 404}
    assert client.get(lifecycle_url(theirs, "history/")).status_code in {302, 404}
    assert "ml_lead for mine-model" in inbox
    assert client.get("/admin/registry/").status_code in {403, 404}  # only the scoped pages


def test_admin_pages_load_the_layout_fixes(client):
    version = new_version("1.0.0")
    person("ml_lead", "lee")
    html = login(client, "lee").get(lifecycle_url(version)).content.decode()
    assert "css/admin.css" in html and 'id="lifecycle-actions"' in html
