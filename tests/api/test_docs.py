"""/docs and /redoc load everything from this server: they work with no network at all."""

from __future__ import annotations

import re

import pytest

from ..support import metric_value

REFERENCE = re.compile(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""")


@pytest.mark.parametrize("page, script_marker", [("/docs", b"SwaggerUIBundle"), ("/redoc", b"Redoc")])
def test_doc_pages_need_nothing_but_this_server(client, page, script_marker):
    html = client.get(page)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    references = REFERENCE.findall(html.text)
    assert "/openapi.json" in references
    assets = [r for r in references if r != "/openapi.json"]
    assert assets, html.text
    assert all(r.startswith("/") and not r.startswith("//") for r in references), references  # no CDN, no fonts
    bodies = {}
    for asset in assets:
        answer = client.get(asset)
        assert answer.status_code == 200, asset
        bodies[asset] = answer.content
    assert any(script_marker in body and len(body) > 100_000 for body in bodies.values())  # the real bundle


def test_doc_requests_are_counted_under_their_paths(client):
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/assets/swagger-ui.css"):
        assert client.get(path).status_code == 200
    text = client.get("/metrics").text
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/assets/swagger-ui.css"):
        assert metric_value(text, "perceiver_requests_total", model="", endpoint=path, protocol="rest",
                            status="200") >= 1, path
