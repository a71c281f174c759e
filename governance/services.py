"""Entry points that views, tasks and commands call. Each write is audited in its transaction."""

from __future__ import annotations

import logging
from datetime import timedelta
from functools import partial

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from knox.models import AuthToken

from platform_core.errors import InvalidInput, NotFound
from platform_core.tasking import enqueue
from registry import services as registry_services
from registry.models import ModelVersion, RegisteredModel
from registry.services import VersionSpec

from . import audit
from .audit import Actor
from .models import SERVING_STAGES, Lifecycle, RoleGrant, Stage, TokenScope
from .permissions import roles_of
from .policies import policy_create_initial
from .roles import STAFF_ROLES, Role
from .versioning import check_bump

logger = logging.getLogger(__name__)

MLFLOW_ALIASES = {Stage.STAGING: ("staging",), **{s: ("production",) for s in SERVING_STAGES}}


def model_register(*, name: str, description: str = "", actor: Actor) -> RegisteredModel:
    with transaction.atomic():
        model = registry_services.model_create(
            name=name, description=description, created_by=actor.user
        )
        policy = policy_create_initial("validation", model, actor)
        audit.record(
            actor=actor,
            action="model.registered",
            obj=model,
            after={
                "name": model.name,
                "description": model.description,
                "validation_policy": {"version": policy.version, "values": policy.values},
            },
        )
    return model


def version_register(*, model_name: str, spec: VersionSpec, actor: Actor) -> ModelVersion:
    """Register a version: MLflow first, then facts, lifecycle record and audit in one commit."""
    model = registry_services.model_get(model_name)
    # fail fast, before touching MLflow
    registry_services.check_spec(model, spec, engineer_problem=engineer_problem)
    resolved = registry_services.materialise_artifact(model, spec)
    with transaction.atomic():
        model = registry_services.model_get(model_name, lock=True)
        semver, engineer = registry_services.check_spec(  # again, under the lock
            model, spec, engineer_problem=engineer_problem
        )
        check_bump(
            model=model,
            semver=semver,
            feature_list=spec.feature_list,
            training_data_hash=spec.training_data_hash,
            flavor=resolved.flavor,
        )
        version = registry_services.version_create(
            model=model,
            spec=spec,
            semver=semver,
            engineer=engineer,
            resolved=resolved,
            registered_by=actor.user,
        )
        lifecycle = Lifecycle.objects.create(version=version)
        audit.record(
            actor=actor,
            action="version.registered",
            obj=version,
            after={
                "version": version.version,
                "mlflow_uri": version.mlflow_uri,
                "artifact_digest": version.artifact_digest,
                "training_data_hash": version.training_data_hash,
                "feature_list": version.feature_list,
                "thresholds": version.thresholds,
                "stage": lifecycle.stage,
            },
        )
        transaction.on_commit(partial(mlflow_mirror_or_retry, version.pk), robust=True)
    return version


def engineer_problem(user, model: RegisteredModel) -> str | None:
    """The responsible engineer must hold ml_engineer on the model (globally or for it).

    Otherwise a registrant could name anyone, e.g. a colleague, to step around separation of
    duties, or a person who may not even read the model.
    """
    if Role.ML_ENGINEER in roles_of(user, model=model):
        return None
    return (
        f"'{user.get_username()}' does not hold the {Role.ML_ENGINEER} role for {model.name}; "
        f"grant it with manage.py grant_role {user.get_username()} {Role.ML_ENGINEER} "
        f"--model {model.name}"
    )


def mlflow_mirror_or_retry(version_id: int) -> None:
    """Mirror at once (a local call, usually milliseconds); if MLflow is down, a task retries.

    A quick ping first: MLflow's own client retries for minutes when its server is down, and
    this runs after commit in whatever process made the change - an urgent worker in the
    middle of a rollback must not wait on it.
    """
    from registry import mlflow_bridge

    try:
        mlflow_bridge.ping()
        mlflow_mirror(version_id=version_id)
    except Exception:
        logger.warning("MLflow mirror of version %s failed; queued a retry", version_id)
        enqueue("governance.mirror_stage_to_mlflow", version_id)


MIRROR_ROUNDS = 3


def mlflow_mirror(*, version_id: int) -> None:
    """Make MLflow show the platform's *current* stage of one version (tag and alias). Idempotent.

    Premise: the stage written is the stage the version has now, not the one it had when the
    mirror was enqueued. The stage is read when writing and read again after the (slow, remote)
    writes; if a transition committed meanwhile, the version is written again with the new
    stage, and the model's current alias holders are written too, so an alias a stale write
    took from them goes back (logged as a skipped premise; MLflow holds no audited state).
    """
    from .premises import Premise

    for _ in range(MIRROR_ROUNDS):
        lifecycle = (
            Lifecycle.objects.select_related("version__model").filter(version_id=version_id).first()
        )
        if lifecycle is None:
            return
        version = lifecycle.version
        _mirror_write(lifecycle)
        now = Lifecycle.objects.filter(version_id=version_id).values_list("stage", flat=True)
        if now.first() == lifecycle.stage:
            return
        Premise(
            "governance.mirror_stage_to_mlflow",
            f"{version.version} of {version.model.name} is in {lifecycle.stage}",
            model_id=version.model_id,
            model_name=version.model.name,
        ).skip(
            f"the stage moved to {now.first()} while it was mirrored: mirroring it again",
            audited=False,
            version=version.version,
        )
        holders = Lifecycle.objects.select_related("version").filter(
            version__model_id=version.model_id, stage__in=list(MLFLOW_ALIASES)
        )
        for holder in holders.exclude(version_id=version_id):
            if holder.version.mlflow_name == version.mlflow_name:
                _mirror_write(holder)


