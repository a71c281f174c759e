"""The error answers of the API in its OpenAPI schema (README "Errors"), for every operation.

Views document their successes; the refusals are the same everywhere (one exception handler), so
they are added here once instead of in 60 ``extend_schema`` calls, and a client generated from
the schema knows every status it can meet.
"""

from __future__ import annotations

ERROR = {
    "type": "object",
    "description": "400: `errors` names each bad field; 409: `reasons` lists every unmet "
    "condition.",
    "properties": {
        "detail": {"type": "string"},
        "errors": {"type": "object", "additionalProperties": {}},
        "reasons": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["detail"],
}
_WRITES = {"post", "put", "patch", "delete"}


def _codes(path: str, method: str, operation: dict) -> dict[str, str]:
    codes = {
        "401": "No token, or an expired or revoked one",
        "403": "None of your roles grants the permission named in `detail`",
        "429": "Too many requests: retry after the `Retry-After` header's seconds",
    }
    if "{" in path or operation.get("requestBody"):
        codes["404"] = "No such object (or none you may read), in the path or named in the body"
    if operation.get("parameters") or operation.get("requestBody"):
        codes["400"] = "Invalid input: `errors` names each bad field or query parameter"
    if method in _WRITES:
        codes["409"] = "Refused in the current state: `reasons` lists every unmet condition"
        codes["413"] = "The body is too large"
    if operation.get("requestBody"):
        codes["415"] = "The Content-Type is not one this operation accepts"
    if any(p.get("name") == "Idempotency-Key" for p in operation.get("parameters", [])):
        codes["422"] = "This Idempotency-Key was already used for a different request"
    if path.startswith("/api/v1/predict/"):
        codes["503"] = "Halted (`halted: true`, with the scope and reason) or unable to serve"
    return codes


def document_errors(result, generator, request, public):
    """drf-spectacular postprocessing hook (SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"])."""
    result.setdefault("components", {}).setdefault("schemas", {}).setdefault("Error", ERROR)
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            for code, text in _codes(path, method, operation).items():
                responses.setdefault(code, {"description": text, "content": ref})
    return result
