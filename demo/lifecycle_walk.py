"""The demo's lifecycle: evidence from the validation split, sign-offs by demo people."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, time

import pandas as pd
from django.contrib.auth import get_user_model

from governance import lifecycle
from governance.approvals import approval_record
from governance.audit import Actor
from governance.gates import evaluation_submit
from platform_core.errors import DomainError
from registry.models import ModelVersion

from . import data

# How far each demo version goes.
TARGET = {"1.0.0": "production", "1.0.1": "production", "1.1.0": "staging", "2.0.0": "validation"}


def _person(username: str) -> Actor:
    return Actor.for_user(get_user_model().objects.get(username=username), request_id="demo")


def _records(model, frame: pd.DataFrame, features: list[str], *, with_time: bool) -> list[dict]:
    scores = model.predict_proba(frame[features])[:, 1]
    records = []
    for row, score in zip(frame.itertuples(index=False), scores, strict=True):
        record = {
            "score": round(float(score), 6),
            "label": int(getattr(row, data.TARGET)),
            "sensitive": {data.GROUP: str(getattr(row, data.GROUP))},
        }
        if with_time:
            stamp = datetime.combine(row.week_start, time(12), tzinfo=UTC)
            record["timestamp"] = stamp.isoformat()
        records.append(record)
    return records


def walk(
    *, version: ModelVersion, model, validation: pd.DataFrame, features: list[str], ci: Actor
) -> Iterator[str]:
    target = TARGET.get(version.version)
    if target is None:
        return
    name, text = version.model.name, version.version

    def evidence(kind: str, **payload) -> bool:
        report = evaluation_submit(
            model_name=name, version=text, kind=kind, payload={"kind": kind, **payload}, actor=ci
        )
        return report.passed

    def sign(transition: str, role: str, username: str, comment: str) -> None:
        approval_record(
            version=version,
            transition=transition,
            role=role,
            decision="approve",
            comment=comment,
            actor=_person(username),
        )

    def move(transition: str) -> None:
        lifecycle.transition(version=version, name=transition, actor=ci, comment="demo pipeline")

    try:
        evidence("unit_tests", passed=True, summary="212 passed in 41.3s")
        sign("submit_for_validation", "ml_engineer", "eli-engineer", "Reviewed the training PR")
        move("submit_for_validation")
        yield f"{text}: unit tests and code review done, now in validation"
        records = _records(model, validation, features, with_time=False)
        if not evidence("validation", records=records):
            yield f"{text}: a validation gate failed; sent back to development (see its report)"
            return
        yield f"{text}: validation gates passed on {len(records)} records"
        if target == "validation":
            return
        sign(
            "approve_for_staging", "ml_lead", "lee-lead", "Metrics, fairness and ECE within policy"
        )
        move("approve_for_staging")
        yield f"{text}: approved for staging by the ML Lead"
        if target == "staging":
            sign("promote", "ml_lead", "lee-lead", "Shadow results look right so far")
            sign("promote", "ethics_officer", "olu-ethics", "Parity across neighbourhoods holds")
            yield f"{text}: in 7-day shadow mode; waits for the product manager's sign-off"
            return
        if lifecycle.live_lifecycle(version.model) is None:
            replay = _records(model, validation, features, with_time=True)
            if not evidence("shadow_replay", records=replay):
                yield f"{text}: shadow replay failed; back in validation"
                return
        # else a PATCH of the live version: fast-tracked, no shadow period
        sign("promote", "ml_lead", "lee-lead", "Replay over 12 weeks matches validation")
        sign("promote", "ethics_officer", "olu-ethics", "No group disparity beyond policy")
        sign("promote", "product_manager", "pia-pm", "Analysts briefed; go")
        move("promote")
        yield f"{text}: promoted to production"
    except DomainError as exc:
        reasons = getattr(exc, "reasons", [str(exc)])
        yield f"{text}: stopped: {'; '.join(reasons)}"
