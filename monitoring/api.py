"""REST views for production data: predictions, labels and reference records (thin: parse, call a
service or the store, shape the answer)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from governance.api.idempotency import idempotent
from governance.api.views import actor_of
from governance.permissions import can, request_scopes
from governance.roles import Action
from platform_core.api.params import datetime_param, int_param, text_param
from platform_core.api.uploads import RecordsUploadView
from platform_core.errors import InvalidInput
from registry import services as registry_services

from . import ingest, profiles, store
from .columns import attribute_of, feature_of, is_feature, is_sensitive

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100

# --- request shapes (documentation; the services validate every record themselves) --------------


class PredictionRecordSerializer(serializers.Serializer):
    prediction_id = serializers.CharField(help_text="Unique within the batch and the version")
    timestamp = serializers.DateTimeField(help_text="ISO 8601; naive times are UTC")
    features = serializers.DictField(
        help_text="One value per feature of the version's feature_list (number, string or null)"
    )
    score = serializers.FloatField(min_value=0, max_value=1, help_text="Positive-class probability")
    prediction = serializers.IntegerField(
        min_value=0,
        max_value=1,
        required=False,
        allow_null=True,
        help_text="The predicted class (0 or 1), if logged",
    )
    sensitive = serializers.DictField(
        child=serializers.CharField(),
        required=False,
        help_text='Sensitive attributes, the same on every record, e.g. {"race": "b"}; stored '
        "apart from the features and shown only to roles that may read sensitive data",
    )


class PredictionIngestSerializer(serializers.Serializer):
    version = serializers.CharField(help_text="The version that made the predictions, e.g. 1.2.0")
    records = PredictionRecordSerializer(many=True)


_FILE_HELP = (
    "CSV or Parquet with the columns prediction_id, timestamp, score, prediction (optional), one "
    "column per feature (named as in the feature_list) and sensitive.<attribute>"
)


class PredictionUploadSerializer(serializers.Serializer):
    version = serializers.CharField()
    file = serializers.FileField(help_text=_FILE_HELP)


class LabelRecordSerializer(serializers.Serializer):
    prediction_id = serializers.CharField(help_text="The id of a stored prediction")
    label = serializers.IntegerField(min_value=0, max_value=1, help_text="The true outcome")
    label_time = serializers.DateTimeField(
        required=False, help_text="When the outcome became known (ISO 8601); default: now"
    )


class LabelIngestSerializer(serializers.Serializer):
    records = LabelRecordSerializer(many=True)


class LabelUploadSerializer(serializers.Serializer):
    file = serializers.FileField(
        help_text="CSV or Parquet with the columns prediction_id, label and label_time (optional)"
    )


class ReferenceRecordSerializer(PredictionRecordSerializer):
    prediction_id = serializers.CharField(required=False)
    timestamp = serializers.DateTimeField(required=False)
    label = serializers.IntegerField(
        min_value=0, max_value=1, required=False, help_text="The true outcome (0 or 1)"
    )


class ReferenceIngestSerializer(serializers.Serializer):
    records = ReferenceRecordSerializer(many=True)


class ReferenceUploadSerializer(serializers.Serializer):
    file = serializers.FileField(
        help_text="As for predictions (prediction_id and timestamp optional), plus label"
    )


# --- response shapes ----------------------------------------------------------------------------


class IngestResultSerializer(serializers.Serializer):
    batches = serializers.IntegerField(help_text="Files stored (one per UTC day)")
    rows = serializers.IntegerField(help_text="Records accepted")
    days = serializers.ListField(child=serializers.DateField(), help_text="UTC days written")


class FeatureSummarySerializer(serializers.Serializer):
    name = serializers.CharField()
    kind = serializers.CharField(help_text="numeric or categorical")
    bins = serializers.IntegerField()
    missing = serializers.IntegerField()


class ProfileSummarySerializer(serializers.Serializer):
    rows = serializers.IntegerField(help_text="Reference records of the version in all")
    bins = serializers.IntegerField()
    features = FeatureSummarySerializer(many=True)
    score_mean = serializers.FloatField()
    labels = serializers.DictField(allow_null=True, help_text="rows and positive_rate, or null")


class ReferenceResultSerializer(IngestResultSerializer):
    version = serializers.CharField()
    profile = ProfileSummarySerializer(help_text="The recomputed reference profile")


class PredictionOutSerializer(PredictionRecordSerializer):
    version = serializers.CharField()
    label = serializers.IntegerField(allow_null=True)
    label_time = serializers.DateTimeField(allow_null=True)


class PredictionListSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    sensitive_included = serializers.BooleanField(
        help_text="Whether the records carry their sensitive attributes (read_sensitive)"
    )
    results = PredictionOutSerializer(many=True)


# --- helpers ------------------------------------------------------------------------------------


def _ingest_result(batches) -> dict[str, Any]:
    return {
        "batches": len(batches),
        "rows": sum(b.rows for b in batches),
        "days": sorted({b.day.isoformat() for b in batches}),
    }


QUERY_PARAMETERS = frozenset({"version", "since", "until", "limit", "format"})


def _when(request: Request, name: str) -> datetime | None:
    return datetime_param(request.query_params, name)


def _limit(request: Request) -> int:
    value = int_param(request.query_params, "limit", minimum=1, maximum=MAX_LIMIT)
    return DEFAULT_LIMIT if value is None else value


def _unknown_parameters(request: Request) -> None:
    unknown = sorted(set(request.query_params) - QUERY_PARAMETERS)
    if unknown:
        raise InvalidInput({name: "unknown query parameter" for name in unknown[:20]})


def _value(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, np.generic):
        return value.item()
    return value


def _records(frame: pd.DataFrame, *, with_sensitive: bool) -> list[dict[str, Any]]:
    features = [c for c in frame.columns if is_feature(c)]
    sensitive = [c for c in frame.columns if is_sensitive(c)]
    columns = {c: frame[c].tolist() for c in frame.columns}
    out = []
    for i in range(len(frame)):
        prediction, label = _value(columns["prediction"][i]), _value(columns["label"][i])
        record = {
            "prediction_id": _value(columns["prediction_id"][i]),
            "version": _value(columns["version"][i]),
            "timestamp": _value(columns["timestamp"][i]),
            "score": _value(columns["score"][i]),
            "prediction": None if prediction is None else int(prediction),
            "features": {feature_of(c): _value(columns[c][i]) for c in features},
            "label": None if label is None else int(label),
            "label_time": _value(columns["label_time"][i]),
        }
        if with_sensitive:
            record["sensitive"] = {
                attribute_of(c): _value(columns[c][i])
                for c in sensitive
                if _value(columns[c][i]) is not None
            }
        out.append(record)
    return out


_PREDICTIONS_EXAMPLE = {
    "version": "1.2.0",
    "records": [
        {
            "prediction_id": "req-0001",
            "timestamp": "2026-01-05T10:00:00Z",
            "features": {"f1": 0.3, "f2": 1.2, "f3": -0.4},
            "score": 0.73,
            "prediction": 1,
            "sensitive": {"race": "b"},
        }
    ],
}


# --- views --------------------------------------------------------------------------------------


class _IngestView(RecordsUploadView):
    """A POST of records as a JSON object or as an uploaded CSV or Parquet ``file``."""

    required_actions = {"POST": Action.INGEST}

    @staticmethod
    def ingest(request: Request, ingest_fn, upload, fields: dict[str, Any], **kwargs):
        """``ingest_fn`` over the body's ``records``, or over its file when one was uploaded."""
        return ingest_fn(
            records=fields.get("records") if upload is None else None,
            upload=upload,
            actor=actor_of(request),
            **kwargs,
        )


