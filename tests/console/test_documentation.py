"""The technical-documentation pack (issue 15, part 2): its sections and facts for a version
with approvals, gate reports, an incident with its playbook, a rollback, a halt, runs and series;
byte-identical regeneration in JSON, HTML and PDF; cuts at an audit sequence number; who may read
it; the console page and the management command."""

from __future__ import annotations

import json
from datetime import UTC

import pytest
from django.core.management import call_command
from django.urls import reverse
from rest_framework.test import APIClient

from console.documentation.pack import VERIFIED_HOW
from governance import audit
from governance.models import AuditChainHead, AuditEvent, Evaluation, ValidationPolicy
from incidents.alert_response import route_alert
from incidents.models import Incident, Rollback
from incidents.playbook_engine import playbook_advance
from monitoring.models import MetricPoint, MonitorRun, RunStatus
from monitoring.runs import metric_points
from serving.halt import halt_engage, halt_release_approve
from tests.console.incident_helpers import grant, no_broker  # noqa: F401
from tests.factories import RegisteredModelFactory, UserFactory
from tests.governance.audit_helpers import tamper
from tests.governance.lifecycle_helpers import person
from tests.incidents.helpers import alert_on, live_pair

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_broker", "no_verified_prefixes")]


@pytest.fixture
def no_verified_prefixes():
    """The verification cache (a process-wide cache in tests) starts empty: each test walks the
    chain of its own database from seq 1 first."""
    audit.forget_verified()


SECTIONS = {
    "document",
    "s1_general_description",
    "s2_development",
    "s3_validation",
    "s4_risk_management_and_human_oversight",
    "s5_monitoring_plan",
    "s6_post_market_results",
    "s7_logging",
    "s8_changes",
}


def _fairness_report(version) -> Evaluation:
    policy = ValidationPolicy.objects.create(
        model=version.model, version=7, values={"auc_min": 0.7}, reason="tests", created_by="t"
    )
    return Evaluation.objects.create(
        version=version,
        kind="validation",
        policy=policy,
        passed=True,
        evidence_digest="e" * 64,
        created_by="tests",
        report={
            "passed": True,
            "gates": [
                {"gate": "metrics", "passed": True, "values": {"auc": 0.81}, "reasons": []},
                {
                    "gate": "fairness",
                    "passed": True,
                    "values": {
                        "area": {
                            "status": "passed",
                            "groups": {
                                "north": {
                                    "n": 400,
                                    "n_positive": 100,
                                    "n_negative": 300,
                                    "tpr": 0.71,
                                    "fpr": 0.1,
                                    "selection_rate": 0.25,
                                },
                                "south": {"n": 380, "n_positive": 0, "tpr": None, "fpr": 0.11},
                            },
                        }
                    },
                    "reasons": [],
                },
            ],
        },
    )


def _finish(run, points: list[tuple[str, str, float]]) -> None:
    MonitorRun.objects.filter(pk=run.pk).update(
        status=RunStatus.SUCCEEDED, finished_at=run.created_at, rows=900
    )
    MetricPoint.objects.bulk_create(
        metric_points(run, [(metric, "area", group, value) for metric, group, value in points])
    )


@pytest.fixture
def story():
    """v2 (1.1.0) went live over v1 with sign-offs, was validated, drew two critical fairness
    alerts (an incident on playbook 2 and an automatic rollback) and was halted."""
    v1, v2 = live_pair()
    _fairness_report(v2)
    first, second = alert_on(v2), alert_on(v2)
    _finish(first.run, [("tpr", "area=north", 0.7), ("tpr", "area=south", 0.6)])
    _finish(second.run, [("tpr", "area=north", 0.72), ("tpr", "area=south", 0.55)])
    route_alert(first)
    route_alert(second)
    incident = Incident.objects.get(version=v2)
    playbook_advance(incident.pk)
    halt, _ = halt_engage(
        scope=v2.model.name, reason="one area over its limit", actor=person("ml_lead")
    )
    return {
        "v1": v1,
        "v2": v2,
        "incident": incident,
        "rollback": Rollback.objects.get(from_version=v2),
        "halt": halt,
    }


