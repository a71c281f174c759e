"""Scoped halts: one model's requests matching a predicate are refused, the others served."""

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from governance import audit, services
from governance.audit import Actor
from governance.models import AuditEvent
from platform_core.errors import InvalidInput
from serving.models import Halt
from serving.predicate import parse_where, where_normalize
from tests.serving.helpers import instances, live, predict

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")
HIGH_F1 = {"field": "f1", "op": "gt", "value": 0.5}
NORTH_EAST = {"field": "sensitive.area", "op": "in", "value": ["north-east"]}


def engage(client, scope, where, reason="fairness breach in one district"):
    body = {"scope": scope, "reason": reason, "where": where}
    return client.post("/api/v1/halt/", body, format="json")


def release(client, scope, where=None, **extra):
    body = {"scope": scope, **({"where": where} if where is not None else {}), **extra}
    return client.post("/api/v1/halt/release/", body, format="json")


def row(f1: float) -> dict:
    return {"f1": f1, "f2": 0.0, "f3": 1.0}


@pytest.fixture
def served(mlflow_models, ci):
    version = live(mlflow_models, seed=1)
    assert predict(ci, version.model.name, instances()).status_code == 200  # the route is cached
    return version.model.name


def test_matching_requests_are_refused_and_the_others_served(served, ci, lead, committed):
    with committed():
        response = engage(lead, served, HIGH_F1)
    assert response.status_code == 201
    assert response.json()["where_text"] == "f1 > 0.5"

    assert predict(ci, served, [row(0.1)]).status_code == 200
    refused = predict(ci, served, [row(0.9)])

    assert refused.status_code == 503
    body = refused.json()
    assert body["halted"] is True and body["scope"] == served
    assert body["where"] == HIGH_F1 and body["where_text"] == "f1 > 0.5"
    assert body["reason"] == "fairness breach in one district"
    assert body["matched"] == [0] and body["unevaluable"] == []
    assert "predictions" not in body


def test_a_batch_with_any_matching_instance_is_refused_whole_naming_them(
    served, ci, lead, committed
):
    with committed():
        engage(lead, served, HIGH_F1)

    refused = predict(ci, served, [row(0.1), row(0.7), row(0.2), row(0.6)])

    assert refused.status_code == 503
    assert refused.json()["matched"] == [1, 3]
    assert "instances 1, 3 match f1 > 0.5" in refused.json()["detail"]
    # 0.5 is not > 0.5
    assert predict(ci, served, [row(0.1), row(0.2), row(0.5)]).status_code == 200


def test_an_instance_the_predicate_cannot_read_is_refused_not_served(served, ci, lead, committed):
    with committed():
        engage(lead, served, HIGH_F1)

    missing = predict(ci, served, [row(0.1), {"f2": 0.0, "f3": 1.0}])
    wrong_type = predict(ci, served, [{"f1": "0.1", "f2": 0.0, "f3": 1.0}])

    assert missing.status_code == 503 and missing.json()["unevaluable"] == [1]
    assert "f1 cannot be evaluated on instances 1" in missing.json()["detail"]
    assert wrong_type.status_code == 503 and wrong_type.json()["unevaluable"] == [0]


def test_a_sensitive_attribute_scope_reads_the_requests_sensitive_attributes(
    served, ci, lead, committed
):
    with committed():
        assert engage(lead, served, NORTH_EAST).status_code == 201

    south = predict(ci, served, [row(0.1)], sensitive=[{"area": "south"}])
    north_east = predict(ci, served, [row(0.1)], sensitive=[{"area": "north-east"}])
    without = predict(ci, served, [row(0.1)])
    numeric = predict(ci, served, [row(0.1)], sensitive=[{"area": 3}])

    assert south.status_code == 200
    assert north_east.status_code == 503 and north_east.json()["matched"] == [0]
    assert north_east.json()["where_text"] == 'sensitive.area in {"north-east"}'
    assert without.status_code == 503 and without.json()["unevaluable"] == [0]
    assert numeric.status_code == 503 and numeric.json()["unevaluable"] == [0]


