"""Placeholder, filled in by the work on issue 16."""

from __future__ import annotations

from starlette.routing import Route

routes: list[Route] = []