def api(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def url(version, **params) -> str:
    path = reverse("version-documentation", args=[version.model.name, version.version])
    return path + ("?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else "")


def head() -> int:
    return AuditChainHead.objects.get(pk=1).seq


def test_the_pack_has_every_section_and_the_facts_of_the_story(story):
    v2 = story["v2"]
    auditor = grant("aud", "auditor")
    response = api(auditor).get(url(v2))
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    pack = json.loads(response.content)
    assert set(pack) == SECTIONS

    doc = pack["document"]
    event = AuditEvent.objects.get(seq=head())
    assert doc["built_from"] == {
        "audit_seq": event.seq,
        "audit_hash": event.hash,
        "audit_recorded_at": event.created_at.astimezone(UTC).isoformat(),
    }
    general = pack["s1_general_description"]
    assert general["version"]["version"] == "1.1.0" and general["model"]["name"] == v2.model.name
    assert (
        general["version"]["stage_at_cut"] == v2.lifecycle.__class__.objects.get(version=v2).stage
    )
    dev = pack["s2_development"]
    assert dev["training_data"]["hash"] == v2.training_data_hash
    assert dev["hyperparameters"] == v2.hyperparameters
    assert [f["name"] for f in dev["features"]] == v2.feature_list

    validation = pack["s3_validation"]
    policies = {r["kind"]: r["policy"] for r in validation["gate_reports"] if r["policy"]}
    assert policies["validation"]["version"] == 7
    (fair,) = validation["fairness_per_group"]
    assert fair["attribute"] == "area" and fair["result"]["groups"]["south"]["n"] == 380
    # Wilson 95 % intervals: tpr 0.71 of 100 positives is [0.6146, 0.7899] (the roots of
    # (p - x)^2 = z^2 x (1 - x) / n, found with scipy.optimize.brentq)
    north = fair["intervals_95"]["north"]
    assert [round(x, 4) for x in north["tpr"]] == [0.6146, 0.7899]
    assert set(north) == {"tpr", "fpr", "selection_rate"}
    assert north["fpr"][0] < 0.1 < north["fpr"][1]
    assert "south" not in fair["intervals_95"]  # no positives, no negatives count: no interval

    oversight = pack["s4_risk_management_and_human_oversight"]
    promote = [a for a in oversight["approvals"] if a["transition"] == "promote"]
    assert {a["role"] for a in promote} == {"ml_lead", "ethics_officer", "product_manager"}
    assert all(a["by"] and a["recorded_at"] for a in promote)
    (incident,) = oversight["incidents"]
    assert incident["id"] == story["incident"].pk and incident["playbook"]["number"] == "2"
    assert len(incident["alerts"]) == 2 and incident["playbook_steps"]
    assert {s["order"] for s in incident["playbook_steps"]} == set(
        story["incident"].steps.values_list("order", flat=True)
    )
    assert any(e["kind"] == "opened" for e in incident["timeline"])
    (rollback,) = oversight["rollbacks"]
    assert rollback["id"] == story["rollback"].pk and rollback["from_version"] == "1.1.0"
    assert rollback["automatic"] is True and rollback["status_at_cut"] == "requested"
    (halt,) = oversight["halts"]
    assert halt["reason"] == "one area over its limit" and halt["engaged_by"] == "the-lead"
    assert halt["released_at"] is None

    plan = pack["s5_monitoring_plan"]
    assert "fairness" in plan["checks"]["daily"] and plan["monitoring_policy"]["values"]["psi_max"]
    beat = {t["task"]: t["crontab_utc"] for t in plan["beat_schedule"]}
    assert beat["monitoring.run_weekly_checks"] == "0 3 * * 1"  # Mondays 03:00 UTC (migration)
    assert beat["monitoring.run_daily_checks"] == "0 2 * * *"
    results = pack["s6_post_market_results"]
    assert len(results["runs"]) == 2 and len(results["alerts"]) == 2
    south = next(s for s in results["series"] if s["group"] == "area=south")
    assert (south["points"], south["min"], south["max"]) == (2, 0.55, 0.6)
    assert pack["s7_logging"]["retention"]["predictions_days"] == 365

    changes = pack["s8_changes"]
    assert changes["chain_verification"]["valid"] is True
    assert changes["chain_verification"]["through_seq"] == head()
    actions = {e["action"] for e in changes["audit_trail"]}
    assert {
        "approval.approved",
        "lifecycle.promote",
        "incidents.rollback_requested",
        "incidents.step_done",
        "halt.engaged",
    } <= actions
    seqs = [e["seq"] for e in changes["audit_trail"]]
    assert seqs == sorted(seqs) and seqs[-1] == AuditEvent.objects.get(action="halt.engaged").seq
    stored = AuditEvent.objects.get(seq=seqs[-1])
    assert changes["audit_trail"][-1]["hash"] == stored.hash


@pytest.mark.parametrize("fmt", ["json", "html", "pdf"])
def test_the_pack_at_a_sequence_number_is_byte_identical_later(story, fmt):
    """Built at the head, then again after more happened (a release approval, an alert, a
    finished run, a completed step): the pack as of that head has the same bytes."""
    v2 = story["v2"]
    auditor = grant("aud", "auditor")
    seq = head()
    first = api(auditor).get(url(v2, format=fmt))
    assert first.status_code == 200
    assert api(auditor).get(url(v2, format=fmt)).content == first.content

    halt_release_approve(scope=v2.model.name, actor=person("ethics_officer"), comment="ok")
    _finish(alert_on(v2).run, [("tpr", "area=south", 0.5)])
    assert head() > seq
    again = api(auditor).get(url(v2, format=fmt, as_of=seq))
    assert again.status_code == 200 and again.content == first.content
    assert api(auditor).get(url(v2, format=fmt)).content != first.content
    if fmt == "pdf":
        assert first.content.startswith(b"%PDF-")
        recorded = AuditEvent.objects.get(seq=seq).created_at.astimezone(UTC)
        assert f"/CreationDate (D:{recorded:%Y%m%d%H%M%S}Z".encode() in first.content
        assert first["Content-Type"] == "application/pdf"
    if fmt == "html":
        page = first.content.decode()
        assert first["Content-Type"].startswith("text/html")
        for title in ("approvals", "rollbacks", "playbook steps", "audit trail"):
            assert title in page.lower()
        assert f"Built from audit event {seq}" in page


def test_as_of_cuts_the_trail_and_the_records_at_that_event(story):
    v2 = story["v2"]
    auditor = grant("aud", "auditor")
    requested = AuditEvent.objects.get(action="incidents.rollback_requested").seq
    before = requested - 1  # 1.1.0 marked degraded by the first alert
    pack = json.loads(api(auditor).get(url(v2, as_of=before)).content)
    assert pack["document"]["built_from"]["audit_seq"] == before
    assert pack["document"]["built_from"]["audit_hash"] == AuditEvent.objects.get(seq=before).hash
    trail = pack["s8_changes"]["audit_trail"]
    assert trail[-1]["seq"] == before and trail[-1]["action"] == "lifecycle.mark_degraded"
    assert pack["s8_changes"]["chain_verification"] == {
        "through_seq": before,
        "valid": True,
        "events_checked": before,
        "first_bad_seq": None,
        "problem": None,
        "method": VERIFIED_HOW,
    }
    assert pack["s1_general_description"]["version"]["stage_at_cut"] == "degraded"
    oversight = pack["s4_risk_management_and_human_oversight"]
    assert oversight["rollbacks"] == [] and oversight["halts"] == [] == oversight["incidents"]

    at_rollback = json.loads(api(auditor).get(url(v2, as_of=requested)).content)
    oversight = at_rollback["s4_risk_management_and_human_oversight"]
    (rollback,) = oversight["rollbacks"]
    assert rollback["status_at_cut"] == "requested" and oversight["halts"] == []
    (incident,) = oversight["incidents"]
    # the playbook's steps were completed after this event: open at the cut, done now
    assert {s["status_at_cut"] for s in incident["playbook_steps"]} == {"open"}
    assert all(s["completed_at"] is None for s in incident["playbook_steps"])
    assert story["incident"].steps.filter(status="done").exists()
    assert incident["status_at_cut"] == "active (open or mitigating)"
    assert at_rollback["s8_changes"]["audit_trail"][-1]["seq"] == requested


def test_a_reader_without_read_audit_gets_the_pack_without_the_trail(story):
    v2 = story["v2"]
    pm = grant("pm", "product_manager", v2.model.name)
    auditor = grant("aud", "auditor", v2.model.name)
    theirs = json.loads(api(pm).get(url(v2)).content)
    full = json.loads(api(auditor).get(url(v2)).content)
    assert theirs["s8_changes"]["audit_trail"] is None
    assert "read_audit" in theirs["s8_changes"]["audit_trail_withheld"]
    assert full["s8_changes"]["audit_trail"]
    assert {k: v for k, v in theirs.items() if k != "s8_changes"} == {
        k: v for k, v in full.items() if k != "s8_changes"
    }


def test_who_may_not_read_the_version_is_refused(story):
    v2 = story["v2"]
    assert api().get(url(v2)).status_code in (401, 403)
    RegisteredModelFactory(name="elsewhere")
    other = grant("other", "auditor", "elsewhere")
    refused = api(other).get(url(v2))
    assert refused.status_code == 403 and "read" in refused.json()["detail"]
    reader = grant("reader", "product_manager")
    missing = api(reader).get(reverse("version-documentation", args=[v2.model.name, "9.9.9"]))
    assert missing.status_code == 404
    assert (
        api(reader).get(reverse("version-documentation", args=["nope", "1.0.0"])).status_code == 404
    )


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"format": "docx"}, "format"),
        ({"as_of": "abc"}, "as_of"),
        ({"as_of": "0"}, "as_of"),
        ({"as_of": "999999"}, "as_of"),
        ({"as_of": "1"}, "as_of"),  # before 1.1.0 was registered
        ({"download": "maybe"}, "download"),
    ],
)
def test_bad_parameters_are_a_400_naming_them(story, params, field):
    response = api(grant("aud", "auditor")).get(url(story["v2"], **params))
    assert response.status_code == 400
    assert list(response.json()["errors"]) == [field]


