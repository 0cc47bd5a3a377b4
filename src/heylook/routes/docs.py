"""The API describing itself: /openapi.json, Swagger UI at /docs and ReDoc at /redoc."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from heylook.wire.openapi import openapi_document


async def openapi_json(request: Request) -> Response:
    return JSONResponse(openapi_document())


routes = [
    Route("/openapi.json", openapi_json, methods=["GET"]),
]
