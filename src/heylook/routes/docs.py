"""The API describing itself: /openapi.json, Swagger UI at /docs and ReDoc at /redoc.

The two pages are ours; Swagger UI's and ReDoc's scripts and styles are the ones the
fastapi-offline package ships (both, kept current, in one wheel), served from here under
/docs/assets. The pages load nothing from any other host, so they work offline, and their
Content-Security-Policy holds the browser to that."""

from __future__ import annotations

import base64
import hashlib
import html
from pathlib import Path
from string import Template

import fastapi_offline
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from heylook.wire.openapi import openapi_document

ASSETS_URL = "/docs/assets"
# The files served under ASSETS_URL, and nothing else (no path from the URL reaches the disk).
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
}
_ASSET_DIR = Path(fastapi_offline.__file__).parent / "static"
# A day: the assets change only when the package is upgraded.
_ASSET_CACHE = "public, max-age=86400"

# Swagger UI shows its Authorize button for the spec's securitySchemes: with --api-key, the key
# given there goes with every "Try it out" request.
_SWAGGER_INIT = """
window.ui = SwaggerUIBundle({
  url: document.getElementById("swagger-ui").dataset.spec,
  dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  deepLinking: true,
  validatorUrl: null,
});
"""
_SWAGGER_PAGE = Template(
    """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>heylook API</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="$assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-spec="$spec"></div>
<script src="$assets/swagger-ui-bundle.js"></script>
<script>$init</script>
</body>
</html>
"""
)
_REDOC_PAGE = Template(
    """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>heylook API</title>
<link rel="icon" href="data:,">
</head>
<body style="margin: 0">
<redoc spec-url="$spec"></redoc>
<script src="$assets/redoc.standalone.js"></script>
</body>
</html>
"""
)


def _policy(script: str) -> str:
    """Own scripts only (and the one inline initializer, by its hash), requests to this server only;
    inline styles and data: images are what both UIs render with."""
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    return (
        f"default-src 'none'; script-src 'self' 'sha256-{digest}'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


_HEADERS = {"content-security-policy": _policy(_SWAGGER_INIT), "x-content-type-options": "nosniff"}


def _page(request: Request, page: Template) -> Response:
    root = html.escape(request.scope.get("root_path", ""))
    body = page.substitute(assets=root + ASSETS_URL, spec=root + "/openapi.json", init=_SWAGGER_INIT)
    return HTMLResponse(body, headers=_HEADERS)


async def openapi_json(request: Request) -> Response:
    return JSONResponse(openapi_document())


async def swagger_ui(request: Request) -> Response:
    return _page(request, _SWAGGER_PAGE)


async def redoc(request: Request) -> Response:
    return _page(request, _REDOC_PAGE)


def _asset_route(name: str, media_type: str) -> Route:
    async def asset(request: Request) -> Response:
        headers = {"cache-control": _ASSET_CACHE, "x-content-type-options": "nosniff"}
        return FileResponse(_ASSET_DIR / name, media_type=media_type, headers=headers)

    return Route(f"{ASSETS_URL}/{name}", asset, methods=["GET"])


routes = [
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", swagger_ui, methods=["GET"]),
    Route("/redoc", redoc, methods=["GET"]),
    *(_asset_route(name, media_type) for name, media_type in ASSETS.items()),
]