def test_the_accept_header_chooses_the_format(story):
    client = api(grant("aud", "auditor"))
    pdf = client.get(url(story["v2"]), HTTP_ACCEPT="application/pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF-")
    html = client.get(url(story["v2"]), HTTP_ACCEPT="text/html,application/xhtml+xml")
    assert html.content.startswith(b"<!DOCTYPE html>")
    assert (
        client.get(url(story["v2"], format="json"), HTTP_ACCEPT="application/pdf")["Content-Type"]
        == "application/json"
    )
    download = client.get(url(story["v2"], format="pdf", download="true"))
    assert download["Content-Disposition"].startswith("attachment; filename=")


def test_the_console_page_links_the_downloads_and_they_match_the_api(client, story):
    v2 = story["v2"]
    auditor = grant("aud", "auditor")
    client.force_login(auditor)
    page_url = reverse("console:version-documentation", args=[v2.model.name, v2.version])
    page = client.get(page_url)
    assert page.status_code == 200
    text = page.content.decode()
    seq = head()
    link = reverse("console:version-documentation-download", args=[v2.model.name, v2.version])
    assert f"{link}?format=pdf&amp;as_of={seq}" in text and f"seq {seq}" in text
    for fmt in ("json", "html", "pdf"):
        got = client.get(f"{link}?format={fmt}&as_of={seq}")
        assert got.status_code == 200
        assert got.content == api(auditor).get(url(v2, format=fmt, as_of=seq)).content
    version_page = client.get(reverse("console:version", args=[v2.model.name, v2.version]))
    assert page_url in version_page.content.decode()
    bad = client.get(page_url + "?as_of=nope")
    assert bad.status_code == 400 and "as_of" in bad.content.decode()
    bad = client.get(link + "?format=docx")
    assert bad.status_code == 400 and bad.content.decode().startswith("format:")


