"""The jobs dashboard, driven in headless Chromium against real servers on both modes.

The page talks to `bulkapi serve` over real HTTP, as a user's browser would. To keep a
job running for as long as a step needs, each deployment has a *drainer*, the only
process that applies accepted work: the `bulkapi worker` in production mode, and in
embedded mode a second `bulkapi serve` on the same SQLite file (the one the page talks
to runs no drain threads). Stopping the drainer leaves new jobs queued; a new one picks
them up.
"""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    BrowserContext,
    ConsoleMessage,
    Error,
    Page,
    Request,
    expect,
    sync_playwright,
)

from bulkapi.dashboard import ASSETS, CONTENT_SECURITY_POLICY
from tests.support import (
    REDIS_URL,
    WAIT_SECONDS,
    HttpApi,
    ManagedProcess,
    bulkapi_argv,
    database_url,
    free_port,
    migrated_with_key,
    service_env,
    start_server,
    start_workers,
)

#: Debian's Chromium (`.ci/services` installs it); Playwright drives it over CDP.
CHROMIUM = Path(os.environ.get("BULKAPI_TEST_CHROMIUM", "/usr/bin/chromium"))
#: Headless, and nothing that reaches beyond 127.0.0.1 (no updates, sync or QUIC probes).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Milliseconds the page gets to show what the test expects (generous: never a timing claim).
UI_WAIT_MS = WAIT_SECONDS * 1000


@dataclass
class Deployment:
    """An API the page talks to, a tenant's key, and the process that drains its jobs."""

    mode: str
    base_url: str
    key: str
    env: dict[str, str]
    tmp: Path
    drainer: ManagedProcess
    restarts: int = 0

    @property
    def api(self) -> HttpApi:
        return HttpApi(self.base_url, self.key)

    def start_drainer(self) -> ManagedProcess:
        self.restarts += 1
        name = f"drainer-{self.restarts}"
        if self.mode == "embedded":
            argv = bulkapi_argv("serve", "--port", str(free_port()))
            return ManagedProcess(argv, self.env, self.tmp / f"{name}.log").start()
        return start_workers(self.env, self.tmp, processes=1, threads=2, name=name)

    @contextmanager
    def drains_stopped(self) -> Iterator[None]:
        """Jobs accepted inside the block stay queued until it ends."""
        self.drainer.stop()
        try:
            yield
        finally:
            self.drainer = self.start_drainer()

    def submit(self, operations: list[dict[str, Any]]) -> dict[str, Any]:
        response = self.api.request("POST", "/v1/bulk", json={"operations": operations})
        assert response.status_code == 202, response.text
        body: dict[str, Any] = response.json()
        return body


@contextmanager
def deployment(mode: str, tmp: Path, namespace: str) -> Iterator[Deployment]:
    kind = "sqlite" if mode == "embedded" else "postgres"
    with database_url(kind, tmp) as url:
        key = migrated_with_key(url, "dashboard")
        env = service_env(url, None if mode == "embedded" else REDIS_URL, namespace)
        # Embedded: the page's server drains nothing; the drainer shares its SQLite file.
        page_env = {**env, "BULKAPI_EMBEDDED_WORKER_THREADS": "0"} if mode == "embedded" else env
        server, base = start_server(page_env, tmp)
        deployed = Deployment(mode, base, key, env, tmp, server)
        try:
            deployed.drainer = deployed.start_drainer()
            yield deployed
        finally:
            deployed.drainer.stop()
            server.stop()


@pytest.fixture(params=["embedded", "postgres"])
def deployed(
    request: pytest.FixtureRequest, tmp_path: Path, redis_namespace: str
) -> Iterator[Deployment]:
    with deployment(request.param, tmp_path, redis_namespace) as found:
        yield found


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[BrowserContext]:
    """Headless Chromium with a fresh profile; fails (never skips) without Chromium."""
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium is required at {CHROMIUM}: bash .ci/services installs it")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


