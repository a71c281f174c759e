"""The documentation page of a version (issue 15), in Chromium: reached from the version page,
accessible, its PDF downloaded through the link, a bad as-of value named in the form."""

from __future__ import annotations

import pytest

from governance.models import AuditChainHead
from tests.browser.test_version_and_audit import lead, two_versions  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


def test_documentation_page_and_download(
    page,
    login_as,
    assert_accessible,
    shot,
    lead,  # noqa: F811
    two_versions,  # noqa: F811
):
    old, _ = two_versions
    login_as(page, lead)
    page.goto(f"/console/models/hotspot-classifier/versions/{old.version}/")
    page.get_by_role("link", name="technical documentation").click()
    page.wait_for_url("**/documentation/")
    heading = page.get_by_role("heading", level=1).inner_text()
    assert heading == "Technical documentation of hotspot-classifier 1.0.0"
    seq = AuditChainHead.objects.get(pk=1).seq
    assert page.get_by_text(f"seq {seq}, recorded").is_visible()
    assert_accessible(page)
    shot(page, "documentation-page")

    with page.expect_download() as info:
        page.get_by_role("link", name="PDF").click()
    download = info.value
    assert download.suggested_filename == f"hotspot-classifier-1.0.0-documentation-seq{seq}.pdf"
    with open(download.path(), "rb") as pdf:
        assert pdf.read(5) == b"%PDF-"

    page.get_by_label("As of audit event (seq)").fill("nope")
    page.get_by_role("button", name="Build").click()
    assert page.get_by_role("alert").inner_text().startswith("as_of:")
    assert_accessible(page)
    assert page.js_errors == []

    # the HTML pack itself, as the API serves it to the same session: accessible, readable
    page.goto(
        f"/api/v1/models/hotspot-classifier/versions/{old.version}/documentation/?format=html"
    )
    assert page.get_by_role("heading", level=1).inner_text() == heading
    assert page.get_by_role("heading", name="4. Risk management and human oversight").is_visible()
    assert_accessible(page)
    shot(page, "documentation-pack-html")