def test_the_console_page_is_404_for_who_may_not_read_the_model(client, story):
    RegisteredModelFactory(name="elsewhere")
    client.force_login(grant("other", "auditor", "elsewhere"))
    v2 = story["v2"]
    page_url = reverse("console:version-documentation", args=[v2.model.name, v2.version])
    assert client.get(page_url).status_code == 404
    download = reverse("console:version-documentation-download", args=[v2.model.name, v2.version])
    assert client.get(download).status_code == 404
    client.force_login(UserFactory(username="nobody"))
    assert client.get(page_url).status_code == 404


def test_the_command_writes_the_same_bytes_as_the_api(story, tmp_path):
    v2 = story["v2"]
    seq = head()
    out = tmp_path / "pack.pdf"
    call_command("documentation_pack", v2.model.name, v2.version, "--format", "pdf", "-o", str(out))
    api_bytes = api(grant("aud", "auditor")).get(url(v2, format="pdf", as_of=seq)).content
    assert out.read_bytes() == api_bytes
    earlier = tmp_path / "early.json"
    call_command(
        "documentation_pack", v2.model.name, v2.version, "--as-of", str(seq - 1), "-o", str(earlier)
    )
    assert json.loads(earlier.read_bytes())["document"]["built_from"]["audit_seq"] == seq - 1


