"""Response fields of the public API that the tests pin on purpose, each list written out once.

A contract, not a copy: these lists restate the serializers' on purpose. A test that compared a
response with the serializer's own list could not fail when a field is dropped or renamed; this
table makes it fail, and editing it is the deliberate act of changing the public API. Keyed by
the OpenAPI component, in the order the schema publishes the properties.
"""

from __future__ import annotations

RESPONSE_FIELDS: dict[str, tuple[str, ...]] = {
    # GET /api/v1/audit/ and GET /api/v1/models/{name}/versions/{version}/history/
    "AuditEvent": (
        "id",
        "seq",
        "created_at",
        "actor",
        "action",
        "object_type",
        "object_id",
        "object_repr",
        "model",
        "before",
        "after",
        "reason",
        "request_id",
        "redacted",
        "payload_digest",
        "prev_hash",
        "hash",
    ),
    # GET /api/v1/alerts/ and /alerts/{id}/, and the answer of acknowledge and resolve
    "Alert": (
        "id",
        "model",
        "version",
        "check",
        "severity",
        "feature",
        "metric",
        "value",
        "threshold",
        "window_start",
        "window_end",
        "status",
        "created_at",
        "run",
        "details",
        "acknowledged_at",
        "acknowledged_by",
        "resolved_at",
        "resolved_by",
        "note",
    ),
}
