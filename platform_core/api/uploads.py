"""Endpoints that take a batch of records as a JSON object or as an uploaded CSV or Parquet file."""

from __future__ import annotations

from typing import Any

from django.core.files.uploadedfile import UploadedFile
from rest_framework.generics import GenericAPIView
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.request import Request

from platform_core.errors import InvalidInput


# JSON, or multipart/form-data with the records in a ``file`` field. (A comment, not a docstring:
# drf-spectacular would publish it as the description of every subclass without one.)
class RecordsUploadView(GenericAPIView):
    parser_classes = [JSONParser, MultiPartParser]
    takes_file_upload = True  # a 413 on JSON points to the file upload (api.errors)

    @staticmethod
    def records_body(request: Request) -> tuple[dict[str, Any], UploadedFile | None]:
        """``(fields, upload)``: the JSON object, or the form fields and the uploaded ``file``;
        a 400 when the form has no file or the JSON is not an object."""
        if request.content_type.startswith("multipart/"):
            upload = request.FILES.get("file")
            if upload is None:
                raise InvalidInput({"file": "required: a CSV or Parquet file of records"})
            return {k: request.POST.get(k) for k in request.POST}, upload
        if not isinstance(request.data, dict):
            raise InvalidInput({"non_field_errors": "the body must be a JSON object"})
        return request.data, None