def test_a_broken_chain_shows_in_the_pack(story):
    v2 = story["v2"]
    target = AuditEvent.objects.filter(action="approval.approved").order_by("seq").first()
    tamper("UPDATE governance_auditevent SET reason = 'edited' WHERE id = %s", [target.id])
    pack = json.loads(api(grant("aud", "auditor")).get(url(v2)).content)
    check = pack["s8_changes"]["chain_verification"]
    assert check["valid"] is False and check["first_bad_seq"] == target.seq


def test_the_pack_has_the_same_bytes_whatever_the_cache_holds(story):
    v2 = story["v2"]
    auditor = grant("aud", "auditor")
    seq = head()
    walked_all = api(auditor).get(url(v2, as_of=seq)).content
    assert [p.seq for p in audit.verified_prefixes()] == [seq]
    cached = api(auditor).get(url(v2, as_of=seq)).content
    audit.forget_verified()
    audit.verify_through(seq - 3)
    partly = api(auditor).get(url(v2, as_of=seq)).content
    assert walked_all == cached == partly
    check = json.loads(walked_all)["s8_changes"]["chain_verification"]
    assert check["valid"] and check["events_checked"] == seq
    assert check["method"] == VERIFIED_HOW and "verify_audit" in check["method"]


def test_the_console_page_says_what_it_walked(client, story):
    v2 = story["v2"]
    client.force_login(grant("aud", "auditor"))
    page_url = reverse("console:version-documentation", args=[v2.model.name, v2.version])
    seq = head()
    first = client.get(page_url).content.decode()
    assert f"verifies ({seq} events: every event walked now, seq 1 to {seq})" in first
    assert "only the events after it are walked at build time" in first
    second = client.get(page_url).content.decode()
    assert f"seq 1 to {seq} verified by an earlier walk at " in second
    assert f"its link at seq {seq} checked now" in second
    halt_release_approve(scope=v2.model.name, actor=person("ethics_officer"), comment="ok")
    later = head()
    third = client.get(page_url).content.decode()
    assert f"seq {seq + 1} to {later} walked now" in third