@dataclass
class Watched:
    """What a page did: every request it sent, and every error it logged or threw."""

    page: Page
    requests: list[Request] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def sent(self, request: Request) -> None:
        self.requests.append(request)

    def logged(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def threw(self, error: Error) -> None:
        self.errors.append(str(error))

    def assert_clean(self, deployed: Deployment) -> None:
        """Every request went to the API's own origin, none carried a credential in its
        URL, and the page logged no error (a script or style the CSP refused would)."""
        assert self.errors == []
        assert self.requests
        for sent in self.requests:
            assert sent.url.startswith(deployed.base_url + "/"), sent.url
            assert deployed.key not in sent.url
            if "/v1/" in sent.url:
                assert sent.headers.get("authorization", "").startswith("Bearer "), sent.url


def open_dashboard(context: BrowserContext, deployed: Deployment, fragment: str = "") -> Watched:
    page = context.new_page()
    watched = Watched(page)
    page.on("request", watched.sent)
    page.on("console", watched.logged)
    page.on("pageerror", watched.threw)
    response = page.goto(f"{deployed.base_url}/dashboard{fragment}")
    assert response is not None and response.status == 200
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    return watched


def sign_in(page: Page, secret: str, job_id: str = "") -> None:
    page.fill("#secret", secret)
    if job_id:
        page.fill("#job-id", job_id)
    page.get_by_role("button", name="Open dashboard").click()


def _upserts(count: int, prefix: str) -> list[dict[str, Any]]:
    return [
        {"op": "upsert", "type": "doc", "id": f"{prefix}-{n}", "data": {"n": n}}
        for n in range(count)
    ]


def _rejected(count: int) -> list[dict[str, Any]]:
    """Operations the ``guarded`` type's rule refuses (rule_rejected)."""
    return [
        {"op": "upsert", "type": "guarded", "id": f"no-{n}", "data": {"reject": True}}
        for n in range(count)
    ]


def _row(page: Page, job_id: str) -> Any:
    return page.locator(f'tr[data-job-id="{job_id}"]')


def test_the_dashboard_follows_jobs_live_filters_results_and_cancels(
    deployed: Deployment, browser: BrowserContext
) -> None:
    watched = open_dashboard(browser, deployed)
    page = watched.page
    sign_in(page, deployed.key)
    expect(page.get_by_role("heading", name="Jobs", exact=True)).to_be_visible()
    # Kept for this tab only, never where other tabs or later visits would find it.
    assert page.evaluate("sessionStorage.length") == 1
    assert page.evaluate("localStorage.length") == 0

    with deployed.drains_stopped():
        live = deployed.submit(_upserts(300, "live"))
        doomed = deployed.submit(_upserts(40, "doomed"))
        expect(_row(page, live["id"]).locator(".badge")).to_have_text("queued", timeout=UI_WAIT_MS)
        expect(_row(page, live["id"]).locator(".percent")).to_have_text("0%")

        _row(page, doomed["id"]).get_by_role("link").click()
        page.get_by_role("button", name="Cancel job").click()
        page.get_by_role("button", name="Yes, cancel").click()
        title = page.locator(".job-title .badge")
        expect(title).to_have_text("cancelled", timeout=UI_WAIT_MS)
        expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
        page.locator('.tab[data-filter="cancelled"]').click()
        expect(page.locator(".results tbody tr[data-status=cancelled]")).to_have_count(40)
        assert deployed.api.request("GET", f"/v1/jobs/{doomed['id']}").json()["status"] == (
            "cancelled"
        )
        page.get_by_role("link", name="← All jobs").click()

    # The drainer is back: the page follows the job's event stream up to 100%.
    expect(_row(page, live["id"]).locator(".percent")).to_have_text("100%", timeout=UI_WAIT_MS)
    expect(_row(page, live["id"]).locator(".badge")).to_have_text("succeeded")
    assert any(sent.url.endswith(f"/v1/jobs/{live['id']}/events") for sent in watched.requests)

    partial = deployed.submit(_upserts(5, "fine") + _rejected(3))
    assert deployed.api.wait_job(partial["id"])["status"] == "partially_succeeded"
    _row(page, partial["id"]).get_by_role("link").click(timeout=UI_WAIT_MS)
    expect(page.locator(".job-title .badge")).to_have_text("partially succeeded")
    page.locator('.tab[data-filter="failed"]').click()
    failed = page.locator(".results tbody tr")
    expect(failed).to_have_count(3)
    expect(page.locator(".results tbody tr[data-status=failed]")).to_have_count(3)
    expect(failed.first.locator("code")).to_have_text("rule_rejected")
    assert "results=failed" in page.url
    watched.assert_clean(deployed)

    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#secret")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


def test_a_status_token_opens_its_one_job_without_a_cancel_button_and_a_wrong_one_nothing(
    deployed: Deployment, browser: BrowserContext
) -> None:
    job = deployed.submit(_upserts(2, "tok") + _rejected(1))
    deployed.api.wait_job(job["id"])

    watched = open_dashboard(browser, deployed, f"#job={job['id']}")
    page = watched.page
    sign_in(page, "jst_" + "x" * 43, job["id"])  # not a token of ours
    expect(page.get_by_role("alert")).to_contain_text("refused", timeout=UI_WAIT_MS)
    assert page.evaluate("sessionStorage.length") == 0
    watched.errors.remove(next(e for e in watched.errors if "401" in e))  # Chromium logs it

    sign_in(page, job["status_token"], job["id"])
    title = page.locator(".job-title .badge")
    expect(title).to_have_text("partially succeeded", timeout=UI_WAIT_MS)
    expect(page.locator(".job-title .mono")).to_have_text(job["id"])
    page.locator('.tab[data-filter="failed"]').click()
    expect(page.locator(".results tbody tr")).to_have_count(1)
    expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
    expect(page.get_by_role("link", name="← All jobs")).to_have_count(0)
    watched.assert_clean(deployed)


class _AssetFiles(http.server.SimpleHTTPRequestHandler):
    """The dashboard's files at their paths, without an API behind them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, directory=str(ASSETS), **kwargs)

    def translate_path(self, path: str) -> str:
        return super().translate_path(path.removeprefix("/dashboard/assets"))

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test's output is about the page."""


@contextmanager
def asset_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AssetFiles)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


