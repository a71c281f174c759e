"""Fixtures the console tests share."""

from __future__ import annotations

import pytest

from governance.models import RoleGrant
from tests.factories import UserFactory


@pytest.fixture
def lead(client):
    """``client`` logged in as "lee", an ML lead of every model: who reads the console's pages."""
    user = UserFactory(username="lee")
    RoleGrant.objects.create(user=user, role="ml_lead")
    client.force_login(user)
    return user
