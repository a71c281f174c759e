"""The predict endpoint reads and writes JSON through orjson and checks depth on bytes: the
requests it accepts, the messages of those it refuses and the bodies it answers stay the ones of
DRF's parser and renderer (``serving.api.PredictJSONParser``, ``PredictRenderer``,
``platform_core.api.parsers.json_depth``)."""

import json
import random
import re
from datetime import UTC, datetime

import numpy as np
import pytest
from rest_framework.renderers import JSONRenderer

from platform_core.api.parsers import json_depth
from serving import background, gateway
from serving.api import PredictRenderer
from tests.serving.helpers import instances, live, predict

pytestmark = pytest.mark.django_db

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def reference_depth(text: str) -> int:
    """The depth as the regex scan of the whole text counts it (the code before the fast path)."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    if not brackets:
        return 0
    depth, deepest = 0, None  # the greatest running sum (-1 for a text opening with "}")
    for char in brackets:
        depth += 1 if char in "[{" else -1
        deepest = depth if deepest is None else max(deepest, depth)
    return deepest


def test_the_byte_level_depth_counts_as_the_full_scan_on_random_texts():
    rng = random.Random(7)
    alphabet = '[]{}""\\a,:é\u2028 1'
    for _ in range(50_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 16)))
        assert json_depth(text) == reference_depth(text), repr(text)
    body = json.dumps({"instances": [{"f[1": "]]", "f2": [{"a": '\\"{'}]}] * 3})
    assert json_depth(body) == reference_depth(body) == 5


def test_an_integer_beyond_64_bits_is_named_as_drf_reads_it(mlflow_models, ci, outages):
    """orjson reads 10**30 as a float; the 400 still says what the stdlib reading says."""
    version = live(mlflow_models, seed=1)
    response = predict(ci, version.model.name, [{"f1": 10**30, "f2": 0.0, "f3": 0.0}])
    assert response.status_code == 400, response.content
    assert response.json()["errors"]["instances[0].f1"] == [
        "must be a number between -1e+12 and 1e+12, got a huge integer"
    ]
    background.drain()
    assert outages == []


def test_a_sensitive_integer_beyond_64_bits_is_logged_with_its_digits(mlflow_models, ci):
    version = live(mlflow_models, seed=1)
    response = predict(ci, version.model.name, instances(2), sensitive=[{"id": 10**30}, {"id": 7}])
    assert response.status_code == 200, response.content
    batch = gateway.current().log.buffer[-1]
    assert [s["id"] for s in batch.sensitive] == [10**30, 7]  # ints, not 1e30


def test_the_answer_is_the_json_drf_would_write(mlflow_models, ci):
    version = live(mlflow_models, seed=1)
    response = predict(ci, version.model.name, instances(5))
    assert response.status_code == 200
    body = response.json()
    assert json.loads(JSONRenderer().render(body)) == body
    scores = [p["score"] for p in body["predictions"]]
    assert all(isinstance(s, float) and 0 <= s <= 1 for s in scores)


def test_bodies_orjson_cannot_write_exactly_go_to_drfs_renderer():
    stamp = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    for data in (
        {"stale": False, "at": stamp},  # DRF: milliseconds and Z
        {"stale": False, "x": np.float64(0.5)},
        {"stale": False, "name": "a\u2028b"},  # DRF escapes line separators
        {"stale": True, "predictions": []},
        ["not", "a", "dict"],
    ):
        assert PredictRenderer().render(data) == JSONRenderer().render(data), data
    plain = {"model": "m", "predictions": [{"score": 0.25, "prediction": 0}], "stale": False}
    assert json.loads(PredictRenderer().render(plain)) == plain
