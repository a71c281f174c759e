"""Bootstrap commands: grant_role and create_token work the same on every install."""

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from governance.models import AuditEvent, RoleGrant

pytestmark = pytest.mark.django_db


def test_grant_role_creates_the_user_and_audits_each_grant():
    call_command("grant_role", "ana", "ml_lead", "auditor", stdout=StringIO())
    user = get_user_model().objects.get(username="ana")
    assert set(RoleGrant.objects.filter(user=user).values_list("role", flat=True)) == {
        "ml_lead",
        "auditor",
    }
    assert user.is_staff and user.groups.filter(name="ml_lead").exists()
    assert AuditEvent.objects.filter(action="role.granted").count() == 2


def test_grant_role_can_scope_to_one_model():
    from registry.models import RegisteredModel

    RegisteredModel.objects.create(name="hotspot")
    call_command("grant_role", "ana", "ml_engineer", "--model", "hotspot", stdout=StringIO())
    assert RoleGrant.objects.get(user__username="ana").model.name == "hotspot"


def test_grant_role_for_an_unknown_model_fails_clearly():
    with pytest.raises(CommandError, match="no model named 'nope'"):
        call_command("grant_role", "ana", "ci", "--model", "nope", stdout=StringIO())


def test_unknown_role_is_refused():
    with pytest.raises(CommandError):
        call_command("grant_role", "ana", "wizard", stdout=StringIO(), stderr=StringIO())


def test_create_token_prints_a_working_token_alone_on_the_last_line():
    call_command("grant_role", "ci-bot", "ci", stdout=StringIO())
    out = StringIO()
    call_command("create_token", "ci-bot", "--expires", "7", stdout=out, stderr=StringIO())
    token = out.getvalue().strip().splitlines()[-1]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/v1/models/").status_code == 200
    event = AuditEvent.objects.get(action="token.created")
    assert token not in str(event.after) and token[:15] == event.after["key_prefix"]


def test_create_token_for_unknown_user_says_how_to_create_one():
    with pytest.raises(CommandError, match="grant_role"):
        call_command("create_token", "ghost", stdout=StringIO(), stderr=StringIO())


def test_revoked_token_stops_working():
    call_command("grant_role", "ci-bot", "ci", stdout=StringIO())
    out = StringIO()
    call_command("create_token", "ci-bot", stdout=out, stderr=StringIO())
    token = out.getvalue().strip().splitlines()[-1]
    call_command("revoke_token", token[:15], stdout=StringIO())
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/v1/models/").status_code == 401
    assert AuditEvent.objects.filter(action="token.revoked").count() == 1