@pytest.mark.parametrize(
    ("where", "matching", "other"),
    [
        ({"field": "f1", "op": "in", "value": [0.3, 0.4]}, 0.3, 0.35),
        ({"field": "f1", "op": "not_in", "value": [0.3]}, 0.2, 0.3),
        ({"field": "f1", "op": "eq", "value": 0.3}, 0.3, 0.31),
        ({"field": "f1", "op": "lt", "value": 0}, -1, 0),
        ({"field": "f1", "op": "le", "value": 0}, 0, 0.01),
        ({"field": "f1", "op": "ge", "value": 2}, 2, 1.99),
        ({"field": "f1", "op": "between", "value": [1, 2]}, 2, 2.01),
    ],
)
def test_each_operator_through_the_gateway(served, ci, lead, committed, where, matching, other):
    with committed():
        assert engage(lead, served, where).status_code == 201
    assert predict(ci, served, [row(matching)]).status_code == 503
    assert predict(ci, served, [row(other)]).status_code == 200


def test_other_models_and_the_whole_halt_keep_their_behaviour(
    mlflow_models, served, ci, lead, committed
):
    other = live(mlflow_models, seed=2).model.name
    with committed():
        engage(lead, served, HIGH_F1)
    assert predict(ci, other, [row(0.9)]).status_code == 200

    with committed():
        whole = lead.post("/api/v1/halt/", {"scope": served, "reason": "all"}, format="json")

    assert whole.status_code == 201  # a scoped halt does not stand in for the whole one
    refused = predict(ci, served, [row(0.1)])
    assert refused.status_code == 503 and "where" not in refused.json()
    assert Halt.objects.filter(scope=served, released_at__isnull=True).count() == 2


def test_the_same_predicate_spelled_otherwise_is_the_halt_in_force(served, lead, ethicist):
    assert engage(lead, served, HIGH_F1, "first").status_code == 201
    again = engage(ethicist, served, {"field": "f1", "op": "gt", "value": 0.50}, "second")
    assert again.status_code == 200 and again.json()["reason"] == "first"
    same_set = engage(lead, served, {"field": "f1", "op": "in", "value": [2, 1.0, 2]})
    assert same_set.status_code == 201 and same_set.json()["where"]["value"] == [1, 2]


@pytest.mark.parametrize(
    ("where", "field", "words"),
    [
        ({"field": "f9", "op": "gt", "value": 1}, "where.field", "'f9' is not a feature"),
        ({"field": "f1", "op": "like", "value": 1}, "where.op", "must be one of"),
        ({"field": "f1", "op": "gt", "value": "high"}, "where.value", "a finite number"),
        ({"field": "f1", "op": "in", "value": ["a"]}, "where.value", "compare it with numbers"),
        ({"field": "f1", "op": "in", "value": []}, "where.value", "non-empty list"),
        ({"field": "f1", "op": "between", "value": [5, 1]}, "where.value", "nothing could match"),
        ({"field": "f1", "op": "gt"}, "where.value", "required"),
        ({"field": "f1", "op": "gt", "value": 1, "x": 2}, "where.x", "unknown key"),
        ({"field": "sensitive.", "op": "eq", "value": "a"}, "where.field", "name the attribute"),
        ("f1 > 1", "where", "must be an object"),
    ],
)
def test_a_bad_predicate_is_400_naming_the_key(served, lead, where, field, words):
    response = engage(lead, served, where)
    assert response.status_code == 400
    assert words in " ".join(response.json()["errors"][field])
    assert not Halt.objects.exists()


def test_a_global_halt_cannot_be_scoped(served, lead):
    response = engage(lead, "global", HIGH_F1)
    assert response.status_code == 400
    assert "for one model" in " ".join(response.json()["errors"]["where"])