class PredictionListCreateView(_IngestView):
    required_actions = {"GET": Action.READ, "POST": Action.INGEST}
    serializer_class = PredictionIngestSerializer

    @extend_schema(
        summary="Recent logged predictions of a model, newest first, with their latest labels",
        description=(
            "Sensitive attributes are included only for callers allowed to read sensitive data "
            "(ethics officer, auditor)."
        ),
        parameters=[
            OpenApiParameter("version", str, description="Only this version's predictions"),
            OpenApiParameter("since", str, description="ISO 8601; predictions at or after"),
            OpenApiParameter("until", str, description="ISO 8601; predictions before (now)"),
            OpenApiParameter(
                "limit",
                int,
                description=f"At most this many (default {DEFAULT_LIMIT}, at most {MAX_LIMIT})",
            ),
        ],
        responses=PredictionListSerializer,
    )
    def get(self, request: Request, name: str) -> Response:
        _unknown_parameters(request)
        model = registry_services.model_get(name)
        version = None
        if wanted := text_param(request.query_params, "version", max_length=32):
            version = registry_services.version_get(name, wanted)
        since, until, limit = _when(request, "since"), _when(request, "until"), _limit(request)
        if since is not None and until is not None and since >= until:
            raise InvalidInput({"since": "must be before until"})
        sensitive = can(
            request.user, Action.READ_SENSITIVE, model=model, scopes=request_scopes(request)
        )
        frame = store.recent_records(
            model=model,
            version=version,
            since=since,
            until=until,
            limit=limit,
            with_sensitive=sensitive,
        )
        results = _records(frame, with_sensitive=sensitive)
        return Response(
            {"count": len(results), "sensitive_included": sensitive, "results": results}
        )

    @extend_schema(
        summary="Log a batch of predictions of one version",
        description=(
            "JSON `{version, records}` or multipart/form-data with `version` and a CSV or "
            "Parquet `file`. Every record is checked; a batch is stored whole or refused whole "
            "(400 naming `records[i].field`, records counted from 0). The features must match "
            "the version's feature_list; prediction ids are unique within the batch and not "
            "already stored for the version. Works for a version in any stage."
        ),
        request={
            "application/json": PredictionIngestSerializer,
            "multipart/form-data": PredictionUploadSerializer,
        },
        responses={201: IngestResultSerializer},
        examples=[OpenApiExample("predictions", value=_PREDICTIONS_EXAMPLE, request_only=True)],
    )
    @idempotent
    def post(self, request: Request, name: str) -> Response:
        registry_services.model_get(name)  # 404 before reading the body
        fields, upload = self.records_body(request)
        version = fields.get("version")
        if not isinstance(version, str) or not version:
            raise InvalidInput({"version": "required: the version that made the predictions"})
        batches = self.ingest(
            request, ingest.predictions_ingest, upload, fields, model_name=name, version=version
        )
        return Response(_ingest_result(batches), status=status.HTTP_201_CREATED)