def _mirror_write(lifecycle: Lifecycle) -> None:
    from registry import mlflow_bridge

    version = lifecycle.version
    mlflow_bridge.mirror_stage(
        version.mlflow_name,
        version.mlflow_version,
        stage=lifecycle.stage,
        platform_version=version.version,
        aliases=MLFLOW_ALIASES.get(lifecycle.stage, ()),
    )


def _user(username: str, *, create: bool = False):
    User = get_user_model()
    if create:
        user, _ = User.objects.get_or_create(username=username)
        return user
    try:
        return User.objects.get(username=username)
    except User.DoesNotExist:
        raise NotFound(f"no user '{username}'") from None


def role_grant(
    *, username: str, roles: list[str], model_name: str | None = None, actor: Actor
) -> list[RoleGrant]:
    """Grant roles to a user (created if missing); global grants also join the role's group."""
    unknown = [r for r in roles if r not in Role.values]
    if unknown:
        raise InvalidInput(
            {"roles": f"unknown role(s) {', '.join(unknown)}; use {', '.join(Role.values)}"}
        )
    with transaction.atomic():
        model = registry_services.model_get(model_name) if model_name else None
        user = _user(username, create=True)
        created = []
        for role in roles:
            grant, is_new = RoleGrant.objects.get_or_create(
                user=user, role=role, model=model, defaults={"granted_by": actor.label}
            )
            if model is None:
                user.groups.add(Group.objects.get_or_create(name=role)[0])
            if role in STAFF_ROLES and not user.is_staff:
                user.is_staff = True
                user.save(update_fields=["is_staff"])
            if is_new:
                created.append(grant)
                audit.record(
                    actor=actor,
                    action="role.granted",
                    obj=user,
                    model_name=model.name if model else "",
                    after={"user": username, "role": role, "model": model_name},
                )
    return created


def role_revoke(
    *, username: str, roles: list[str], model_name: str | None = None, actor: Actor
) -> int:
    with transaction.atomic():
        user = _user(username)
        grants = RoleGrant.objects.filter(user=user, role__in=roles)
        grants = (
            grants.filter(model__name=model_name)
            if model_name
            else grants.filter(model__isnull=True)
        )
        revoked = list(grants.values_list("role", flat=True))
        grants.delete()
        if not model_name:
            user.groups.remove(*Group.objects.filter(name__in=revoked))
        for role in revoked:
            audit.record(
                actor=actor,
                action="role.revoked",
                obj=user,
                model_name=model_name or "",
                before={"user": username, "role": role, "model": model_name},
            )
    return len(revoked)


def token_create(
    *,
    username: str,
    actor: Actor,
    expires_days: int | None = 90,
    name: str = "",
    roles: list[str] | None = None,
) -> tuple[AuthToken, str]:
    """A new API token; the secret is returned once and never stored or audited."""
    roles = list(roles or [])
    unknown = [r for r in roles if r not in Role.values]
    if unknown:
        raise InvalidInput({"scope": f"unknown role(s) {', '.join(unknown)}"})
    if expires_days is not None and expires_days <= 0:
        raise InvalidInput({"expires": "must be a positive number of days"})
    with transaction.atomic():
        user = _user(username)
        expiry = timedelta(days=expires_days) if expires_days else None
        instance, secret = AuthToken.objects.create(user=user, expiry=expiry)
        scope = TokenScope.objects.create(
            token=instance, name=name or f"{username}-{instance.token_key}", roles=roles
        )
        audit.record(
            actor=actor,
            action="token.created",
            object_type="knox.AuthToken",
            object_id=instance.token_key,
            after={
                "user": username,
                "name": scope.name,
                "key_prefix": instance.token_key,
                "roles": roles or "all of the user's roles",
                "expiry": instance.expiry,
            },
        )
    return instance, secret


def token_revoke(*, key_prefix: str, actor: Actor) -> int:
    with transaction.atomic():
        tokens = list(AuthToken.objects.filter(token_key=key_prefix).select_related("user"))
        for token in tokens:
            audit.record(
                actor=actor,
                action="token.revoked",
                object_type="knox.AuthToken",
                object_id=token.token_key,
                before={"user": token.user.get_username(), "key_prefix": token.token_key},
            )
            token.delete()
    return len(tokens)
