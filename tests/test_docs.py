"""The API documents itself, offline: /openapi.json, Swagger UI at /docs and ReDoc at /redoc, every
script and style served by heylook itself, open on a server with an API key (the pages' calls carry
it), and rendered by a real browser on a machine with no way out."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from heylook.app import create_app
from heylook.middleware.api_key import OPEN_PATHS
from heylook.registry.aliases import parse_registry
from heylook.router import ModelRouter
from heylook.routes import docs
from heylook.settings import Settings
from tests.server import RunningServer

KEY = "sk-docs-0123456789"
PAGES = ["/docs", "/redoc"]
ASSET_TYPES = {".js": "text/javascript", ".css": "text/css"}


@pytest.fixture
async def keyed_app() -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process, with an API key, and no credentials on the client."""
    router = ModelRouter(parse_registry("models: {}\n", Path("/tmp/models.yaml")))
    app = create_app(router, Settings(api_key=KEY))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
    ) as client:
        yield client


def referenced(page: str) -> list[str]:
    return re.findall(r'(?:src|href|spec-url|data-spec)="([^"]*)"', page)


@pytest.mark.anyio
@pytest.mark.parametrize("path", PAGES)
async def test_the_pages_load_only_local_assets(keyed_app: httpx.AsyncClient, path: str) -> None:
    response = await keyed_app.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "<title>heylook API</title>" in page
    assert not re.search(r"(?i)https?:|//[a-z0-9]", page), "the page names another host"
    urls = referenced(page)
    assets = [u for u in urls if u.startswith("/docs/assets/")]
    assert assets and "/openapi.json" in urls
    assert set(urls) <= {*assets, "/openapi.json", "data:,"}
    # The browser may load nothing but this server's own files.
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    for url in assets:
        asset = await keyed_app.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["content-type"].startswith(ASSET_TYPES[Path(url).suffix])
        assert asset.headers["cache-control"] == "public, max-age=86400"
        assert len(asset.content) > 100_000  # the real bundle, not a stub


@pytest.mark.anyio
async def test_the_spec_is_json(keyed_app: httpx.AsyncClient) -> None:
    response = await keyed_app.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    spec = response.json()
    assert spec["openapi"].startswith("3.") and spec["info"]["title"] == "heylook"


@pytest.mark.anyio
async def test_the_docs_are_open_and_the_api_is_not(keyed_app: httpx.AsyncClient) -> None:
    """Every docs route answers without the key (a browser sends none for a page's scripts), and is
    one of the key check's open paths; the API itself still needs the key."""
    paths = [route.path for route in docs.routes]
    assert set(paths) <= OPEN_PATHS
    for path in paths:
        assert (await keyed_app.get(path)).status_code == 200, path
    assert (await keyed_app.get("/v1/models")).status_code == 401


@pytest.mark.anyio
@pytest.mark.parametrize(
    "path",
    [
        "/docs/assets/favicon.png",
        "/docs/assets/core.py",
        "/docs/assets/../__init__.py",
        "/docs/assets/%2e%2e/core.py",
    ],
)
async def test_only_the_named_assets_are_served(keyed_app: httpx.AsyncClient, path: str) -> None:
    response = await keyed_app.get(path, headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 404


# --- in a real browser ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("docs-server")
    (root / "models.yaml").write_text("models: {}\n")
    running = RunningServer(root / "models.yaml", root / "server.log", "--api-key", KEY)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("no chromium on PATH: scripts/setup installs Debian's (as root, with apt-get)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium)
        yield launched
        launched.close()


class Watched:
    """A page whose every request, console error and uncaught error is kept."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.refused: list[str] = []  # stopped in the browser by the page's Content-Security-Policy
        self.errors: list[str] = []
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("requestfailed", self._failed)
        self.page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))

    def _failed(self, request: Any) -> None:
        if request.failure == "csp":
            self.refused.append(request.url)
        else:
            self.errors.append(f"failed ({request.failure}): {request.url}")

    def check(self, base_url: str) -> None:
        """Nothing that names another host left the browser (ReDoc's sidebar shows its logo from
        Redocly's CDN: the policy stops it), nothing else was refused, nothing failed."""
        foreign = [u for u in self.requests if not u.startswith((f"{base_url}/", "data:", "blob:"))]
        assert set(foreign) <= set(self.refused), foreign
        assert not [u for u in self.refused if u.startswith(f"{base_url}/")], self.refused
        errors = [e for e in self.errors if not any(f"'{url}' violates" in e for url in self.refused)]
        assert not errors, errors
        self.context.close()


def with_bearer(spec: dict) -> dict:
    """The spec with a bearer scheme and /v1/models, should it not declare them (yet)."""
    components = spec.setdefault("components", {})
    if not any(s.get("scheme") == "bearer" for s in components.get("securitySchemes", {}).values()):
        components.setdefault("securitySchemes", {})["apiKey"] = {"type": "http", "scheme": "bearer"}
        spec["security"] = [{"apiKey": []}]
    spec["paths"].setdefault(
        "/v1/models", {"get": {"summary": "List models", "responses": {"200": {"description": "the models"}}}}
    )
    return spec


def test_swagger_ui_renders_and_tries_the_api_with_the_key(browser: Any, keyed_server: RunningServer) -> None:
    watched = Watched(browser)
    page = watched.page

    def spec(route: Any) -> None:
        served = route.fetch()  # the page's own request, without a key
        assert served.status == 200, served.text()
        route.fulfill(response=served, body=json.dumps(with_bearer(served.json())))

    page.route("**/openapi.json", spec)
    page.goto(f"{keyed_server.base_url}/docs")
    assert page.title() == "heylook API"
    page.locator(".swagger-ui .info .title", has_text="heylook").wait_for(timeout=30_000)

    page.locator(".auth-wrapper button.authorize").click()
    page.locator(".dialog-ux input").first.fill(KEY)
    page.locator(".dialog-ux .auth-btn-wrapper button.authorize").click()
    page.locator(".dialog-ux button.btn-done").click()

    operation = page.locator(".opblock-get", has=page.locator('[data-path="/v1/models"]'))
    operation.locator(".opblock-summary").first.click()
    operation.locator("button.try-out__btn").click()
    operation.locator("button.execute").click()
    status = operation.locator(".live-responses-table tr.response .response-col_status").first
    status.wait_for(timeout=30_000)
    assert status.inner_text().strip().startswith("200")
    watched.check(keyed_server.base_url)


def test_redoc_renders(browser: Any, keyed_server: RunningServer) -> None:
    watched = Watched(browser)
    page = watched.page
    page.goto(f"{keyed_server.base_url}/redoc")
    assert page.title() == "heylook API"
    page.locator("h1", has_text="heylook").first.wait_for(timeout=30_000)
    watched.check(keyed_server.base_url)
