"""Opening a model's page in the browser tests, as the ML lead, once its charts have loaded."""

from __future__ import annotations

from governance.models import RoleGrant
from tests.factories import UserFactory


def open_model_page(page, login_as, model: str) -> None:
    """Sign in a staff ML lead (``lee-lead``) and open ``model``'s page over 30 days, waiting
    until its charts' series have arrived."""
    user = UserFactory(username="lee-lead", is_staff=True)
    RoleGrant.objects.create(user=user, role="ml_lead")
    login_as(page, user)
    page.goto(f"/console/models/{model}/?days=30")
    page.wait_for_selector("[data-series-loaded=yes]")