@pytest.mark.parametrize("role", ["ci", "ml_engineer", "auditor"])
def test_roles_without_halt_may_not_engage_a_scoped_halt(served, api_client, role):
    assert engage(api_client(role), served, HIGH_F1).status_code == 403
    assert not Halt.objects.exists()


def test_release_needs_an_ml_lead_and_an_ethics_officer_and_names_the_predicate(
    served, ci, api_client, lead, ethicist, committed
):
    oncall = api_client("oncall", username="pager")
    with committed():
        assert engage(oncall, served, HIGH_F1).status_code == 201
    assert release(oncall, served, HIGH_F1).status_code == 403
    assert release(lead, served).status_code == 409  # no whole halt: the predicate names it
    missing = release(lead, served, {"field": "f1", "op": "gt", "value": 0.7})
    assert missing.status_code == 409 and "where f1 > 0.7" in missing.json()["detail"]

    with committed():
        first = release(lead, served, HIGH_F1, reason="data fixed")
    assert first.json()["released"] is False and first.json()["waiting_for"] == ["ethics_officer"]
    assert release(lead, served, HIGH_F1).status_code == 409  # not twice by the same person
    assert predict(ci, served, [row(0.9)]).status_code == 503

    with committed():
        second = release(ethicist, served, HIGH_F1, reason="checked the district")
    assert second.json()["released"] is True
    assert predict(ci, served, [row(0.9)]).status_code == 200


def test_engaging_and_releasing_a_scoped_halt_is_audited_with_its_predicate(served, lead, ethicist):
    engage(lead, served, HIGH_F1, "breach")
    release(lead, served, HIGH_F1, reason="fixed")
    release(ethicist, served, HIGH_F1, reason="checked")

    events = list(AuditEvent.objects.filter(action__startswith="halt.").order_by("pk"))
    assert [e.action for e in events] == [
        "halt.engaged",
        "halt.release_approved",
        "halt.release_approved",
        "halt.released",
    ]
    assert events[0].after["where"] == HIGH_F1 and events[0].after["where_text"] == "f1 > 0.5"
    assert all(e.after["where_text"] == "f1 > 0.5" for e in events)
    assert events[0].actor.startswith("lead") and events[3].actor.startswith("ethicist")
    assert audit.verify().valid


def test_the_halt_list_shows_the_scope(served, lead):
    engage(lead, served, NORTH_EAST)
    (halt,) = lead.get("/api/v1/halt/").json()
    assert halt["where"] == NORTH_EAST
    assert halt["where_text"] == 'sensitive.area in {"north-east"}'


def test_the_command_engages_lists_and_releases_a_scoped_halt(served, ci, committed, capsys):
    services.role_grant(username="cli-lead", roles=["ml_lead"], actor=SYSTEM)
    services.role_grant(username="cli-ethics", roles=["ethics_officer"], actor=SYSTEM)

    with committed():
        call_command(
            "halt", served, "--where", "f1 >= 0.5", "--reason", "UI down", "--user", "cli-lead"
        )
    assert "where f1 >= 0.5; the others are served" in capsys.readouterr().out
    assert predict(ci, served, [row(0.5)]).status_code == 503
    assert predict(ci, served, [row(0.4)]).status_code == 200
    call_command("halt", "--list")
    assert f"{served} where f1 >= 0.5: engaged" in capsys.readouterr().out

    with committed():
        call_command("halt", served, "--release", "--where", "f1>=0.50", "--user", "cli-lead")
        call_command("halt", served, "--release", "--where", "f1 >= 0.5", "--user", "cli-ethics")
    assert f"Halt of {served} where f1 >= 0.5 released." in capsys.readouterr().out
    assert predict(ci, served, [row(0.5)]).status_code == 200


