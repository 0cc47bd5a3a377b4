"""The OpenAPI 3.1 document, made from the wire types."""

from __future__ import annotations

from typing import Any

from heylook import __version__


def openapi_document() -> dict[str, Any]:
    """The whole API as OpenAPI 3.1 (paths are filled in from the wire types)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "heylook", "version": __version__},
        "paths": {},
    }