#: Feeds a stream cut at the given byte offsets to the page's SSE reader.
_READ_EVENTS = """async ([text, cuts]) => {
    const { readEvents } = await import("/dashboard/assets/events.js");
    const bytes = new TextEncoder().encode(text);
    const ends = [...cuts, bytes.length];
    const body = new ReadableStream({
        start(controller) {
            ends.reduce((start, end) => (controller.enqueue(bytes.slice(start, end)), end), 0);
            controller.close();
        },
    });
    const events = [];
    for await (const event of readEvents(body)) events.push(event);
    return events;
}"""


def test_the_event_reader_parses_streams_cut_anywhere(browser: BrowserContext) -> None:
    """Line ends of every kind, a CRLF and a UTF-8 character split between chunks,
    comments, multi-line data; an event the stream did not finish is not delivered."""
    text = (
        "retry: 1500\n\n: keep-alive\n\n"
        'event: status\r\nid: 7\r\ndata: {"name": "caf\u00e9"}\r\n\r\n'
        "event: progress\rid: 9\rdata: one\rdata:two\r\r"
        "data: never finished\n"
    )
    crlf = text.index("\r\n") + 1
    accent = len(text[: text.index("\u00e9")].encode()) + 1
    with asset_server() as base:
        page = browser.new_page()
        page.goto(f"{base}/index.html")
        events = page.evaluate(_READ_EVENTS, [text, [8, crlf, accent, accent + 9]])
    assert events == [
        {"event": "message", "data": "", "retry": 1500},
        {"event": "status", "id": "7", "data": '{"name": "caf\u00e9"}'},
        {"event": "progress", "id": "9", "data": "one\ntwo"},
    ]
