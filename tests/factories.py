"""factory_boy factories for rows that tests need without going through MLflow, and a monitor
run's alert built from the run."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime

import factory
from django.contrib.auth import get_user_model

from governance.models import Lifecycle
from monitoring.models import Alert, MonitorRun
from registry.models import ModelCard, ModelVersion, RegisteredModel


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.org")


class RegisteredModelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RegisteredModel

    name = factory.Sequence(lambda n: f"model-{n}")
    description = "A test model"


class ModelVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelVersion
        skip_postgeneration_save = True

    model = factory.SubFactory(RegisteredModelFactory)
    version = factory.Sequence(lambda n: f"1.{n}.0")
    major = factory.LazyAttribute(lambda v: int(v.version.split(".")[0]))
    minor = factory.LazyAttribute(lambda v: int(v.version.split(".")[1]))
    patch = factory.LazyAttribute(lambda v: int(v.version.split(".")[2]))
    mlflow_name = factory.LazyAttribute(lambda v: v.model.name)
    mlflow_version = "1"
    artifact_uri = "models:/m-test"
    artifact_digest = factory.LazyAttribute(
        lambda v: "sha256:" + hashlib.sha256(v.version.encode()).hexdigest()
    )
    flavor = "sklearn"
    training_data_hash = "sha256:" + "ab" * 32
    training_data_start = date(2025, 1, 1)
    training_data_end = date(2025, 12, 31)
    feature_list = ["f1", "f2", "f3"]
    feature_types = factory.LazyAttribute(lambda v: dict.fromkeys(v.feature_list, "number"))
    thresholds = {"decision": 0.5}
    responsible_engineer = factory.SubFactory(UserFactory)
    created_at = datetime(2026, 1, 2, tzinfo=UTC)

    @factory.post_generation
    def with_card_and_lifecycle(obj, create, extracted, **kwargs):
        if create:
            ModelCard.objects.create(version=obj, intended_use="Testing")
            Lifecycle.objects.create(version=obj)


def alert_of(run: MonitorRun, severity: str, **fields) -> Alert:
    """An alert of ``run`` (its model, version, check and window) with placeholder numbers."""
    fields = {"metric": "m", "value": 1.0, "threshold": 0.5, **fields}
    return Alert.objects.create(
        run=run,
        model=run.model,
        version=run.version,
        kind=run.kind,
        severity=severity,
        window_start=run.window_start,
        window_end=run.window_end,
        **fields,
    )
