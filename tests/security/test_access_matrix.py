"""The access matrix: every API operation and every console, admin and registry page x every
actor (conftest.ACTORS), against real objects of a target model, with the expected outcome
written down below.

A route nobody listed fails ``test_every_route_is_in_the_table``: an endpoint cannot ship without
someone deciding who may call it. An allowed actor must get through (not 401/403/404: the objects
exist, so a 404 would prove nothing); everyone else must be refused (or, on list pages, get a list
without the target) and no body may carry the target's data. The known leaks of issue 10 are
checked apart in ``test_known_leak`` (strict xfail): they flip to failures when fixed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest
from django.contrib import admin
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from tests.depth import DEEP
from tests.security.conftest import ACTORS, ROLES, TARGET, World

pytestmark = pytest.mark.django_db

TARGET_SCOPES = ("target", "global")  # grants that reach the target model
ANY_SCOPE = ("target", "other", "global")
STAFF = [r for r in ROLES if r != "ci"]  # people; ci is a machine account, never staff
EVERYONE = frozenset(ACTORS)


def holders(roles, scopes=TARGET_SCOPES) -> frozenset[str]:
    return frozenset(f"{r}@{s}" for r in roles for s in scopes)


READERS = holders(ROLES)  # READ is in every role
ALERT_HANDLERS = holders(["ml_engineer", "ml_lead", "ethics_officer", "oncall"])


@dataclass(frozen=True)
class Rule:
    """Who gets through; everyone else is refused and sees nothing of the target.

    ``listing``: a list page, where an actor outside ``allowed`` may get a 2xx/3xx answer as long
    as it carries nothing of the target. ``shows``: an allowed GET must name the target (proof the
    fixture resolved). ``body``: what a write sends (``{}`` reaches validation: 400 for the
    allowed, nothing is changed).
    """

    allowed: frozenset[str]
    listing: bool = False
    shows: bool = True
    body: dict = field(default_factory=dict)
    statuses_5xx: frozenset[int] = frozenset()  # a documented 5xx (predict: 503 while halted)
    sample: bool = False  # the same answer for all: asked of one actor of each kind (slow pages)


R = Rule
_RUNS = {"model": TARGET}
_SCOPE = {"scope": TARGET, "reason": "access matrix"}

# (method, path as in the OpenAPI schema) -> rule. Keep in step with README "Roles".
API: dict[tuple[str, str], Rule] = {
    ("GET", "/api/v1/models/"): R(READERS, listing=True),
    ("POST", "/api/v1/models/"): R(holders(["ci", "ml_engineer", "ml_lead"], ("global",))),
    ("GET", "/api/v1/models/{name}/"): R(READERS),
    ("GET", "/api/v1/models/{name}/versions/"): R(READERS),
    ("POST", "/api/v1/models/{name}/versions/"): R(holders(["ci", "ml_engineer", "ml_lead"])),
    ("GET", "/api/v1/models/{name}/versions/{version}/"): R(READERS),
    ("GET", "/api/v1/models/{name}/versions/{version}/evaluations/"): R(READERS, shows=False),
    ("POST", "/api/v1/models/{name}/versions/{version}/evaluations/"): R(holders(["ci"])),
    # any reader may ask; the lifecycle then checks the transition's own roles
    ("POST", "/api/v1/models/{name}/versions/{version}/transitions/"): R(READERS),
    ("GET", "/api/v1/models/{name}/versions/{version}/approvals/"): R(READERS),
    ("POST", "/api/v1/models/{name}/versions/{version}/approvals/"): R(READERS),
    ("GET", "/api/v1/models/{name}/versions/{version}/history/"): R(READERS),
    # issue 15: who may read the version reads its documentation pack (its audit trail is
    # withheld, not refused, without read_audit)
    ("GET", "/api/v1/models/{name}/versions/{version}/documentation/"): R(READERS),
    ("POST", "/api/v1/models/{name}/versions/{version}/reference/"): R(
        holders(["ci", "data_engineer"])
    ),
    ("GET", "/api/v1/models/{name}/predictions/"): R(READERS, shows=False),
    ("POST", "/api/v1/models/{name}/predictions/"): R(holders(["ci", "data_engineer"])),
    ("POST", "/api/v1/models/{name}/labels/"): R(holders(["ci", "data_engineer"])),
    ("POST", "/api/v1/models/{name}/rollback/"): R(holders(["ml_lead"])),
    ("GET", "/api/v1/models/{name}/ethics-policy/"): R(READERS, shows=False),
    ("PUT", "/api/v1/models/{name}/ethics-policy/"): R(holders(["ethics_officer"])),
    ("GET", "/api/v1/audit/"): R(holders(["ml_lead", "ethics_officer", "auditor"]), listing=True),
    ("GET", "/api/v1/audit/verify/"): R(
        holders(["ml_lead", "ethics_officer", "auditor"], ("global",)), shows=False
    ),
    ("GET", "/api/v1/monitoring/runs/"): R(READERS, listing=True),
    ("POST", "/api/v1/monitoring/runs/"): R(holders(["ml_lead", "ethics_officer"]), body=_RUNS),
    ("GET", "/api/v1/monitoring/runs/{id}/"): R(READERS),
    ("GET", "/api/v1/alerts/"): R(READERS, listing=True),
    ("GET", "/api/v1/alerts/{id}/"): R(READERS),
    ("GET", "/api/v1/incidents/"): R(READERS, listing=True),
    ("GET", "/api/v1/incidents/{id}/"): R(READERS),
    # the waiting step of the fixture's playbook-1 incident is the data engineer's
    ("POST", "/api/v1/incidents/{id}/steps/{order}/complete/"): R(
        holders(["data_engineer"]), body={"note": "checked"}
    ),
    ("GET", "/api/v1/playbooks/"): R(holders(ROLES, ANY_SCOPE), shows=False),
    # the target is halted: its predict answers 503 with the reason, after the permission check
    ("POST", "/api/v1/predict/{name}/"): R(
        holders(["ci"]),
        body={"instances": [{"f1": 0.1, "f2": 0.2, "f3": 0.3}]},
        statuses_5xx=frozenset({503}),
    ),
    ("GET", "/api/v1/halt/"): R(READERS, listing=True),
    ("GET", "/api/v1/models/{name}/artifact-policy/"): R(READERS, shows=False),
    # {} reaches validation: the reason is required
    ("PUT", "/api/v1/models/{name}/artifact-policy/"): R(holders(["ml_lead"])),
    # acknowledging is idempotent; resolving with {} is a 400 (the note is required)
    ("POST", "/api/v1/alerts/{id}/acknowledge/"): R(ALERT_HANDLERS),
    ("POST", "/api/v1/alerts/{id}/resolve/"): R(ALERT_HANDLERS),
    ("POST", "/api/v1/halt/"): R(holders(["ml_lead", "ethics_officer", "oncall"]), body=_SCOPE),
    ("POST", "/api/v1/halt/release/"): R(holders(["ml_lead", "ethics_officer"]), body=_SCOPE),
}

# Pages outside the API and the admin, fetched with a logged-in browser session.
PAGES: dict[tuple[str, str], Rule] = {
    ("GET", "/"): R(EVERYONE, shows=False),  # a redirect to /registry/
    ("GET", "/healthz"): R(EVERYONE, shows=False),
    ("GET", "/readyz"): R(
        READERS, listing=True, shows=False, statuses_5xx=frozenset({503}), sample=True
    ),
    ("GET", "/api/schema/"): R(EVERYONE, shows=False, sample=True),  # no per-model content
    ("GET", "/api/docs/"): R(EVERYONE, shows=False),
    ("GET", "/registry/"): R(READERS, listing=True),
    ("GET", "/registry/{name}/"): R(READERS),
    ("GET", "/registry/{name}/{version}/"): R(READERS),
    ("GET", "/registry/{name}/{version}/card/"): R(READERS, shows=False),
    # The console: every logged-in person gets the page, listing only the models they may read;
    # its forms post to views whose services check the role again (a refusal is a message).
    ("GET", "/console/"): R(READERS, listing=True),
    ("GET", "/console/overview/rows/"): R(READERS, listing=True),
    ("GET", "/console/alerts/"): R(READERS, listing=True),
    ("POST", "/console/alerts/{pk}/{verb}/"): R(READERS, listing=True, shows=False),
    ("GET", "/console/halts/"): R(READERS, listing=True),
    ("POST", "/console/halts/engage/"): R(READERS, listing=True, shows=False),
    ("POST", "/console/halts/release/"): R(READERS, listing=True, shows=False),
    # a model's page and its charts' data: its readers only, a 404 for everyone else
    ("GET", "/console/models/{name}/"): R(READERS),
    ("GET", "/console/models/{name}/series.json"): R(READERS),
    ("GET", "/console/incidents/"): R(READERS, listing=True),
    ("GET", "/console/incidents/{pk}/"): R(READERS),
    # as the API's step completion: the fixture's waiting step is the data engineer's
    ("POST", "/console/incidents/{pk}/steps/{order}/complete/"): R(
        holders(["data_engineer"]), shows=False, body={"note": "checked"}
    ),
    # everyone logged in gets a list of their own work; only holders of a role see the target's
    ("GET", "/console/work/"): R(READERS, listing=True, shows=False),
    # issue 12: a version of a model one may not read is a 404; the audit page and its export
    # follow GET /api/v1/audit/ (read_audit, per-model grants see their models' events)
    ("GET", "/console/models/{name}/versions/{version}/"): R(READERS),
    ("GET", "/console/models/{name}/versions/{version}/documentation/"): R(READERS),
    ("GET", "/console/models/{name}/versions/{version}/documentation/download/"): R(READERS),
    ("GET", "/console/audit/"): R(holders(["ml_lead", "ethics_officer", "auditor"]), listing=True),
    ("GET", "/console/audit/export.csv"): R(
        holders(["ml_lead", "ethics_officer", "auditor"]), listing=True
    ),
}

# The admin: staff with a global grant read; nobody adds or edits (facts are immutable and
# changes go through audited services). Per-model grants open the lifecycle, evaluation and
# approval pages, scoped to their models (issue 12).
STAFF_GLOBAL = holders(STAFF, ("global",))
STAFF_SCOPED = STAFF_GLOBAL | holders(STAFF, ("target",))
NOBODY: frozenset[str] = frozenset()
ADMIN_MODELS: dict[str, frozenset[str]] = {
    "auth.group": NOBODY,
    "auth.user": NOBODY,
    "knox.authtoken": NOBODY,
    "django_celery_beat.periodictask": NOBODY,
    "django_celery_beat.clockedschedule": NOBODY,
    "django_celery_beat.crontabschedule": NOBODY,
    "django_celery_beat.solarschedule": NOBODY,
    "django_celery_beat.intervalschedule": NOBODY,
    "registry.registeredmodel": STAFF_GLOBAL,
    "registry.modelversion": STAFF_GLOBAL,
    "registry.modelcard": STAFF_GLOBAL,
    "registry.pendingartifact": STAFF_GLOBAL,
    "registry.artifactpolicy": STAFF_GLOBAL,
    "axes.accessattempt": NOBODY,
    "axes.accesslog": NOBODY,
    "axes.accessfailurelog": NOBODY,
    "governance.lifecycle": STAFF_SCOPED,
    "governance.evaluation": STAFF_SCOPED,
    "governance.approval": STAFF_SCOPED,
    # the ML Lead of a model edits its validation policy (issue 11)
    "governance.validationpolicy": STAFF_GLOBAL | holders(["ml_lead"]),
    "governance.escalation": STAFF_GLOBAL,
    "governance.rolegrant": STAFF_GLOBAL,
    "governance.tokenscope": STAFF_GLOBAL,
    "governance.auditevent": holders(["ml_lead", "ethics_officer", "auditor"], ("global",)),
    "monitoring.monitorrun": STAFF_GLOBAL,
    "monitoring.alert": STAFF_GLOBAL,
    "monitoring.reviewitem": STAFF_GLOBAL,
    "monitoring.audittask": STAFF_GLOBAL,
    "monitoring.metricpoint": STAFF_GLOBAL,
    "monitoring.databatch": STAFF_GLOBAL,
    "monitoring.referenceprofile": STAFF_GLOBAL,
    # the ML Lead of a model edits its monitoring policy, its Ethics Officer its ethics policy
    "monitoring.monitoringpolicy": STAFF_GLOBAL | holders(["ml_lead"]),
    "incidents.incident": STAFF_GLOBAL,
    "incidents.rollback": STAFF_GLOBAL,
    "incidents.notification": STAFF_GLOBAL,
    "incidents.playbook": STAFF_GLOBAL,
    "incidents.ethicspolicy": STAFF_GLOBAL | holders(["ethics_officer"]),
    "serving.halt": STAFF_GLOBAL,
    "serving.staleprediction": STAFF_GLOBAL,
    "serving.routinggeneration": STAFF_GLOBAL,
}
# Add forms some roles open: manual rollback, halt, and the per-model policies. Everyone else 403.
ADMIN_ADD: dict[str, Rule] = {
    # a per-model holder adds policies for their own models: the form offers only those
    "monitoring.monitoringpolicy": R(holders(["ml_lead"], ANY_SCOPE), listing=True, shows=False),
    "governance.validationpolicy": R(holders(["ml_lead"], ANY_SCOPE), listing=True, shows=False),
    "incidents.ethicspolicy": R(holders(["ethics_officer"], ANY_SCOPE), listing=True, shows=False),
    "incidents.rollback": R(holders(["ml_lead"], ANY_SCOPE), listing=True, shows=False),
    "serving.halt": R(holders(["ml_lead", "ethics_officer", "oncall"], ANY_SCOPE), shows=False),
}
# Admin routes beyond a ModelAdmin's standard ones. The action views redirect every staff user
# back (their service refuses and says why in a message): reachable, never leaking.
STAFF_ANY = holders(STAFF, ANY_SCOPE) | {"revoked"}  # is_staff is left behind by a revocation
ADMIN_CUSTOM: dict[tuple[str, str], Rule] = {
    ("GET", "/admin/"): R(STAFF_GLOBAL, listing=True, shows=False),
    ("GET", "/admin/{app_label}/"): R(STAFF_GLOBAL, shows=False),
    ("GET", "/admin/governance/lifecycle/inbox/"): R(
        STAFF_GLOBAL | holders(STAFF), listing=True, shows=False
    ),
    ("POST", "/admin/governance/lifecycle/{pk}/transition/"): R(
        STAFF_ANY, listing=True, shows=False
    ),
    ("POST", "/admin/governance/lifecycle/{pk}/decide/"): R(STAFF_ANY, listing=True, shows=False),
    ("POST", "/admin/incidents/incident/{pk}/steps/{order}/complete/"): R(
        holders(["data_engineer"]), shows=False, body={"note": "checked"}
    ),
    ("GET", "/admin/auth/user/{id}/password/"): R(NOBODY),
    ("GET", "/admin/login/"): R(EVERYONE, shows=False),
    ("POST", "/admin/logout/"): R(EVERYONE, shows=False),
    ("GET", "/admin/password_change/"): R(STAFF_ANY, shows=False),
    ("GET", "/admin/password_change/done/"): R(STAFF_ANY, shows=False),
    ("GET", "/admin/jsi18n/"): R(STAFF_ANY, shows=False),
    ("GET", "/admin/autocomplete/"): R(NOBODY, shows=False),  # no field is autocompleted
    ("GET", "/admin/r/{content_type_id}/{object_id}/"): R(STAFF_ANY, listing=True, shows=False),
}

# Known leaks of issue 10, checked by test_known_leak (strict xfail) instead of the matrix.
_WITHOUT_TARGET = {"no_grants", "revoked"} | holders(ROLES, ("other",))
KNOWN: dict[str, tuple[tuple[str, str], frozenset[str], str]] = {
    # name: ((method, path), actors, what leaks) - skipped by the matrix while listed; all of
    # issue 10's (readyz details, halt list, registry pages, step completion, policy admins)
    # are fixed and checked by the matrix itself.
}


# --- the route inventory ------------------------------------------------------------------------


def _walk(patterns, prefix=""):
    for p in patterns:
        if isinstance(p, URLResolver):
            yield from _walk(p.url_patterns, prefix + str(p.pattern))
        elif isinstance(p, URLPattern):
            yield prefix + str(p.pattern)


def _template(pattern: str) -> str:
    path = re.sub(r"\^?\(\?P<(\w+)>[^)]*\)(/?)\$$", r"{\1}\2", pattern)  # the admin's regexes
    path = "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", path)
    return path.replace("{pk}", "{id}") if path.startswith("/api/") else path


def _schema_operations() -> set[tuple[str, str]]:
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    return {(m.upper(), p) for p, ops in schema["paths"].items() for m in ops}


def _admin_standard_suffixes() -> set[str]:
    from django.contrib.auth.models import Group

    class Plain(admin.ModelAdmin):
        pass

    return {_template(str(p.pattern))[1:] for p in Plain(Group, admin.site).get_urls()}


def test_every_route_is_in_the_table():
    operations = _schema_operations()
    assert operations == set(API), (
        "API operations without a rule (add them to API): "
        f"{sorted(operations - set(API))}; rules for operations that are gone: "
        f"{sorted(set(API) - operations)}"
    )
    api_paths = {p for _, p in API}
    page_paths = {p for _, p in PAGES} | {p for _, p in ADMIN_CUSTOM}
    registered = {m._meta.label_lower: ma for m, ma in admin.site._registry.items()}
    assert set(registered) == set(ADMIN_MODELS), (
        f"admin models without a rule: {sorted(set(registered) - set(ADMIN_MODELS))}; "
        f"rules for admin models that are gone: {sorted(set(ADMIN_MODELS) - set(registered))}"
    )
    standard = _admin_standard_suffixes()
    model_prefixes = {f"/admin/{label.replace('.', '/')}/" for label in registered}
    unlisted = []
    for pattern in _walk(get_resolver().url_patterns):
        path = _template(pattern)
        if path in api_paths or path in page_paths or path == "/admin/{url}":
            continue  # /admin/{url}: the admin's catch-all, answering 404 or the login
        prefix = next((p for p in model_prefixes if path.startswith(p)), None)
        if prefix is not None and path[len(prefix) :] in standard:
            continue
        unlisted.append(path)
    assert not unlisted, f"routes nobody decided access for (add them to the tables): {unlisted}"


# --- requests -----------------------------------------------------------------------------------


def _fill(world: World, path: str) -> str:
    from django.contrib.contenttypes.models import ContentType

    ids = {"/incidents/": world.incident.pk, "/alerts/": world.alert.pk, "/runs/": world.run.pk}
    pk = next((v for k, v in ids.items() if k in path), None)
    if "/lifecycle/" in path:
        pk = world.version.lifecycle.pk
    return path.format(
        name=TARGET,
        version=world.version.version,
        id=pk,
        pk=pk,
        order=world.step_order,
        app_label="registry",
        verb="acknowledge",
        content_type_id=ContentType.objects.get_for_model(world.version.model).pk,
        object_id=world.version.model.pk,
    ).replace("/auth/user/None/", f"/auth/user/{world.users['ml_lead@target'].pk}/")


@dataclass(frozen=True)
class AdminPage:
    """A ModelAdmin's changelist, add form or the target row's change page."""

    rule: Rule
    url: str
    model_admin: admin.ModelAdmin
    view: str  # "changelist", "add" or "change"
    row: object = None


def _admin_pages(world: World) -> dict[tuple[str, str], AdminPage]:
    """Changelist, add page and (for the target's own rows) change page of every ModelAdmin."""
    from governance.models import AuditEvent
    from serving.models import Halt

    target_rows = {
        "registry.registeredmodel": world.version.model,
        "registry.modelversion": world.version,
        "registry.modelcard": world.version.card,
        "governance.lifecycle": world.version.lifecycle,
        "governance.auditevent": AuditEvent.objects.filter(model_name=TARGET).first(),
        "monitoring.monitorrun": world.run,
        "monitoring.alert": world.alert,
        "incidents.incident": world.incident,
        "serving.halt": Halt.objects.get(scope=TARGET),
    }
    pages = {}
    for model, model_admin in admin.site._registry.items():
        label = model._meta.label_lower
        base = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        allowed = ADMIN_MODELS[label]
        pages[("GET", f"admin:{label}")] = AdminPage(
            R(allowed, listing=True, shows=False),
            reverse(f"{base}_changelist"),
            model_admin,
            "changelist",
        )
        add = ADMIN_ADD.get(label, R(NOBODY))
        pages[("GET", f"admin:{label}:add")] = AdminPage(
            add, reverse(f"{base}_add"), model_admin, "add"
        )
        row = target_rows.get(label)
        if row is not None:
            url = reverse(f"{base}_change", args=[row.pk])
            pages[("GET", f"admin:{label}:change")] = AdminPage(
                R(allowed), url, model_admin, "change", row
            )
    return pages


def _admitted(page: AdminPage, user) -> bool:
    """Whether Django's admin lets ``user`` (None: anonymous) open ``page`` (an answer 200), decided
    as its views decide, without the request going through the stack: the site's gate (an active
    staff member, ``admin_view``), then what ``changelist_view``, ``add_view`` and
    ``change_view`` ask of the ModelAdmin (a change page also needs its row in the admin's
    queryset for the user; otherwise the admin redirects)."""
    from django.contrib.auth.models import AnonymousUser
    from django.test import RequestFactory

    request = RequestFactory().get(page.url)
    request.user = user if user is not None else AnonymousUser()
    if not admin.site.has_permission(request):
        return False
    model_admin = page.model_admin
    if page.view == "add":
        return model_admin.has_add_permission(request)
    if page.view == "changelist":
        return model_admin.has_view_or_change_permission(request)
    visible = model_admin.get_queryset(request).filter(pk=page.row.pk).exists()
    return visible and model_admin.has_view_or_change_permission(request, page.row)


def _admin_decisions(world: World) -> dict[tuple[str, str], dict[str, bool]]:
    """Every actor on every admin page: admitted or not."""
    return {
        key: {actor: _admitted(page, world.users.get(actor)) for actor in ACTORS}
        for key, page in _admin_pages(world).items()
    }


def _kind(actor: str) -> str:
    """anonymous, no_grants and revoked are kinds of their own; a role holder's is its scope."""
    return actor.partition("@")[2] or actor


def _admin_sample(rule: Rule, admitted: dict[str, bool], ordinal: int) -> list[str]:
    """The actors asked over HTTP on one admin page (every actor under TEST_DEPTH=deep).

    One actor of each class whose expected answer is distinct (allowed or not, a reader of the
    target or not, its kind, admitted or not), taken in turn across pages (``ordinal``) so each
    actor is asked over HTTP on many pages; and every actor a listing admits outside its rule,
    since only the body tells whether it shows them the target. Every actor's decision on every
    page is checked apart (``test_every_admin_decision_follows_the_table``), and each answer
    asked here must follow its decision: the two together cover the whole matrix.
    """
    if DEEP:
        return list(ACTORS)
    classes: dict[tuple, list[str]] = {}
    for actor in ACTORS:
        cls = (actor in rule.allowed, actor in READERS, _kind(actor), admitted[actor])
        classes.setdefault(cls, []).append(actor)
    picked = {members[ordinal % len(members)] for members in classes.values()}
    picked |= {a for a in ACTORS if admitted[a] and a not in rule.allowed}
    return [a for a in ACTORS if a in picked]


@dataclass
class Outcome:
    actor: str
    method: str
    url: str
    status: int
    leaked: list[str]

    def __str__(self) -> str:
        leaked = f", body carries {self.leaked}" if self.leaked else ""
        return f"{self.actor}: {self.method} {self.url} -> {self.status}{leaked}"


class Matrix:
    """One client per actor (a token for the API, a login for pages), reused for every request."""

    def __init__(self, world: World):
        self.world = world
        self.api = {a: world.api(a) for a in ACTORS}
        self.browsers: dict = {}

    def call(self, actor: str, method: str, url: str, body: dict, *, page: bool) -> Outcome:
        if page and url.endswith("/logout/"):  # a fresh session: logging out must not end ours
            client = self.world.browser(actor)
            response = client.post(url, body)
        elif page:
            if actor not in self.browsers:
                self.browsers[actor] = self.world.browser(actor)
            client = self.browsers[actor]
            send = getattr(client, method.lower())
            response = send(url, body) if method != "GET" else send(url)
        else:
            client = self.api[actor]
            send = getattr(client, method.lower())
            response = send(url, body, format="json") if method != "GET" else send(url)
        raw = b"".join(response.streaming_content) if response.streaming else response.content
        text = raw.decode(errors="replace")
        markers = list(self.world.markers)
        if TARGET not in url and TARGET not in str(body):  # the caller's own words don't count
            markers.append(TARGET)
        return Outcome(actor, method, url, response.status_code, [m for m in markers if m in text])


def _judge(outcome: Outcome, rule: Rule, *, page: bool) -> str | None:
    """Why this outcome breaks the rule, or None."""
    refused = {401, 403, 404} | ({302} if page else set())
    if outcome.status >= 500 and outcome.status not in rule.statuses_5xx:
        return f"server error: {outcome}"
    if outcome.actor in rule.allowed:
        if outcome.status in {401, 403, 404}:
            return f"allowed actor refused: {outcome}"
        if (
            outcome.method == "GET"
            and rule.shows
            and TARGET not in "".join([outcome.url, *outcome.leaked])
        ):
            return f"allowed actor got no target data (fixture not resolved?): {outcome}"
        return None
    if outcome.leaked and outcome.actor not in READERS:  # a reader may hear the target named
        return f"LEAK: {outcome}"
    if outcome.status not in refused and not rule.listing:
        return f"not refused: {outcome}"
    return None


def _known_cells() -> dict[tuple[str, str], frozenset[str]]:
    cells: dict[tuple[str, str], frozenset[str]] = {}
    for op, actors, _ in KNOWN.values():
        cells[op] = cells.get(op, frozenset()) | actors
    return cells


SAMPLE = ["anonymous", "no_grants", "revoked", "ml_lead@target", "ml_lead@other", "ci@global"]


def _order(rule: Rule, actors: list[str] | None = None) -> list[str]:
    """The refused first: a write by an allowed actor may change what later callers see."""
    actors = actors if actors is not None else SAMPLE if rule.sample else ACTORS
    return [a for a in actors if a not in rule.allowed] + [a for a in actors if a in rule.allowed]


def _check(
    matrix: Matrix,
    key,
    rule: Rule,
    url: str,
    *,
    page: bool,
    skip=frozenset(),
    actors: list[str] | None = None,
    admitted: dict[str, bool] | None = None,
) -> list:
    """``admitted``: the admin's decision per actor, which each answer must follow (200 or not)."""
    method = key[0]
    problems = []
    for actor in _order(rule, actors):
        if actor in skip:
            continue
        outcome = matrix.call(actor, method, url, rule.body, page=page)
        if (why := _judge(outcome, rule, page=page)) is not None:
            problems.append(why)
        elif admitted is not None and admitted[actor] != (outcome.status == 200):
            decided = "admits" if admitted[actor] else "refuses"
            problems.append(f"the admin {decided} but the page answered otherwise: {outcome}")
    return problems


def test_api_access_matrix(world):
    matrix, known = Matrix(world), _known_cells()
    problems = []
    for key, rule in API.items():
        url = _fill(world, key[1])
        problems += _check(matrix, key, rule, url, page=False, skip=known.get(key, frozenset()))
    assert not problems, "\n".join(problems)


def test_page_access_matrix(world):
    matrix, known = Matrix(world), _known_cells()
    problems = []
    for key, rule in {**PAGES, **ADMIN_CUSTOM}.items():
        url = _fill(world, key[1])
        problems += _check(matrix, key, rule, url, page=True, skip=known.get(key, frozenset()))
    decisions = _admin_decisions(world)
    for ordinal, (key, admin_page) in enumerate(_admin_pages(world).items()):
        rule, admitted = admin_page.rule, decisions[key]
        problems += _check(
            matrix,
            key,
            rule,
            admin_page.url,
            page=True,
            skip=known.get(key, frozenset()),
            actors=_admin_sample(rule, admitted, ordinal),
            admitted=admitted,
        )
    assert not problems, "\n".join(problems)


def test_every_admin_decision_follows_the_table(world):
    """Every actor on every admin page, decided as the admin decides (``_admitted``): an allowed
    actor is admitted; anyone else is refused, except on a listing (which may admit them to a
    page without the target: the page matrix asks each of those over HTTP)."""
    pages = _admin_pages(world)
    problems = []
    for key, admitted in _admin_decisions(world).items():
        rule = pages[key].rule
        for actor, yes in admitted.items():
            if actor in rule.allowed and not yes:
                problems.append(f"allowed actor refused: {actor} on {key}")
            elif yes and actor not in rule.allowed and not rule.listing:
                problems.append(f"not refused: {actor} on {key}")
    assert not problems, "\n".join(problems)


def test_an_admin_redirect_never_leaves_the_site(world):
    """issue 10 #12: the approval view followed any ``next=`` URL."""
    client = world.browser("ml_lead@global")
    response = client.post(
        reverse("admin:governance_lifecycle_decide", args=[world.version.lifecycle.pk]),
        {
            "transition": "promote",
            "role": "ml_lead",
            "decision": "approve",
            "next": "https://evil.example/",
        },
    )
    assert response.status_code == 302
    assert not response["Location"].startswith(("http://", "https://", "//")), response["Location"]
