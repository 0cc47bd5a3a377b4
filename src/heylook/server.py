"""Runs the app under hypercorn."""

from __future__ import annotations

import asyncio
import logging

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config
from starlette.applications import Starlette

log = logging.getLogger(__name__)


def bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def run_server(app: Starlette, *, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM."""
    config = Config()
    config.bind = [bind_address(host, port)]
    config.accesslog = logging.getLogger("heylook.access")
    config.errorlog = logging.getLogger("hypercorn.error")
    config.access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(L)ss'
    # Long generations stream for minutes; a shutdown gives them a moment to finish.
    config.graceful_timeout = 5
    log.info("serving on http://%s", bind_address(host, port))
    serving = hypercorn_serve(app, config)  # type: ignore[arg-type]  # an ASGI app; the stubs differ
    try:
        # uvloop's event loop (libuv) where it runs (not on Windows): a request through heylook's
        # front door waits 1 to 2 ms less for its first token at 32 streams (docs/benchmarks.md).
        import uvloop
    except ImportError:
        log.info("event loop: asyncio's (uvloop is not installed)")
        asyncio.run(serving)
    else:
        log.info("event loop: uvloop's")
        uvloop.run(serving)
