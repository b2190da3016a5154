"""/dashboard is a static page with its assets: served without a credential, under a
Content-Security-Policy that lets it load and call only this origin."""

from __future__ import annotations

from bulkapi.dashboard import CONTENT_SECURITY_POLICY
from tests.conftest import Service


def test_the_page_and_its_scripts_are_served_under_a_same_origin_policy(service: Service) -> None:
    client = service.anonymous()
    page = client.get("/dashboard")
    script = client.get("/dashboard/assets/app.js")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert 'src="/dashboard/assets/app.js"' in html
    assert "<script>" not in html  # no inline script: the policy would refuse it
    assert script.status_code == 200 and script.mimetype == "text/javascript"
    for answer in (page, script):
        assert answer.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["X-Frame-Options"] == "DENY"


def test_asset_paths_cannot_leave_the_asset_directory(service: Service) -> None:
    client = service.anonymous()
    for path in ("/dashboard/assets/%2e%2e/__init__.py", "/dashboard/assets/missing.js"):
        answer = client.get(path)
        assert answer.status_code == 404, path
        assert answer.mimetype == "application/problem+json"