class LabelCreateView(_IngestView):
    serializer_class = LabelIngestSerializer

    @extend_schema(
        summary="Record the true outcomes of logged predictions",
        description=(
            "JSON `{records: [{prediction_id, label, label_time?}]}` or multipart/form-data with "
            "a CSV or Parquet `file`. Every prediction_id must name a stored prediction of the "
            "model (400 naming the record otherwise); the latest label of a prediction wins. "
            "Labels are filed with their predictions (per version and day): `rows` counts the "
            "stored label rows, so a prediction id shared by two versions (shadow traffic) "
            "counts once per version."
        ),
        request={
            "application/json": LabelIngestSerializer,
            "multipart/form-data": LabelUploadSerializer,
        },
        responses={201: IngestResultSerializer},
        examples=[
            OpenApiExample(
                "labels",
                value={"records": [{"prediction_id": "req-0001", "label": 1}]},
                request_only=True,
            )
        ],
    )
    @idempotent
    def post(self, request: Request, name: str) -> Response:
        registry_services.model_get(name)
        fields, upload = self.records_body(request)
        batches = self.ingest(request, ingest.labels_ingest, upload, fields, model_name=name)
        return Response(_ingest_result(batches), status=status.HTTP_201_CREATED)


class ReferenceCreateView(_IngestView):
    serializer_class = ReferenceIngestSerializer

    @extend_schema(
        summary="Add reference data (a training or validation sample) to a version",
        description=(
            "Same record shape as predictions (prediction_id and timestamp optional) plus an "
            "optional `label`; JSON `{records}` or multipart/form-data with a CSV or Parquet "
            "`file`. Reference data accumulates; the version's reference profile (quantile "
            "edges, counts, score sample, label rate) is recomputed over all of it."
        ),
        request={
            "application/json": ReferenceIngestSerializer,
            "multipart/form-data": ReferenceUploadSerializer,
        },
        responses={201: ReferenceResultSerializer},
    )
    @idempotent
    def post(self, request: Request, name: str, version: str) -> Response:
        registry_services.version_get(name, version)
        fields, upload = self.records_body(request)
        result = self.ingest(
            request, ingest.reference_ingest, upload, fields, model_name=name, version=version
        )
        body = {
            "version": version,
            **_ingest_result(result.batches),
            "profile": profiles.summary(result.profile.profile),
        }
        return Response(body, status=status.HTTP_201_CREATED)