def test_the_command_names_the_bad_field(served):
    services.role_grant(username="cli-lead", roles=["ml_lead"], actor=SYSTEM)
    with pytest.raises(CommandError, match=r"where\.field: 'area' is not a feature"):
        call_command(
            "halt", served, "--where", "area in north-east", "--reason", "x", "--user", "cli-lead"
        )
    with pytest.raises(CommandError, match="write FIELD OP VALUE"):
        call_command("halt", served, "--where", "f1 ~ 3", "--reason", "x", "--user", "cli-lead")


def test_the_promotion_check_is_not_refused_by_a_scoped_halt(served, lead, committed):
    from serving import gateway

    with committed():
        engage(lead, served, HIGH_F1)
    body = {"instances": [row(0.9)]}
    assert gateway.serve(served, body, record=False)[0] == 503
    assert gateway.serve(served, body, record=False, ignore_halt=True)[0] == 200


# --- the text form (no database) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed", "rendered"),
    [
        (
            "area in north-east,south",
            {"field": "area", "op": "in", "value": ["north-east", "south"]},
            'area in {"north-east", "south"}',
        ),
        (
            'sensitive.area in {"north-east"}',
            {"field": "sensitive.area", "op": "in", "value": ["north-east"]},
            'sensitive.area in {"north-east"}',
        ),
        (
            "population_density > 5000",
            {"field": "population_density", "op": "gt", "value": 5000},
            "population_density > 5000",
        ),
        ("x between 1 and 2.5", {"field": "x", "op": "between", "value": [1, 2.5]}, None),
        ("x NOT IN 1, 2", {"field": "x", "op": "not_in", "value": [1, 2]}, "x not in {1, 2}"),
        ('x = "5"', {"field": "x", "op": "eq", "value": "5"}, 'x == "5"'),
        ("x<=-3.5", {"field": "x", "op": "le", "value": -3.5}, "x <= -3.5"),
    ],
)
def test_parse_where_reads_the_text_form_and_renders_it_back(text, parsed, rendered):
    assert parse_where(text) == parsed
    where = where_normalize(parsed)
    assert where.text == (rendered or text)
    assert where_normalize(parse_where(where.text)) == where


@pytest.mark.parametrize("text", ["", "x", "x ~ 3", "x > 1, 2", "x between 1"])
def test_parse_where_refuses_what_it_cannot_read(text):
    with pytest.raises(InvalidInput):
        where_normalize(parse_where(text))


def test_the_admin_release_action_releases_the_scoped_halt_it_lists(
    served, ci, client, lead, committed
):
    from django.contrib.auth import get_user_model

    with committed():
        engage(lead, served, HIGH_F1)
        lead.post("/api/v1/halt/", {"scope": served, "reason": "all"}, format="json")
    scoped = Halt.objects.get(scope=served, where__isnull=False)
    services.role_grant(username="admin-lead", roles=["ml_lead"], actor=SYSTEM)
    services.role_grant(username="admin-ethics", roles=["ethics_officer"], actor=SYSTEM)
    listing = None
    for username in ("admin-lead", "admin-ethics"):
        client.force_login(get_user_model().objects.get(username=username))
        listing = client.get("/admin/serving/halt/").content.decode()
        with committed():
            client.post(
                "/admin/serving/halt/",
                {"action": "approve_release", "_selected_action": [scoped.pk]},
            )

    assert "f1 &gt; 0.5" in listing
    scoped.refresh_from_db()
    assert not scoped.active
    assert Halt.objects.get(scope=served, where__isnull=True).active  # the whole halt stays


def test_a_value_no_float_can_hold_is_unevaluable_not_an_error():
    where = where_normalize({"field": "f1", "op": "gt", "value": 1})
    assert where.evaluate([{"f1": 10**400}, {"f1": 2}, {"f1": True}], None) == ([1], [0, 2])
    with pytest.raises(InvalidInput, match="finite number"):
        where_normalize({"field": "f1", "op": "gt", "value": 10**400})
