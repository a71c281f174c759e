"""The admin lists registry objects for staff, searchable and filterable, and changes nothing."""

import pytest

from tests.factories import ModelVersionFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


def test_version_changelist_shows_stage_and_filters_by_it(staff_client):
    ModelVersionFactory(model__name="hotspot", version="1.2.0")
    page = staff_client.get("/admin/registry/modelversion/?lifecycle__stage=development&q=hotspot")
    assert page.status_code == 200
    assert b"1.2.0" in page.content and b"development" in page.content


def test_registry_objects_cannot_be_added_or_changed_in_the_admin(staff_client):
    version = ModelVersionFactory()
    assert staff_client.get("/admin/registry/modelversion/add/").status_code == 403
    response = staff_client.post(
        f"/admin/registry/modelversion/{version.pk}/change/", {"version": "9.9.9"}
    )
    assert response.status_code == 403
    assert staff_client.get("/admin/governance/auditevent/").status_code == 200
