"""Versioning rules: the declared semantic-version bump must match what actually changed.

MAJOR = architecture (model flavour) or feature-set change, full re-validation; MINOR = retrained
on new data with the same features and flavour, shadow mode required; PATCH = bug fix or threshold
change, fast-tracked (no shadow, every validation gate again).

A new version is compared with the model's live version (the one in a serving stage), or, when
none serves, with the newest registered version before it. The first version of a model is MAJOR
by definition, whatever number it carries.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Max, Q

from platform_core.errors import InvalidInput
from registry.models import ModelVersion, RegisteredModel
from registry.semver import Bump, SemVer

from .models import SERVING_STAGES

__all__ = ["Bump", "baseline_version", "bump_kind", "check_bump", "version_bump"]


def _semver(value: SemVer | str) -> SemVer:
    if isinstance(value, SemVer):
        return value
    try:
        return SemVer.parse(value)
    except ValueError as exc:
        raise InvalidInput({"version": str(exc)}) from exc


def _older_than(semver: SemVer) -> Q:
    return (
        Q(major__lt=semver.major)
        | Q(major=semver.major, minor__lt=semver.minor)
        | Q(major=semver.major, minor=semver.minor, patch__lt=semver.patch)
    )


def baseline_version(model: RegisteredModel, semver: SemVer | str) -> ModelVersion | None:
    """What ``semver`` is measured against: the live version, else the newest one before it."""
    semver = _semver(semver)
    older = model.versions.filter(_older_than(semver))
    live = older.filter(lifecycle__stage__in=SERVING_STAGES).first()
    return live or older.newest_first().first()


def bump_kind(model: RegisteredModel, semver: SemVer | str) -> Bump:
    """The bump ``semver`` declares against its baseline (MAJOR for a model's first version)."""
    semver = _semver(semver)
    base = baseline_version(model, semver)
    return semver.bump_from(base.semver if base is not None else None)


def version_bump(version: ModelVersion) -> Bump:
    """The one answer to "which bump is this registered version": registration's bump check, the
    shadow requirement (lifecycle), the staging time limit (sla) and the shadow evaluation all ask
    here, so they can never disagree about whether a version is fast-tracked."""
    return bump_kind(version.model, version.semver)


def _listing(features: Iterable[str]) -> str:
    return "[" + ", ".join(features) + "]"


def _suggest(model: RegisteredModel, base: ModelVersion, needed: Bump) -> str:
    """The smallest version that declares ``needed`` and is still above every registered one."""
    newest = model.versions.newest_first().first()
    major_next = f"{(newest.major if newest else base.major) + 1}.0.0"
    if needed == Bump.MAJOR or (newest is not None and newest.major != base.major):
        return major_next
    top_minor = model.versions.filter(major=base.major).aggregate(m=Max("minor"))["m"]
    return f"{base.major}.{(top_minor or 0) + 1}.0 (MINOR) or {major_next}"


def check_bump(
    *,
    model: RegisteredModel,
    semver: SemVer | str,
    feature_list: Iterable[str],
    training_data_hash: str,
    flavor: str,
) -> None:
    """Refuse a declared bump smaller than the change: ``InvalidInput({"version": ...})``.

    A changed feature list (compared as a set) or model flavour requires MAJOR; a changed
    training-data hash with the same features requires at least MINOR.
    """
    semver = _semver(semver)
    base = baseline_version(model, semver)
    if base is None:
        return  # the first version of a model is MAJOR by definition
    bump = semver.bump_from(base.semver)
    if bump == Bump.MAJOR:
        return
    against = f"{base.version}, the {'live' if _is_live(base) else 'latest'} version"
    features = list(feature_list)
    changes: list[str] = []
    if set(features) != set(base.feature_list):
        added = sorted(set(features) - set(base.feature_list))
        removed = sorted(set(base.feature_list) - set(features))
        detail = "; ".join(
            part
            for part in (
                f"added {', '.join(added)}" if added else "",
                f"removed {', '.join(removed)}" if removed else "",
            )
            if part
        )
        changes.append(
            f"the feature list changed from {_listing(base.feature_list)} to "
            f"{_listing(features)} ({detail})"
        )
    if flavor != base.flavor:
        changes.append(f"the model flavour changed from {base.flavor} to {flavor}")
    if changes:
        scope = (
            "a PATCH may only fix bugs or adjust thresholds"
            if bump == Bump.PATCH
            else "a MINOR may only retrain on new data with the same features and flavour"
        )
        raise InvalidInput(
            {
                "version": f"{scope}; compared with {against}, {' and '.join(changes)}: "
                f"that is a MAJOR change, declare {_suggest(model, base, Bump.MAJOR)}"
            }
        )
    if bump == Bump.PATCH and training_data_hash != base.training_data_hash:
        raise InvalidInput(
            {
                "version": "a PATCH may only fix bugs or adjust thresholds; compared with "
                f"{against}, the training data changed ({base.training_data_hash} to "
                f"{training_data_hash}): a retrained model is at least MINOR, declare "
                f"{_suggest(model, base, Bump.MINOR)}"
            }
        )


def _is_live(version: ModelVersion) -> bool:
    lifecycle = getattr(version, "lifecycle", None)
    return lifecycle is not None and lifecycle.stage in SERVING_STAGES
