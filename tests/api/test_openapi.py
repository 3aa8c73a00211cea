"""The OpenAPI document says what the routes take: every documented query parameter is accepted, no other."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import png_bytes

PICTURE = np.random.default_rng(1).integers(0, 256, (64, 80, 3), dtype=np.uint8)
BODIES = {  # a valid request of each operation, without its query parameters
    "/classify/text": dict(json={"text": "query parameters"}),
    "/fill-mask": dict(json={"text": "Hello w[MASK]rld"}),
    "/classify/image": dict(files={"image": ("p.png", png_bytes(PICTURE))}),
    "/flow": dict(files={"frame1": ("1.png", png_bytes(PICTURE)), "frame2": ("2.png", png_bytes(PICTURE[::-1]))}),
}
DEFAULT_MODELS = {"/classify/text": "text-sentiment", "/fill-mask": "language-mlm",
                  "/classify/image": "image-classifier", "/flow": "optical-flow"}


def _valid_value(path: str, parameter: dict):
    schema = parameter["schema"]
    options = schema.get("anyOf", [schema])
    if parameter["name"] == "model":
        return DEFAULT_MODELS[path]
    if parameter["name"] == "version":  # every demo model is one version, "1"
        return "1"
    for option in options:
        if "enum" in option:
            return option["enum"][-1]
        if option.get("type") == "integer":
            return option.get("minimum", 1) + 1
        if option.get("type") == "boolean":
            return "true"
    raise AssertionError(f"no valid value for {path} {parameter}")


def _query_parameters(spec: dict) -> list[tuple[str, dict]]:
    return [(path, p) for path in BODIES for p in spec["paths"][path]["post"].get("parameters", [])
            if p["in"] == "query"]


def test_the_routes_the_readme_uses_document_their_query_parameters(client):
    spec = client.get("/openapi.json").json()
    names = {(path, p["name"]) for path, p in _query_parameters(spec)}
    assert {("/classify/image", "top_k"), ("/classify/image", "model"), ("/classify/image", "return_logits"),
            ("/fill-mask", "top_k"), ("/fill-mask", "model"), ("/fill-mask", "truncate"),
            ("/flow", "model"), ("/flow", "format")} <= names
    assert set(spec["paths"]["/health/ready"]["get"]["responses"]) == {"200", "503"}


def test_every_documented_query_parameter_is_accepted(client):
    spec = client.get("/openapi.json").json()
    for path, parameter in _query_parameters(spec):
        value = _valid_value(path, parameter)
        answer = client.post(path, params={parameter["name"]: value}, **BODIES[path])
        assert answer.status_code == 200, (path, parameter["name"], value, answer.text)


@pytest.mark.parametrize("path, params, check", [
    ("/classify/image", {"top_k": 2}, lambda r: len(r.json()["results"][0]["predictions"]) == 2),
    ("/classify/image", {"return_logits": "true"}, lambda r: "logits" in r.json()["results"][0]),
    ("/fill-mask", {"top_k": 2}, lambda r: len(r.json()["masked"][0]["predictions"]) == 2),
    ("/flow", {"format": "json"}, lambda r: r.headers["content-type"].startswith("application/json")),
])
def test_query_parameters_take_effect(client, path, params, check):
    answer = client.post(path, params=params, **BODIES[path])
    assert answer.status_code == 200 and check(answer), answer.text


def test_the_body_wins_over_the_query(client):
    answer = client.post("/fill-mask", params={"top_k": 4}, json={"text": "Hello w[MASK]rld", "top_k": 1})
    assert len(answer.json()["masked"][0]["predictions"]) == 1
    form = client.post("/classify/image", params={"top_k": 4}, data={"top_k": "1"}, **BODIES["/classify/image"])
    assert len(form.json()["results"][0]["predictions"]) == 1


@pytest.mark.parametrize("path", list(BODIES))
def test_undocumented_or_repeated_query_parameters_are_refused(client, path):
    """A misspelt parameter (``?topk=3``) would otherwise be dropped without a word and the request answered
    with the default; a repeated one would take one of its values. Both are refused, as a JSON body's unknown
    field is, naming what the route reads."""
    spec = client.get("/openapi.json").json()
    documented = sorted(p["name"] for p in spec["paths"][path]["post"]["parameters"] if p["in"] == "query")
    misspelt = client.post(path, params={"modle": DEFAULT_MODELS[path]}, **BODIES[path])
    assert misspelt.status_code == 422, misspelt.text
    error = misspelt.json()["error"]
    assert error["code"] == "invalid_request"
    assert "unknown query parameter(s) ['modle']" in error["message"] and str(documented) in error["message"]
    twice = client.post(f"{path}?model={DEFAULT_MODELS[path]}&model={DEFAULT_MODELS[path]}", **BODIES[path])
    assert twice.status_code == 422 and "['model'] sent more than once" in twice.json()["error"]["message"]
    assert client.post(path, params={"model": DEFAULT_MODELS[path]}, **BODIES[path]).status_code == 200
